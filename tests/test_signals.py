"""The rules' signal: held-out losses and the excess over a reference, against NumPy through `fit`."""

import numpy as np
import pytest

import keras
import reference
import tensorflow as tf
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

K, N, BATCH = 3, 48, 8
ETA = 0.5


def data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 4)).astype("float32")
    ids = (np.arange(N) % K).astype("int32")
    # Task k's targets are noisier by k: different losses per task.
    y = (x[:, :1] + (1 + ids[:, None]) * rng.normal(size=(N, 1))).astype("float32")
    return {"x": x, "task_id": ids}, y


def new_model(learning_rate=0.0):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model = MinimaxModel(net, task_names=["a", "b", "c"])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def numpy_task_losses(model, x, y, reference_pred=None):
    kernel, bias = model.model.layers[0].get_weights()
    per_element = ((x["x"] @ kernel + bias - y) ** 2).mean(axis=1)
    if reference_pred is not None:
        per_element = np.maximum(per_element - ((reference_pred - y) ** 2).mean(axis=1), 0)
    return np.array([per_element[x["task_id"] == k].mean() for k in range(K)])


@pytest.fixture(scope="module")
def model():
    return new_model()


def test_held_out_losses_drive_the_rule(model):
    x, y = data(0)
    held_x, held_y = data(1)
    descent = MirrorDescent(rules.ExponentiatedGradient(step_size=ETA), update_every=2, warmup_steps=1,
                            held_out=(held_x, held_y))
    start = model.task_weights.numpy().copy()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[descent])
    # Learning rate 0: the model, and so its held-out losses, stay put.
    losses = numpy_task_losses(model, held_x, held_y)
    steps = 2 * N // BATCH
    updates = len([s for s in range(1, steps + 1) if s > 1 and (s - 1) % 2 == 0])
    expected = start.astype(float)
    for _ in range(updates):
        expected = reference.exponentiated_gradient(expected, losses, ETA)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.held_out_losses.numpy(), losses, rtol=1e-5)
    for k, name in enumerate("abc"):
        assert history.history[f"held_out/{name}"][-1] == pytest.approx(losses[k], rel=1e-5)
    # The training step left the weights alone: only the held-out updates moved them.
    assert history.history["weight/c"][-1] == pytest.approx(expected[2], rel=1e-5)


def test_reference_losses_give_the_rule_the_clipped_excess():
    model = new_model()
    x, y = data(0)
    losses = numpy_task_losses(model, x, y)
    ref = [losses[0] + 1.0, losses[1] * 0.5, losses[2] * 0.9]  # task a: no excess at all
    rule = rules.ExponentiatedGradient(step_size=ETA)
    model.fit(x, y, batch_size=N, epochs=3, shuffle=False, verbose=0,
              callbacks=[MirrorDescent(rule, reference_losses=ref)])
    expected = np.full(K, 1 / K)
    for _ in range(3):
        expected = reference.exponentiated_gradient(expected, np.maximum(losses - ref, 0), ETA)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="one per task"):
        model.fit(x, y, batch_size=N, verbose=0, callbacks=[MirrorDescent(rule, reference_losses=[1.0])])


def test_a_reference_model_gives_the_per_element_excess_on_held_out_data_or_in_the_step():
    model = new_model()
    x, y = data(0)
    held_x, held_y = data(1)
    keras.utils.set_random_seed(1)
    ref = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    descent = MirrorDescent(rules.ExponentiatedGradient(step_size=ETA), update_every=N // BATCH,
                            held_out=(held_x, held_y), reference=ref)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[descent])
    excess = numpy_task_losses(model, held_x, held_y, ref.predict(held_x["x"], verbose=0))
    expected = reference.exponentiated_gradient(np.full(K, 1 / K), excess, ETA)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-5)

    # Without held-out data: the excess on each training batch, inside the step.
    model = new_model()
    model.fit(x, y, batch_size=N, epochs=3, shuffle=False, verbose=0,
              callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=ETA), reference=ref)])
    ref_pred = ref.predict(x["x"], verbose=0)
    excess = numpy_task_losses(model, x, y, ref_pred)
    ref_losses = np.array([((ref_pred - y) ** 2).mean(axis=1)[x["task_id"] == k].mean() for k in range(K)])
    # Clipped per element, not per task: the means' difference is not the excess.
    assert np.abs(excess - (numpy_task_losses(model, x, y) - ref_losses)).min() > 0.1
    expected = np.full(K, 1 / K)
    for _ in range(3):  # learning rate 0: the same excess at every step
        expected = reference.exponentiated_gradient(expected, excess, ETA)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-5)


class RecordLayer(keras.callbacks.Callback):
    """The linear layer's kernel and bias after every step (listed before MirrorDescent: read first)."""

    def __init__(self):
        super().__init__()
        self.layer_weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.layer_weights.append([w.copy() for w in self.model.model.layers[0].get_weights()])


def test_learning_progress_follows_the_held_out_losses_as_they_fall():
    model = new_model(learning_rate=0.05)
    x, y = data(0)
    held_x, held_y = data(1)
    rule = rules.LearningProgress(step_size=5.0, smoothing=0.1)
    record = RecordLayer()
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
              callbacks=[record, MirrorDescent(rule, update_every=3, held_out=(held_x, held_y))])
    expected, previous = np.full(K, 1 / K), None
    for step in range(3, len(record.layer_weights) + 1, 3):
        kernel, bias = record.layer_weights[step - 1]
        per_element = ((held_x["x"] @ kernel + bias - held_y) ** 2).mean(axis=1)
        losses = np.array([per_element[held_x["task_id"] == k].mean() for k in range(K)])
        expected = reference.learning_progress(expected, losses, losses if previous is None else previous, 5.0, 0.1)
        previous = losses
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-4)
    assert np.ptp(expected) > 0.01  # the losses fell at different rates: the weights moved


