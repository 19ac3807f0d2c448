"""Bad input gets an error that names the problem and the fix; no state is lost."""

import keras
import numpy as np
import pytest

from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent
from test_minimax_model import BATCH
from test_minimax_model import K
from test_minimax_model import linear
from test_minimax_model import per_example_data
from test_minimax_model import two_output_model


@pytest.fixture(scope="module")
def model():
    model = MinimaxModel(linear(), num_tasks=K)
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.fixture(scope="module")
def data():
    x, y, ids, _ = per_example_data()
    return x, y, ids


@pytest.mark.parametrize("bad_id", [K, -1, 1000])
def test_out_of_range_ids_raise_after_a_clean_stop(model, data, bad_id):
    x, y, ids = data
    ids = ids.copy()
    ids[3 * BATCH + 1] = bad_id  # in the fourth batch
    steps = int(model.task_step.numpy())
    with pytest.raises(ValueError, match=r"1 task ids in x\['task_id'\] are outside \[0, 3\)"):
        model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[MirrorDescent()])
    # Stopped at the bad batch on every backend, with the state readable.
    assert int(model.task_step.numpy()) == steps + 4
    weights = model.task_weights.numpy()
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="outside"):
        model.evaluate({"x": x, "task_id": ids}, y, batch_size=BATCH, verbose=0)


def test_out_of_range_ids_stop_at_the_bad_batch_when_batch_logs_are_read(model, data):
    x, y, ids = data
    ids = ids.copy()
    ids[3 * BATCH + 1] = K  # in the fourth batch
    steps = int(model.task_step.numpy())
    read = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    with pytest.raises(ValueError, match=r"1 task ids in x\['task_id'\] are outside"):
        model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[MirrorDescent(), read])
    # Another reader of the batch logs changes nothing: the guard stops the
    # loop at the bad batch.
    assert int(model.task_step.numpy()) == steps + 4


def test_ignored_positions_may_hold_any_id(model, data):
    x, y, ids = data
    ids = ids.copy()
    ids[0] = -1
    sw = np.ones(len(ids), "float32")
    sw[0] = 0.0
    model.evaluate({"x": x, "task_id": ids}, y, sample_weight=sw, verbose=0)


def test_float_ids(model, data):
    x, y, ids = data
    with pytest.raises(TypeError, match=r"must be integers in \[0, 3\).*float32.*astype"):
        model.fit({"x": x, "task_id": ids.astype("float32")}, y, verbose=0)


def test_missing_task_key(model, data):
    x, y, ids = data
    # JAX and torch build the model on the first batch and wrap the error.
    with pytest.raises((KeyError, RuntimeError), match=r"x\['task_id'\].*keys \['features', 'group'\].*task_key"):
        model.fit({"features": x, "group": ids}, y, verbose=0)
    with pytest.raises(KeyError, match="type ndarray|type Tensor|type "):
        model.fit(x, y, verbose=0)


def test_num_tasks_does_not_match_outputs():
    model = MinimaxModel(two_output_model(), num_tasks=3, task_key=None)
    model.compile(loss="mse")
    x = np.zeros((4, 3), "float32")
    y = {"pixels": np.zeros((4, 2), "float32"), "edges": np.zeros((4, 1), "float32")}
    with pytest.raises(ValueError, match=r"outputs are \['edges', 'pixels'\] but the tasks are"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="num_tasks=2"):
        MinimaxModel(two_output_model(), num_tasks=2, task_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="num_tasks=K"):
        MinimaxModel(two_output_model())


def test_nan_loss_stops_training_and_names_the_task(data):
    x, y, ids = data
    y = y.copy()
    y[ids == 1] = np.nan
    model = MinimaxModel(linear(), task_names=["a", "b", "c"])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(RuntimeWarning, match=r"Non-finite loss for task\(s\) \['b'\]"):
        history = model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, epochs=5, verbose=0,
                            callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=1.0))])
    assert len(history.history["loss"]) == 1
    for name in ("task_weights", "loss_estimates"):
        assert np.all(np.isfinite(getattr(model, name).numpy()))


