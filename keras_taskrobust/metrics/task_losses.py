"""Per-task loss and weight tracking for logs and `History`."""

import functools

import keras
import numpy as np
from keras import ops

# Logs carry the task totals, weights and loss estimates as one vector under
# this key, not as 2K + 1 scalars: Keras converts every log entry after
# every batch, and TF's graph optimiser chokes on a step with 2K outputs.
# `expand_task_logs` turns it into `loss/<task>`, `weight/<task>` and
# `loss/worst`.
TASK_LOGS_KEY = "_task_logs"


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class TaskLosses(keras.metrics.Metric):
    """Tracks each task's loss and weight over an epoch.

    It reports, for every task name `t`, `loss/t` (the mean per-element loss
    of task `t` over the epoch, sample weights respected) and `weight/t` (its
    current weight), plus `loss/worst`, the largest task loss. A task absent
    from every batch of the epoch reports its last loss estimate instead of a
    fake 0 or a NaN. It also counts the elements whose task id was out of
    range, which `MinimaxModel` turns into an error. Its state is one packed
    vector, which `result()` returns (copied); `expand_task_logs` computes
    and spreads the values, which `MinimaxModel` does before any callback
    sees the logs.

    `MinimaxModel` creates and updates it; its variable is an ordinary metric
    variable, so it resets each epoch and reaches `logs` on every backend.

    Args:
        task_names: list of the K task names used in the log keys.
    """

    def __init__(self, task_names, name="task_losses", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = list(task_names)
        k = len(self.task_names)
        # One vector in the layout of `_unpack`: the sums of the steps' task
        # totals (see `GroupedLoss.totals`: per task, loss sum, weight sum and
        # element count; the last row, ids outside [0, K)), then the current
        # weights and estimates. One variable, one write per step. The step
        # passes values of the global batch, the same on every replica: under
        # tf.distribute, reading it outside the step averages identical
        # copies (the default, "sum", would add them).
        self.packed = self.add_variable((3 * (k + 1) + 2 * k,), "zeros", aggregation="mean", name="packed")

    def update_state(self, totals, weights, estimates):
        """Adds a step's `[K + 1, 3]` totals; keeps its weights and estimates.

        All three are constants of the step (no gradient flows into them).
        """
        size = 3 * (len(self.task_names) + 1)
        sums = self.packed.value[:size] + ops.reshape(totals, (-1,))
        self.packed.assign(ops.concatenate([sums, weights, estimates]))

    def result(self):
        # Raw: `expand_task_logs` divides the sums by the counts on the host,
        # so the step computes no more than it must after every batch. A
        # copy: on torch the next step writes the variable in place while
        # Keras may still be converting these logs in its callback thread.
        return {TASK_LOGS_KEY: ops.copy(self.packed.value)}

    def get_config(self):
        return {"task_names": self.task_names, **super().get_config()}


def expand_task_logs(logs, task_names, prefix=""):
    """Spreads the packed task vector of `logs` into one float per key, in place.

    Adds `loss/<task>`, `weight/<task>` and `loss/worst` (with `prefix`, e.g.
    `"val_"`). Returns the number of out-of-range task ids the vector
    counted (0 when `logs` has no vector).
    """
    values = logs.pop(prefix + TASK_LOGS_KEY, None)
    if values is None:
        return 0
    k = len(task_names)
    totals, weights, estimates = _unpack(values, k)
    sums, counts = totals[:k, 0], totals[:k, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        losses = np.where(counts > 0, sums / counts, estimates)
    logs[prefix + "loss/worst"] = float(losses.max())
    logs.update(zip(_log_keys(tuple(task_names), prefix), [*losses.tolist(), *weights.tolist()]))
    return int(totals[k, 2])


def count_rejected(values, num_tasks):
    """`(out-of-range task ids, negative sample weights)` counted in a packed task vector (or `None`).

    Both kinds of element are left out of every task: row K of the totals
    counts them all in its last column, the negative weights in its first.
    """
    if values is None:
        return 0, 0
    row = _unpack(values, num_tasks)[0][num_tasks]
    return int(row[2] - row[0]), int(row[0])


def _unpack(values, num_tasks):
    """`TaskLosses.result()`'s vector as NumPy `(totals [K + 1, 3], weights [K], estimates [K])`."""
    values = np.asarray(keras.ops.convert_to_numpy(values), dtype="float64").reshape(-1)
    k = num_tasks
    return values[: 3 * (k + 1)].reshape(k + 1, 3), values[3 * (k + 1) : 3 * (k + 1) + k], values[3 * (k + 1) + k :]


@functools.lru_cache(maxsize=64)
def _log_keys(task_names, prefix):
    # Built once: `fit` may expand the logs after every batch.
    return [f"{prefix}{kind}/{name}" for kind in ("loss", "weight") for name in task_names]
