"""Downstream transfer: tasks, and the worst-case score of a backbone on them."""

from keras_taskrobust.downstream.downstream_task import DownstreamTask
from keras_taskrobust.downstream.evaluate_transfer import evaluate_transfer
from keras_taskrobust.downstream.transfer_evaluator import TransferEvaluator

__all__ = ["DownstreamTask", "TransferEvaluator", "evaluate_transfer"]
