"""One tf.data training stream from several tasks, with the task id attached."""

import numpy as np
import tensorflow as tf

SAMPLINGS = ("proportional", "uniform", "temperature")


def task_probabilities(sizes, sampling="proportional", temperature=2.0):
    """The probability of drawing each task, from the tasks' sizes.

    - `"proportional"`: `p_k = n_k / sum_j n_j`, the natural mix;
    - `"uniform"`: `p_k = 1 / K`, whatever the sizes;
    - `"temperature"`: `p_k` proportional to `n_k ** (1 / T)`, as in
      multilingual pre-training: `T = 1` is proportional, `T -> infinity`
      uniform; in between, small tasks are up-sampled.

    Args:
        sizes: the number of examples of each task, a list of K numbers.
        sampling: one of `"proportional"`, `"uniform"`, `"temperature"`.
            Defaults to `"proportional"`.
        temperature: `T` of the `"temperature"` sampling. Defaults to 2.

    Returns:
        A NumPy array of K probabilities that sum to 1.

    Example:

    >>> task_probabilities([900, 100], "temperature", temperature=2.0).round(3)
    array([0.75, 0.25])
    """
    sizes = np.asarray(sizes, dtype="float64")
    if sizes.ndim != 1 or not len(sizes) or np.any(sizes <= 0):
        raise ValueError(f"Task sizes must be a non-empty list of positive numbers; got {sizes.tolist()}.")
    if sampling == "proportional":
        p = sizes
    elif sampling == "uniform":
        p = np.ones_like(sizes)
    elif sampling == "temperature":
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive; got {temperature}.")
        p = sizes ** (1.0 / temperature)
    else:
        raise ValueError(f"Unknown sampling {sampling!r}; use one of {list(SAMPLINGS)}.")
    return p / p.sum()


