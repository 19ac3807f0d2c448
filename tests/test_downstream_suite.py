"""DownstreamSuite: worst-case downstream transfer measured during `fit`."""

import csv
import json

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import DownstreamSuite
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.downstream import DownstreamTask
from keras_taskrobust.downstream import evaluate_transfer
from keras_taskrobust.downstream.transfer_evaluator import _features

D = 4
# The backbone sees inputs 0 and 1 and is blind to inputs 2 and 3.
SEEING = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], "float32")
BLIND = np.zeros((D, 2), "float32")


def task_data(axis, n, seed):
    """Inputs that vary along `axis` only; label: the sign of that input.

    Half the examples of each class, margin 1: a probe on features that keep
    the input is exactly right; on features blind to it, constant features
    give one class for all examples, exactly half right.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = np.zeros((n, D), "float32")
    x[:, axis] = (2 * labels - 1) * rng.uniform(1, 2, n)
    return x, labels.astype("int32")


def task(name, axis, **kwargs):
    return DownstreamTask(name, task_data(axis, 64, 1), task_data(axis, 32, 2), num_classes=2, **kwargs)


def pretraining_model(kernel=SEEING, optimizer=None):
    """A MinimaxModel around `Input -> Dense(2, name="backbone") -> Dense(1)`."""
    net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(2, name="backbone"), keras.layers.Dense(1)])
    net.get_layer("backbone").set_weights([kernel, np.zeros(2, "float32")])
    model = MinimaxModel(net, task_names=["a", "b"])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.0), loss="mse")
    return model


def pretraining_data(n=64):
    """Inputs 2 and 3 are 0: the backbone's weights for them get zero gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype("float32")
    x[:, 2:] = 0.0
    return {"x": x, "task_id": (np.arange(n) % 2).astype("int32")}, x[:, :1] - x[:, 1:2]