def test_lookahead_takes_its_task_gradients_on_the_held_out_data():
    model = new_model()
    x, y = data(0)
    held_x, held_y = data(1)
    rule = rules.Lookahead(learning_rate=2.0, entropy=0.5, split_batch=False)
    # In batches: G is still that of the whole held-out set's task gradients.
    batched = tf.data.Dataset.from_tensor_slices((held_x, held_y)).batch(16)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[MirrorDescent(rule, update_every=N // (2 * BATCH), held_out=batched)])
    kernel, bias = model.model.layers[0].get_weights()
    ids = held_x["task_id"]
    jacobian = reference.linear_mse_task_gradients(held_x["x"], held_y, ids, np.ones(len(ids)), kernel, bias, K)
    losses = numpy_task_losses(model, held_x, held_y)
    expected = np.full(K, 1 / K)
    for _ in range(2):  # learning rate 0: the same losses and G at both updates
        expected = reference.lookahead(expected, losses, jacobian @ jacobian.T, 2.0, 0.5, rule.temperature,
                                       rule.inner_steps, rule.inner_step_size)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-4)


def test_held_out_gram_follows_the_weights_as_training_moves_them():
    # JAX compiles the held-out G once, the weights its arguments: after
    # they change it must see the new ones, not the ones it was traced with.
    from keras_taskrobust.models import held_out

    model = new_model()
    held_x, held_y = data(1)
    rule = rules.Lookahead(split_batch=False)
    layer = model.model.layers[0]
    for kernel, bias in [layer.get_weights(), (np.full((4, 1), 0.5, "float32"), np.array([-1.0], "float32"))]:
        layer.set_weights([kernel, bias])
        gram = held_out.task_gram(model, (held_x, held_y), rule)
        jacobian = reference.linear_mse_task_gradients(held_x["x"], held_y, held_x["task_id"], np.ones(N), kernel, bias, K)
        np.testing.assert_allclose(gram, jacobian @ jacobian.T, rtol=1e-4, atol=1e-5)


def test_lookahead_on_held_out_outputs_with_their_own_sample_weights():
    """Tasks by output (a dict), per-output sample weights, G on a representation, held-out data in batches."""
    rng = np.random.default_rng(2)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    keras.utils.set_random_seed(0)
    net = keras.Model(inputs, {name: keras.layers.Dense(1, name=name)(hidden) for name in ("a", "b")})
    model = MinimaxModel(net, task_names=["a", "b"], task_key=None)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss={"a": "mse", "b": "mse"})
    x = rng.normal(size=(N, 4)).astype("float32")
    y = {"a": x[:, :1] + rng.normal(size=(N, 1)).astype("float32"), "b": 3 * rng.normal(size=(N, 1)).astype("float32")}
    weights = {name: rng.uniform(0.5, 2.0, N).astype("float32") for name in ("a", "b")}
    batched = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(20)
    rule = rules.Lookahead(learning_rate=2.0, entropy=0.5, representation="hidden", split_batch=False)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[MirrorDescent(rule, update_every=1, held_out=batched)])

    kernel, bias = net.get_layer("hidden").get_weights()
    h = x @ kernel + bias
    losses, jacobian = [], []
    for name in ("a", "b"):
        head_kernel, head_bias = net.get_layer(name).get_weights()
        error, w = (h @ head_kernel + head_bias - y[name])[:, 0], weights[name]
        losses.append((w * error**2).sum() / w.sum())
        jacobian.append(((w * 2 * error / w.sum())[:, None] * head_kernel[:, 0]).sum(axis=0))
    jacobian = np.array(jacobian)
    expected = np.full(2, 0.5)
    for _ in range(N // 16):  # learning rate 0: the same losses and G at every update
        expected = reference.lookahead(expected, np.array(losses), jacobian @ jacobian.T, 2.0, 0.5, rule.temperature,
                                       rule.inner_steps, rule.inner_step_size)
    np.testing.assert_allclose(model.task_weights.numpy(), expected, rtol=1e-4)


def test_held_out_weights_resume_on_the_same_trajectory(tmp_path):
    x, y = data(0)
    held_out = data(1)
    # Learning progress: the step after the resume needs the last held-out losses too.
    callback = lambda: MirrorDescent(rules.LearningProgress(step_size=5.0), update_every=4, held_out=held_out)
    fit = lambda model, epochs: model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                                          callbacks=[callback()])
    straight = new_model(learning_rate=0.05)
    fit(straight, 2)
    resumed = new_model(learning_rate=0.05)
    fit(resumed, 1)
    resumed.save(tmp_path / "model.keras")
    resumed = keras.models.load_model(tmp_path / "model.keras")
    fit(resumed, 1)
    assert np.ptp(straight.task_weights.numpy()) > 1e-3  # the weights moved
    for name in ("task_weights", "held_out_losses", "task_step"):
        np.testing.assert_allclose(getattr(resumed, name).numpy(), getattr(straight, name).numpy(), rtol=1e-5)
