"""One downstream task on which a backbone's transfer is measured."""

import re
import sys

import keras
import numpy as np

from keras_taskrobust import _keras_compat as compat

MODES = ("linear_probe", "finetune")
_DEFAULT_EPOCHS = {"linear_probe": 10, "finetune": 3}
_DEFAULT_LEARNING_RATE = {"linear_probe": 0.1, "finetune": 1e-4}


class DownstreamTask:
    """A downstream task: data, a head, a metric and an adaptation mode.

    `keras_taskrobust.downstream.evaluate_transfer` (and, during `fit`,
    `keras_taskrobust.callbacks.DownstreamSuite`) adapts a backbone to each
    of its tasks and reports the metric. A task is adapted in one of two
    modes:

    - `"linear_probe"`: the backbone is frozen. Its features are extracted
      once per evaluation (inference mode, batched), standardised with the
      training features' mean and standard deviation, and the head alone is
      trained on them. Fast: the backbone runs forward once per example.
    - `"finetune"`: a copy of the backbone (built from its config, weights
      copied as NumPy arrays) is trained together with the head. The
      pre-training model is never touched.

    At every evaluation the head is trained from the same starting point,
    for a fixed number of epochs, on the examples in the same seeded order,
    so that evaluations differ only by the backbone.

    Data come as a tuple `(x, y)` or `(x, y, sample_weight)` of NumPy
    arrays (`x` may be a dict of arrays, e.g. keras-hub's `token_ids`,
    `segment_ids` and `padding_mask`), as a dict of arrays that holds the
    labels under `label_key`, or as a `tf.data.Dataset` of such tuples or
    dicts -- a TFDS split (`tfds.load(name, split=...)`) included. A dataset
    whose elements are single examples (as TFDS returns them) is batched
    with `batch_size`; a batched dataset is used as it is (its order,
    shuffling and batch size). Python generators cannot be used: they can
    be read only once, and the task is read at every evaluation.

    Args:
        name: the task's name, used in the log keys (`downstream/<name>`).
        train_data: the data the head is trained on (see above).
        eval_data: the data the metric is measured on (see above).
        num_classes: for a classification task: the number of classes. The
            head is then softmax regression (a `Dense(num_classes)` layer
            giving logits), the loss sparse categorical crossentropy on
            integer labels and the metric accuracy, unless given. The
            head starts from zero weights.
        head: for any other head: a function with no arguments that returns
            a new Keras layer (or model) mapping the features to the
            predictions, e.g. `lambda: keras.layers.Dense(1)` for
            regression. Give either `num_classes` or `head`.
        loss: the loss the head is trained with. Required with `head`.
            Defaults to `SparseCategoricalCrossentropy(from_logits=True)`
            with `num_classes`.
        metric: the metric reported for the task: a name (`"accuracy"`,
            `"mae"`), a `keras.metrics.Metric` or a function
            `fn(y_true, y_pred)`. Required with `head`. Defaults to
            `"accuracy"` with `num_classes`.
        higher_is_better: whether larger values of the metric are better.
            Defaults to what the metric says (accuracy: `True`, an error
            such as `"mae"`: `False`); required for a metric function
            Keras does not know.
        mode: `"linear_probe"` or `"finetune"`. Defaults to
            `"linear_probe"`.
        epochs: number of training epochs per evaluation. Defaults to 10
            for a linear probe and 3 for fine-tuning.
        batch_size: batch size of the examples given to the backbone
            (feature extraction and fine-tuning), for arrays and unbatched
            datasets. Defaults to 32.
        head_batch_size: batch size of a linear probe's training on the
            extracted features. The head is small and the features are in
            memory: large batches make few, cheap steps. Defaults to 256.
        optimizer: a `keras.optimizers.Optimizer` (copied from its config
            for every training run, so its state never carries over), a
            name or a config dict. Defaults to `Adam(0.1)` for a linear
            probe (standardised features, a convex problem) and
            `Adam(1e-4)` for fine-tuning.
        label_key: the key that holds the labels when the examples are
            dicts (TFDS splits use `"label"`). Defaults to `"label"`.
        seed: seed of the order of the training examples (arrays and
            extracted features). Defaults to 0.

    Example:

    >>> import numpy as np, keras
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> sentiment = DownstreamTask(
    ...     "sentiment", (x[:48], (x[:48, 0] > 0.5).astype("int32")),
    ...     (x[48:], (x[48:, 0] > 0.5).astype("int32")), num_classes=2)
    >>> level = DownstreamTask(
    ...     "level", (x[:48], x[:48, :1]), (x[48:], x[48:, :1]),
    ...     head=lambda: keras.layers.Dense(1), loss="mse", metric="mae")
    >>> sentiment.higher_is_better, level.higher_is_better
    (True, False)
    """

    def __init__(
        self,
        name,
        train_data,
        eval_data,
        num_classes=None,
        head=None,
        loss=None,
        metric=None,
        higher_is_better=None,
        mode="linear_probe",
        epochs=None,
        batch_size=32,
        head_batch_size=256,
        optimizer=None,
        label_key="label",
        seed=0,
    ):
        # === Config ===
        if not isinstance(name, str) or not name:
            raise ValueError(f"A DownstreamTask needs a non-empty string `name`; got {name!r}.")
        if mode not in MODES:
            raise ValueError(
                f"Unknown mode {mode!r} for DownstreamTask {name!r}. Use "
                "'linear_probe' (a head trained on frozen features) or "
                "'finetune' (a copy of the backbone trained with the head)."
            )
        if (num_classes is None) == (head is None):
            raise ValueError(
                f"DownstreamTask {name!r} needs a head: give exactly one of "
                "`num_classes=N` (softmax regression on the features) or "
                "`head=lambda: keras.layers.Dense(...)` (any other head, e.g. "
                "regression, with its `loss` and `metric`)."
            )
        if num_classes is not None and (int(num_classes) != num_classes or num_classes < 2):
            raise ValueError(f"DownstreamTask {name!r}: `num_classes` must be an integer >= 2; got {num_classes}.")
        if head is not None and not callable(head):
            raise TypeError(
                f"DownstreamTask {name!r}: `head` must be a function with no "
                "arguments that returns a new layer, e.g. "
                f"`head=lambda: keras.layers.Dense(1)`; got {head!r}."
            )
        if head is not None and (loss is None or metric is None):
            raise ValueError(
                f"DownstreamTask {name!r} has a custom `head`: give its `loss` "
                "and `metric` too, e.g. `loss='mse', metric='mae'`."
            )
        if epochs is not None and (int(epochs) != epochs or epochs < 1):
            raise ValueError(f"DownstreamTask {name!r}: `epochs` must be an integer >= 1; got {epochs}.")
        for arg, value in (("batch_size", batch_size), ("head_batch_size", head_batch_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"DownstreamTask {name!r}: `{arg}` must be an integer >= 1; got {value}.")
        self.name = name
        self.mode = mode
        self.num_classes = None if num_classes is None else int(num_classes)
        self.head = head
        if num_classes is not None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if loss is None else loss
            metric = "accuracy" if metric is None else metric
        self.loss = loss
        self.metric = metric
        self.metric_name = _metric_name(metric)
        if higher_is_better is None:
            higher_is_better = _metric_direction(metric)
            if higher_is_better is None:
                raise ValueError(
                    f"DownstreamTask {name!r}: Keras cannot tell whether "
                    f"higher or lower values of the metric {self.metric_name!r} "
                    "are better. Pass `higher_is_better=True` or `False`."
                )
        self.higher_is_better = bool(higher_is_better)
        self.epochs = int(epochs) if epochs is not None else _DEFAULT_EPOCHS[mode]
        self.batch_size = int(batch_size)
        self.head_batch_size = int(head_batch_size)
        self.optimizer = optimizer
        self.label_key = label_key
        self.seed = int(seed)

        # === Data ===
        self.train_data = _TaskData(train_data, self, "train_data")
        self.eval_data = _TaskData(eval_data, self, "eval_data")

    def build_head(self):
        """Returns a new head layer."""
        if self.num_classes is not None:
            # Softmax regression is convex: start it at zero, its canonical
            # and seed-free starting point.
            return keras.layers.Dense(self.num_classes, kernel_initializer="zeros", name=f"{self.name}_head")
        head = self.head()
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"DownstreamTask {self.name!r}: `head()` must return a Keras "
                f"layer or model; it returned {type(head).__name__}."
            )
        return head

    def new_optimizer(self):
        """Returns a fresh optimizer with no state."""
        optimizer = self.optimizer
        if optimizer is None:
            return keras.optimizers.Adam(_DEFAULT_LEARNING_RATE[self.mode])
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return optimizer.__class__.from_config(optimizer.get_config())
        return keras.optimizers.get(optimizer)

    def new_metric(self):
        """Returns the metric, a fresh copy if it is a `Metric` object."""
        metric = self.metric
        if isinstance(metric, keras.metrics.Metric):
            try:
                return metric.__class__.from_config(metric.get_config())
            except (TypeError, ValueError, NotImplementedError):
                return metric
        return metric

    def __repr__(self):
        return f"DownstreamTask({self.name!r}, mode={self.mode!r}, metric={self.metric_name!r})"