def test_worst_task_and_value(tmp_path, capsys):
    """Good on one task, useless on another: the worst is the useless one."""
    suite = DownstreamSuite("backbone", [task("sees", axis=0), task("blind", axis=3)],
                            log_file=tmp_path / "downstream.csv")
    x, y = pretraining_data()
    history = pretraining_model().fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[suite])

    record = suite.results[-1]
    assert record["worst_task"] == "blind"
    assert record["downstream/sees"] == 1.0
    assert record["downstream/blind"] == 0.5
    assert record["downstream/worst"] == 0.5
    assert record["downstream/mean"] == 0.75
    for key in ("downstream/sees", "downstream/blind", "downstream/worst", "downstream/mean"):
        assert history.history[key] == [record[key]]
    table = capsys.readouterr().out
    assert "Downstream transfer after epoch 1" in table
    assert "worst 0.5000 (blind), mean 0.7500" in table
    assert [line for line in table.splitlines() if "<- worst" in line][0].split()[0] == "blind"
    with open(tmp_path / "downstream.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["worst_task"] == "blind" and float(row["downstream/worst"]) == 0.5 and row["epoch"] == "0"


def test_lower_is_better_metric_counts_as_its_negative():
    """A regression task's error is negated in the worst and the mean."""
    x_train, _ = task_data(0, 64, 1)
    x_eval, _ = task_data(0, 32, 2)
    regression = DownstreamTask(
        "level", (x_train, 3.0 * x_train[:, :1]), (x_eval, 3.0 * x_eval[:, :1]),
        head=lambda: keras.layers.Dense(1), loss="mse", metric="mae", epochs=1)
    assert not regression.higher_is_better
    suite = DownstreamSuite("backbone", [task("sees", axis=0), regression], verbose=0)
    record = suite.evaluate(pretraining_model())
    mae = record["downstream/level"]
    assert mae > 0
    assert record["worst_task"] == "level"
    assert record["downstream/worst"] == -mae
    assert record["downstream/mean"] == pytest.approx((1.0 - mae) / 2)


def test_evaluate_transfer_outside_fit_matches_the_suite():
    """The plain function scores a backbone as the callback does and changes nothing.

    The backbone's weights are bit-for-bit the same afterwards, and the
    global random generators are where they were.
    """
    # A continuous metric for fine-tuning: any difference in its run shows.
    tasks = [task("sees", axis=0), task("blind", axis=3),
             task("finetune", axis=0, mode="finetune", epochs=2, optimizer=keras.optimizers.Adam(0.05),
                  metric=keras.metrics.SparseCategoricalCrossentropy(from_logits=True))]
    model = pretraining_model()
    backbone = model.model.get_layer("backbone")
    weights = [np.array(w, copy=True) for w in backbone.get_weights()]
    numpy_state = np.random.get_state()

    scores = evaluate_transfer(backbone, tasks)
    drawn = np.random.rand()
    np.random.set_state(numpy_state)
    assert np.random.rand() == drawn
    for before, after in zip(weights, backbone.get_weights()):
        assert before.dtype == after.dtype and np.array_equal(before, after)

    record = DownstreamSuite("backbone", tasks, verbose=0).evaluate(model)
    assert set(scores) == set(record) - {"epoch"}
    for key in scores:
        if key != "seconds":
            assert scores[key] == record[key], key
    assert scores["downstream/sees"] == 1.0 and scores["downstream/blind"] == 0.5
    assert 0.0 < scores["downstream/finetune"] < np.log(2)


class ScriptedBackbone(keras.callbacks.Callback):
    """Sets the backbone's kernel at the start of each epoch (SGD(0) keeps it)."""

    def __init__(self, kernels):
        super().__init__()
        self.kernels = kernels

    def on_epoch_begin(self, epoch, logs=None):
        # Through `self.model`: on JAX that syncs the state before the write.
        layer = self.model.model.get_layer("backbone")
        layer.set_weights([self.kernels[epoch], np.zeros(2, "float32")])


def test_early_stopping_on_worst(tmp_path):
    """Useless, good, useless, useless: EarlyStopping(patience=2) stops after epoch 4.

    ModelCheckpoint and CSVLogger after the suite see the keys too.
    """
    kernels = [BLIND, SEEING, BLIND, BLIND, SEEING, SEEING]
    suite = DownstreamSuite("backbone", [task("sees", axis=0)], verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="downstream/worst", mode="max", patience=2)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"), monitor="downstream/worst", mode="max",
        save_best_only=True, save_weights_only=True)
    logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    x, y = pretraining_data()
    history = pretraining_model().fit(x, y, batch_size=32, epochs=len(kernels), verbose=0,
                                      callbacks=[ScriptedBackbone(kernels), suite, stop, checkpoint, logger])
    assert history.history["downstream/worst"] == [0.5, 1.0, 0.5, 0.5]
    assert stop.stopped_epoch == 3
    assert stop.best == 1.0
    assert len(suite.results) == 4  # the last epoch was evaluated: no extra run at the end
    assert checkpoint.best == 1.0 and (tmp_path / "best.weights.h5").exists()
    with open(tmp_path / "log.csv") as f:
        assert [float(row["downstream/worst"]) for row in csv.DictReader(f)] == [0.5, 1.0, 0.5, 0.5]


class Snapshot(keras.callbacks.Callback):
    """Copies every variable of the training model and its optimizer."""

    def __init__(self):
        super().__init__()
        self.snapshots = []

    def _take(self):
        model = self.model  # syncs JAX's state
        variables = model.variables + model.optimizer.variables + model.metrics_variables
        self.snapshots.append([(v.path, np.array(v.numpy(), copy=True)) for v in variables])

    def on_epoch_end(self, epoch, logs=None):
        self._take()

    def on_train_end(self, logs=None):
        self._take()


