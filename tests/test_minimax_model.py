"""MinimaxModel through `model.fit`, step by step against NumPy references."""

import numpy as np
import pytest

import keras
import reference
from conftest import STEP_MODE_IDS
from conftest import STEP_MODES
from conftest import TRAIN_MODE_IDS
from conftest import TRAIN_MODES
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

K = 3
N, BATCH, D = 48, 8, 3


class RecordWeights(keras.callbacks.Callback):
    """Reads the task weights after every step, through `self.model`."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(keras.ops.convert_to_numpy(self.model.task_weights.value).copy())


def per_example_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.normal(size=(N, 2)).astype("float32")
    ids = rng.integers(0, K, size=N).astype("int32")
    ids[:BATCH] = 0  # batch 0 has task 0 only: tasks 1, 2 unseen at first
    ids[2 * BATCH : 3 * BATCH] = np.where(ids[2 * BATCH : 3 * BATCH] == 2, 1, ids[2 * BATCH : 3 * BATCH])
    sw = rng.uniform(0.5, 2.0, size=N).astype("float32")
    sw[5] = 0.0
    return x, y, ids, sw


def linear(seed_weights=True):
    net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(2)])
    if seed_weights:
        net.layers[0].set_weights([np.linspace(-1, 1, 2 * D).reshape(D, 2).astype("float32"), np.array([0.1, -0.2], "float32")])
    return net


CASES = {
    "uniform": (rules.Uniform(), {}),
    "eg": (rules.ExponentiatedGradient(step_size=0.5, adjustment=0.2, task_sizes=[10, 20, 30], average=0.5), {}),
    "eg_every2_warm3": (rules.ExponentiatedGradient(step_size=0.8), {"update_every": 2, "warmup_steps": 3}),
    "eg_schedule": (rules.ExponentiatedGradient(
        step_size=keras.optimizers.schedules.ExponentialDecay(1.0, decay_steps=2, decay_rate=0.5)), {"update_every": 3}),
    "softmax": (rules.Softmax(temperature=0.5, average=0.3), {}),
    "hard_max": (rules.HardMax(), {}),
    "progress_every2": (rules.LearningProgress(step_size=4.0, smoothing=0.1, average=0.5), {"update_every": 2}),
}


def reference_trajectory(rule_name, per_step_losses, per_step_counts):
    rule, settings = CASES[rule_name]
    every, warmup = settings.get("update_every", 1), settings.get("warmup_steps", 0)
    w, est, seen = np.full(K, 1.0 / K), np.zeros(K), np.zeros(K, bool)
    trajectory = []
    for step, (losses, counts) in enumerate(zip(per_step_losses, per_step_counts)):
        present = counts > 0
        before = est
        est = reference.estimate(est, losses, present, seen, rule.average)
        previous = np.where(present & ~seen, est, before)  # a first sight makes no progress
        seen = seen | present
        old = w
        if step < warmup:
            w = np.full(K, 1.0 / K)
        elif (step - warmup) % every == 0:
            n = (step - warmup) // every
            if isinstance(rule, rules.ExponentiatedGradient):
                eta = 0.5 ** (n / 2) if callable(rule.step_size) else rule.step_size
                w = reference.exponentiated_gradient(w, est, eta, rule.adjustment, rule.task_sizes)
            elif isinstance(rule, rules.Softmax):
                w = reference.softmax(est, rule.temperature)
            elif isinstance(rule, rules.HardMax):
                w = reference.hard_max(est)
            elif isinstance(rule, rules.LearningProgress):
                w = reference.learning_progress(w, est, previous, rule.step_size, rule.smoothing)
            else:
                w = np.full(K, 1.0 / K)
        w = reference.keep_unseen(old, w, seen)  # a task not seen yet keeps its weight
        trajectory.append(w)
    return np.array(trajectory)


@pytest.mark.parametrize("rule_name", list(CASES))
@pytest.mark.parametrize("run_eagerly,jit_compile", STEP_MODES, ids=STEP_MODE_IDS)
def test_rule_trajectory_matches_numpy(rule_name, run_eagerly, jit_compile):
    """Frozen network (lr 0): every step's weights follow the NumPy rule."""
    x, y, ids, sw = per_example_data()
    net = linear()
    model = MinimaxModel(net, num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", run_eagerly=run_eagerly, jit_compile=jit_compile)
    rule, settings = CASES[rule_name]
    record = RecordWeights()
    epochs = 2
    model.fit({"x": x, "task_id": ids}, y, sample_weight=sw, batch_size=BATCH, epochs=epochs,
              shuffle=False, verbose=0, callbacks=[MirrorDescent(rule, **settings), record])
    pred = x @ net.layers[0].get_weights()[0] + net.layers[0].get_weights()[1]
    per_example = ((pred - y) ** 2).mean(axis=1)
    losses, counts = [], []
    for _ in range(epochs):
        for b in range(N // BATCH):
            s = slice(b * BATCH, (b + 1) * BATCH)
            l, c = reference.group_losses(per_example[s], ids[s], sw[s], K)
            losses.append(l)
            counts.append(c)
    expected = reference_trajectory(rule_name, losses, counts)
    np.testing.assert_allclose(np.array(record.weights), expected, rtol=1e-5, atol=1e-6)
    assert int(model.task_step.numpy()) == epochs * N // BATCH
    np.testing.assert_allclose(model.task_counts.numpy(), np.sum(counts, axis=0), rtol=1e-5)


def simulate_training(x, y, ids, sw, kernel, bias, lr, eta, epochs):
    """NumPy SGD on sum_k w_k L_k for a linear model, with EG weights."""
    w, est, seen = np.full(K, 1.0 / K), np.zeros(K), np.zeros(K, bool)
    kernel, bias = kernel.astype(np.float64), bias.astype(np.float64)
    trajectory = []
    for _ in range(epochs):
        for b in range(N // BATCH):
            s = slice(b * BATCH, (b + 1) * BATCH)
            xb, yb, ib, wb = x[s], y[s], ids[s], sw[s]
            pred = xb @ kernel + bias
            losses, counts = reference.group_losses(((pred - yb) ** 2).mean(1), ib, wb, K)
            present = counts > 0
            est = reference.estimate(est, losses, present, seen)
            seen |= present
            w = reference.exponentiated_gradient(w, est, eta)
            # d/dpred of sum_k w_k * sum_{i in k} sw_i * mean_j (pred-y)^2 / n_k
            scale = np.where(present, w / np.maximum(counts, 1e-12), 0.0)[ib] * wb
            grad_pred = scale[:, None] * 2 * (pred - yb) / yb.shape[1]
            kernel -= lr * xb.T @ grad_pred
            bias -= lr * grad_pred.sum(0)
            trajectory.append(w)
    return np.array(trajectory), kernel, bias


@pytest.mark.parametrize("run_eagerly,jit_compile", TRAIN_MODES, ids=TRAIN_MODE_IDS)
def test_training_trajectory_is_the_numpy_one(run_eagerly, jit_compile):
    """Weights and parameters of a real training run match a NumPy simulation.

    The simulation is backend-free, so agreement to 1e-5 on every backend is
    agreement between the backends.
    """
    x, y, ids, sw = per_example_data()
    net = linear()
    kernel, bias = net.layers[0].get_weights()
    model = MinimaxModel(net, num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=run_eagerly, jit_compile=jit_compile)
    record = RecordWeights()
    torch_compiled = keras.backend.backend() == "torch" and jit_compile
    if torch_compiled:
        from torch._dynamo.utils import counters

        counters.clear()
    model.fit({"x": x, "task_id": ids}, y, sample_weight=sw, batch_size=BATCH, epochs=3, shuffle=False,
              verbose=0, callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=0.5)), record])
    expected, kernel, bias = simulate_training(x, y, ids, sw, kernel, bias, lr=0.1, eta=0.5, epochs=3)
    np.testing.assert_allclose(np.array(record.weights), expected, atol=1e-5)
    np.testing.assert_allclose(net.layers[0].get_weights()[0], kernel, atol=1e-5)
    np.testing.assert_allclose(net.layers[0].get_weights()[1], bias, atol=1e-5)
    if torch_compiled:
        # torch.compile compiled the whole step, but for the graph breaks of
        # Keras' own torch trainer, which a plain Keras model has too: its
        # `backward()` call and SGD's learning rate read as a number.
        keras_own = ("Unsupported Tensor.backward() call", "Data dependent operator")
        breaks = dict(counters["graph_break"])
        assert breaks and all(reason.startswith(keras_own) for reason in breaks), breaks
        # A non-finite step, compiled (the optimizer keeps the old values
        # without a branch), changes nothing.
        state = lambda: [v.numpy().copy() for v in model.weights + model.optimizer.variables]
        before, bad_y = state(), y.copy()
        bad_y[ids == ids[0]] = np.nan
        with pytest.warns(RuntimeWarning, match="Non-finite loss"):
            model.fit({"x": x, "task_id": ids}, bad_y, sample_weight=sw, batch_size=BATCH, epochs=1, shuffle=False,
                      verbose=0, callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=0.5))])
        for old, new in zip(before, state()):
            np.testing.assert_array_equal(new, old)