def test_mirror_descent_needs_a_minimax_model(data):
    x, y, _ = data
    plain = linear()
    plain.compile(loss="mse")
    with pytest.raises(TypeError, match="MinimaxModel"):
        plain.fit(x, y, verbose=0, callbacks=[MirrorDescent()])
    with pytest.raises(ValueError, match="update_every"):
        MirrorDescent(update_every=0)


def test_missing_loss(data):
    x, y, ids = data
    model = MinimaxModel(linear(), num_tasks=K)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"compile\(loss=...\)"):
        model.fit({"x": x, "task_id": ids}, y, verbose=0)


def test_a_task_not_seen_yet_keeps_its_weight(data):
    """Ids only in {0, 1} with K = 3: task 2 neither gains nor loses weight."""
    x, y, ids = data
    only_two = ids % 2
    for rule in (rules.ExponentiatedGradient(step_size=0.5), rules.Softmax(temperature=0.1), rules.HardMax()):
        model = MinimaxModel(linear(), num_tasks=K)
        model.compile(optimizer="sgd", loss="mse")
        model.fit({"x": x, "task_id": only_two}, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[MirrorDescent(rule)])
        weights = model.task_weights.numpy()
        assert weights[2] == pytest.approx(1 / K, abs=1e-6), rule
        assert weights.sum() == pytest.approx(1.0, abs=1e-6)
        assert weights[0] != pytest.approx(weights[1], abs=1e-3)  # the seen tasks did move


def test_two_mirror_descents_in_one_fit_raise(model, data):
    x, y, ids = data
    steps = int(model.task_step.numpy())
    with pytest.raises(ValueError, match="2 MirrorDescent callbacks were given to one `fit`"):
        model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, verbose=0,
                  callbacks=[MirrorDescent(), MirrorDescent(rules.HardMax())])
    assert int(model.task_step.numpy()) == steps  # refused before any step


@pytest.mark.parametrize("num_tasks", [2.5, 0, -1, True])
def test_num_tasks_must_be_a_whole_number(num_tasks):
    with pytest.raises(ValueError, match="`num_tasks` must be a whole number >= 1"):
        MinimaxModel(linear(), num_tasks=num_tasks)


def test_backup_and_restore_with_an_integer_save_freq_is_refused(model, data, tmp_path):
    x, y, ids = data
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=2)
    with pytest.raises(ValueError, match=r"BackupAndRestore\(save_freq=2\) cannot resume a MinimaxModel"):
        model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, verbose=0, callbacks=[backup])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_step_changes_nothing(data, bad):
    """The model's weights and layer state, the optimizer's state and the task state are kept exactly."""
    x, y, ids = data
    # Batch normalisation: its moving statistics move in the forward pass.
    net = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    model = MinimaxModel(net, task_names=["a", "b", "c"])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    callbacks = lambda: [MirrorDescent(rules.ExponentiatedGradient(step_size=1.0))]
    model.fit({"x": x[:BATCH], "task_id": ids[:BATCH]}, y[:BATCH], batch_size=BATCH, verbose=0,
              callbacks=callbacks())  # a finite step first: the optimizer has state
    state = lambda: [v.numpy().copy() for v in model.weights + model.optimizer.variables]
    before = state()
    bad_y = y[BATCH : 2 * BATCH].copy()
    bad_y[ids[BATCH : 2 * BATCH] == 2] = bad
    with pytest.warns(RuntimeWarning, match=r"Non-finite loss for task\(s\) \['c'\]"):
        model.fit({"x": x[BATCH : 2 * BATCH], "task_id": ids[BATCH : 2 * BATCH]}, bad_y, batch_size=BATCH,
                  verbose=0, callbacks=callbacks())
    for old, new in zip(before, state()):
        np.testing.assert_array_equal(new, old)
    # A compiled model: the wrapper keeps the optimizer's settings and saves with the model.
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.01)
