"""Probing tasks that need no labels beyond the text: for `DownstreamSuite`."""

import numpy as np

from keras_taskrobust.downstream import DownstreamTask

_BACKBONE_KEYS = ("token_ids", "segment_ids", "padding_mask")


def _backbone_inputs(preprocessor, texts):
    tokens = preprocessor.tokenize(list(texts))
    return {k: tokens[k] for k in _BACKBONE_KEYS}


def _shuffled(words, rng):
    order = rng.permutation(len(words))
    if len(words) > 1 and (order == np.arange(len(words))).all():
        order = np.roll(order, 1)
    return [words[i] for i in order]


def word_order_task(preprocessor, train_texts, eval_texts, seed=0, name="word_order", **kwargs):
    """Is this sentence in its original word order, or shuffled?

    Each sentence appears once, its words (as the tokenizer splits them)
    shuffled with probability 1/2; label 1 means shuffled. Original
    sentences are rebuilt from their words too, so spacing carries no cue.
    A backbone that models syntax separates them; a bag of words cannot.

    Args:
        preprocessor: a `PosMaskedLMPreprocessor` (for its tokenizer).
        train_texts, eval_texts: lists of sentences.
        seed: seed of the shuffles. Defaults to 0.
        name: the task's name. Defaults to `"word_order"`.
        **kwargs: passed to `DownstreamTask` (e.g. `epochs`).

    Returns:
        A linear-probe `DownstreamTask` with 2 classes.
    """
    rng = np.random.default_rng(seed)

    def make(texts):
        sentences, labels = [], []
        for text in texts:
            words = preprocessor.words(text)
            label = int(rng.random() < 0.5)
            sentences.append(" ".join(_shuffled(words, rng) if label else words))
            labels.append(label)
        return _backbone_inputs(preprocessor, sentences), np.asarray(labels, "int32")

    return DownstreamTask(name, make(train_texts), make(eval_texts), num_classes=2, **kwargs)


def section_task(preprocessor, train, eval, name="section", **kwargs):
    """Which documentation section does this sentence come from?

    Args:
        preprocessor: a `PosMaskedLMPreprocessor` (for its tokenizer).
        train, eval: dicts with `"text"` and `"section"` lists, as returned
            by `load_python_docs`.
        name: the task's name. Defaults to `"section"`.
        **kwargs: passed to `DownstreamTask`.

    Returns:
        A linear-probe `DownstreamTask` over the sections present in
        `train`; `eval` sentences of other sections are left out.
    """
    sections = sorted(set(train["section"]))
    if len(sections) < 2:
        raise ValueError(f"section_task needs sentences of at least 2 sections; got {sections}.")
    index = {s: i for i, s in enumerate(sections)}

    def make(data):
        keep = [i for i, s in enumerate(data["section"]) if s in index]
        texts = [data["text"][i] for i in keep]
        labels = np.asarray([index[data["section"][i]] for i in keep], "int32")
        return _backbone_inputs(preprocessor, texts), labels

    return DownstreamTask(name, make(train), make(eval), num_classes=len(sections), **kwargs)
