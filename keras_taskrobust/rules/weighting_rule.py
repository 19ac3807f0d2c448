"""Base class of the task-weight rules."""

import keras
from keras import ops


class WeightingRule:
    """A rule that moves the task weights on the simplex.

    A rule is a pair of pure functions written in `keras.ops`, so that it runs
    inside the compiled training step on every backend:

    - `estimate(estimates, losses, present, seen)`: folds this batch's group
      losses into the running loss estimate of every task. A task absent from
      the batch keeps its last estimate; a task never seen yet takes the mean
      estimate of the tasks seen so far (a fake zero loss would drag it
      down), and `MinimaxModel` keeps its weight as it is until its first
      batch (`keep_unseen_weights`): it neither gains nor loses weight.
    - `update(weights, estimates, step)`: returns the new weights from the
      current ones and the loss estimates. `step` counts the updates made so
      far and feeds step-size schedules.

    Subclasses implement `update`. Both functions are called by
    `MinimaxModel` when the `MirrorDescent` callback turns updates on.

    Args:
        average: decay of the running average of the group losses, in
            `[0, 1)`: `Lbar <- average * Lbar + (1 - average) * L`. `0` uses
            the last batch's group losses. Defaults to `0.0`.
    """

    # True for rules whose `update` takes `gram`, the K x K inner products of
    # the task gradients (`MinimaxModel` then computes it in the step).
    needs_gradients = False
    # True for rules whose `update` takes `previous`, the estimates before
    # this update (for a task seen for the first time: its new estimate).
    needs_previous = False

    def __init__(self, average=0.0):
        if not 0.0 <= average < 1.0:
            raise ValueError(
                f"`average` must be in [0, 1); got {average}. It is the decay "
                "of the running average of the group losses (0 = no average)."
            )
        self.average = float(average)

    def estimate(self, estimates, losses, present, seen):
        """Returns the running loss estimates after observing `losses`.

        Args:
            estimates: float tensor `[K]`, the current estimates.
            losses: float tensor `[K]`, this batch's group losses; entries of
                absent tasks are ignored.
            present: bool tensor `[K]`, which tasks are in this batch.
            seen: bool tensor `[K]`, which tasks had been seen before.
        """
        if self.average:
            averaged = self.average * estimates + (1.0 - self.average) * losses
            first = ops.logical_and(present, ops.logical_not(seen))
            losses = ops.where(first, losses, averaged)
        new = ops.where(present, losses, estimates)
        known = present | seen
        weight = ops.cast(known, new.dtype)
        mean_known = ops.sum(new * weight) / ops.maximum(ops.sum(weight), 1.0)
        return ops.where(known, new, mean_known)

    def update(self, weights, estimates, step):
        """Returns the new task weights, a float tensor `[K]` on the simplex.

        Args:
            weights: float tensor `[K]`, the current weights.
            estimates: float tensor `[K]`, the task loss estimates.
            step: int scalar tensor, the number of updates made so far.
        """
        raise NotImplementedError

    def update_inputs(self, estimates, new_estimates, first, gram=None):
        """The keyword arguments of `update` beyond the weights, estimates and step.

        Args:
            estimates, new_estimates: float tensors `[K]`, the estimates
                before and after this batch (or held-out measurement).
            first: bool tensor `[K]`, the tasks seen for the first time.
            gram: the task-gradient Gram matrix, for rules that need it.
        """
        extra = {}
        if self.needs_gradients:
            extra["gram"] = gram
        if self.needs_previous:
            extra["previous"] = ops.where(first, new_estimates, estimates)
        return extra

    def get_config(self):
        return {"average": self.average}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def resolve_schedule(value, step):
    """Evaluates a constant or a `keras.optimizers.schedules` schedule."""
    if callable(value):
        return ops.cast(value(step), "float32")
    return float(value)


def log_simplex(weights):
    """`log(weights)`, clamped so that a weight that underflowed can recover."""
    tiny = float(keras.backend.epsilon()) ** 4  # 1e-28, still a normal float32
    return ops.log(ops.maximum(weights, tiny))


def exponentiated_step(weights, signal, eta, smoothing=0.0):
    """One mirror-ascent step on the simplex, then a share `smoothing` of uniform weight.

    `softmax(log w + eta * signal)`, with the signal shifted by its max
    first (softmax ignores a common shift) so that `eta * signal` cannot
    overflow; then `(1 - smoothing) * w + smoothing / K`.
    """
    # `amax`: Keras' torch `max` breaks a torch.compile graph.
    weights = ops.softmax(log_simplex(weights) + eta * (signal - ops.amax(signal)))
    if smoothing:
        weights = (1.0 - smoothing) * weights + smoothing / weights.shape[0]
    return weights


def keep_unseen_weights(weights, new_weights, known):
    """Keeps the weight of every task not yet seen; the others share the rest.

    Args:
        weights: float tensor `[K]`, the weights before the update.
        new_weights: float tensor `[K]`, the rule's new weights.
        known: bool tensor `[K]`, the tasks seen so far (this batch included).

    Returns:
        `new_weights` on the known tasks, rescaled to sum to what the unknown
        tasks do not hold, and `weights` on the unknown ones.
    """
    held = ops.sum(ops.where(known, 0.0, weights))
    moved = ops.where(known, new_weights, 0.0)
    tiny = float(keras.backend.epsilon()) ** 4
    return ops.where(known, moved * ((1.0 - held) / ops.maximum(ops.sum(moved), tiny)), weights)
