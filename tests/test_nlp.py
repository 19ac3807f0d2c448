"""Part-of-speech-grouped masked LM: grouper, preprocessor, corpus, MiniLM, recipe."""

import argparse
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

keras_hub = pytest.importorskip("keras_hub")
tf = pytest.importorskip("tensorflow")

from keras_taskrobust import nlp  # noqa: E402
from keras_taskrobust.nlp.part_of_speech_grouper import LEXICON_PATH  # noqa: E402

GROUPS = list(nlp.DEFAULT_GROUPS)
VOCABULARY = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "dog", "cat", "runs", "ran", "quick",
    "##ly", "big", "of", "and", "function", "returns", "value", "it", ".", ",", "un", "##believ",
    "##able", "xyz", "##zy", "is",
]
SENTENCES = [
    "The dog runs quickly.",
    "A big cat ran, and it returns the value of the function.",
    "Unbelievable xyzzy dog is big.",
    "The cat.",
]


@pytest.fixture(scope="module")
def grouper():
    return nlp.PartOfSpeechGrouper()


@pytest.fixture(scope="module")
def tokenizer():
    return keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=True)


# --- The grouper ---------------------------------------------------------


def _lexicon_group(entry):
    """The group of a lexicon line, computed here from the file's text."""
    mass = dict.fromkeys(GROUPS, 0.0)
    for item in entry.split():
        tag, p = item.rsplit(":", 1)
        group = next((g for g, tags in nlp.DEFAULT_GROUPS.items() if tag in tags), "other")
        mass[group] += float(p)
    return max(GROUPS, key=lambda g: (mass[g], -GROUPS.index(g)))


WORDS = {
    "the": "function", "of": "function", "and": "function", "it": "function", "which": "function",
    "can": "function", "dog": "noun", "function": "noun", "module": "noun", "runs": "verb",
    "ran": "verb", "is": "verb", "quickly": "adverb", "often": "adverb", "big": "adjective",
    "new": "adjective", "42": "other", ",": "other",
}


def test_grouper_matches_the_lexicon_on_a_fixed_word_list(grouper):
    lines = dict(line.rstrip("\n").split("\t") for line in gzip.open(LEXICON_PATH, "rt", encoding="utf-8"))
    for word, expected in WORDS.items():
        assert grouper.group_name(word) == expected, word
        if word in lines:
            assert _lexicon_group(lines[word]) == expected, word
            assert grouper.tag_probabilities(word) == pytest.approx(
                {t: float(p) for t, p in (i.rsplit(":", 1) for i in lines[word].split())})
    # Every 997th word of the lexicon: the grouper agrees with the file.
    words = sorted(lines)[::997]
    assert len(words) > 90
    assert [grouper.group_name(w) for w in words] == [_lexicon_group(lines[w]) for w in words]
    # Case is ignored.
    assert grouper.group_name("The") == grouper.group_name("THE") == "function"


def test_unknown_words_fall_into_the_documented_group(grouper):
    assert grouper.group_name("xyzzyqwv") == "other"
    assert grouper.tag_probabilities("xyzzyqwv") == {}
    assert nlp.PartOfSpeechGrouper(unknown_group="noun").group_name("xyzzyqwv") == "noun"
    # Inflections of known words, numbers and punctuation are not unknown.
    assert "debugged" not in grouper.lexicon and grouper.group_name("debugged") == "verb"
    assert grouper.group_name("well-documented") == grouper.group_name("documented")
    assert grouper.group_name("3.14") == grouper.group_name("...") == "other"
    # A tag that belongs to no group goes to the unknown group.
    custom = nlp.PartOfSpeechGrouper({"noun": ["NN"], "rest": []}, lexicon={"dog": "NN", "run": "VB"},
                                     unknown_group="rest")
    assert [custom.group_name(w) for w in ["dog", "run", "zzz"]] == ["noun", "rest", "rest"]


def test_a_tagger_of_your_own(grouper):
    seen = []

    def tagger(words):
        seen.append(list(words))
        return ["NN" if w.endswith("x") else "verb" if w == "go" else None for w in words]

    custom = nlp.PartOfSpeechGrouper(tagger=tagger)
    assert custom.group_ids(["box", "go", "the"]) == [0, 1, GROUPS.index("other")]
    assert seen == [["box", "go", "the"]]  # the whole sentence, for context
    with pytest.raises(ValueError, match="one label per word"):
        nlp.PartOfSpeechGrouper(tagger=lambda words: ["NN"]).group_ids(["a", "b"])
    with pytest.raises(ValueError, match="neither a group"):
        nlp.PartOfSpeechGrouper(tagger=lambda words: ["XX"] * len(words)).group_ids(["a"])


