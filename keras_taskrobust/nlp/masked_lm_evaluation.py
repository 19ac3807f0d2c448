"""Per-group masked-LM loss and accuracy on held-out text."""

import keras
import numpy as np
import tensorflow as tf

from keras_taskrobust.models import MinimaxModel
from keras_taskrobust.recipes.report import summarize


def masked_eval_set(preprocessor, texts, seed=0, repeats=1):
    """A fixed masked evaluation set: the same masks for every model compared.

    Tokenizes `texts` with `preprocessor` (a `PosMaskedLMPreprocessor`) and
    masks them `repeats` times, each time with new masks, from the seed
    `seed` (TensorFlow's global seed is set: masking draws from it).

    Returns:
        `(x, y, sample_weight)` as NumPy arrays, `x` a dict that holds the
        group ids under `preprocessor.task_key`.
    """
    tokens = preprocessor.tokenize(list(texts))
    tf.random.set_seed(seed)
    parts = []
    for _ in range(repeats):
        x, y, w = preprocessor(tokens)
        parts.append((keras.tree.map_structure(keras.ops.convert_to_numpy, x), keras.ops.convert_to_numpy(y),
                      keras.ops.convert_to_numpy(w)))
    x = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    return x, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def masked_lm_group_metrics(model, data, group_names, task_key="task_id", batch_size=64):
    """Masked-LM loss and accuracy of every group, and their mean and worst.

    Runs the masked LM on every batch of `data` and scores each masked
    token (sample weight > 0) against its label: cross-entropy and top-1
    accuracy, summed per group of `x[task_key]`. Logits never leave a batch,
    so a large vocabulary costs no memory.

    Args:
        model: a `MinimaxModel` around a masked LM, or the masked LM itself
            (e.g. `keras_hub.models.BertMaskedLM`): a model whose output is
            `[batch, mask_selection_length, vocabulary]` logits.
        data: `(x, y, sample_weight)` NumPy arrays, e.g. from
            `masked_eval_set`.
        group_names: the K group names.
        task_key: the key of `x` with the group ids. Defaults to `"task_id"`.
        batch_size: examples per forward pass. Defaults to 64.

    Returns:
        A dict: `accuracy/<group>`, `loss/<group>`, `count/<group>` for every
        group; `accuracy/mean` and `accuracy/worst` (over the groups that
        have masked tokens), `worst_group`, `loss/mean`, `loss/worst`, and
        `accuracy/all` (over all masked tokens).
    """
    x, y, sample_weight = data
    if task_key not in x:
        raise KeyError(f"The evaluation data has no x[{task_key!r}] with the group ids; it has {sorted(x)}.")
    net = model.model if isinstance(model, MinimaxModel) else model
    inputs = {k: v for k, v in x.items() if k != task_key}
    ids = np.asarray(x[task_key])
    k = len(group_names)
    loss_sums, correct, counts = np.zeros(k), np.zeros(k), np.zeros(k)
    n = len(y)
    for start in range(0, n, batch_size):
        s = slice(start, start + batch_size)
        size = len(y[s])
        batch = {key: value[s] for key, value in inputs.items()}
        if size < batch_size and n > batch_size:
            # Pad the last batch: a new shape would compile the model again.
            batch = {key: np.concatenate([v, np.repeat(v[-1:], batch_size - size, 0)]) for key, v in batch.items()}
        logits = np.asarray(keras.ops.convert_to_numpy(net.predict_on_batch(batch)), "float64")[:size]
        shifted = logits - logits.max(-1, keepdims=True)
        label = np.asarray(y[s])[..., None]
        losses = np.log(np.exp(shifted).sum(-1)) - np.take_along_axis(shifted, label, -1)[..., 0]
        hits = logits.argmax(-1) == label[..., 0]
        weight = np.asarray(sample_weight[s], "float64")
        group = ids[s]
        use = (weight > 0) & (group >= 0) & (group < k)
        loss_sums += np.bincount(group[use], (weight * losses)[use], minlength=k)
        correct += np.bincount(group[use], (weight * hits)[use], minlength=k)
        counts += np.bincount(group[use], weight[use], minlength=k)
    report = {}
    seen = counts > 0
    for g, name in enumerate(group_names):
        report[f"accuracy/{name}"] = float(correct[g] / counts[g]) if seen[g] else float("nan")
        report[f"loss/{name}"] = float(loss_sums[g] / counts[g]) if seen[g] else float("nan")
        report[f"count/{name}"] = int(counts[g])
    accuracies = {name: report[f"accuracy/{name}"] for g, name in enumerate(group_names) if seen[g]}
    if not accuracies:
        raise ValueError("The evaluation data has no masked tokens (all sample weights are 0).")
    summary = summarize(accuracies)
    report["accuracy/mean"] = summary["mean"]
    report["accuracy/worst"] = summary["worst"]
    report["worst_group"] = summary["worst_task"]
    losses = [report[f"loss/{name}"] for name in accuracies]
    report["loss/mean"] = float(np.mean(losses))
    report["loss/worst"] = float(np.max(losses))
    report["accuracy/all"] = float(correct.sum() / counts.sum())
    return report