def test_weights_persist_without_reading_mid_epoch():
    """No callback touches the model: the final weights are still the last step's."""
    x, y, ids, sw = per_example_data()
    net = linear()
    kernel, bias = net.layers[0].get_weights()
    model = MinimaxModel(net, num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit({"x": x, "task_id": ids}, y, sample_weight=sw, batch_size=BATCH, epochs=3, shuffle=False,
              verbose=0, callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=0.5))])
    expected, _, _ = simulate_training(x, y, ids, sw, kernel, bias, lr=0.1, eta=0.5, epochs=3)
    np.testing.assert_allclose(model.task_weights.numpy(), expected[-1], atol=1e-5)
    # Without the callback, a further fit leaves the weights where they are.
    before = model.task_weights.numpy().copy()
    model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.task_weights.numpy(), before)


def test_per_element_tasks_ignore_padding():
    """Token-level ids; padded positions (weight 0) hold junk ids and labels."""
    rng = np.random.default_rng(2)
    b, t, vocab = 16, 6, 7
    tokens = rng.integers(1, vocab, size=(b, t)).astype("int32")
    labels = rng.integers(0, vocab, size=(b, t)).astype("int32")
    groups = rng.integers(0, K, size=(b, t)).astype("int32")
    mask = (np.arange(t)[None, :] < rng.integers(2, t + 1, size=(b, 1))).astype("float32")
    inputs = keras.Input((t,), dtype="int32", name="tokens")
    logits = keras.layers.Dense(vocab)(keras.layers.Embedding(vocab, 4)(inputs))
    model = MinimaxModel(keras.Model(inputs, logits), task_names=["noun", "verb", "other"])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    logs = model.evaluate({"tokens": tokens, "task_id": groups}, labels, sample_weight=mask,
                          batch_size=b, return_dict=True, verbose=0)
    junk_groups = np.where(mask > 0, groups, 99).astype("int32")
    junk_labels = np.where(mask > 0, labels, vocab - 1).astype("int32")
    logs_junk = model.evaluate({"tokens": tokens, "task_id": junk_groups}, junk_labels, sample_weight=mask,
                               batch_size=b, return_dict=True, verbose=0)

    z = keras.ops.convert_to_numpy(model.predict({"tokens": tokens}, verbose=0)).astype(np.float64)
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    per_token = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    expected, _ = reference.group_losses(per_token.ravel(), groups.ravel(), mask.ravel(), K)
    for k, name in enumerate(["noun", "verb", "other"]):
        assert logs[f"loss/{name}"] == pytest.approx(expected[k], rel=1e-5)
        assert logs_junk[f"loss/{name}"] == pytest.approx(expected[k], rel=1e-5)
    assert logs["loss/worst"] == pytest.approx(expected.max(), rel=1e-5)
    assert logs["loss"] == pytest.approx(expected.mean(), rel=1e-5)


