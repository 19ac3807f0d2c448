"""Faulty values in a batch: masked NaNs, NaN or negative sample weights, small integer ids.

- A NaN the user masked out (sample weight 0, per example or per element)
  contributes nothing, to the loss or to the gradient: training runs as if
  the masked labels were 0.
- A NaN sample weight is a non-finite loss of its task: the step leaves the
  task weights as they were, and `fit` warns, naming the task, and stops.
- A negative sample weight is bad input, like an id outside `[0, K)`: the
  element is in no task, the step counts it (row K of the totals) and `fit`
  stops cleanly and raises a ValueError.
- Task ids of any integer dtype (uint8, int8, int16, uint16, int64, ...)
  train exactly as int32 ids do.
"""

import numpy as np
import pytest

import keras
from keras import ops
from keras_taskrobust import MinimaxModel
from keras_taskrobust.models import task_groups
from test_minimax_model import BATCH
from test_minimax_model import D
from test_minimax_model import K
from test_minimax_model import linear
from test_minimax_model import per_example_data

T = 5  # positions per example, for per-element tasks


def fit_from(model, start, x, y, **kwargs):
    """Fits `model` from the weights `start`; returns the history and the wrapped model's weights."""
    model.set_weights(start)
    history = model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, **kwargs)
    return history.history, [w.copy() for w in model.model.get_weights()]