def test_pretraining_state_is_untouched(tmp_path):
    """Weights, optimizer and task weights are bit-for-bit unchanged, on every backend.

    A real fit (Adam, moving task weights), a linear probe and a fine-tuned
    copy; evaluations at epoch 2 (of 3) and at the end of training. The
    same fit without the suite ends in exactly the same state.
    """
    x, y = pretraining_data()
    tasks = [
        task("probe", axis=3),
        # Fine-tuning trains the copy's blind kernel: the copy learns the
        # task that the live backbone cannot see.
        task("finetune", axis=3, mode="finetune", epochs=8, optimizer=keras.optimizers.Adam(0.1)),
    ]
    suite = DownstreamSuite("backbone", tasks, every_n_epochs=2, log_file=tmp_path / "runs" / "log.json",
                            verbose=0)
    before, after = Snapshot(), Snapshot()
    keras.utils.set_random_seed(0)
    model = pretraining_model(kernel=BLIND, optimizer=keras.optimizers.Adam(0.01))
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=1.0)), before, suite, after])

    assert [r["epoch"] for r in suite.results] == [1, 2]
    assert len(before.snapshots) == len(after.snapshots) == 4  # 3 epochs + train end
    for snap_before, snap_after in zip(before.snapshots, after.snapshots):
        assert [path for path, _ in snap_before] == [path for path, _ in snap_after]
        for (path, a), (_, b) in zip(snap_before, snap_after):
            assert a.dtype == b.dtype and np.array_equal(a, b), path
    assert not np.allclose(model.task_weights.numpy(), 0.5)  # the task weights did move
    for record in suite.results:
        assert record["downstream/probe"] == 0.5
        assert record["downstream/finetune"] == 1.0

    keras.utils.set_random_seed(0)
    alone = pretraining_model(kernel=BLIND, optimizer=keras.optimizers.Adam(0.01))
    alone.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=1.0))])
    for a, b in zip(model.variables + model.optimizer.variables, alone.variables + alone.optimizer.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.path

    with open(tmp_path / "runs" / "log.json") as f:
        logged = json.load(f)
    assert [r["epoch"] for r in logged] == [1, 2]
    assert logged[-1]["downstream/probe"] == suite.results[-1]["downstream/probe"]


def test_data_forms_agree_and_evaluations_repeat():
    """NumPy arrays, a dict of arrays, a batched tf.data and a TFDS-style split agree.

    A second evaluation of the same backbone repeats the first exactly, for
    the probes and for fine-tuning (whose copy has dropout).
    """
    tf = pytest.importorskip("tensorflow")
    (x_train, y_train), (x_eval, y_eval) = task_data(0, 64, 1), task_data(0, 32, 2)
    y_train = (y_train + (x_train[:, 0] > 1.5)).astype("int32")  # 3 classes: not linearly separable
    y_eval = (y_eval + (x_eval[:, 0] > 1.5)).astype("int32")

    def unbatched(x, y):  # like tfds.load(split=...): dicts of single examples
        return tf.data.Dataset.from_tensor_slices({"features": x, "label": y.astype("int64")})

    batched = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(16),
               tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(16))
    forms = {
        "arrays": ((x_train, y_train), (x_eval, y_eval)),
        "dict": ({"features": x_train, "label": y_train}, {"features": x_eval, "label": y_eval}),
        "batched": batched,
        "tfds_like": (unbatched(x_train, y_train), unbatched(x_eval, y_eval)),
    }
    tasks = [DownstreamTask(name, train, test, num_classes=3, epochs=3) for name, (train, test) in forms.items()]
    # A continuous metric: any change in the fine-tuning run shows.
    tasks.append(DownstreamTask("finetune", *batched, num_classes=3, mode="finetune", epochs=2,
                                optimizer=keras.optimizers.Adam(0.05),
                                metric=keras.metrics.SparseCategoricalCrossentropy(from_logits=True)))
    backbone = keras.Sequential([keras.layers.Dense(2), keras.layers.Dropout(0.5, seed=1)], name="backbone")
    net = keras.Sequential([keras.Input((D,)), backbone, keras.layers.Dense(1)])
    backbone.layers[0].set_weights([SEEING, np.zeros(2, "float32")])
    suite = DownstreamSuite(backbone, tasks, verbose=0)
    first, second = suite.evaluate(net), suite.evaluate(net)
    values = [first[f"downstream/{name}"] for name in forms]
    assert 0.4 < values[0] < 1.0
    np.testing.assert_allclose(values, values[0], rtol=1e-6)
    for key in first:
        if key.startswith("downstream/"):
            assert first[key] == second[key], key


def test_keras_hub_bert_backbone():
    """A tiny BertBackbone from config, inside a BertMaskedLM inside a MinimaxModel.

    Found by name through both wrappers; dict inputs; "pooled_output" by
    default; a sequence output is mean-pooled over the real tokens only.
    """
    keras_hub = pytest.importorskip("keras_hub")
    vocab, seq = 50, 12
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=seq, name="encoder",
    )
    mlm = MinimaxModel(keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None), num_tasks=2)
    rng = np.random.default_rng(0)

    def sentences(n):
        lengths = rng.integers(4, seq + 1, n)
        padding_mask = np.arange(seq)[None] < lengths[:, None]
        token_ids = rng.integers(1, vocab, (n, seq)) * padding_mask
        return {"token_ids": token_ids.astype("int32"), "segment_ids": np.zeros((n, seq), "int32"),
                "padding_mask": padding_mask.astype("int32")}

    train, test = sentences(32), sentences(16)
    topic = DownstreamTask("topic", (train, train["token_ids"][:, 0] % 2), (test, test["token_ids"][:, 0] % 2),
                           num_classes=2, epochs=2)
    suite = DownstreamSuite("encoder", [topic], verbose=0)
    record = suite.evaluate(mlm)
    assert 0.0 <= record["downstream/topic"] <= 1.0 and record["worst_task"] == "topic"

    outputs = backbone.predict_on_batch(test)
    np.testing.assert_allclose(suite._evaluator._extractor.predict_on_batch(test), outputs["pooled_output"],
                               rtol=1e-5, atol=1e-6)
    sequence = outputs["sequence_output"].astype("float64")
    mask = test["padding_mask"][..., None]
    mean = _features(outputs, test, "sequence_output", "mean", "padding_mask")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mean), (sequence * mask).sum(1) / mask.sum(1),
                               rtol=1e-5, atol=1e-6)
    first = _features(outputs, test, "sequence_output", "first", "padding_mask")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first), outputs["sequence_output"][:, 0])


