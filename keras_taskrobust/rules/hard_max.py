"""All weight on the worst task."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule


class HardMax(WeightingRule):
    """All the weight on the current worst task: `w = onehot(argmax Lbar)`.

    The objective is `max_k L_k`, the limit of `Softmax` as its temperature
    goes to 0. Tied worst tasks share the weight equally.

    Memory: none beyond the running average of the losses (`average`):
    all the weight goes to the worst current estimate.

    Args:
        average: decay of the running average `Lbar` of the group losses
            (see `WeightingRule`). Averaging steadies the argmax when the
            batch losses are noisy. Defaults to `0.0`.

    Example:

    >>> import numpy as np
    >>> w = HardMax().update(None, np.array([0.2, 0.9, 0.4]), 0)
    >>> np.asarray(w).tolist()
    [0.0, 1.0, 0.0]
    """

    def update(self, weights, estimates, step):
        del weights, step
        estimates = ops.convert_to_tensor(estimates, "float32")
        worst = ops.cast(ops.equal(estimates, ops.amax(estimates)), "float32")
        return worst / ops.sum(worst)
