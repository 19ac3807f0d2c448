"""Per-task loss and weight tracking for logs and `History`."""

import keras
import numpy as np
from keras import ops

# Per-step logs carry the K losses and weights as two vectors under these
# keys, not as 2K scalars: Keras converts every log entry to a float after
# every batch, and TF's graph optimiser chokes on a step with 2K outputs.
# `expand_task_logs` turns them into `loss/<task>` and `weight/<task>`.
LOSSES_KEY = "_task_losses"
WEIGHTS_KEY = "_task_weights"


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class TaskLosses(keras.metrics.Metric):
    """Tracks each task's loss and weight over an epoch.

    It reports, for every task name `t`, `loss/t` (the mean per-element loss
    of task `t` over the epoch, sample weights respected) and `weight/t` (its
    current weight), plus `loss/worst`, the largest task loss. A task absent
    from every batch of the epoch reports its last loss estimate instead of a
    fake 0 or a NaN. `result()` holds the per-task values as two `[K]`
    vectors; `expand_task_logs` spreads them into those keys, which
    `MinimaxModel` does before any callback sees the logs.

    `MinimaxModel` creates and updates it; its variables are ordinary metric
    variables, so they reset each epoch and reach `logs` on every backend.

    Args:
        task_names: list of the K task names used in the log keys.
    """

    def __init__(self, task_names, name="task_losses", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = list(task_names)
        k = len(self.task_names)
        # The step passes values of the global batch, the same on every
        # replica: under tf.distribute, reading a variable outside the step
        # averages identical copies (the default, "sum", would add them).
        variable = lambda shape, name: self.add_variable(shape, "zeros", aggregation="mean", name=name)
        self.loss_sums = variable((k,), "loss_sums")
        self.loss_counts = variable((k,), "loss_counts")
        self.weights_now = variable((k,), "weights")
        self.estimates = variable((k,), "estimates")
        # Count of task ids outside [0, K) seen by the step; MinimaxModel
        # turns a non-zero count into an error after the step.
        self.invalid_ids = variable((), "invalid_ids")

    def update_state(self, sums, counts, weights, estimates, invalid_ids=0):
        self.loss_sums.assign_add(ops.stop_gradient(sums))
        self.loss_counts.assign_add(ops.stop_gradient(counts))
        self.weights_now.assign(ops.stop_gradient(weights))
        self.estimates.assign(ops.stop_gradient(estimates))
        self.invalid_ids.assign_add(ops.cast(invalid_ids, "float32"))

    def task_loss_values(self):
        """The `[K]` tensor of epoch task losses (estimates where absent)."""
        sums, counts = self.loss_sums.value, self.loss_counts.value
        means = sums / ops.maximum(counts, 1e-12)
        return ops.where(counts > 0, means, self.estimates.value)

    def result(self):
        losses = self.task_loss_values()
        return {
            "loss/worst": ops.max(losses),
            LOSSES_KEY: losses,
            WEIGHTS_KEY: ops.convert_to_tensor(self.weights_now),
        }

    def get_config(self):
        return {"task_names": self.task_names, **super().get_config()}


def expand_task_logs(logs, task_names, prefix=""):
    """Replaces the `[K]` vectors in `logs` by one float per task, in place."""
    for key, kind in ((LOSSES_KEY, "loss"), (WEIGHTS_KEY, "weight")):
        values = logs.pop(prefix + key, None)
        if values is not None:
            values = np.asarray(keras.ops.convert_to_numpy(values), dtype="float64")
            for name, value in zip(task_names, values):
                logs[f"{prefix}{kind}/{name}"] = float(value)
    return logs