def test_grouper_bad_configuration_is_named():
    with pytest.raises(ValueError, match="unknown_group='misc'"):
        nlp.PartOfSpeechGrouper(unknown_group="misc")
    with pytest.raises(ValueError, match="in two groups"):
        nlp.PartOfSpeechGrouper({"a": ["NN"], "b": ["NN"]}, unknown_group="a")
    with pytest.raises(TypeError, match="callable"):
        nlp.PartOfSpeechGrouper(tagger="spacy")
    with pytest.raises(FileNotFoundError, match="lexicon"):
        nlp.PartOfSpeechGrouper(lexicon="/nonexistent/lexicon.tsv")


# --- The preprocessor ----------------------------------------------------


def test_word_pieces_share_their_words_group(grouper, tokenizer):
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=16, mask_selection_length=4)
    tokens = pre.tokenize(SENTENCES)
    vocab = tokenizer.get_vocabulary()
    for row, text in enumerate(SENTENCES):
        ids, groups = tokens["token_ids"][row], tokens["token_groups"][row]
        # The same tokens as keras-hub's preprocessing.
        expected = np.asarray(tokenizer(text))
        n = len(expected)
        assert ids[0] == tokenizer.start_token_id and ids[n + 1] == tokenizer.end_token_id
        np.testing.assert_array_equal(ids[1 : n + 1], expected)
        assert groups[0] == groups[n + 1] == nlp.NO_GROUP and (groups[n + 2 :] == nlp.NO_GROUP).all()
        assert (tokens["padding_mask"][row] == (np.arange(16) < n + 2)).all()
        # Walk the words: every piece carries its word's group.
        position = 1
        for word in pre.words(text):
            pieces = np.asarray(tokenizer(word)).reshape(-1)
            assert (groups[position : position + len(pieces)] == grouper.group_id(word)).all(), word
            position += len(pieces)
    row = tokens["token_groups"][2]
    pieces = [vocab[i] for i in tokens["token_ids"][2][1:4]]
    assert pieces == ["un", "##believ", "##able"] and len(set(row[1:4])) == 1
    assert grouper.group_name("unbelievable") == "adjective" and row[1] == GROUPS.index("adjective")


@pytest.mark.parametrize("balance", [False, True], ids=["uniform", "balanced"])
def test_group_ids_align_with_masked_positions(tokenizer, balance):
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=16, mask_selection_length=5,
                                      mask_selection_rate=0.4, balance_groups=balance)
    tokens = pre.tokenize(SENTENCES * 8)
    tf.random.set_seed(1)
    x, y, w = (keras.tree.map_structure(keras.ops.convert_to_numpy, part) for part in pre(tokens))
    assert sorted(x) == ["mask_positions", "padding_mask", "segment_ids", "task_id", "token_ids"]
    assert x["task_id"].shape == x["mask_positions"].shape == y.shape == w.shape == (32, 5)
    used = w > 0
    assert used.sum() > 20
    rows = np.nonzero(used)[0]
    positions = x["mask_positions"][used]
    # The group of each masked token is the group of the token at its position;
    # the label is the original token.
    np.testing.assert_array_equal(x["task_id"][used], tokens["token_groups"][rows, positions])
    np.testing.assert_array_equal(y[used], tokens["token_ids"][rows, positions])
    # Only word tokens are masked: never [CLS], [SEP] or padding.
    assert (tokens["token_groups"][rows, positions] >= 0).all()
    assert (tokens["padding_mask"][rows, positions] == 1).all()
    # Unused slots have no group and weight 0: no group loss sees them.
    assert (x["task_id"][~used] == nlp.NO_GROUP).all()
    # Unmasked tokens are unchanged.
    changed = x["token_ids"] != tokens["token_ids"]
    masked = np.zeros_like(changed)
    masked[rows, positions] = True
    assert not (changed & ~masked).any()