def mix_tasks(
    tasks,
    batch_size,
    sampling="proportional",
    temperature=2.0,
    stratified=False,
    steps_per_epoch=None,
    task_key="task_id",
    features_key="features",
    label_key="label",
    shuffle_buffer=10_000,
    seed=None,
    augmentation=None,
):
    """A batched `tf.data.Dataset` mixing several tasks, for `MinimaxModel`.

    Every task's examples are shuffled and repeated, and batches are drawn
    from the tasks with the probabilities of `task_probabilities`. Each
    example's `x` becomes a dict holding the task id under `task_key` (the
    form `MinimaxModel` reads): an array `x` goes under `features_key`, a
    dict `x` keeps its keys. The ids are the positions of the tasks in
    `tasks` (its keys' order).

    With `stratified=True` every batch holds every task, with a fixed number
    of examples per task (the probabilities times `batch_size`, rounded by
    largest remainder, at least one each), so that every task's loss is
    estimated at every step. Otherwise each example's task is drawn at
    random.

    A task is given as:

    - a tuple `(x, y)` or `(x, y, sample_weight)` of NumPy arrays (`x` may
      be a dict of arrays);
    - a `tf.data.Dataset` of unbatched such tuples;
    - a `tf.data.Dataset` of dicts holding the label under `label_key`, as a
      TFDS split (`tfds.load(name, split=...)`) is.

    Args:
        tasks: a dict `{task_name: data}`.
        batch_size: examples per batch.
        sampling: `"proportional"`, `"uniform"` or `"temperature"` (see
            `task_probabilities`). Defaults to `"proportional"`.
        temperature: `T` of the temperature sampling. Defaults to 2.
        stratified: whether every batch holds every task. Defaults to
            `False`.
        steps_per_epoch: batches per pass over the dataset. Defaults to the
            total number of examples divided by `batch_size`.
        task_key: the key of the task id in `x`. Defaults to `"task_id"`.
        features_key: the key of an array `x` in the new dict `x`, and
            the entry `augmentation` applies to. Defaults to `"features"`.
        label_key: the key of the labels in dict examples. Defaults to
            `"label"`.
        shuffle_buffer: size of each task's shuffle buffer. Defaults to
            10000.
        seed: seed of the shuffling and the sampling. Defaults to `None`.
        augmentation: a Keras layer applied, in training mode, to each
            batch's `x[features_key]` (the images), or `None`. Keras 3's
            image preprocessing layers and KerasCV's augmentation layers
            (`keras_cv.layers.RandAugment`, `RandomFlip`, ...) work here on
            every backend; KerasCV's cannot run inside a JAX model, so
            augmentation belongs in `tf.data`. Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `steps_per_epoch` batches `(x, y)` (or
        `(x, y, sample_weight)`), prefetched. Each pass over it draws new
        batches.

    Example:

    >>> import numpy as np
    >>> tasks = {"big": (np.zeros((90, 2)), np.zeros(90)),
    ...          "small": (np.ones((10, 2)), np.ones(10))}
    >>> ds = mix_tasks(tasks, batch_size=10, sampling="uniform", seed=0)
    >>> x, y = next(iter(ds))
    >>> sorted(x), x["features"].shape
    (['features', 'task_id'], TensorShape([10, 2]))
    """
    if not isinstance(tasks, dict) or not tasks:
        raise TypeError(f"`tasks` must be a non-empty dict {{task_name: data}}; got {type(tasks).__name__}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size}.")
    if augmentation is not None and not callable(augmentation):
        raise TypeError(
            "`augmentation` must be a Keras layer (e.g. `keras.layers.RandomFlip()` or "
            f"`keras_cv.layers.RandAugment(value_range=(0, 255))`) or None; got {augmentation!r}."
        )
    datasets = [_task_dataset(name, data, k, task_key, features_key, label_key) for k, (name, data) in enumerate(tasks.items())]
    sizes = [_size(name, ds) for name, ds in zip(tasks, datasets)]
    probabilities = task_probabilities(sizes, sampling, temperature)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, sum(sizes) // batch_size)
    streams = [
        ds.shuffle(min(shuffle_buffer, size), seed=None if seed is None else seed + k).repeat()
        for k, (ds, size) in enumerate(zip(datasets, sizes))
    ]
    if stratified:
        counts = stratified_counts(probabilities, batch_size, names=list(tasks))
        batches = [s.batch(int(c), drop_remainder=True) for s, c in zip(streams, counts)]
        mixed = tf.data.Dataset.zip(tuple(batches)).map(
            lambda *parts: tf.nest.map_structure(lambda *t: tf.concat(t, axis=0), *parts),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        mixed = tf.data.Dataset.sample_from_datasets(
            streams, weights=probabilities.tolist(), seed=seed, rerandomize_each_iteration=True
        ).batch(batch_size, drop_remainder=True)
    mixed = mixed.take(steps_per_epoch)
    if augmentation is not None:
        mixed = _augmented(mixed, augmentation, features_key)
    return mixed.prefetch(tf.data.AUTOTUNE)


def _augmented(dataset, augmentation, features_key):
    """`dataset` with `augmentation` applied to each batch's `x[features_key]`."""
    x_spec = dataset.element_spec[0]
    if features_key not in x_spec:
        raise ValueError(
            f"`augmentation` is applied to x[{features_key!r}], but the examples' x holds "
            f"{sorted(x_spec)}: pass `features_key=` naming the images."
        )

    def augment(x, *rest):
        return ({**x, features_key: augmentation(x[features_key], training=True)}, *rest)

    # Sequential: the layer's random state advances once per batch, in
    # order, so that a seed gives the same augmentations every run.
    return dataset.map(augment)


def stratified_counts(probabilities, batch_size, names=None):
    """Examples of each task in a stratified batch: at least one each.

    The counts are `probabilities * batch_size` rounded by largest remainder
    after giving every task one example, so they sum to `batch_size`.
    """
    p = np.asarray(probabilities, dtype="float64")
    k = len(p)
    if batch_size < k:
        raise ValueError(
            f"A stratified batch holds every task: `batch_size` ({batch_size}) must be at "
            f"least the number of tasks ({k}{': ' + ', '.join(names) if names else ''})."
        )
    counts = np.ones(k, dtype="int64")
    share = p * (batch_size - k)
    counts += np.floor(share).astype("int64")
    remainder = share - np.floor(share)
    for i in np.argsort(-remainder, kind="stable")[: batch_size - counts.sum()]:
        counts[i] += 1
    return counts


def with_task_ids(dataset, task_fn, num_tasks=None, task_key="task_id", features_key="features", label_key="label"):
    """Splits one labelled dataset into tasks by a function of the example.

    Args:
        dataset: a `tf.data.Dataset` of `(x, y)` tuples or of dicts holding
            the label under `label_key` (a TFDS split), batched or not.
        task_fn: `fn(x, y) -> task id`, written with TensorFlow ops (it runs
            in the tf.data graph), e.g. `lambda x, y: y // 5` to make 20
            tasks of 5 classes out of CIFAR-100's fine labels, or a lookup
            `lambda x, y: tf.gather(superclass_of, y)`.
        num_tasks: K. When given, ids outside `[0, K)` fail the pipeline
            with an error naming the range.
        task_key: the key of the task id in `x`. Defaults to `"task_id"`.
        features_key: the key of an array `x` in the new dict `x`. Defaults
            to `"features"`.
        label_key: the key of the labels in dict examples. Defaults to
            `"label"`.

    Returns:
        The dataset with `x` a dict that holds the task id (int32).

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((6, 2)), np.arange(6)))
    >>> ds = with_task_ids(ds, lambda x, y: y // 2, num_tasks=3)
    >>> [int(x["task_id"]) for x, y in ds]
    [0, 0, 1, 1, 2, 2]
    """

    def attach(*element):
        x, rest = _split_element(element, label_key)
        ids = tf.cast(task_fn(x, rest[0]), tf.int32)
        if num_tasks is not None:
            message = f"task_fn gave task ids outside [0, {num_tasks})"
            checks = [
                tf.debugging.assert_less(ids, num_tasks, message=message),
                tf.debugging.assert_non_negative(ids, message=message),
            ]
            with tf.control_dependencies(checks):
                ids = tf.identity(ids)
        return (_with_key(x, task_key, ids, features_key), *rest)

    return dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE)


