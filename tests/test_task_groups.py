"""The grouped objective: its value and gradient against NumPy, every task form."""

import numpy as np
import pytest

from keras import ops
from keras_taskrobust import backend
from keras_taskrobust.models import task_groups

K = 3


def numpy_objective(losses, ids, weight, coefficients):
    """`sum_i c[id_i] * w_i * l_i` over the valid ids, and its gradient `c[id_i] * w_i`."""
    valid = (ids >= 0) & (ids < K)
    per_element = np.where(valid, np.asarray(coefficients)[np.clip(ids, 0, K - 1)], 0.0) * weight
    return float(np.sum(np.where(weight > 0, per_element * np.nan_to_num(losses), 0.0))), per_element


@pytest.mark.parametrize("weighted", [False, True], ids=["no_sample_weight", "sample_weight"])
def test_by_task_id_objective_and_gradient(weighted):
    """Per-element ids with an invalid one, and a NaN loss at a position of weight 0."""
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 2.0, size=(4, 5)).astype("float32")
    ids = rng.integers(0, K, size=(4, 5)).astype("int32")
    ids[0, 0] = K + 2  # out of range: in no task
    weight = np.ones_like(losses)
    if weighted:
        weight = rng.uniform(0.5, 2.0, size=(4, 5)).astype("float32")
        weight[1, 1] = 0.0
        losses[1, 1] = np.nan  # padding: its loss must not reach the objective
    coefficients = np.array([0.2, 0.5, 0.3], "float32")

    def objective(values):
        grouped = task_groups.ByTaskId(values, ids, weight if weighted else None, K)
        return grouped.weighted_sum(ops.convert_to_tensor(coefficients))

    expected, expected_gradient = numpy_objective(losses, ids, weight, coefficients)
    value = float(ops.convert_to_numpy(objective(ops.convert_to_tensor(losses))))
    gradient = ops.convert_to_numpy(backend.gradient(objective, losses))
    assert value == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6)
    # `weighted_sum` is the coefficients times the differentiable task sums.
    grouped = task_groups.ByTaskId(ops.convert_to_tensor(losses), ids, weight if weighted else None, K)
    sums = ops.convert_to_numpy(grouped.task_sums())
    assert float(np.sum(coefficients * sums)) == pytest.approx(expected, rel=1e-5)
    totals = ops.convert_to_numpy(grouped.totals())
    np.testing.assert_allclose(totals[:K, 0], sums, rtol=1e-5)
    assert totals[K, 2] == 1  # the out-of-range id is counted, apart


def test_by_output_objective_and_gradient():
    rng = np.random.default_rng(1)
    first = rng.uniform(size=(6, 2)).astype("float32")
    second = rng.uniform(size=(6,)).astype("float32")
    weight = rng.uniform(0.5, 2.0, size=(6,)).astype("float32")
    coefficients = np.array([0.25, 0.75], "float32")

    def objective(values):
        grouped = task_groups.ByOutput([values, ops.convert_to_tensor(second)], [weight, None])
        return grouped.weighted_sum(ops.convert_to_tensor(coefficients))

    expected = coefficients[0] * np.sum(weight[:, None] * first) + coefficients[1] * np.sum(second)
    assert float(ops.convert_to_numpy(objective(ops.convert_to_tensor(first)))) == pytest.approx(expected, rel=1e-5)
    gradient = ops.convert_to_numpy(backend.gradient(objective, first))
    np.testing.assert_allclose(gradient, np.broadcast_to(coefficients[0] * weight[:, None], first.shape), rtol=1e-6)
    totals = ops.convert_to_numpy(task_groups.ByOutput([ops.convert_to_tensor(first), ops.convert_to_tensor(second)],
                                                       [weight, None]).totals())
    np.testing.assert_allclose(totals[:, 1], [weight.sum() * 2, 6, 0], rtol=1e-5)
