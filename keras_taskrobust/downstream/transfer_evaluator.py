"""Adapts a backbone to downstream tasks and scores the worst of them."""

import contextlib
import random
import sys
import time

import keras
import numpy as np
from keras import ops

from keras_taskrobust import _keras_compat as compat
from keras_taskrobust.downstream.downstream_task import DownstreamTask

PREFIX = "downstream/"
_POOLINGS = ("mean", "first")


class TransferEvaluator:
    """Measures how well a backbone transfers to downstream tasks, worst case.

    Each call adapts the backbone to each `DownstreamTask` -- a linear probe
    on frozen features or a fine-tuned copy -- and measures the task's
    metric on its evaluation data. The evaluator keeps what it compiles (the
    feature extractor around the backbone, one linear probe per task and one
    copy of the backbone for fine-tuning) and reuses it at the next call, so
    repeated evaluations of a backbone being trained compile nothing twice.
    `keras_taskrobust.downstream.evaluate_transfer` is a one-off call of a
    new evaluator; `keras_taskrobust.callbacks.DownstreamSuite` holds one
    for the whole training run.

    A task's score is its metric when higher is better, and minus the metric
    when lower is better (an error such as `"mae"`), so `downstream/worst`
    and `downstream/mean` are always "higher is better". They compare tasks
    on one scale only if the metrics share one (accuracies, or R^2 scores);
    the name of the worst task is returned too.

    Adaptation never changes the backbone: its weights (and so the model
    that holds them, with its optimizer state) are bit-for-bit the same
    after a call. Features are read from the live backbone in inference
    mode; fine-tuning trains a copy built from the backbone's config with
    its weights copied as NumPy arrays; heads have their own optimizers;
    the global random generators (Python, NumPy, torch, Keras) are restored
    after each call, so a pre-training run shuffles and samples exactly as
    it would without the evaluation.

    The backbone's output becomes features as follows: a dict output gives
    its `"pooled_output"` entry (keras-hub's `BertBackbone`) or its only
    entry; a rank-2 output is used as is; a rank-3 output (a sequence) is
    pooled, by default with the mean over the sequence axis that skips
    padding when the inputs are a dict holding `mask_key` (keras-hub's
    `padding_mask`), or with `pooling="first"` by taking the first token
    (the class token of `ViTBackbone`); higher ranks (feature maps) are
    averaged over all but the batch and channel axes.

    Args:
        tasks: a list of `DownstreamTask` with distinct names.
        features: which output of the backbone is the feature: a key or an
            index of a dict or tuple output, or a function
            `fn(backbone_outputs) -> tensor`. Defaults to `None` (see above).
        pooling: how a sequence of features becomes one vector: `"mean"` or
            `"first"`. Defaults to `"mean"`.
        mask_key: the key of dict inputs that holds the padding mask used by
            mean pooling. Defaults to `"padding_mask"`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_taskrobust.downstream import DownstreamTask, TransferEvaluator
    >>> x = np.random.rand(96, 8).astype("float32")
    >>> label = (x[:, 0] > 0.5).astype("int32")
    >>> evaluator = TransferEvaluator([DownstreamTask(
    ...     "first_feature", (x[:64], label[:64]), (x[64:], label[64:]),
    ...     num_classes=2)])
    >>> encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    >>> scores = evaluator(encoder)  # compiles the probe
    >>> scores = evaluator(encoder)  # reuses it
    >>> sorted(scores)
    ['downstream/first_feature', 'downstream/mean', 'downstream/worst', 'seconds', 'worst_task']
    """

    def __init__(self, tasks, features=None, pooling="mean", mask_key="padding_mask"):
        # === Config ===
        tasks = list(tasks) if isinstance(tasks, (list, tuple)) else [tasks]
        if not tasks or not all(isinstance(t, DownstreamTask) for t in tasks):
            raise TypeError(f"`tasks` must be a non-empty list of DownstreamTask; got {tasks!r}.")
        names = [t.name for t in tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"Downstream task names must be distinct, but {duplicates} "
                "appear more than once; give each DownstreamTask its own `name` "
                "(it becomes the key downstream/<name>)."
            )
        reserved = sorted({"worst", "mean"} & set(names))
        if reserved:
            raise ValueError(
                f"DownstreamTask names {reserved} clash with the summary keys "
                "downstream/worst and downstream/mean; rename the task."
            )
        if pooling not in _POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; use one of {list(_POOLINGS)}.")
        self.tasks = tasks
        self.features = features
        self.pooling = pooling
        self.mask_key = mask_key

        # === State ===
        # Reused across calls so that nothing is compiled twice: the
        # extractor around the live backbone, one linear probe per task and
        # one copy of the backbone for fine-tuning.
        self._extractor = None
        self._probes = {}
        self._copy = None

    def __call__(self, backbone):
        """Adapts `backbone` to every task and measures the metrics.

        Args:
            backbone: the Keras layer or model that produces the features.

        Returns:
            A dict with `seconds` (the time the call took), `worst_task`,
            `downstream/<task>` (the metric) for every task,
            `downstream/worst` (the worst task's score) and
            `downstream/mean` (the mean score).
        """
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(f"The backbone must be a Keras layer or model; got {backbone!r}.")
        start = time.perf_counter()
        values = {}
        weights = None
        with _global_random_state_kept():
            for task in self.tasks:
                if task.mode == "linear_probe":
                    values[task.name] = self._linear_probe(backbone, task)
                else:
                    if weights is None:
                        # Copies: nothing the copy does can alias the live weights.
                        weights = [np.array(w, copy=True) for w in backbone.get_weights()]
                    values[task.name] = self._finetune(backbone, weights, task)
        scores = {t.name: values[t.name] if t.higher_is_better else -values[t.name] for t in self.tasks}
        worst_task = min(scores, key=scores.get)
        return {
            "seconds": time.perf_counter() - start,
            "worst_task": worst_task,
            **{PREFIX + name: value for name, value in values.items()},
            PREFIX + "worst": scores[worst_task],
            PREFIX + "mean": float(np.mean(list(scores.values()))),
        }

    def _transfer_model(self, backbone, head=None):
        return _TransferModel(backbone, self.features, self.pooling, self.mask_key, head)

    def _linear_probe(self, backbone, task):
        if self._extractor is None or self._extractor.backbone is not backbone:
            self._extractor = self._transfer_model(backbone)
        train, train_labels, train_weights = _extract(self._extractor, task.train_data)
        test, test_labels, test_weights = _extract(self._extractor, task.eval_data)
        # Standardise with the training features: a fixed training budget
        # then measures the features, not their scale (which drifts in
        # pre-training). A constant feature stays 0.
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)
        train, test = (train - mean) / std, (test - mean) / std

        key = (task.name, train.shape[1:])
        if key not in self._probes:
            self._probes[key] = _Probe(task, train.shape[1:])
        probe = self._probes[key]
        probe.reset()
        order = np.random.default_rng(task.seed).permutation(len(train))
        train_weights = None if train_weights is None else train_weights[order]
        probe.model.fit(
            **_in_memory(train[order], train_labels[order], train_weights, task.head_batch_size, task.epochs),
            verbose=0,
        )
        logs = probe.model.evaluate(
            **_in_memory(test, test_labels, test_weights, task.head_batch_size), verbose=0, return_dict=True
        )
        return _metric_value(logs)

    def _finetune(self, backbone, weights, task):
        if self._copy is None or self._copy[0] is not backbone:
            copy = _copy_layer(backbone)
            if not copy.built:
                copy(next(task.train_data.batches())[0])
            _check_copy(backbone, copy)
            # The random seeds (dropout) are not weights: keep their start
            # too, so that every run draws the same dropout masks.
            weight_ids = {id(v) for v in copy.weights}
            seeds = [(v, np.array(v.numpy(), copy=True)) for v in copy.variables if id(v) not in weight_ids]
            self._copy = (backbone, copy, seeds)
        _, copy, seeds = self._copy
        copy.set_weights(weights)
        for variable, value in seeds:
            variable.assign(value)
        # A fresh head and optimizer per run: the optimizer's slots for the
        # whole backbone would otherwise stay in memory between evaluations.
        model = self._transfer_model(copy, task.build_head())
        model.compile(optimizer=task.new_optimizer(), loss=task.loss, weighted_metrics=[task.new_metric()])
        model.fit(**task.train_data.fit_arguments(seed=task.seed), epochs=task.epochs, verbose=0)
        logs = model.evaluate(**task.eval_data.fit_arguments(), verbose=0, return_dict=True)
        return _metric_value(logs)