def assert_same_weights(got, expected):
    for a, b in zip(got, expected):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def per_example():
    """A compiled per-example model (tasks in x['task_id']) and its initial weights."""
    model = MinimaxModel(linear(), num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y, ids, sw = per_example_data()
    model.evaluate({"x": x, "task_id": ids}, y, verbose=0)  # builds it
    return model, [w.copy() for w in model.get_weights()]


@pytest.fixture(scope="module")
def per_element():
    """A compiled model with a per-element loss `[batch, T]` and its initial weights."""
    net = keras.Sequential([keras.Input((T, D)), keras.layers.Dense(2)])
    net.layers[0].set_weights([np.linspace(-1, 1, 2 * D).reshape(D, 2).astype("float32"), np.array([0.1, -0.2], "float32")])
    model = MinimaxModel(net, num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model, [w.copy() for w in model.get_weights()]


# --- 1. A masked NaN contributes nothing, gradient included ---------------------


def test_masked_nan_labels_per_example_leave_the_weights_finite(per_example):
    model, start = per_example
    x, y, ids, sw = per_example_data()
    sw[[5, 12, 30]] = 0.0
    masked = sw == 0
    y_nan, y_zero = y.copy(), y.copy()
    y_nan[masked] = np.nan
    y_zero[masked] = 0.0
    logs_zero, zero = fit_from(model, start, {"x": x, "task_id": ids}, y_zero, sample_weight=sw)
    logs_nan, nan = fit_from(model, start, {"x": x, "task_id": ids}, y_nan, sample_weight=sw)
    assert_same_weights(nan, zero)
    assert np.isfinite(logs_nan["loss"][0])
    assert logs_nan["loss"][0] == pytest.approx(logs_zero["loss"][0], rel=1e-6)


def per_element_data(seed=4, n=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, D)).astype("float32")
    y = rng.normal(size=(n, T, 2)).astype("float32")
    ids = rng.integers(0, K, size=(n, T)).astype("int32")
    lengths = rng.integers(1, T + 1, size=(n, 1))
    sw = (np.arange(T)[None, :] < lengths).astype("float32")
    ids[sw == 0] = -1  # padding: id -1, weight 0
    return x, y, ids, sw


def test_masked_nan_labels_per_element_leave_the_weights_finite(per_element):
    model, start = per_element
    x, y, ids, sw = per_element_data()
    assert (sw == 0).any()
    y_nan, y_zero = y.copy(), y.copy()
    y_nan[sw == 0] = np.nan
    y_zero[sw == 0] = 0.0
    logs_zero, zero = fit_from(model, start, {"x": x, "task_id": ids}, y_zero, sample_weight=sw, epochs=2)
    logs_nan, nan = fit_from(model, start, {"x": x, "task_id": ids}, y_nan, sample_weight=sw, epochs=2)
    assert_same_weights(nan, zero)
    np.testing.assert_allclose(logs_nan["loss"], logs_zero["loss"], rtol=1e-6)
    for k in range(K):
        np.testing.assert_allclose(logs_nan[f"loss/task_{k}"], logs_zero[f"loss/task_{k}"], rtol=1e-6)


def test_masked_nan_loss_has_zero_gradient():
    """The objective's gradient is exactly 0 at a masked NaN loss, for every form."""
    losses = np.array([[1.0, np.nan], [2.0, 3.0]], "float32")
    weight = np.array([[1.0, 0.0], [0.5, 2.0]], "float32")
    ids = np.array([[0, -1], [1, 0]], "int32")
    coefficients = ops.convert_to_tensor(np.array([0.25, 0.75], "float32"))

    def by_id(values):
        return task_groups.ByTaskId(values, ids, weight, 2).weighted_sum(coefficients)

    def by_output(values):
        return task_groups.ByOutput([values, values], [weight, weight]).weighted_sum(coefficients)

    from keras_taskrobust import backend

    for objective in (by_id, by_output):
        gradient = ops.convert_to_numpy(backend.gradient(objective, losses))
        assert np.all(np.isfinite(gradient)) and gradient[0, 1] == 0.0


# --- 2. A NaN sample weight is a non-finite loss of its task ----------------------


def test_nan_sample_weight_stops_training_and_names_the_task(per_example):
    """Behaviour chosen: a non-finite loss of the example's task (no error)."""
    model, start = per_example
    x, y, ids, sw = per_example_data()
    sw[np.flatnonzero(ids == 1)[2]] = np.nan
    model.set_weights(start)
    with pytest.warns(RuntimeWarning, match=r"Non-finite loss for task\(s\) \['task_1'\]"):
        history = model.fit({"x": x, "task_id": ids}, y, sample_weight=sw, batch_size=BATCH, epochs=5,
                            shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 1
    assert not np.isfinite(history.history["loss/task_1"][0])
    for name in ("task_weights", "loss_estimates"):
        assert np.all(np.isfinite(getattr(model, name).numpy()))


def test_nan_sample_weight_totals():
    losses = np.array([1.0, 2.0, 3.0, 4.0], "float32")
    ids = np.array([0, 1, 1, 0], "int32")
    weight = np.array([1.0, np.nan, 1.0, 0.0], "float32")
    totals = ops.convert_to_numpy(task_groups.ByTaskId(losses, ids, weight, 2).totals())
    np.testing.assert_allclose(totals[0], [1.0, 1.0, 1.0])
    # Task 1: a NaN loss sum over a positive count, so its logged loss is NaN.
    assert np.isnan(totals[1, 0]) and totals[1, 1] > 0
    np.testing.assert_array_equal(totals[2], [0.0, 0.0, 0.0])


# --- 3. A negative sample weight is bad input --------------------------------------


def test_negative_sample_weight_raises_after_a_clean_stop(per_example):
    """Behaviour chosen: counted like an out-of-range id, so `fit` stops and raises.

    The element is left out of every task; `TaskGuard` tells a negative
    weight from a bad id (row K column 0 of the totals counts the negative
    weights) and names it.
    """
    model, start = per_example
    x, y, ids, sw = per_example_data()
    sw[3 * BATCH + 1] = -1.0
    model.set_weights(start)
    with pytest.raises(ValueError, match=r"sample weights must be >= 0"):
        model.fit({"x": x, "task_id": ids}, y, sample_weight=sw, batch_size=BATCH, epochs=3, shuffle=False,
                  verbose=0)
    weights = model.task_weights.numpy()
    assert np.all(np.isfinite(weights)) and weights.sum() == pytest.approx(1.0, abs=1e-6)


def test_negative_sample_weights_are_in_no_task():
    losses = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "float32")
    ids = np.array([[0, 1], [1, 0], [0, 5]], "int32")  # [2, 1]: out of range
    weight = np.array([[1.0, -1.0], [2.0, 1.0], [-3.0, 1.0]], "float32")
    totals = ops.convert_to_numpy(task_groups.ByTaskId(losses, ids, weight, 2).totals())
    np.testing.assert_allclose(totals[0], [1.0 + 4.0, 2.0, 2.0])
    np.testing.assert_allclose(totals[1], [6.0, 2.0, 1.0])
    # Row K: column 0 counts the negative weights, column 2 every rejected
    # element (2 negative weights, 1 out-of-range id).
    assert totals[2, 0] == 2 and totals[2, 2] == 3

    first, second = losses[:, 0], losses[:, 1]
    totals = ops.convert_to_numpy(task_groups.ByOutput([first, second], [weight[:, 0], weight[:, 1]]).totals())
    np.testing.assert_allclose(totals[0], [1.0 + 6.0, 3.0, 2.0])
    np.testing.assert_allclose(totals[1], [4.0 + 6.0, 2.0, 2.0])
    np.testing.assert_array_equal(totals[2], [2.0, 0.0, 2.0])


# --- 4. Task ids of any integer dtype ------------------------------------------------


@pytest.fixture(scope="module")
def int32_run(per_example):
    model, start = per_example
    x, y, ids, sw = per_example_data()
    return fit_from(model, start, {"x": x, "task_id": ids}, y, sample_weight=sw)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int64"])
def test_small_and_unsigned_ids_train_like_int32(per_example, int32_run, dtype):
    model, start = per_example
    x, y, ids, sw = per_example_data()
    logs, weights = fit_from(model, start, {"x": x, "task_id": ids.astype(dtype)}, y, sample_weight=sw)
    expected_logs, expected = int32_run
    assert_same_weights(weights, expected)
    for key, value in expected_logs.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-6, err_msg=key)


def test_unsigned_out_of_range_ids_are_invalid():
    losses = np.array([1.0, 1.0, 1.0, np.nan], "float32")
    for dtype in ("uint8", "uint16", "uint32", "int64"):
        ids = np.array([0, 1, 255, 2], dtype)
        totals = ops.convert_to_numpy(task_groups.ByTaskId(losses, ids, None, 2).totals())
        np.testing.assert_array_equal(totals[:, 2], [1, 1, 2], err_msg=dtype)
        assert totals[2, 0] == 0, dtype  # no negative weights (not the NaN loss of id 2)