def test_balanced_masking_evens_out_the_groups(tokenizer):
    texts = [" ".join(["the"] * 10 + ["dog", "quickly"]) for _ in range(64)]
    counts = {}
    for balance in (False, True):
        pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=16, mask_selection_length=6,
                                          mask_selection_rate=0.2, balance_groups=balance)
        tf.random.set_seed(0)
        x, _, w = pre(pre.tokenize(texts))
        ids = keras.ops.convert_to_numpy(x["task_id"])[keras.ops.convert_to_numpy(w) > 0]
        counts[balance] = np.bincount(ids, minlength=len(GROUPS))
    function, noun, adverb = (GROUPS.index(g) for g in ("function", "noun", "adverb"))
    # Uniform masking follows the frequencies (10:1:1); balanced masks each group alike.
    assert counts[False][function] > 4 * counts[False][noun]
    assert counts[True][function] < 2 * counts[True][noun]
    assert counts[True][noun] > 0.5 * counts[True][adverb] and counts[True][adverb] > 0.5 * counts[True][noun]


def test_preprocessor_in_tf_data_and_its_errors(tokenizer):
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=12, mask_selection_length=3)
    tokens = pre.tokenize(SENTENCES)
    dataset = tf.data.Dataset.from_tensor_slices(tokens).batch(2).map(pre)
    x, y, w = next(iter(dataset))
    assert x["task_id"].shape == (2, 3) and x["task_id"].dtype == tf.int32
    # One example at a time works too.
    x, y, w = pre(pre.tokenize("The dog runs quickly."))
    assert tuple(x["task_id"].shape) == (3,)
    strings = tf.data.Dataset.from_tensor_slices(SENTENCES).batch(2)
    with pytest.raises(ValueError, match="Tokenize first"):
        strings.map(pre)
    with pytest.raises(ValueError, match="without \\['token_groups'\\]"):
        pre({k: v for k, v in tokens.items() if k != "token_groups"})
    with pytest.raises(ValueError, match="mask_selection_length"):
        nlp.PosMaskedLMPreprocessor(tokenizer, mask_selection_length=None)
    with pytest.raises(TypeError, match="grouper"):
        nlp.PosMaskedLMPreprocessor(tokenizer, grouper=lambda words: [0])
    with pytest.raises(ValueError, match="single segments"):
        pre.tokenize(("first", "second"))
    config = pre.get_config()
    assert config["groups"] == nlp.DEFAULT_GROUPS and config["balance_groups"] is False


def test_group_losses_ignore_unmasked_and_padding_positions(tokenizer):
    """Trains a tiny BertMaskedLM on the batches; group losses are the masked tokens' CE."""
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=16, mask_selection_length=6,
                                      mask_selection_rate=0.3)
    data = nlp.masked_eval_set(pre, SENTENCES * 8, seed=0)
    x, y, w = data
    mlm = nlp.tiny_bert_masked_lm(len(VOCABULARY), sequence_length=16, num_layers=1, hidden_dim=16)
    model = MinimaxModel(mlm, task_names=pre.group_names)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0,
                        callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=0.05))])
    present = [g for k, g in enumerate(GROUPS) if ((x["task_id"] == k) & (w > 0)).any()]
    assert len(present) >= 4
    for name in present:
        assert np.isfinite(history.history[f"loss/{name}"]).all()

    logs = model.evaluate(x, y, sample_weight=w, batch_size=32, return_dict=True, verbose=0)
    logits = keras.ops.convert_to_numpy(mlm.predict({k: v for k, v in x.items() if k != "task_id"}, batch_size=32, verbose=0))
    logits = logits.astype("float64") - logits.max(-1, keepdims=True)
    ce = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    for k, name in enumerate(GROUPS):
        chosen = (x["task_id"] == k) & (w > 0)
        if chosen.any():
            assert logs[f"loss/{name}"] == pytest.approx(ce[chosen].mean(), rel=1e-4)
    # Labels at unused slots (weight 0) change nothing.
    y_noise = np.where(w > 0, y, np.random.default_rng(0).integers(0, len(VOCABULARY), y.shape)).astype("int32")
    logs_noise = model.evaluate(x, y_noise, sample_weight=w, batch_size=32, return_dict=True, verbose=0)
    for name in present:
        assert logs_noise[f"loss/{name}"] == pytest.approx(logs[f"loss/{name}"], rel=1e-6)

    # The held-out report computes the same group losses, plus accuracies.
    metrics = nlp.masked_lm_group_metrics(model, data, pre.group_names, batch_size=32)
    for k, name in enumerate(GROUPS):
        chosen = (x["task_id"] == k) & (w > 0)
        if chosen.any():
            assert metrics[f"loss/{name}"] == pytest.approx(ce[chosen].mean(), rel=1e-4)
            hits = logits.argmax(-1) == y
            assert metrics[f"accuracy/{name}"] == pytest.approx(hits[chosen].mean())
            assert metrics[f"count/{name}"] == chosen.sum()
    accuracies = [metrics[f"accuracy/{g}"] for g in present]
    assert metrics["accuracy/worst"] == min(accuracies)
    assert metrics["accuracy/mean"] == pytest.approx(np.mean(accuracies))


