"""Task-weight state survives save/load and BackupAndRestore; logs reach callbacks."""

import csv
import os

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent
from test_minimax_model import BATCH
from test_minimax_model import RecordWeights
from test_minimax_model import linear
from test_minimax_model import per_example_data

STATE = ("task_weights", "loss_estimates", "task_counts", "task_step")


def rule():
    return MirrorDescent(rules.ExponentiatedGradient(step_size=0.5, average=0.5))


def new_model():
    model = MinimaxModel(linear(), task_names=["a", "b", "c"])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.fixture(scope="module")
def data():
    x, y, ids, sw = per_example_data()
    return {"x": x, "task_id": ids}, y


def test_save_and_load_keep_weights_and_rule_state(data, tmp_path):
    x, y = data
    model = new_model()
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[rule()])
    path = str(tmp_path / "minimax.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, MinimaxModel) and loaded.task_names == ["a", "b", "c"]
    for name in STATE:
        np.testing.assert_array_equal(getattr(loaded, name).numpy(), getattr(model, name).numpy())
    assert int(loaded.task_step.numpy()) == 12
    # Continuing both gives the same trajectory: nothing of the state was lost.
    records = [RecordWeights(), RecordWeights()]
    for m, record in zip((model, loaded), records):
        m.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[rule(), record])
    np.testing.assert_allclose(records[0].weights, records[1].weights, atol=1e-6)
    assert not np.allclose(records[0].weights[0], records[0].weights[-1])


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")


class RecordEpochWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = keras.ops.convert_to_numpy(self.model.task_weights.value).copy()


def test_backup_and_restore_continues_the_same_trajectory(data, tmp_path):
    x, y = data
    reference = RecordEpochWeights()
    new_model().fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0, callbacks=[rule(), reference])

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        new_model().fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                        callbacks=[rule(), backup, Interrupt()])
    crashed = new_model()
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                    callbacks=[rule(), Interrupt()])
    # The interrupted fit's rule does not outlive it.
    frozen = crashed.task_weights.numpy().copy()
    crashed.fit(x, y, batch_size=BATCH, verbose=0)
    np.testing.assert_array_equal(crashed.task_weights.numpy(), frozen)

    resumed_model = new_model()  # a fresh process would build a fresh model
    resumed = RecordEpochWeights()
    resumed_model.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                      callbacks=[rule(), keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), resumed])
    assert sorted(resumed.weights) == [2, 3]  # epochs 0 and 1 came from the backup
    for epoch in (2, 3):
        np.testing.assert_allclose(resumed.weights[epoch], reference.weights[epoch], atol=1e-6)
    assert int(resumed_model.task_step.numpy()) == 4 * 6


def test_history_csv_and_tensorboard(data, tmp_path):
    x, y = data
    model = new_model()
    csv_path = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[
        rule(), keras.callbacks.CSVLogger(str(csv_path)), keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    keys = {"loss", "loss/worst"} | {f"{kind}/{t}" for kind in ("loss", "weight") for t in "abc"}
    assert set(history.history) == keys
    for epoch in range(2):
        weights = [history.history[f"weight/{t}"][epoch] for t in "abc"]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        losses = [history.history[f"loss/{t}"][epoch] for t in "abc"]
        assert history.history["loss/worst"][epoch] == pytest.approx(max(losses))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    # CSVLogger adds empty val_ columns for any model; ours are all there.
    assert len(rows) == 2 and keys | {"epoch"} <= set(rows[0])
    assert float(rows[1]["weight/b"]) == pytest.approx(history.history["weight/b"][1])
    from tensorboard.backend.event_processing import event_accumulator

    train_dir = tmp_path / "tb" / "train"
    events = event_accumulator.EventAccumulator(str(train_dir), size_guidance={"tensors": 0})
    events.Reload()
    assert {"epoch_weight/a", "epoch_loss/worst"} <= set(events.Tags()["tensors"])
    assert os.listdir(train_dir)


def test_batch_logs_carry_the_task_keys_for_callbacks_that_read_them(data):
    # Without a reader of batch logs (verbose=0, no batch hook) the step does
    # not output the task vector, and the epoch's logs have it; with one, the
    # step is rebuilt to output it.
    x, y = data
    model = new_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[rule()])
    assert history.history["weight/a"][0] == pytest.approx(float(model.task_weights.numpy()[0]), abs=1e-6)
    batches = []
    reader = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(dict(logs)))
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[rule(), reader])
    assert len(batches) == len(y) // BATCH
    keys = {"loss", "loss/worst"} | {f"{kind}/{t}" for kind in ("loss", "weight") for t in "abc"}
    for logs in batches:
        assert set(logs) == keys
        assert sum(logs[f"weight/{t}"] for t in "abc") == pytest.approx(1.0, abs=1e-5)
        assert logs["loss/worst"] == max(logs[f"loss/{t}"] for t in "abc")
    # The last batch's weights are the model's (the step updates them first).
    assert [batches[-1][f"weight/{t}"] for t in "abc"] == pytest.approx(model.task_weights.numpy().tolist(), abs=1e-6)


def test_no_reader_of_the_logs_rebuilds_the_training_step(data):
    """The step is the same whoever reads its logs: a progress bar, evaluate, a quiet fit."""
    x, y = data
    model = new_model()
    model.fit(x, y, batch_size=BATCH, verbose=0)
    step = model.train_function
    model.evaluate(x, y, batch_size=BATCH, verbose=1)
    model.fit(x, y, batch_size=BATCH, verbose=0)
    assert model.train_function is step
    model.fit(x, y, batch_size=BATCH, verbose=1)
    assert model.train_function is step


class RecordStep(keras.callbacks.Callback):
    """Records the training step `fit` runs and the weights after each epoch."""

    def __init__(self):
        super().__init__()
        self.steps, self.weights = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.steps.append(self.model.train_function)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.task_weights.numpy().copy())


def test_fit_in_a_loop_compiles_the_step_once(data):
    """Fits with equal MirrorDescent settings share one step; anything else rebuilds it."""
    x, y = data
    fit = lambda model, *callbacks, epochs=1: model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                                                         verbose=0, callbacks=list(callbacks))
    one_call, looped = RecordStep(), RecordStep()
    fit(new_model(), rule(), one_call, epochs=3)
    model = new_model()
    for _ in range(3):
        fit(model, rule(), looped)
    assert looped.steps[0] is looped.steps[1] is looped.steps[2]
    np.testing.assert_allclose(looped.weights, one_call.weights, atol=1e-6)

    # No rule: the weights stay put (the kept step is not used).
    frozen = model.task_weights.numpy().copy()
    fit(model)
    np.testing.assert_array_equal(model.task_weights.numpy(), frozen)
    # Other settings, or a new compile, build a new step.
    other, recompiled = RecordStep(), RecordStep()
    fit(model, rule(), looped)
    fit(model, MirrorDescent(rules.ExponentiatedGradient(step_size=0.1, average=0.5)), other)
    assert other.steps[0] is not looped.steps[-1]
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    fit(model, rule(), recompiled)
    assert recompiled.steps[0] is not looped.steps[-1]