class _TransferModel(keras.Model):
    """The backbone's features, followed by a head if one is given."""

    def __init__(self, backbone, features=None, pooling="mean", mask_key="padding_mask", head=None):
        super().__init__(name=f"{backbone.name}_transfer")
        self.backbone = backbone
        self.head = head
        self.feature_spec = features
        self.pooling = pooling
        self.mask_key = mask_key
        # Wrapping a built backbone needs no build (`predict_on_batch`).
        self.built = backbone.built and head is None

    def call(self, inputs, training=False):
        outputs = self.backbone(inputs, training=training)
        features = _features(outputs, inputs, self.feature_spec, self.pooling, self.mask_key)
        if self.head is None:
            return ops.cast(features, "float32")
        return self.head(features, training=training)


class _Probe:
    """A linear probe's compiled model, reset to one start before each run.

    Kept across evaluations so that it compiles once: `reset` restores the
    initial head weights and optimizer state.
    """

    def __init__(self, task, feature_shape):
        self.model = keras.Sequential([keras.Input(feature_shape), task.build_head()], name=f"{task.name}_probe")
        self.model.compile(optimizer=task.new_optimizer(), loss=task.loss, weighted_metrics=[task.new_metric()])
        self.model.optimizer.build(self.model.trainable_variables)
        self.weights = self.model.get_weights()
        self.optimizer_state = [np.array(v.numpy(), copy=True) for v in self.model.optimizer.variables]

    def reset(self):
        self.model.set_weights(self.weights)
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_state):
            variable.assign(value)


