"""A one-off measurement of a backbone's worst-case downstream transfer."""

from keras_taskrobust.downstream.transfer_evaluator import TransferEvaluator


def evaluate_transfer(backbone, tasks, *, features=None, pooling="mean", mask_key="padding_mask"):
    """Adapts `backbone` to every downstream task and scores the worst of them.

    A plain function, for a backbone outside `fit` (a saved checkpoint, a
    preset, the end of a run): each task is adapted -- a linear probe on
    frozen features or a fine-tuned copy -- and its metric measured on its
    evaluation data, as `keras_taskrobust.callbacks.DownstreamSuite` does
    during `fit`. The backbone, its weights and the global random
    generators are left exactly as they were.

    Each call compiles its probes and fine-tuning copy anew. To evaluate
    the same backbone (or the same tasks) several times, call one
    `TransferEvaluator`, which keeps them.

    Args:
        backbone: the Keras layer or model that produces the features.
        tasks: a list of `DownstreamTask` with distinct names.
        features: which output of the backbone is the feature: a key or an
            index of a dict or tuple output, or a function
            `fn(backbone_outputs) -> tensor`. Defaults to `None`: a dict's
            `"pooled_output"` or only entry, a tensor as it is (see
            `TransferEvaluator`).
        pooling: how a sequence of features becomes one vector: `"mean"` or
            `"first"`. Defaults to `"mean"`.
        mask_key: the key of dict inputs that holds the padding mask used by
            mean pooling. Defaults to `"padding_mask"`.

    Returns:
        A dict with `downstream/<task>` (the metric) for every task,
        `downstream/worst` (the worst task's score, where a score is the
        metric when higher is better and minus the metric otherwise),
        `downstream/mean` (the mean score), `worst_task` (its name) and
        `seconds` (the time the evaluation took).

    Example:

    >>> import numpy as np, keras
    >>> from keras_taskrobust.downstream import DownstreamTask, evaluate_transfer
    >>> x = np.random.rand(96, 8).astype("float32")
    >>> label = (x[:, 0] > 0.5).astype("int32")
    >>> first_feature = DownstreamTask(
    ...     "first_feature", (x[:64], label[:64]), (x[64:], label[64:]),
    ...     num_classes=2)
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    >>> scores = evaluate_transfer(encoder, [first_feature])
    >>> scores["worst_task"]
    'first_feature'
    """
    evaluator = TransferEvaluator(tasks, features=features, pooling=pooling, mask_key=mask_key)
    return evaluator(backbone)