def two_output_model():
    inputs = keras.Input((D,), name="x")
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    outputs = {"pixels": keras.layers.Dense(2, name="pixels")(hidden), "edges": keras.layers.Dense(1, name="edges")(hidden)}
    return keras.Model(inputs, outputs)


def test_per_output_tasks():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, D)).astype("float32")
    y = {"pixels": rng.normal(size=(32, 2)).astype("float32"), "edges": 10 * rng.normal(size=(32, 1)).astype("float32")}
    model = MinimaxModel(two_output_model(), task_names=["pixels", "edges"], task_key=None)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss={"pixels": "mse", "edges": "mae"})
    logs = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    pred = model.predict(x, verbose=0)
    expected = {"pixels": ((pred["pixels"] - y["pixels"]) ** 2).mean(), "edges": np.abs(pred["edges"] - y["edges"]).mean()}
    for name, value in expected.items():
        assert logs[f"loss/{name}"] == pytest.approx(value, rel=1e-5)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[MirrorDescent(rules.HardMax())])
    worst = max(expected, key=expected.get)
    assert history.history[f"weight/{worst}"][-1] == 1.0
    assert set(history.history) == {"loss", "loss/worst", "loss/pixels", "loss/edges", "weight/pixels", "weight/edges"}


def test_subclassed_model_and_validation_logs():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    x, y, ids, sw = per_example_data()
    model = MinimaxModel(Net(), num_tasks=K)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, epochs=1, verbose=0,
                        validation_data=({"x": x, "task_id": ids}, y), callbacks=[MirrorDescent()])
    assert {"val_loss/task_0", "val_weight/task_2", "val_loss/worst"} <= set(history.history)
    assert not [k for k in history.history if "invalid" in k]


