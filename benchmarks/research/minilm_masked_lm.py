"""Why continued pre-training of MiniLM scored near-zero held-out masked-LM accuracy.

all-MiniLM-L6-v2 is a sentence-transformers checkpoint: it has no masked-LM
head. keras-hub's `BertMaskedLM` ties the head's output projection to the
pre-trained token embeddings, but its transform (a dense layer with GELU,
then a layer norm) starts random. This script measures, on the `pos-mlm`
recipe's data (MiniLM's own tokenizer, sequence 40, the recipe's masking),
the held-out masked-LM accuracy of:

- `random head`: keras-hub's head as built (what the recipe used);
- `pass-through head`: the transform started as the identity
  (`nlp.pass_through_masked_lm_head`), so the pre-trained encoder's output
  is scored against the tied embeddings from the first step;

before training and after `--steps` steps of the recipe's uniform
`MinimaxModel` fit, at a few learning rates (`--settings`). It first checks
the vocabulary: mask token id, vocabulary sizes, and a few decoded labels.

Usage (one backend, one seed; each setting took 6-13 minutes on 2 heavily shared cores):

    KERAS_BACKEND=jax HF_HUB_OFFLINE=1 python benchmarks/research/minilm_masked_lm.py \
        --steps 40 --train-sentences 1280 --eval-sentences 256
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_taskrobust import MinimaxModel  # noqa: E402
from keras_taskrobust import nlp  # noqa: E402

# name: (head initialisation, learning rate, train the backbone)
SETTINGS = {
    "random-5e-5": ("random", 5e-5, True),
    "random-1e-3-head-only": ("random", 1e-3, False),
    "random-1e-4": ("random", 1e-4, True),
    "pass-through-5e-5": ("pass-through", 5e-5, True),
    "pass-through-1e-4": ("pass-through", 1e-4, True),
}


def build(preset, head):
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    mlm = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    if head == "pass-through":
        nlp.pass_through_masked_lm_head(mlm)
    return mlm


def accuracy(mlm, evaluation, groups):
    metrics = nlp.masked_lm_group_metrics(mlm, evaluation, groups)
    return {"all": metrics["accuracy/all"], "mean": metrics["accuracy/mean"], "worst": metrics["accuracy/worst"],
            "loss": metrics["loss/mean"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-sentences", type=int, default=1280)
    parser.add_argument("--eval-sentences", type=int, default=256)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    preset = nlp.minilm_preset()
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=40, mask_selection_length=8)
    groups = pre.group_names
    train = nlp.load_python_docs("train")["text"][: args.train_sentences]
    evaluation = nlp.masked_eval_set(pre, nlp.load_python_docs("held_out")["text"][: args.eval_sentences], seed=args.seed)
    x, y, w = evaluation
    probe = build(preset, "random")
    print(f"backend {keras.backend.backend()}; tokenizer vocabulary {tokenizer.vocabulary_size()}, "
          f"backbone vocabulary {probe.backbone.vocabulary_size}; mask token {tokenizer.mask_token_id} "
          f"= {tokenizer.id_to_token(tokenizer.mask_token_id)!r}; masked tokens {int((w > 0).sum())}")
    row = 0
    masked = [tokenizer.id_to_token(int(t)) for t in y[row][w[row] > 0]]
    print("sentence 0:", tokenizer.detokenize(x["token_ids"][row][x["padding_mask"][row] > 0]))
    print("  its labels:", masked, "; inputs at the masked positions:",
          [tokenizer.id_to_token(int(x["token_ids"][row][p])) for p in x["mask_positions"][row][w[row] > 0]])
    tied = probe.get_layer("mlm_head").token_embedding is probe.backbone.token_embedding
    print(f"head tied to the token embeddings: {tied}")
    del probe

    tokens = pre.tokenize(train)
    print("| setting | steps | learning rate | backbone trained | accuracy (all tokens) | mean of groups | worst group | mean group loss | fit seconds |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    zero_shot_done = set()
    for name in args.settings.split(","):
        head, learning_rate, train_backbone = SETTINGS[name]
        keras.utils.set_random_seed(args.seed)
        mlm = build(preset, head)
        if head not in zero_shot_done:
            zero_shot_done.add(head)
            a = accuracy(mlm, evaluation, groups)
            print(f"| {head} head, zero-shot | 0 | - | - | {a['all']:.3f} | {a['mean']:.3f} | {a['worst']:.3f} | "
                  f"{a['loss']:.2f} | - |", flush=True)
        mlm.backbone.trainable = train_backbone
        model = MinimaxModel(mlm, task_names=groups)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        stream = (tf.data.Dataset.from_tensor_slices(tokens).shuffle(len(tokens["token_ids"]), seed=args.seed)
                  .repeat().batch(args.batch_size, drop_remainder=True).map(pre).prefetch(2))
        start = time.perf_counter()
        model.fit(stream, epochs=1, steps_per_epoch=args.steps, verbose=0)
        seconds = time.perf_counter() - start
        a = accuracy(mlm, evaluation, groups)
        print(f"| {name} | {args.steps} | {learning_rate:g} | {train_backbone} | {a['all']:.3f} | {a['mean']:.3f} | "
              f"{a['worst']:.3f} | {a['loss']:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