# --- The corpus and the probes -------------------------------------------


def test_corpus_is_real_clean_english_split_by_document():
    train, held_out = nlp.load_python_docs("train"), nlp.load_python_docs("held_out")
    assert len(train["text"]) > 20000 and len(held_out["text"]) > 2000
    assert not set(train["document"]) & set(held_out["document"])
    text = " ".join(train["text"][::50])
    for markup in ("``", ":func:", ":class:", ".. ", "::", ">>>", "|release|"):
        assert markup not in text, markup
    assert len(nlp.load_python_docs("all")["text"]) == len(train["text"]) + len(held_out["text"])
    with pytest.raises(ValueError, match="Unknown split"):
        nlp.load_python_docs("test")
    with pytest.raises(ValueError, match="Unknown sections"):
        nlp.load_python_docs(sections=["novels"])


def test_probing_tasks_need_no_labels(tokenizer):
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=16, mask_selection_length=3)
    task = nlp.word_order_task(pre, SENTENCES * 4, SENTENCES * 2, seed=0)
    x, labels, _ = task.train_data.arrays
    assert set(labels) == {0, 1} and sorted(x) == ["padding_mask", "segment_ids", "token_ids"]
    original = pre.tokenize(SENTENCES * 4)["token_ids"]
    for row in range(len(labels)):
        same = (x["token_ids"][row] == original[row]).all()
        assert same == (labels[row] == 0)
        assert sorted(x["token_ids"][row]) == sorted(original[row])  # the same tokens
    data = {"text": SENTENCES, "section": ["a", "b", "a", "b"]}
    task = nlp.section_task(pre, data, data)
    assert task.num_classes == 2 and task.eval_data.arrays[1].tolist() == [0, 1, 0, 1]


# --- The pre-trained MiniLM, offline -------------------------------------