def test_keras_hub_vit_backbone_with_tfds_split():
    """A tiny ViTBackbone from config; the downstream task is a (mocked) TFDS split."""
    keras_hub = pytest.importorskip("keras_hub")
    tfds = pytest.importorskip("tensorflow_datasets")
    tf = pytest.importorskip("tensorflow")
    vit = keras_hub.models.ViTBackbone(image_shape=(28, 28, 1), patch_size=7, num_layers=1, num_heads=2,
                                       hidden_dim=8, mlp_dim=16)
    images = keras.Input((28, 28, 1))
    logits = keras.layers.Dense(10)(vit(images)[:, 0])
    model = MinimaxModel(keras.Model(images, logits), num_tasks=2)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = {"images": rng.uniform(size=(32, 28, 28, 1)).astype("float32"), "task_id": np.arange(32) % 2}
    y = rng.integers(0, 10, 32)

    with tfds.testing.mock_data(num_examples=48):
        train = tfds.load("mnist", split="train")  # dicts of single examples
        test = tfds.load("mnist", split="test", as_supervised=True).batch(16)
    train = train.map(lambda e: {"image": tf.cast(e["image"], "float32") / 255.0, "label": e["label"]})
    test = test.map(lambda images, labels: (tf.cast(images, "float32") / 255.0, labels))
    digits = DownstreamTask("digits", train, test, num_classes=10, epochs=2)
    suite = DownstreamSuite(vit, [digits], pooling="first", verbose=0)
    before, after = Snapshot(), Snapshot()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[before, suite, after])
    assert 0.0 <= history.history["downstream/digits"][0] <= 1.0
    assert suite.results[-1]["worst_task"] == "digits"
    # The ViT's dropout seed generators and layer norms included.
    for (path, a), (_, b) in zip(before.snapshots[0], after.snapshots[0]):
        assert np.array_equal(a, b), path


def test_bad_input_names_the_fix():
    x, y = task_data(0, 8, 0)
    model = pretraining_model()
    with pytest.raises(ValueError, match=r"no layer named 'encoder'.*'backbone'"):
        DownstreamSuite("encoder", [task("sees", 0)]).evaluate(model)
    with pytest.raises(ValueError, match="has no labels"):
        DownstreamTask("t", x, (x, y), num_classes=2)
    with pytest.raises(ValueError, match="has no labels.*label_key"):
        DownstreamTask("t", {"features": x}, (x, y), num_classes=2)
    with pytest.raises(ValueError, match="distinct.*'sees'"):
        DownstreamSuite("backbone", [task("sees", 0), task("sees", 1)])
    with pytest.raises(ValueError, match="Unknown mode 'fine_tune'.*'finetune'"):
        DownstreamTask("t", (x, y), (x, y), num_classes=2, mode="fine_tune")
    with pytest.raises(ValueError, match="exactly one of"):
        DownstreamTask("t", (x, y), (x, y))
    with pytest.raises(ValueError, match="higher_is_better"):
        DownstreamTask("t", (x, y), (x, y), head=lambda: keras.layers.Dense(1), loss="mse",
                       metric=lambda y_true, y_pred: keras.ops.mean(y_pred))
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        DownstreamTask("t", (x, y), (x, y), num_classes=1)
    with pytest.raises(ValueError, match="labels in"):
        DownstreamTask("t", (x, y + 5), (x, y), num_classes=2)
    with pytest.raises(ValueError, match="log_file"):
        DownstreamSuite("backbone", [task("sees", 0)], log_file="out.txt")
