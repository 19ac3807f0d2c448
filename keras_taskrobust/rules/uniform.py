"""The average-loss baseline."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule


class Uniform(WeightingRule):
    """Fixed uniform weights, `w_k = 1 / K`: the average-loss baseline.

    The objective is the plain mean of the K task losses. Use it as the
    baseline against which a robust rule is compared, with the same callback
    and logging.

    Memory: none; the weights never move.

    Example:

    >>> import numpy as np
    >>> w = Uniform().update(np.array([0.7, 0.3]), np.array([1.0, 5.0]), 0)
    >>> np.asarray(w).tolist()
    [0.5, 0.5]
    """

    def update(self, weights, estimates, step):
        del estimates, step
        return ops.ones_like(weights) / ops.cast(ops.size(weights), "float32")