def test_pass_through_head_scores_the_encoder_output_against_the_embeddings():
    # keras-hub's random head transform scrambles the encoder's output
    # (MiniLM's zero-shot held-out masked-LM accuracy 0.000, see
    # benchmarks/RESULTS.md): the pass-through head gives layer_norm(h) @ E.T.
    mlm = nlp.tiny_bert_masked_lm(len(VOCABULARY), sequence_length=8, num_layers=1, hidden_dim=8, num_heads=1)
    nlp.pass_through_masked_lm_head(mlm)
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, len(VOCABULARY), (2, 8)).astype("int32"),
         "segment_ids": np.zeros((2, 8), "int32"), "padding_mask": np.ones((2, 8), "int32"),
         "mask_positions": np.array([[1, 6], [0, 3]], "int32")}
    logits = keras.ops.convert_to_numpy(mlm.predict_on_batch(x))
    h = keras.ops.convert_to_numpy(mlm.backbone.predict_on_batch(
        {k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")})["sequence_output"])
    h = np.take_along_axis(h, x["mask_positions"][..., None], 1)
    normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    embeddings = keras.ops.convert_to_numpy(mlm.backbone.token_embedding.embeddings)
    np.testing.assert_allclose(logits, normed @ embeddings.T, atol=1e-3)


def test_pos_mlm_lookahead_gram_is_on_the_head_transform_not_the_tied_embeddings():
    # The recipe's Lookahead differentiates the head's transform only: the
    # token embeddings tied to the head also feed the encoder, and a G over
    # them differentiates the whole model (benchmarks/RESULTS.md, "Lookahead").
    from keras_taskrobust.recipes import pos_mlm

    parser = argparse.ArgumentParser()
    pos_mlm.add_arguments(parser)
    layers = parser.parse_args([]).rule_defaults["lookahead"]["layers"]
    mlm = nlp.tiny_bert_masked_lm(len(VOCABULARY), sequence_length=8, num_layers=1, hidden_dim=8, num_heads=1)
    model = MinimaxModel(mlm, task_names=GROUPS)
    variables = model.task_gram._gradient_variables(layers)
    head = mlm.get_layer("mlm_head")
    tied = {v.path for v in mlm.backbone.token_embedding.trainable_variables}
    own = {v.path for v in head.trainable_variables if v.name != "output_bias"} - tied
    assert tied and {v.path for v in variables} == own
    assert sorted(tuple(v.shape) for v in variables) == [(8,), (8,), (8,), (8, 8)]


def test_minilm_preset_loads_offline_and_trains_with_group_losses():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    preset = nlp.minilm_preset()
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    assert tokenizer.vocabulary_size() == 30522
    pre = nlp.PosMaskedLMPreprocessor(tokenizer, sequence_length=24, mask_selection_length=6,
                                      mask_selection_rate=0.3)
    texts = nlp.load_python_docs("held_out")["text"][:16]
    x, y, w = nlp.masked_eval_set(pre, texts, seed=0)
    mlm = nlp.minilm_masked_lm()
    backbone = mlm.backbone
    assert backbone.num_layers == 6 and backbone.hidden_dim == 384
    # Before any training the pass-through head already predicts some masked
    # tokens (5 of these 93 on jax); keras-hub's random head predicts none.
    zero_shot = nlp.masked_lm_group_metrics(mlm, (x, y, w), pre.group_names)
    assert zero_shot["accuracy/all"] > 0.02
    before = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)[:5].copy()
    model = MinimaxModel(mlm, task_names=pre.group_names)
    model.compile(optimizer=keras.optimizers.Adam(5e-5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0,
                        callbacks=[MirrorDescent(rules.Softmax(temperature=1.0))])
    present = [g for k, g in enumerate(GROUPS) if ((x["task_id"] == k) & (w > 0)).any()]
    assert len(present) >= 4
    for name in present:
        assert np.isfinite(history.history[f"loss/{name}"][-1])
    weights = keras.ops.convert_to_numpy(model.task_weights)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5) and weights.std() > 0
    # Pre-trained: the masked-LM head is tied to the pre-trained embeddings,
    # which the few steps moved only a little.
    after = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)[:5]
    assert 0 < np.abs(after - before).max() < 0.05


# --- The recipe in the main job ------------------------------------------


def test_pos_mlm_recipe_quick_run(tmp_path):
    output = tmp_path / "pos-mlm"
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run(
        [sys.executable, "-m", "keras_taskrobust", "run", "pos-mlm", "--quick", "--verbose", "0",
         "--compare", "exponentiated_gradient@excess,average", "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text())
    assert report["recipe"] == "pos-mlm" and report["backend"] == keras.backend.backend()
    assert list(report["rules"]) == ["uniform", "exponentiated_gradient@excess", "average"]
    for rule in report["rules"].values():
        assert set(rule["accuracy"]) == set(GROUPS)
        assert 0 <= rule["summary"]["worst"] <= rule["summary"]["mean"] <= 1
        assert set(rule["probes"]) == {"word_order", "section"}
    # The rule ran: on the excess over the uniform run's model its few
    # updates move the weights a little, and off uniform.
    weights = report["rules"]["exponentiated_gradient@excess"]["task_weights"]
    assert abs(sum(weights.values()) - 1) < 1e-5 and max(abs(w - 1 / 6) for w in weights.values()) > 1e-5
    # The pooled run is a plain fit: its weights are the groups' shares of the masked tokens, unequal.
    pooled = report["rules"]["average"]
    assert list(pooled["train_loss"]) == ["all"] and np.isfinite(pooled["train_loss"]["all"])
    assert abs(sum(pooled["task_weights"].values()) - 1) < 1e-9
    assert max(pooled["task_weights"].values()) > 2 * min(pooled["task_weights"].values())
    assert (output / "pos_mlm.png").stat().st_size > 10000
    assert "Held-out masked-LM accuracy per part-of-speech group" in result.stdout
