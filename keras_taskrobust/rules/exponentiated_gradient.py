"""Mirror ascent on the simplex: Group DRO's weight update."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule
from keras_taskrobust.rules.weighting_rule import exponentiated_step
from keras_taskrobust.rules.weighting_rule import resolve_schedule


class ExponentiatedGradient(WeightingRule):
    """Exponentiated gradient (mirror ascent) on the task weights: Group DRO.

    Each update multiplies every weight by the exponential of its task's loss
    and renormalises (Sagawa et al., 2020, Algorithm 1):

        w_k <- w_k * exp(eta_t * (Lbar_k + C / sqrt(n_k)))
        w   <- w / sum_j w_j

    computed in log space, `w = softmax(log w + eta_t * (Lbar + C / sqrt(n)))`,
    with the losses shifted by their max, so the weights stay finite and on
    the simplex for any finite loss. With `smoothing = eps > 0` each update
    ends by mixing towards uniform weights, `w <- (1 - eps) w + eps / K`
    (DoReMi, Xie et al. 2023).

    Memory: the weights are the rule's memory, `log w_t = eta * sum_s L_s`
    up to a constant: every past loss counts as much as the last one, so
    the weights set by the first, large losses can take many updates to
    undo (training losses that memorisation drives to zero stop moving
    them at all). `smoothing` forgets geometrically, at rate `eps` per
    update, and keeps every weight above `eps / K`, so that the weights can
    move again when the losses change.

    Args:
        step_size: `eta`, a float or a
            `keras.optimizers.schedules.LearningRateSchedule` evaluated at the
            number of updates made so far. Defaults to `0.01` (the Group DRO
            reference value).
        adjustment: `C`, the generalisation adjustment added to each task's
            loss as `C / sqrt(n_k)`, which favours small tasks, whose training
            loss underestimates their test loss. Defaults to `0.0` (off).
        task_sizes: `n_k`, the number of training examples of each task, a
            list of K numbers. Required when `adjustment > 0`.
        average: decay of the running average of the group losses fed to
            the update (see `WeightingRule`). Defaults to `0.0`.
        smoothing: `eps` in `[0, 1)`, the share of uniform weight mixed in
            after each update. Defaults to `0.0` (off).

    Example:

    >>> import numpy as np
    >>> rule = ExponentiatedGradient(step_size=1.0)
    >>> w = rule.update(np.array([0.5, 0.5]), np.array([0.0, np.log(3.0)]), 0)
    >>> np.round(np.asarray(w), 4).tolist()
    [0.25, 0.75]
    """

    def __init__(self, step_size=0.01, adjustment=0.0, task_sizes=None, average=0.0, smoothing=0.0):
        super().__init__(average=average)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(
                f"`smoothing` must be in [0, 1); got {smoothing}. It is the share "
                "of uniform weight mixed in after each update (0 = off)."
            )
        if adjustment and task_sizes is None:
            raise ValueError(
                "ExponentiatedGradient(adjustment=...) needs `task_sizes`, the "
                "number of training examples of each task: the adjustment is "
                "adjustment / sqrt(task_sizes[k])."
            )
        if task_sizes is not None and min(task_sizes) <= 0:
            raise ValueError(f"`task_sizes` must be positive; got {task_sizes}.")
        self.step_size = step_size
        self.adjustment = float(adjustment)
        self.task_sizes = None if task_sizes is None else list(task_sizes)
        self.smoothing = float(smoothing)

    def update(self, weights, estimates, step):
        eta = resolve_schedule(self.step_size, step)
        losses = ops.convert_to_tensor(estimates, "float32")
        if self.adjustment:
            sizes = ops.convert_to_tensor(self.task_sizes, "float32")
            losses = losses + self.adjustment / ops.sqrt(sizes)
        return exponentiated_step(weights, losses, eta, self.smoothing)

    def get_config(self):
        return {
            "step_size": self.step_size,
            "adjustment": self.adjustment,
            "task_sizes": self.task_sizes,
            "smoothing": self.smoothing,
            **super().get_config(),
        }
