"""Task-weight rules: pure `keras.ops` functions run inside the training step."""

from keras_taskrobust.rules.exponentiated_gradient import ExponentiatedGradient
from keras_taskrobust.rules.hard_max import HardMax
from keras_taskrobust.rules.learning_progress import LearningProgress
from keras_taskrobust.rules.lookahead import Lookahead
from keras_taskrobust.rules.softmax import Softmax
from keras_taskrobust.rules.uniform import Uniform
from keras_taskrobust.rules.weighting_rule import WeightingRule

__all__ = [
    "ExponentiatedGradient",
    "HardMax",
    "LearningProgress",
    "Lookahead",
    "Softmax",
    "Uniform",
    "WeightingRule",
    "available",
    "get",
]

_RULES = {
    "uniform": Uniform,
    "exponentiated_gradient": ExponentiatedGradient,
    "softmax": Softmax,
    "hard_max": HardMax,
    "lookahead": Lookahead,
    "learning_progress": LearningProgress,
}


def available():
    """The names `get` (and `MirrorDescent`) accept, sorted."""
    return sorted(_RULES)


def get(identifier):
    """Returns a rule from a `WeightingRule` or one of the names of `available()`."""
    if isinstance(identifier, WeightingRule):
        return identifier
    if isinstance(identifier, str) and identifier in _RULES:
        return _RULES[identifier]()
    raise ValueError(
        f"Unknown weighting rule {identifier!r}. Pass a WeightingRule instance "
        f"or one of the names {sorted(_RULES)}."
    )
