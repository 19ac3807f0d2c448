"""Step time of the pos-mlm recipe against plain `BertMaskedLM.fit`.

The recipe's training step: `MinimaxModel` around a tiny `BertMaskedLM` with
`MirrorDescent(ExponentiatedGradient(0.01))`, fed by `tf.data` that masks
pre-tokenized sentences with `PosMaskedLMPreprocessor` (a group id per
masked token). Against it, on the same model config (the recipe's: 2 layers,
hidden 64, sequence 40, batch 32, the packaged 3.9k vocabulary), initial
weights, optimizer and sentences:

- `plain`: `BertMaskedLM.fit` fed by keras-hub's own
  `BertMaskedLMPreprocessor` mapped over the raw strings in `tf.data` (the
  usual keras-hub pipeline);
- `plain, same batches`: `BertMaskedLM.fit` on the recipe's masked batches
  with the task ids dropped (the model-side cost only).

Each backend's default jit settings. The three fits alternate for `--rounds`
rounds; each runs `1 + --epochs` epochs of `--steps` steps, the first
(compilation) dropped; a sample is an epoch's wall time / steps (see
`harness.py`). Reported: medians and the median per-round ratios.

Usage:

    OMP_NUM_THREADS=1 python benchmarks/pos_mlm_step_time.py --all
"""

import statistics
import time

import harness

OPTIONS = {
    "rounds": (3, "alternations of the three fits", 0), "epochs": (2, "timed epochs per fit"),
    "steps": (40, "steps per epoch", 2),
}



def measure_backend(rounds, epochs, steps):
    import keras
    import keras_hub
    import tensorflow as tf

    from keras_taskrobust import MinimaxModel
    from keras_taskrobust import nlp
    from keras_taskrobust.callbacks import MirrorDescent
    from keras_taskrobust.rules import ExponentiatedGradient

    batch, length = 32, 40
    tokenizer = nlp.python_docs_tokenizer()
    texts = nlp.load_python_docs("train")["text"][: batch * steps]
    ours = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=length, mask_selection_length=8)
    theirs = keras_hub.models.BertMaskedLMPreprocessor(tokenizer, sequence_length=length, mask_selection_length=8)
    tokens = ours.tokenize(texts)
    recipe_data = tf.data.Dataset.from_tensor_slices(tokens).batch(batch, drop_remainder=True).map(ours).prefetch(2)
    same_batches = recipe_data.map(lambda x, y, w: ({k: v for k, v in x.items() if k != "task_id"}, y, w))
    keras_hub_data = tf.data.Dataset.from_tensor_slices(texts).batch(batch, drop_remainder=True).map(theirs).prefetch(2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def new_mlm():
        keras.utils.set_random_seed(0)
        return nlp.tiny_bert_masked_lm(tokenizer.vocabulary_size(), sequence_length=length)

    plain = new_mlm()
    plain.compile(optimizer="adam", loss=loss, weighted_metrics=None)
    plain_same = new_mlm()
    plain_same.compile(optimizer="adam", loss=loss, weighted_metrics=None)
    recipe = MinimaxModel(new_mlm(), task_names=ours.group_names)
    recipe.compile(optimizer="adam", loss=loss)

    def step_times(model, data, callbacks=()):
        starts, times = [], []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
            on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - starts[-1]),
        )
        model.fit(data, epochs=1 + epochs, verbose=0, callbacks=[*callbacks, timer], shuffle=False)
        return [t / steps for t in times[1:]]

    samples, medians = harness.alternate({
        "plain": lambda: step_times(plain, keras_hub_data),
        "plain_same": lambda: step_times(plain_same, same_batches),
        "recipe": lambda: step_times(recipe, recipe_data, [MirrorDescent(ExponentiatedGradient(0.01))]),
    }, rounds)
    round_ratios = [(r / p, r / q) for p, q, r in zip(medians["plain"], medians["plain_same"], medians["recipe"])]
    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    yield {
        "backend": keras.backend.backend(), "plain_ms": ms["plain"], "plain_same_ms": ms["plain_same"],
        "recipe_ms": ms["recipe"], "ratio": harness.ratio(medians, "recipe", "plain"),
        "ratio_same": harness.ratio(medians, "recipe", "plain_same"), "samples": len(samples["recipe"]),
        "round_ratios": round_ratios,
    }


def markdown_table(rows):
    lines = [
        "| backend | plain `BertMaskedLM.fit` (keras-hub preprocessor) ms/step | plain, same batches ms/step "
        "| recipe (MinimaxModel + EG) ms/step | recipe / plain | recipe / plain, same batches "
        "| per-round ratios vs plain (min-max) | vs same batches (min-max) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['plain_ms']:.1f} | {r['plain_same_ms']:.1f} | {r['recipe_ms']:.1f} "
            f"| {r['ratio']:.2f} | {r['ratio_same']:.2f} "
            f"| {min(a for a, _ in r['round_ratios']):.2f}-{max(a for a, _ in r['round_ratios']):.2f} "
            f"| {min(b for _, b in r['round_ratios']):.2f}-{max(b for _, b in r['round_ratios']):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(__file__, __doc__.splitlines()[0], OPTIONS, measure_backend, markdown_table)
