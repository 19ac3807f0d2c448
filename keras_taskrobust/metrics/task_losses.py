"""Per-task loss and weight tracking for logs and `History`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class TaskLosses(keras.metrics.Metric):
    """Tracks each task's loss and weight over an epoch.

    `result()` is a dict with, for every task name `t`, `loss/t` (the mean
    per-element loss of task `t` over the epoch, sample weights respected)
    and `weight/t` (its current weight), plus `loss/worst`, the largest task
    loss. A task absent from every batch of the epoch reports its last loss
    estimate instead of a fake 0 or a NaN.

    `MinimaxModel` creates and updates it; its variables are ordinary metric
    variables, so they reset each epoch and reach `logs` on every backend.

    Args:
        task_names: list of the K task names used in the log keys.
    """

    def __init__(self, task_names, name="task_losses", **kwargs):
        super().__init__(name=name, **kwargs)
        self.task_names = list(task_names)
        k = len(self.task_names)
        self.loss_sums = self.add_variable((k,), "zeros", name="loss_sums")
        self.loss_counts = self.add_variable((k,), "zeros", name="loss_counts")
        self.weights_now = self.add_variable((k,), "zeros", name="weights")
        self.estimates = self.add_variable((k,), "zeros", name="estimates")
        # Count of task ids outside [0, K) seen by the step; MinimaxModel
        # turns a non-zero count into an error after the step.
        self.invalid_ids = self.add_variable((), "zeros", name="invalid_ids")

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
        logs = {"loss/worst": ops.max(losses)}
        for name, value in zip(self.task_names, ops.unstack(losses)):
            logs[f"loss/{name}"] = value
        for name, value in zip(self.task_names, ops.unstack(self.weights_now.value)):
            logs[f"weight/{name}"] = value
        return logs

    def get_config(self):
        return {"task_names": self.task_names, **super().get_config()}
