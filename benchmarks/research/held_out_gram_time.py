"""Lookahead's held-out `G` on the pos-mlm recipe's signal set: eager against compiled (JAX).

The recipe's tiny BERT (untrained) and its 512 set-aside training sentences,
masked once; `G` for `Lookahead(layers=...)` on the head's transform (the
recipe's default) and on the head with its tied token embeddings. Each is
computed eagerly (`held_out._gram`, what every measurement cost before JAX
compiled it) and compiled (`held_out.task_gram`); medians of `--repeats`
calls after a warm-up call, and the largest difference between the two,
relative to the largest entry of `G`.

Usage: `KERAS_BACKEND=jax python benchmarks/research/held_out_gram_time.py`
"""

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import keras

    from keras_taskrobust import MinimaxModel
    from keras_taskrobust import nlp
    from keras_taskrobust import rules
    from keras_taskrobust.models import held_out

    tokenizer = nlp.python_docs_tokenizer()
    preprocessor = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=40, mask_selection_length=8)
    train = nlp.load_python_docs("train")["text"]
    every = len(train) // 512  # the recipe's set-aside sentences
    signal = nlp.masked_eval_set(preprocessor, [train[i] for i in range(every - 1, every * 512, every)], seed=1)
    keras.utils.set_random_seed(0)
    mlm = nlp.tiny_bert_masked_lm(tokenizer.vocabulary_size(), sequence_length=40)
    model = MinimaxModel(mlm, task_names=preprocessor.group_names)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, w = (keras.tree.map_structure(keras.ops.convert_to_tensor, part) for part in signal)
    for layers in (["intermediate_dense", "intermediate_layer_norm"], ["mlm_head"]):
        rule = rules.Lookahead(layers=layers)
        runs = {"eager": lambda: keras.ops.convert_to_numpy(held_out._gram(model, rule, x, y, w)),
                "compiled": lambda: held_out.task_gram(model, signal, rule)}
        grams, seconds = {}, {}
        for name, run in runs.items():
            grams[name] = run()  # compiles (JAX), warms up
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                samples.append(time.perf_counter() - start)
            seconds[name] = float(np.median(samples))
        difference = np.abs(grams["eager"] - grams["compiled"]).max() / np.abs(grams["eager"]).max()
        print(f"| {keras.backend.backend()} | {layers} | {seconds['eager']:.2f} | {seconds['compiled']:.2f} "
              f"| {seconds['eager'] / seconds['compiled']:.1f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
