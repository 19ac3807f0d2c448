"""Each rule as a pure function, against the NumPy reference."""

import numpy as np
import pytest
from keras import ops

import reference
from keras_taskrobust import rules


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


W = np.array([0.1, 0.2, 0.3, 0.4], "float32")
L = np.array([0.5, 2.0, 1.0, 0.25], "float32")


def test_uniform():
    np.testing.assert_allclose(_np(rules.Uniform().update(W, L, 0)), np.full(4, 0.25), atol=1e-7)


@pytest.mark.parametrize("adjustment", [0.0, 0.5])
def test_exponentiated_gradient(adjustment):
    sizes = [10, 1000, 40, 5] if adjustment else None
    rule = rules.ExponentiatedGradient(step_size=0.7, adjustment=adjustment, task_sizes=sizes)
    expected = reference.exponentiated_gradient(W.astype(float), L.astype(float), 0.7, adjustment, sizes)
    np.testing.assert_allclose(_np(rule.update(W, L, 0)), expected, rtol=1e-5)


@pytest.mark.parametrize("smoothing", [1e-3, 0.2])
def test_exponentiated_gradient_smoothing_mixes_towards_uniform(smoothing):
    rule = rules.ExponentiatedGradient(step_size=3.0, smoothing=smoothing)
    w = W.copy()
    expected = W.astype(float)
    for _ in range(5):  # repeated: the weights stay above eps / K
        w = _np(rule.update(w, L, 0)).astype("float32")
        expected = reference.exponentiated_gradient(expected, L.astype(float), 3.0, smoothing=smoothing)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert w.min() >= smoothing / len(W) * (1 - 1e-6)
    with pytest.raises(ValueError, match="smoothing"):
        rules.ExponentiatedGradient(smoothing=1.0)


@pytest.mark.parametrize("loss_weighted", [False, True])
def test_learning_progress(loss_weighted):
    rule = rules.LearningProgress(step_size=3.0, smoothing=0.1, loss_weighted=loss_weighted)
    previous = np.array([1.0, 2.5, 0.5, 0.0], "float32")  # task 1 improved, 2 got worse, 3 stays at 0
    expected = reference.learning_progress(W.astype(float), L.astype(float), previous.astype(float), 3.0, 0.1,
                                           loss_weighted)
    got = _np(rule.update(W, L, 0, previous=previous))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The most relative progress gains most; weighted by the loss, the larger falling loss.
    assert np.argmax(got / W) == (1 if loss_weighted else 0)
    with pytest.raises(ValueError, match="previous"):
        rule.update(W, L, 0)


def test_exponentiated_gradient_schedule():
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=1, decay_rate=0.5)
    rule = rules.ExponentiatedGradient(step_size=schedule)
    for step in (0, 3):
        expected = reference.exponentiated_gradient(W.astype(float), L.astype(float), 0.5**step)
        np.testing.assert_allclose(_np(rule.update(W, L, step)), expected, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.05, 1.0, 1e6])
def test_softmax(temperature):
    got = _np(rules.Softmax(temperature).update(W, L, 0))
    np.testing.assert_allclose(got, reference.softmax(L.astype(float), temperature), rtol=1e-5, atol=1e-7)


def test_softmax_limits():
    np.testing.assert_allclose(_np(rules.Softmax(1e-4).update(W, L, 0)), [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(_np(rules.Softmax(1e8).update(W, L, 0)), np.full(4, 0.25), atol=1e-6)


def test_hard_max_shares_ties():
    np.testing.assert_allclose(_np(rules.HardMax().update(W, L, 0)), [0, 1, 0, 0])
    tied = np.array([2.0, 2.0, 1.0, 0.0], "float32")
    np.testing.assert_allclose(_np(rules.HardMax().update(W, tied, 0)), [0.5, 0.5, 0, 0])


@pytest.mark.parametrize(
    "rule",
    [rules.ExponentiatedGradient(step_size=10.0), rules.Softmax(1e-3), rules.HardMax()],
    ids=repr,
)
def test_extreme_losses_stay_on_simplex(rule):
    w = np.full(4, 0.25, "float32")
    for losses in ([1e30, 0.0, 1e-30, 3e38], [0.0, 0.0, 0.0, 0.0], [3e38, 3e38, 0.0, 1.0]):
        w = _np(rule.update(w, np.array(losses, "float32"), 0)).astype("float32")
        assert np.all(np.isfinite(w)) and np.all(w >= 0)
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)


def test_exponentiated_gradient_recovers_from_underflow():
    rule = rules.ExponentiatedGradient(step_size=1.0)
    w = _np(rule.update(np.full(2, 0.5, "float32"), np.array([0.0, 1e4], "float32"), 0))
    assert w[0] < 1e-20
    for _ in range(200):
        w = _np(rule.update(w.astype("float32"), np.array([1.0, 0.0], "float32"), 0))
    assert w[0] > 0.99


@pytest.mark.parametrize("average", [0.0, 0.8])
def test_estimate_keeps_absent_and_fills_unseen(average):
    est = np.array([1.0, 2.0, 0.0, 0.0], "float32")
    losses = np.array([3.0, 0.0, 5.0, 0.0], "float32")
    present = np.array([True, False, True, False])
    seen = np.array([True, True, False, False])
    got = _np(rules.WeightingRule(average).estimate(est, losses, present, seen))
    np.testing.assert_allclose(got, reference.estimate(est, losses, present, seen, average), rtol=1e-6)
    assert got[1] == 2.0  # absent: last estimate, not a fake 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="task_sizes"):
        rules.ExponentiatedGradient(adjustment=1.0)
    with pytest.raises(ValueError, match="temperature"):
        rules.Softmax(0.0)
    with pytest.raises(ValueError, match="average"):
        rules.HardMax(average=1.0)
    with pytest.raises(ValueError, match="smoothing"):
        rules.LearningProgress(smoothing=-0.1)
    with pytest.raises(ValueError, match="exponentiated_gradient"):
        rules.get("group_dro")
