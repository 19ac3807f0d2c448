"""Learning progress: weight towards the tasks whose loss is still falling."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule
from keras_taskrobust.rules.weighting_rule import exponentiated_step
from keras_taskrobust.rules.weighting_rule import resolve_schedule


class LearningProgress(WeightingRule):
    """Mirror ascent on each task's learning progress: its relative loss decrease.

    Group DRO pushes weight onto the task with the largest loss, whether or
    not training can lower it: a task whose held-out loss has stopped
    falling (it saturated, or its small training set is memorised) keeps
    drawing weight that buys nothing. Learning progress (the signal of
    automated curricula, Graves et al. 2017) rewards the tasks that are
    still improving instead. With `Lprev` the estimates before this update
    and `L` the new ones, each task's progress is its relative decrease,
    clipped to `[-1, 1]`,

        p_k = clip((Lprev_k - L_k) / Lprev_k, -1, 1)

    and the weights take an exponentiated-gradient step on it,

        w <- softmax(log w + eta_t * p),    then    w <- (1 - eps) w + eps / K

    A task that got worse (over-fitting) loses weight; the relative form
    makes tasks with losses on different scales (a 10-way against a 2-way
    cross-entropy) comparable. With `loss_weighted=True` the step is
    `eta_t * L_k * max(p_k, 0)`: the large losses that are still falling,
    Group DRO restricted to the tasks that can still improve.

    Progress is measured between consecutive estimates: between two
    held-out measurements with `MirrorDescent(held_out=...)`, or between two
    training batches otherwise (use `average` to smooth the batch noise).
    A task seen for the first time has no progress yet (0).

    Memory: as in `ExponentiatedGradient`, `log w` sums the past steps, so
    the weights integrate the progress made so far; `smoothing` forgets it
    geometrically, at rate `eps` per update, so that the weights follow the
    recent progress.

    Args:
        step_size: `eta`, a float or a
            `keras.optimizers.schedules.LearningRateSchedule` evaluated at the
            number of updates made so far. Defaults to `10.0` (relative
            progress per update is small: a few percent).
        smoothing: `eps` in `[0, 1)`, the share of uniform weight mixed in
            after each update. Defaults to `0.05`.
        loss_weighted: step on `L_k * max(p_k, 0)` instead of `p_k`.
            Defaults to `False`.
        average: decay of the running average of the losses (see
            `WeightingRule`). Defaults to `0.0`.

    Example:

    >>> import numpy as np
    >>> rule = LearningProgress(step_size=1.0, smoothing=0.0)
    >>> previous = np.array([1.0, 1.0])
    >>> w = rule.update(np.array([0.5, 0.5]), np.array([1.0, 0.5]), 0, previous=previous)
    >>> bool(np.asarray(w)[1] > 0.6)  # task 1's loss fell by half
    True
    """

    # `update` takes `previous`, the estimates before this update.
    needs_previous = True

    def __init__(self, step_size=10.0, smoothing=0.05, loss_weighted=False, average=0.0):
        super().__init__(average=average)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(
                f"`smoothing` must be in [0, 1); got {smoothing}. It is the share "
                "of uniform weight mixed in after each update (0 = off)."
            )
        self.step_size = step_size
        self.smoothing = float(smoothing)
        self.loss_weighted = bool(loss_weighted)

    def progress(self, estimates, previous):
        """`[K]`: each task's relative loss decrease since `previous`, clipped to `[-1, 1]`."""
        losses = ops.convert_to_tensor(estimates, "float32")
        previous = ops.convert_to_tensor(previous, "float32")
        tiny = 1e-12
        # A loss that stays at 0 makes no progress (0 / tiny = 0).
        return ops.clip((previous - losses) / ops.maximum(previous, tiny), -1.0, 1.0)

    def update(self, weights, estimates, step, previous=None):
        if previous is None:
            raise ValueError("LearningProgress.update needs `previous`, the loss estimates before this update.")
        eta = resolve_schedule(self.step_size, step)
        signal = self.progress(estimates, previous)
        if self.loss_weighted:
            signal = ops.convert_to_tensor(estimates, "float32") * ops.maximum(signal, 0.0)
        return exponentiated_step(weights, signal, eta, self.smoothing)

    def get_config(self):
        return {
            "step_size": self.step_size,
            "smoothing": self.smoothing,
            "loss_weighted": self.loss_weighted,
            **super().get_config(),
        }