class _TaskData:
    """A task's data as arrays or as a batched `tf.data.Dataset` of tuples.

    Attributes:
        arrays: `(x, y, sample_weight)` of NumPy arrays (`x` possibly a
            dict, `sample_weight` possibly `None`), or `None`.
        dataset: a batched `tf.data.Dataset` of `(x, y)` or
            `(x, y, sample_weight)`, or `None`.
    """

    def __init__(self, data, task, where):
        self.arrays = None
        self.dataset = None
        self.batch_size = task.batch_size
        self.description = f"`{where}` of DownstreamTask {task.name!r}"
        no_labels = ValueError(
            f"DownstreamTask {task.name!r}: `{where}` has no labels. Give "
            "`(x, y)` or `(x, y, sample_weight)` (NumPy arrays or a "
            "tf.data.Dataset of such tuples), or dicts that hold the labels "
            f"under `label_key` (now {task.label_key!r}; TFDS splits use "
            "'label', or load them with `as_supervised=True`)."
        )
        if _is_tf_dataset(data):
            self.dataset = _supervised_dataset(data, task, no_labels)
            return
        if isinstance(data, dict):
            if task.label_key not in data:
                raise no_labels
            x = _single_or_dict({k: v for k, v in data.items() if k != task.label_key})
            data = (x, data[task.label_key])
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            if hasattr(data, "__next__"):
                raise TypeError(
                    f"DownstreamTask {task.name!r}: `{where}` is an iterator, "
                    "which can be read only once; the data are read at "
                    "every evaluation. Give arrays or a tf.data.Dataset."
                )
            raise no_labels
        x, y = data[0], data[1]
        sample_weight = data[2] if len(data) == 3 else None
        if y is None:
            raise no_labels
        x = keras.tree.map_structure(np.asarray, x)
        y = np.asarray(y)
        sample_weight = None if sample_weight is None else np.asarray(sample_weight)
        n = len(y)
        lengths = {len(a) for a in keras.tree.flatten(x)}
        if sample_weight is not None:
            lengths.add(len(sample_weight))
        if lengths != {n} or n == 0:
            raise ValueError(
                f"DownstreamTask {task.name!r}: `{where}` has {n} labels but "
                f"inputs/sample weights of lengths {sorted(lengths)}; give one "
                "label per example (and at least one example)."
            )
        if task.num_classes is not None and np.issubdtype(y.dtype, np.integer):
            if y.min() < 0 or y.max() >= task.num_classes:
                raise ValueError(
                    f"DownstreamTask {task.name!r}: `{where}` has labels in "
                    f"[{y.min()}, {y.max()}] but `num_classes={task.num_classes}`; "
                    "labels must be class ids in [0, num_classes)."
                )
        self.arrays = (x, y, sample_weight)

    def batches(self):
        """Yields `(x, y, sample_weight)` batches of NumPy arrays, in order."""
        if self.dataset is not None:
            for batch in self.dataset.as_numpy_iterator():
                yield batch[0], batch[1], batch[2] if len(batch) == 3 else None
            return
        x, y, sample_weight = self.arrays
        for start in range(0, len(y), self.batch_size):
            s = slice(start, start + self.batch_size)
            yield (
                keras.tree.map_structure(lambda a: a[s], x),
                y[s],
                None if sample_weight is None else sample_weight[s],
            )

    def fit_arguments(self, seed=None):
        """Keyword arguments for `Model.fit`, or for `evaluate` without `seed`.

        With `seed`, arrays are put in a seeded order of our own and fit
        with `shuffle=False`: `fit(shuffle=True)` would draw from the
        global random state that the pre-training run also uses.
        """
        if self.dataset is not None:
            # A dataset's order is its own (`fit` would warn about `shuffle`).
            return {"x": self.dataset} if seed is None else {"x": self.dataset, "shuffle": False}
        x, y, sample_weight = self.arrays
        arguments = {"batch_size": self.batch_size}
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(y))
            x = keras.tree.map_structure(lambda a: a[order], x)
            y = y[order]
            sample_weight = None if sample_weight is None else sample_weight[order]
            arguments["shuffle"] = False
        return {"x": x, "y": y, "sample_weight": sample_weight, **arguments}


