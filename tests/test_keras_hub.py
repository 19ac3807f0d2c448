"""A keras-hub task model (BertMaskedLM) trained with per-token task groups."""

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

keras_hub = pytest.importorskip("keras_hub")

VOCAB, SEQ, MASKED, BATCH = 50, 12, 4, 8
GROUPS = ["noun", "verb", "function"]


def tiny_bert_mlm():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=SEQ,
    )
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def mlm_batch(n=32):
    rng = np.random.default_rng(0)
    lengths = rng.integers(6, SEQ + 1, size=n)
    x = {
        "token_ids": rng.integers(1, VOCAB, size=(n, SEQ)).astype("int32"),
        "padding_mask": (np.arange(SEQ)[None] < lengths[:, None]).astype("int32"),
        "segment_ids": np.zeros((n, SEQ), "int32"),
        "mask_positions": np.sort(rng.integers(0, 6, size=(n, MASKED)), axis=1).astype("int32"),
        "task_id": rng.integers(0, len(GROUPS), size=(n, MASKED)).astype("int32"),
    }
    y = rng.integers(1, VOCAB, size=(n, MASKED)).astype("int32")
    weights = np.ones((n, MASKED), "float32")
    weights[:, -1] = 0.0  # the last masked slot is padding
    return x, y, weights


def test_bert_masked_lm_with_token_groups(tmp_path):
    mlm = tiny_bert_mlm()
    model = MinimaxModel(mlm, task_names=GROUPS)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, w = mlm_batch()
    history = model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=2, verbose=0,
                        callbacks=[MirrorDescent(rules.Softmax(temperature=0.5))])
    for name in GROUPS:
        assert np.isfinite(history.history[f"loss/{name}"]).all()
        assert 0.0 < history.history[f"weight/{name}"][-1] < 1.0
    # Group losses are the masked-token cross-entropies of each group.
    logs = model.evaluate(x, y, sample_weight=w, batch_size=32, return_dict=True, verbose=0)
    logits = keras.ops.convert_to_numpy(mlm.predict({k: v for k, v in x.items() if k != "task_id"}, verbose=0))
    logits = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    ce = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    for k, name in enumerate(GROUPS):
        mask = (x["task_id"] == k) & (w > 0)
        assert logs[f"loss/{name}"] == pytest.approx(ce[mask].mean(), rel=1e-4)
    path = str(tmp_path / "bert.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.task_weights.numpy(), model.task_weights.numpy())