def _task_dataset(name, data, task_id, task_key, features_key, label_key):
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        if any(s.shape.rank is None for s in tf.nest.flatten(first)):
            raise ValueError(f"Task {name!r}: the dataset's element shapes are unknown.")
        dataset = data
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        dataset = tf.data.Dataset.from_tensor_slices(tuple(data))
    else:
        raise TypeError(
            f"Task {name!r}: give its data as a tuple (x, y) or (x, y, sample_weight) of "
            f"arrays, or as an unbatched tf.data.Dataset (a TFDS split); got {type(data).__name__}."
        )

    def attach(*element):
        x, rest = _split_element(element, label_key, name)
        ids = tf.fill(tf.shape(tf.nest.flatten(x)[0])[:0], tf.constant(task_id, tf.int32))
        return (_with_key(x, task_key, ids, features_key), *rest)

    return dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE)


def _split_element(element, label_key, name=None):
    if len(element) == 1:
        (element,) = element
        if not isinstance(element, dict) or label_key not in element:
            where = f"Task {name!r}: " if name else ""
            keys = sorted(element) if isinstance(element, dict) else type(element).__name__
            raise ValueError(
                f"{where}examples must be (x, y) tuples or dicts holding the labels under "
                f"{label_key!r}; got {keys}. Pass `label_key=` or `as_supervised=True` to tfds.load."
            )
        x = {k: v for k, v in element.items() if k != label_key}
        if len(x) == 1:
            x = next(iter(x.values()))
        return x, (element[label_key],)
    return element[0], tuple(element[1:])


def _with_key(x, task_key, ids, features_key):
    if isinstance(x, dict):
        if task_key in x:
            raise ValueError(f"The examples already hold a {task_key!r} entry; choose another `task_key`.")
        return {**x, task_key: ids}
    return {features_key: x, task_key: ids}


def _size(name, dataset):
    size = int(dataset.cardinality())
    if size < 0:
        raise ValueError(
            f"Task {name!r}: its dataset has an unknown or infinite number of examples. "
            "Give a finite dataset (e.g. `dataset.take(n)`) or NumPy arrays."
        )
    if size == 0:
        raise ValueError(f"Task {name!r} has no examples.")
    return size