def test_training_step_runs_the_net_in_training_mode_with_its_losses():
    # The training step calls the net in training mode (batch statistics,
    # moving averages updated) and adds the losses its layers create.
    x, y, ids, _ = per_example_data()
    net = keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(2, activity_regularizer=keras.regularizers.L2(0.5)),
        keras.layers.BatchNormalization(momentum=0.5, epsilon=1e-3),
    ])
    dense, norm = net.layers
    model = MinimaxModel(net, num_tasks=K)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    kernel, bias = (w.copy() for w in dense.get_weights())
    history = model.fit({"x": x, "task_id": ids}, y, batch_size=N, epochs=1, verbose=0)

    hidden = x @ kernel + bias
    mean, var = hidden.mean(0), hidden.var(0)
    pred = (hidden - mean) / np.sqrt(var + 1e-3)
    task_losses, _ = reference.group_losses(((pred - y) ** 2).mean(1), ids, np.ones(N), K)
    # The activity loss as this Keras adds it: 3.14 and later divide it by the
    # batch size, earlier releases do not. (The kernel did not move.)
    dense(x)
    regularizer = float(keras.ops.convert_to_numpy(dense.losses[0]))
    assert regularizer in (pytest.approx(0.5 * (hidden**2).sum(), rel=1e-4),
                           pytest.approx(0.5 * (hidden**2).sum() / N, rel=1e-4))
    assert history.history["loss"][0] == pytest.approx(task_losses.mean() + regularizer, rel=1e-4)
    np.testing.assert_allclose(norm.moving_mean.numpy(), 0.5 * mean, rtol=1e-4, atol=1e-6)


def test_evaluate_never_changes_state():
    x, y, ids, _ = per_example_data()
    model = MinimaxModel(linear(), num_tasks=K)
    model.compile(optimizer="sgd", loss="mse")
    model.fit({"x": x, "task_id": ids}, y, batch_size=BATCH, verbose=0,
              callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=1.0))])
    state = [v.numpy().copy() for v in (model.task_weights, model.loss_estimates, model.task_counts, model.task_step)]
    logs = model.evaluate({"x": x, "task_id": ids}, y, batch_size=BATCH, return_dict=True, verbose=0)
    for before, v in zip(state, (model.task_weights, model.loss_estimates, model.task_counts, model.task_step)):
        np.testing.assert_array_equal(v.numpy(), before)
    assert logs["weight/task_0"] == pytest.approx(float(state[0][0]))
    assert isinstance(model.evaluate({"x": x, "task_id": ids}, y, verbose=0), list)
