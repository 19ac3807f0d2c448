"""BERT masked-LM preprocessing that gives every masked token its part-of-speech group."""

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_taskrobust import _keras_compat as compat
from keras_taskrobust.nlp.part_of_speech_grouper import PartOfSpeechGrouper

# The group id of positions that belong to no word: [CLS], [SEP], padding,
# and the unused slots of `mask_positions`.
NO_GROUP = -1
_TOKENIZED = ("token_ids", "segment_ids", "padding_mask", "token_groups")


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class PosMaskedLMPreprocessor(keras_hub.models.BertMaskedLMPreprocessor):
    """`BertMaskedLMPreprocessor` whose masked tokens carry their word's group.

    It prepares masked-language-model batches for a
    `keras_taskrobust.MinimaxModel` around a `keras_hub.models.BertMaskedLM`,
    grouped by part of speech ("POS-mask BERT"): `x` gets, beside
    keras-hub's `token_ids`, `padding_mask`, `segment_ids` and
    `mask_positions`, an entry `task_key` (default `"task_id"`) with the
    group id of the word each masked token belongs to, in the shape of
    `mask_positions` (`[batch, mask_selection_length]`), the shape of the
    per-element loss. Unused mask slots have group `-1` and sample weight
    0, so they count in no group; unmasked and padding tokens are not in
    the loss at all.

    Preprocessing runs in two stages:

    1. `tokenize(texts)` (Python, once per corpus): splits each text into
       words as the tokenizer does, finds each word's group with `grouper`
       (a word's WordPiece tokens all get its group), and packs
       `[CLS] tokens [SEP]` into NumPy arrays `token_ids`, `segment_ids`,
       `padding_mask` and `token_groups` (`-1` on special tokens and
       padding). Only single segments are supported.
    2. Masking (TensorFlow ops, so it runs inside `tf.data.Dataset.map`
       and draws new masks every epoch): calling the layer on the output of
       `tokenize` (a batch, or one example). With `balance_groups=False`
       keras-hub's `MaskedLMMaskGenerator` selects the tokens (each with
       probability `mask_selection_rate`); with `balance_groups=True` each
       group present in the call's batch is expected to get the same number
       of masked tokens (`mask_selection_rate` times the number of
       maskable tokens, shared equally, each token's probability capped at
       1), so rare groups (adverbs) are masked as often as frequent ones.
       Selected tokens are replaced as in BERT (`[MASK]` with probability
       `mask_token_rate`, a random token with `random_token_rate`).

    Calling the layer on raw strings does both stages eagerly.

    Args:
        tokenizer: a `keras_hub.models.BertTokenizer`.
        grouper: a `PartOfSpeechGrouper`, or any object with `group_names`
            and `group_ids(words) -> list of ints`. Defaults to
            `PartOfSpeechGrouper()` (the packaged lexicon, six groups).
        balance_groups: mask each group equally often (see above).
            Defaults to `False`.
        task_key: the key of `x` that receives the group ids. Defaults to
            `"task_id"` (`MinimaxModel`'s default).
        sequence_length, truncate, mask_selection_rate,
            mask_selection_length, mask_token_rate, random_token_rate: as
            in `keras_hub.models.BertMaskedLMPreprocessor`.
            `mask_selection_length` must be an integer here (the task ids
            need a fixed shape). `sequence_length` defaults to 128.

    Example:

    >>> tokenizer = keras_hub.models.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ...                 "the", "dog", "runs", "quick", "##ly", "."],
    ...     lowercase=True)
    >>> pre = PosMaskedLMPreprocessor(tokenizer, sequence_length=8,
    ...                               mask_selection_length=3)
    >>> tokens = pre.tokenize(["The dog runs quickly."])
    >>> tokens["token_groups"].tolist()  # quick, ##ly: one adverb
    [[-1, 4, 0, 1, 3, 3, 5, -1]]
    >>> x, y, sample_weight = pre(tokens)
    >>> sorted(x)
    ['mask_positions', 'padding_mask', 'segment_ids', 'task_id', 'token_ids']
    """

    def __init__(
        self,
        tokenizer,
        grouper=None,
        balance_groups=False,
        task_key="task_id",
        sequence_length=128,
        truncate="round_robin",
        mask_selection_rate=0.15,
        mask_selection_length=20,
        mask_token_rate=0.8,
        random_token_rate=0.1,
        **kwargs,
    ):
        groups = kwargs.pop("groups", None)
        unknown_group = kwargs.pop("unknown_group", "other")
        super().__init__(
            tokenizer=tokenizer,
            sequence_length=sequence_length,
            truncate=truncate,
            mask_selection_rate=mask_selection_rate,
            mask_selection_length=mask_selection_length,
            mask_token_rate=mask_token_rate,
            random_token_rate=random_token_rate,
            **kwargs,
        )
        # === Config ===
        if mask_selection_length is None or int(mask_selection_length) != mask_selection_length or mask_selection_length < 1:
            raise ValueError(
                "PosMaskedLMPreprocessor needs `mask_selection_length`, an integer "
                f">= 1 (the task ids need a fixed shape); got {mask_selection_length!r}."
            )
        if sequence_length < 3:
            raise ValueError(f"`sequence_length` must be at least 3 ([CLS] token [SEP]); got {sequence_length}.")
        if grouper is None:
            grouper = PartOfSpeechGrouper(groups=groups, unknown_group=unknown_group)
        if not hasattr(grouper, "group_names") or not hasattr(grouper, "group_ids"):
            raise TypeError(
                "`grouper` must be a PartOfSpeechGrouper (or have `group_names` "
                f"and `group_ids(words)`); got {type(grouper).__name__}. For a "
                "tagger of your own use `PartOfSpeechGrouper(groups, tagger=fn)`."
            )
        self.grouper = grouper
        self.balance_groups = bool(balance_groups)
        self.task_key = task_key
        self._pieces = {}

    @property
    def group_names(self):
        return list(self.grouper.group_names)

    @property
    def num_groups(self):
        return len(self.grouper.group_names)

    def build(self, input_shape):
        super().build(input_shape)
        # The TF path always: masking runs inside `tf.data` and eagerly alike,
        # and its outputs are gathered with TF ops.
        self.masker = compat.tf_masked_lm_mask_generator(
            mask_selection_rate=self.mask_selection_rate,
            mask_selection_length=self.mask_selection_length,
            mask_token_rate=self.mask_token_rate,
            random_token_rate=self.random_token_rate,
            vocabulary_size=self.tokenizer.vocabulary_size(),
            mask_token_id=self.tokenizer.mask_token_id,
            unselectable_token_ids=self.tokenizer.special_token_ids,
        )

    # --- Stage 1: words, pieces and groups ----------------------------------

    def words(self, text):
        """The words of `text` as the tokenizer splits them."""
        return compat.pretokenize(text, self.tokenizer)

    def _word_pieces(self, word):
        pieces = self._pieces.get(word)
        if pieces is None:
            pieces = [int(t) for t in np.asarray(self.tokenizer(word)).reshape(-1)]
            self._pieces[word] = pieces
        return pieces

    def tokenize(self, texts):
        """Tokenizes, groups and packs texts (stage 1), as NumPy arrays.

        Args:
            texts: a string or a list of strings (one segment each).

        Returns:
            A dict of int32 arrays `[n, sequence_length]` (or
            `[sequence_length]` for a single string): `token_ids`,
            `segment_ids`, `padding_mask` and `token_groups` (the group id
            of each token's word, `-1` on special tokens and padding).
        """
        if isinstance(texts, tuple):
            raise ValueError(
                "PosMaskedLMPreprocessor takes single segments; got a tuple. "
                "Join sentence pairs into one string, or pass a list of strings."
            )
        single = isinstance(texts, (str, bytes))
        if single:
            texts = [texts]
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in _as_list(texts)]
        length = self.sequence_length
        tok = self.tokenizer
        token_ids = np.full((len(texts), length), tok.pad_token_id, "int32")
        groups = np.full((len(texts), length), NO_GROUP, "int32")
        for row, text in enumerate(texts):
            words = self.words(text)
            word_groups = self.grouper.group_ids(words)
            ids, gids = [tok.start_token_id], [NO_GROUP]
            for word, group in zip(words, word_groups):
                pieces = self._word_pieces(word)
                ids.extend(pieces)
                gids.extend([int(group)] * len(pieces))
                if len(ids) >= length - 1:
                    break
            ids, gids = ids[: length - 1] + [tok.end_token_id], gids[: length - 1] + [NO_GROUP]
            token_ids[row, : len(ids)] = ids
            groups[row, : len(gids)] = gids
        bad = (groups >= self.num_groups) | (groups < NO_GROUP)
        if bad.any():
            raise ValueError(
                f"The grouper returned group ids {sorted(set(groups[bad].tolist()))} "
                f"outside [0, {self.num_groups}) (its groups are {self.group_names})."
            )
        out = {
            "token_ids": token_ids,
            "segment_ids": np.zeros_like(token_ids),
            "padding_mask": (token_ids != tok.pad_token_id).astype("int32"),
            "token_groups": groups,
        }
        return {k: v[0] for k, v in out.items()} if single else out

    # --- Stage 2: masking ---------------------------------------------------

    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict):
            if not tf.executing_eagerly():  # inside tf.data
                raise ValueError(
                    "PosMaskedLMPreprocessor cannot group raw strings inside "
                    "tf.data (the grouper runs in Python). Tokenize first and "
                    "map the masking: `tf.data.Dataset.from_tensor_slices("
                    "preprocessor.tokenize(texts)).batch(32).map(preprocessor)`."
                )
            x = self.tokenize(x)
        missing = [k for k in _TOKENIZED if k not in x]
        if missing:
            raise ValueError(
                f"PosMaskedLMPreprocessor got a dict without {missing}; give it "
                f"the output of `preprocessor.tokenize(texts)` (keys {list(_TOKENIZED)})."
            )
        return self._mask(x)

    @compat.preprocessing_function
    def _mask(self, x, y=None, sample_weight=None):
        token_ids = tf.cast(x["token_ids"], "int32")
        groups = tf.cast(x["token_groups"], "int32")
        unbatched = token_ids.shape.rank == 1
        if unbatched:
            token_ids, groups = token_ids[None], groups[None]
        if self.balance_groups:
            masked = self._balanced_mask(token_ids, groups)
        else:
            masked = self.masker(token_ids)
        positions = tf.cast(masked["mask_positions"], "int32")
        weights = tf.cast(masked["mask_weights"], "float32")
        task_ids = tf.where(weights > 0, tf.gather(groups, positions, batch_dims=1), NO_GROUP)
        outputs = {
            "token_ids": tf.cast(masked["token_ids"], "int32"),
            "padding_mask": tf.cast(x["padding_mask"], "int32"),
            "segment_ids": tf.cast(x["segment_ids"], "int32"),
            "mask_positions": positions,
            self.task_key: task_ids,
        }
        labels = tf.cast(masked["mask_ids"], "int32")
        if unbatched:
            outputs = {k: v if k in ("padding_mask", "segment_ids") else v[0] for k, v in outputs.items()}
            labels, weights = labels[0], weights[0]
        return keras.utils.pack_x_y_sample_weight(outputs, labels, weights)

    def _balanced_mask(self, token_ids, groups):
        """Selects tokens so that every present group gets as many masks."""
        k = self.num_groups
        length = tf.shape(token_ids)[1]
        slots = self.mask_selection_length
        eligible = groups >= 0
        for special in self.tokenizer.special_token_ids:
            eligible &= token_ids != special
        counts = tf.reduce_sum(tf.one_hot(tf.where(eligible, groups, k), k + 1)[..., :k], axis=(0, 1))
        present = tf.reduce_sum(tf.cast(counts > 0, "float32"))
        per_group = self.mask_selection_rate * tf.reduce_sum(counts) / tf.maximum(present, 1.0)
        probability = tf.minimum(1.0, per_group / tf.maximum(counts, 1.0))
        token_probability = tf.where(eligible, tf.gather(probability, tf.maximum(groups, 0)), 0.0)
        shape = tf.shape(token_ids)
        selected = tf.random.uniform(shape) < token_probability
        # At most `slots` per sequence, a random subset of the selected ones.
        keys = tf.where(selected, tf.random.uniform(shape), -1.0)
        keys = tf.pad(keys, [[0, 0], [0, tf.maximum(slots - length, 0)]], constant_values=-1.0)
        top, index = tf.math.top_k(keys, k=slots)
        positions = tf.sort(tf.where(top >= 0, index, tf.int32.max), axis=1)
        chosen = positions < tf.int32.max
        positions = tf.where(chosen, positions, 0)
        mask_ids = tf.where(chosen, tf.gather(token_ids, positions, batch_dims=1), 0)
        draw = tf.random.uniform(tf.shape(positions))
        random_ids = tf.random.uniform(tf.shape(positions), 0, self.tokenizer.vocabulary_size(), "int32")
        replaced = tf.where(
            draw < self.mask_token_rate,
            self.tokenizer.mask_token_id,
            tf.where(draw < self.mask_token_rate + self.random_token_rate, random_ids, mask_ids),
        )
        rows = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(positions))
        indices = tf.boolean_mask(tf.stack([rows, positions], axis=-1), chosen)
        token_ids = tf.tensor_scatter_nd_update(token_ids, indices, tf.boolean_mask(replaced, chosen))
        return {
            "token_ids": token_ids,
            "mask_positions": positions,
            "mask_ids": mask_ids,
            "mask_weights": tf.cast(chosen, "float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "balance_groups": self.balance_groups,
                "task_key": self.task_key,
                # A grouper with the packaged lexicon is rebuilt from these;
                # a custom lexicon or tagger must be passed again on loading.
                "groups": getattr(self.grouper, "groups", None),
                "unknown_group": getattr(self.grouper, "unknown_group", "other"),
            }
        )
        return config


def _as_list(texts):
    if isinstance(texts, np.ndarray):
        return texts.reshape(-1).tolist()
    if isinstance(texts, tf.Tensor):
        return texts.numpy().reshape(-1).tolist()
    return list(texts)
