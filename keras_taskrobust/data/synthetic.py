"""A controlled synthetic multitask problem for testing task weighting."""

import numpy as np


def synthetic_tasks(
    num_tasks=6,
    examples_per_task=500,
    noisy_tasks=(),
    duplicate_of=None,
    num_features=16,
    test_examples_per_task=500,
    seed=0,
):
    """Binary classification tasks that share inputs but not labels.

    Task `k` labels a Gaussian input `x` by the sign of `(x . u_k)(x . v_k)`,
    a quadratic boundary that a network must learn features for, with random
    directions `u_k`, `v_k`. All tasks compete for one network's capacity.
    The three failure cases of plain DRO come from three settings:

    - `noisy_tasks`: these tasks get coin-flip training *and* test labels: an
      irreducible loss (`log 2`) that no model can reduce;
    - `duplicate_of`: a dict `{k: j}` making task `k` a copy of task `j` (the
      same directions, fresh examples);
    - `examples_per_task`: an int, or one training size per task.

    Every example carries its task id; the model input is the features and
    the one-hot task id, so one network serves all tasks.

    Args:
        num_tasks: K. Defaults to 6.
        examples_per_task: training examples per task, an int or a list of K.
            Defaults to 500.
        noisy_tasks: ids of tasks with random labels. Defaults to `()`.
        duplicate_of: `{task: task_it_copies}`. Defaults to `None`.
        num_features: dimension of `x`. Defaults to 16.
        test_examples_per_task: held-out examples per task. Defaults to 500.
        seed: the generation is deterministic given the seed. Defaults to 0.

    Returns:
        `(train, test)`, each a tuple `(x, y)` with `x` a dict of
        `"features"` (float32 `[n, num_features]`), `"task"` (float32 one-hot
        `[n, K]`) and `"task_id"` (int32 `[n]`), and `y` int32 labels `[n]`.
        The training examples are shuffled.

    Example:

    >>> (x, y), (x_test, y_test) = synthetic_tasks(num_tasks=3, noisy_tasks=[2])
    >>> x["features"].shape, sorted(set(x["task_id"].tolist()))
    ((1500, 16), [0, 1, 2])
    """
    rng = np.random.default_rng(seed)
    sizes = np.broadcast_to(np.asarray(examples_per_task), (num_tasks,))
    directions = rng.normal(size=(num_tasks, 2, num_features))
    for task, source in (duplicate_of or {}).items():
        directions[task] = directions[source]
    noisy = set(noisy_tasks)

    def split(counts):
        ids = np.repeat(np.arange(num_tasks), counts).astype("int32")
        features = rng.normal(size=(len(ids), num_features)).astype("float32")
        u, v = directions[ids, 0], directions[ids, 1]
        labels = ((features * u).sum(1) * (features * v).sum(1) > 0).astype("int32")
        coin = rng.integers(0, 2, size=len(ids)).astype("int32")
        labels = np.where(np.isin(ids, list(noisy)), coin, labels)
        return ids, features, labels

    def pack(ids, features, labels, order):
        x = {
            "features": features[order],
            "task": np.eye(num_tasks, dtype="float32")[ids[order]],
            "task_id": ids[order],
        }
        return x, labels[order]

    ids, features, labels = split(sizes)
    train = pack(ids, features, labels, rng.permutation(len(ids)))
    ids, features, labels = split(np.full(num_tasks, test_examples_per_task))
    test = pack(ids, features, labels, np.arange(len(ids)))
    return train, test
