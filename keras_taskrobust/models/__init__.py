"""`MinimaxModel` and the pieces of its training step."""

from keras_taskrobust.models.minimax_model import MinimaxModel

__all__ = [
    "MinimaxModel",
]