def _features(outputs, inputs, features, pooling, mask_key):
    """Picks and pools the backbone's output into `[batch, dim]` features."""
    if callable(features):
        outputs = features(outputs)
    elif features is not None:
        try:
            outputs = outputs[features]
        except (KeyError, IndexError, TypeError) as error:
            keys = sorted(outputs) if isinstance(outputs, dict) else f"{type(outputs).__name__} output"
            raise ValueError(
                f"`features={features!r}`: the backbone's output has no such "
                f"entry; it has {keys}."
            ) from error
    elif isinstance(outputs, dict):
        if "pooled_output" in outputs:
            outputs = outputs["pooled_output"]
        elif len(outputs) == 1:
            outputs = next(iter(outputs.values()))
        else:
            raise ValueError(
                f"The backbone returns a dict with keys {sorted(outputs)}: pick "
                "the features with `features=<key>` or a function of the outputs."
            )
    elif isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"The backbone returns {len(outputs)} outputs: pick the features "
            "with `features=<index>` or a function of the outputs."
        )
    rank = len(outputs.shape)
    if rank == 2:
        return outputs
    if rank < 2:
        raise ValueError(
            f"The backbone's features have shape {outputs.shape}; transfer needs "
            "a batch of vectors, sequences or feature maps (rank 2 or more)."
        )
    if pooling == "first":
        if rank != 3:
            raise ValueError(f"`pooling='first'` takes the first token of a sequence; the features have shape {outputs.shape}.")
        return outputs[:, 0]
    mask = inputs.get(mask_key) if isinstance(inputs, dict) and mask_key else None
    if mask is not None and rank == 3 and len(mask.shape) == 2:
        mask = ops.expand_dims(ops.cast(mask, outputs.dtype), -1)
        return ops.divide(ops.sum(ops.multiply(outputs, mask), axis=1), ops.maximum(ops.sum(mask, axis=1), 1.0))
    return ops.mean(outputs, axis=tuple(range(1, rank - 1)))


