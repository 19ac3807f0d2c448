"""The workloads the timing benchmarks share: a model maker, its loss, batch and data.

Each `<name>_workload(num_tasks, rng)` returns `(make_net, loss, batch_size,
plain_data, minimax_data)`: `make_net()` builds the network afresh, the
data are `fit` keyword arguments (`x`, `y`, maybe `sample_weight`) for the
plain network and for `MinimaxModel` (the same, with task ids under
`x["task_id"]`). Under `harness.SMOKE` each holds a few batches only.
"""

import numpy as np

import harness


def _batches(batches):
    return 2 if harness.SMOKE else batches


def mlp(width=256, output_activation="softmax"):
    """The MLP: 64 inputs, two hidden layers `hidden_1`, `hidden_2` of `width` units, 10 outputs."""
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(width, activation="relu", name="hidden_1"),
        keras.layers.Dense(width, activation="relu", name="hidden_2"),
        keras.layers.Dense(10, activation=output_activation, name="output"),
    ])


def mlp_workload(num_tasks, rng, width=256):
    """Returns `(make_net, loss, batch_size, plain_data, minimax_data)`.

    `width`: the units of the two hidden layers.
    """
    make_net = lambda: mlp(width)
    n = 256 * _batches(32)
    features = rng.normal(size=(n, 64)).astype("float32")
    labels = rng.integers(0, 10, n).astype("int32")
    task_ids = rng.integers(0, num_tasks, n).astype("int32")
    plain = {"x": features, "y": labels}
    minimax = {"x": {"features": features, "task_id": task_ids}, "y": labels}
    return make_net, "sparse_categorical_crossentropy", 256, plain, minimax


def bert_workload(num_tasks, rng):
    """A tiny BERT masked LM; padding_mask is int32 (the backbone's Input dtype)."""
    import keras
    import keras_hub

    def make_net():
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
            intermediate_dim=128, max_sequence_length=64,
        )
        return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)

    n, seq, masks = 32 * _batches(12), 64, 10
    lengths = rng.integers(masks, seq + 1, n)
    padding_mask = (np.arange(seq) < lengths[:, None]).astype("int32")
    x = {
        "token_ids": rng.integers(0, 1000, (n, seq)).astype("int32") * padding_mask,
        "padding_mask": padding_mask,
        "segment_ids": np.zeros((n, seq), "int32"),
        "mask_positions": rng.integers(0, lengths[:, None], (n, masks)).astype("int32"),
    }
    labels = rng.integers(0, 1000, (n, masks)).astype("int32")
    # Like keras-hub's preprocessor: 1 for a real masked position, 0 for padding.
    weights = (np.arange(masks) < rng.integers(masks // 2, masks + 1, n)[:, None]).astype("float32")
    task_ids = rng.integers(0, num_tasks, (n, masks)).astype("int32")
    plain = {"x": x, "y": labels, "sample_weight": weights}
    minimax = {"x": {**x, "task_id": task_ids}, "y": labels, "sample_weight": weights}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return make_net, loss, 32, plain, minimax


def cnn_workload(num_tasks, rng):
    """The main job's CNN (recipe `views`): 28 x 28 images, a 16-unit backbone, 20 logits, batch 64."""
    import keras

    from keras_taskrobust.recipes.digit_views import build_network

    n = 64 * _batches(32)
    images = rng.uniform(size=(n, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 20, n).astype("int32")
    task_ids = rng.integers(0, num_tasks, n).astype("int32")
    plain = {"x": images, "y": labels}
    minimax = {"x": {"image": images, "task_id": task_ids}, "y": labels}
    return build_network, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 64, plain, minimax


WORKLOADS = {"mlp": mlp_workload, "bert": bert_workload, "cnn": cnn_workload}


def forwarding_model(net):
    """A wrapper that only forwards `x` without its task ids to `net`: the floor."""
    import keras

    class Forwarding(keras.Model):
        def __init__(self, net, **kwargs):
            super().__init__(**kwargs)
            self.net = net

        def call(self, inputs, training=None):
            inputs = {k: v for k, v in inputs.items() if k != "task_id"}
            return self.net(next(iter(inputs.values())) if len(inputs) == 1 else inputs, training=training)

    return Forwarding(net)


