"""The progress bar of a `MinimaxModel`: the objective and the worst task, not 2K + 2 entries."""

import keras

# Per-task log entries `<kind>/<task>` and the summary shown in their place:
# the worst task loss (in the logs already), the largest weight, the worst
# held-out loss (`MirrorDescent(held_out=...)`).
SUMMARIES = {"loss": "loss/worst", "weight": "weight/max", "held_out": "held_out/worst"}


class TaskProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar with the per-task entries summed up.

    A `MinimaxModel` logs `loss/<task>` and `weight/<task>` for every task
    (and `MirrorDescent(held_out=...)` adds `held_out/<task>`): 2K + 2
    entries, which no longer fit a line at a handful of tasks. This progress
    bar shows `loss` (the weighted objective), `loss/worst` (the largest
    task loss), `weight/max` (the largest task weight) and `held_out/worst`
    during the epoch, and at its end also the worst task's own entry,
    `loss/<task>`, which names it. `val_loss/worst` stands for the
    validation entries of the tasks. Every other entry (metrics, callbacks'
    logs) is shown as Keras shows it. Only the display changes: `History`,
    `CSVLogger`, `TensorBoard` and every other callback receive every key.

    `MinimaxModel.fit` and `evaluate` add this progress bar when
    `verbose` is not 0 and no other `keras.callbacks.ProgbarLogger` is
    given. To see every task's entry, pass Keras' own progress bar:
    `callbacks=[keras.callbacks.ProgbarLogger()]`.

    Args:
        task_names: the names of the tasks whose entries are summed up.
            Defaults to `None`: every `loss/<name>` and `weight/<name>`
            entry.

    Example:

    >>> import numpy as np, keras
    >>> from keras_taskrobust import MinimaxModel
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model = MinimaxModel(net, num_tasks=64)
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = {"features": np.random.rand(128, 4), "task_id": np.arange(128) % 64}
    >>> history = model.fit(x, np.random.rand(128, 1), verbose=2)  # doctest: +SKIP
    4/4 - 1s - 190ms/step - loss: 0.4329 - loss/worst: 1.4711 - weight/max: 0.0156 - loss/task_17: 1.4711
    >>> len(history.history)  # doctest: +SKIP
    130
    """

    def __init__(self, task_names=None):
        super().__init__()
        self.task_names = None if task_names is None else set(task_names)

    def _task_kind(self, key):
        """The kind of a task entry (`"loss"`, `"weight"`, `"held_out"`, with `"val_"` before it), else `None`."""
        prefix = "val_" if key.startswith("val_") else ""
        kind, _, name = key[len(prefix):].partition("/")
        if kind not in SUMMARIES or not name:
            return None
        if name in (self.task_names or ()) or (self.task_names is None and name not in ("worst", "max")):
            return prefix + kind
        return None

    def _summary(self, logs, name_worst):
        """`logs` with the task entries replaced by their summary (a new dict)."""
        if not logs:
            return logs
        others, largest = {}, {}
        for key, value in logs.items():
            kind = self._task_kind(key)
            if kind is None:
                others[key] = value
            elif kind not in largest or value > largest[kind][1]:
                largest[kind] = (key, value)
        shown = {key: others.pop(key) for key in ("loss", SUMMARIES["loss"]) if key in others}
        if name_worst and "loss" in largest:
            # The worst task's own entry says which task it is.
            shown.update([largest["loss"]])
        for kind in ("weight", "held_out"):
            if kind in largest:
                shown[SUMMARIES[kind]] = largest[kind][1]
        # The validation entries of the tasks are summed up by `val_loss/worst`.
        return {**shown, **others}

    # During the epoch the worst task may change from batch to batch; a
    # named entry would add one key to the bar for each, so only the
    # epoch's last line names it.
    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._summary(logs, name_worst=False))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._summary(logs, name_worst=False))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._summary(logs, name_worst=True))

    def on_test_end(self, logs=None):
        super().on_test_end(self._summary(logs, name_worst=True))
