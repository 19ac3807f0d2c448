"""The smoothed max of task-robust pre-training."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule


class Softmax(WeightingRule):
    """Softmax (smoothed max) weights: `w = softmax(Lbar / temperature)`.

    The task-robust pre-training form (Wang et al., 2023). `softmax(Lbar / t)`
    maximises `sum_k w_k Lbar_k + t * H(w)` over the simplex, so the objective
    `sum_k w_k L_k` is a smoothed maximum of the task losses:
    `temperature -> 0` gives the hard max (all weight on the worst task),
    `temperature -> inf` the uniform weights (the average loss).

    Memory: none beyond the running average of the losses (`average`):
    the weights are a function of the current estimates alone.

    Args:
        temperature: positive float. Defaults to `1.0`.
        average: decay of the running average `Lbar` of the group losses
            (see `WeightingRule`). Defaults to `0.0`.

    Example:

    >>> import numpy as np
    >>> w = Softmax(temperature=1.0).update(None, np.log([1.0, 3.0]), 0)
    >>> np.round(np.asarray(w), 4).tolist()
    [0.25, 0.75]
    """

    def __init__(self, temperature=1.0, average=0.0):
        super().__init__(average=average)
        if not temperature > 0:
            raise ValueError(
                f"`temperature` must be positive; got {temperature}. Use "
                "HardMax for the limit temperature -> 0."
            )
        self.temperature = float(temperature)

    def update(self, weights, estimates, step):
        del weights, step
        estimates = ops.convert_to_tensor(estimates, "float32")
        # Shift by the max before dividing, so huge losses cannot overflow.
        return ops.softmax((estimates - ops.amax(estimates)) / self.temperature)

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}