def _extract(extractor, data):
    """Features, labels and sample weights of every example, as NumPy."""
    features, labels, weights = [], [], []
    full = None
    for x, y, sample_weight in data.batches():
        size = len(y)
        full = full or size
        if size < full:
            # Pad a short last batch to the full size (repeating its last
            # example): a new input shape would compile the extractor again.
            x = keras.tree.map_structure(lambda a: np.concatenate([a, np.repeat(a[-1:], full - size, 0)]), x)
        features.append(np.asarray(extractor.predict_on_batch(x))[:size])
        labels.append(y)
        weights.append(sample_weight)
    if not labels:
        raise ValueError(f"The {data.description} has no examples.")
    weights = None if weights[0] is None else np.concatenate(weights)
    return np.concatenate(features), np.concatenate(labels), weights


def _in_memory(x, y, sample_weight, batch_size, epochs=None):
    """`fit` (with `epochs`) or `evaluate` arguments for in-memory arrays.

    The same batches, in order, on every backend. On TensorFlow they come
    as one `tf.data` pass over all epochs: from arrays, Keras builds a new
    input pipeline per call and an iterator per epoch, which costs more
    than training a small head (5x for 4 probes, measured).
    """
    if keras.backend.backend() != "tensorflow":
        arguments = {"x": x, "y": y, "sample_weight": sample_weight, "batch_size": batch_size}
        return arguments if epochs is None else {**arguments, "epochs": epochs, "shuffle": False}
    import tensorflow as tf

    data = (x, y) if sample_weight is None else (x, y, sample_weight)
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    return {"x": dataset} if epochs is None else {"x": dataset.repeat(epochs), "epochs": 1, "shuffle": False}


def _copy_layer(layer):
    """A new layer from `layer`'s config, sharing no variables with it."""
    try:
        return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    except Exception as error:  # Any failure of a user's config round trip.
        raise ValueError(
            f"Fine-tuning copies the backbone {layer.name!r} from its config, "
            f"which failed ({type(error).__name__}: {error}). Give the "
            "backbone a `get_config` and register it with "
            "`@keras.saving.register_keras_serializable()`, or use "
            "`mode='linear_probe'`."
        ) from error


def _check_copy(layer, copy):
    """Raises if the copy made from `layer`'s config has other weights than `layer`."""
    shapes = [tuple(w.shape) for w in layer.weights]
    copy_shapes = [tuple(w.shape) for w in copy.weights]
    if shapes == copy_shapes:
        return
    differences = [(w.path, a, b) for w, a, b in zip(layer.weights, shapes, copy_shapes) if a != b]
    what = (
        f"{differences[0][0]} has shape {differences[0][1]} in the backbone and {differences[0][2]} in the copy"
        if differences
        else f"{len(shapes)} weights in the backbone and {len(copy_shapes)} in the copy"
    )
    raise ValueError(
        f"Fine-tuning copies the backbone {layer.name!r} from its config, but the "
        f"copy differs ({what}): the backbone's `get_config()` leaves out a "
        "constructor argument (keras-hub 0.32's `EfficientNetBackbone` leaves out "
        "`num_features`). Keep that argument at its default, fix `get_config`, or "
        "use `mode='linear_probe'`."
    )


@contextlib.contextmanager
def _global_random_state_kept():
    """Restores the global random generators that adaptation draws from.

    Training the heads draws from them (on torch every `DataLoader` draws a
    seed from torch's generator, even without shuffling; new layers draw
    default seeds from Python's): without this, the pre-training run would
    shuffle its data differently because the evaluation ran.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch = sys.modules.get("torch") if keras.backend.backend() == "torch" else None
    torch_state = torch.get_rng_state() if torch is not None else None
    generator = compat.global_seed_generator()
    keras_state = None if generator is None else ops.copy(generator.state.value)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if torch_state is not None:
            torch.set_rng_state(torch_state)
        if keras_state is not None:
            generator.state.assign(keras_state)


def _metric_value(logs):
    (value,) = [v for k, v in logs.items() if k != "loss"]
    return float(value)