def _is_tf_dataset(data):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def _supervised_dataset(dataset, task, no_labels):
    """Maps a dataset to batched `(x, y[, sample_weight])` tuples."""
    import tensorflow as tf

    spec = dataset.element_spec
    if isinstance(spec, dict):
        if task.label_key not in spec:
            raise no_labels
        key = task.label_key
        dataset = dataset.map(
            lambda e: (_single_or_dict({k: v for k, v in e.items() if k != key}), e[key]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    elif not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise no_labels
    if not _is_batched(dataset.element_spec):
        dataset = dataset.batch(task.batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _is_batched(spec):
    """Whether every component shares a leading (batch) dimension.

    A TFDS split yields single examples: the label is a scalar, or the
    components' leading sizes differ. A batched dataset's components all
    start with the batch dimension (`None`, or the batch size).
    """
    import tensorflow as tf

    leading = set()
    for component in tf.nest.flatten(spec):
        shape = component.shape
        if shape.rank is None:
            continue
        if shape.rank == 0:
            return False
        leading.add(shape[0])
    return len(leading) <= 1


def _single_or_dict(inputs):
    """A dict of one input becomes that input (as `MinimaxModel` does)."""
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def _metric_name(metric):
    if isinstance(metric, str):
        return metric
    if isinstance(metric, keras.metrics.Metric):
        return metric.name
    return getattr(metric, "__name__", type(metric).__name__)


def _metric_direction(metric):
    """`True` if higher is better, `False` if lower, `None` if unknown.

    Keras metrics carry a direction ("up" or "down"), which
    `EarlyStopping` also reads; a metric function maps to the class of the
    same name (`mean_absolute_error` -> `MeanAbsoluteError`).
    """
    if isinstance(metric, str) and metric.lower() in ("accuracy", "acc"):
        return True
    candidate = metric
    if isinstance(metric, str):
        try:
            candidate = keras.metrics.get(metric)
        except (ValueError, TypeError):
            return None
    if not isinstance(candidate, keras.metrics.Metric) and callable(candidate):
        class_name = re.sub(r"(?:^|_)([a-z0-9])", lambda m: m.group(1).upper(), getattr(candidate, "__name__", ""))
        try:
            candidate = keras.metrics.get(class_name) if class_name else None
        except (ValueError, TypeError):
            return None
    direction = compat.metric_direction(candidate)
    return {"up": True, "down": False}.get(direction)
