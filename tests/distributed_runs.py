"""Distributed training runs against single-device ones, for test_distributed.py.

Run as a script, in a fresh process: devices are simulated before JAX or
TensorFlow start. Every case trains the same model twice on the same global
batches -- on one device, and data-parallel (or model-parallel) -- and prints
one JSON line per case with the largest differences between the two runs.

    python distributed_runs.py jax|mirrored [case ...]
    python distributed_runs.py multi_worker INDEX PORT0 PORT1
    python distributed_runs.py ddp RANK PORT

`jax`: 4 simulated CPU devices, `keras.distribution` DataParallel and
ModelParallel. `mirrored`: 4 logical CPU devices, `tf.distribute.MirroredStrategy`.
`multi_worker`: one of two TensorFlow workers on localhost
(`MultiWorkerMirroredStrategy`). `ddp`: one of two torch processes (gloo),
a custom loop with `DistributedDataParallel`.
"""

import json
import os
import sys
import time

ENGINE = sys.argv[1]
REPLICAS = 4
os.environ["KERAS_BACKEND"] = {"jax": "jax", "mirrored": "tensorflow", "multi_worker": "tensorflow", "ddp": "torch"}[ENGINE]
if ENGINE == "jax":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={REPLICAS}"
if ENGINE == "multi_worker":
    index, ports = int(sys.argv[2]), sys.argv[3:5]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })
if ENGINE == "mirrored":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_taskrobust import MinimaxModel  # noqa: E402
from keras_taskrobust import rules  # noqa: E402
from keras_taskrobust.callbacks import MirrorDescent  # noqa: E402

K, D = 3, 3
N, BATCH = 48, 12  # 4 global batches; 3 examples a shard on 4 replicas


class RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(np.array(keras.ops.convert_to_numpy(self.model.task_weights.value)))


def uneven_data():
    """Per-example data whose groups are spread unevenly over 4 shards of 3.

    Batch 0: task 2 only in shard 0, task 0 absent from the batch. Batch 1:
    task 1 only in shard 3. Batch 2: task 0 only in shard 1, some sample
    weights 0. Batch 3: mixed.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.normal(size=(N, 2)).astype("float32")
    ids = np.array(
        [2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1,
         0, 2, 0, 2, 0, 2, 0, 2, 2, 1, 1, 1,
         1, 2, 1, 0, 0, 0, 2, 1, 2, 1, 2, 1,
         0, 1, 2, 2, 0, 1, 1, 2, 0, 0, 1, 2],
        "int32",
    )
    sw = rng.uniform(0.5, 2.0, size=N).astype("float32")
    sw[[25, 31, 40]] = 0.0
    return {"features": x, "task_id": ids}, y, sw


def held_out_data():
    """A held-out set of every task, for the rule's signal."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(18, D)).astype("float32")
    return {"features": x, "task_id": (np.arange(18) % K).astype("int32")}, rng.normal(size=(18, 2)).astype("float32")


def initial_weights(shapes, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=scale, size=s).astype("float32") for s in shapes]


def mlp():
    net = keras.Sequential([
        keras.Input((D,)),
        # A regulariser: Keras scales its gradient for tf.distribute itself.
        keras.layers.Dense(4, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01), name="hidden"),
        keras.layers.Dense(2, name="head"),
    ])
    net.set_weights(initial_weights([w.shape for w in net.weights]))
    return net


def two_outputs():
    inputs = keras.Input((D,), name="features")
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    net = keras.Model(inputs, outputs)
    net.set_weights(initial_weights([w.shape for w in net.weights]))
    return net


def per_output_data():
    x, y, sw = uneven_data()
    yb = y[:, :1] * 3.0
    swb = sw.copy()
    swb[3:12] = 0.0  # output b: in shard 0 of batch 0 only
    return x["features"], {"a": y, "b": yb}, {"a": sw, "b": swb}


# name: (model factory, MinimaxModel settings, MirrorDescent, data)
CASES = {
    "exponentiated_gradient": (
        mlp, {"num_tasks": K}, lambda: MirrorDescent(rules.ExponentiatedGradient(step_size=0.5)), uneven_data),
    "lookahead": (mlp, {"num_tasks": K}, lambda: MirrorDescent(rules.Lookahead(entropy=0.3)), uneven_data),
    "lookahead_representation": (
        mlp, {"num_tasks": K}, lambda: MirrorDescent(rules.Lookahead(entropy=0.3, representation="hidden")),
        uneven_data),
    "softmax_per_output": (
        two_outputs, {"task_names": ["a", "b"], "task_key": None},
        lambda: MirrorDescent(rules.Softmax(temperature=0.5, average=0.3)), per_output_data),
    # The rule runs on held-out losses outside the step: the same weights on every replica.
    "held_out_exponentiated_gradient": (
        mlp, {"num_tasks": K},
        lambda: MirrorDescent(rules.ExponentiatedGradient(step_size=2.0), update_every=2, held_out=held_out_data()),
        uneven_data),
    "hard_max_every_2_warmup_1": (
        mlp, {"num_tasks": K}, lambda: MirrorDescent(rules.HardMax(average=0.5), update_every=2, warmup_steps=1),
        uneven_data),
}


def train(case, scope, epochs=2):
    """Fits the case under `scope`; returns the weights after every step etc."""
    factory, settings, descent, data = CASES[case]
    x, y, sw = data()
    with scope():
        net = factory()
        model = MinimaxModel(net, **settings)
        model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
        record = RecordWeights()
        history = model.fit(x, y, sample_weight=sw, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                            callbacks=[descent(), record])
        logs = model.evaluate(x, y, sample_weight=sw, batch_size=BATCH, verbose=0, return_dict=True)
    return {
        "weights": np.array(record.weights),
        "params": [np.array(keras.ops.convert_to_numpy(v)) for v in net.weights],
        "history": history.history,
        "evaluate": logs,
        "model": model,
    }


def compare(single, distributed):
    """Largest differences between two runs, and how far the weights moved."""
    flat = lambda logs: np.array([np.ravel(logs[k]) for k in sorted(logs)], dtype="float64")
    same_keys = sorted(single["history"]) == sorted(distributed["history"])
    return {
        "steps": len(single["weights"]),
        "weights_diff": float(np.abs(single["weights"] - distributed["weights"]).max()),
        "params_diff": max(float(np.abs(a - b).max()) for a, b in zip(single["params"], distributed["params"])),
        "history_diff": float(np.abs(flat(single["history"]) - flat(distributed["history"])).max()) if same_keys else None,
        "evaluate_diff": float(np.abs(flat(single["evaluate"]) - flat(distributed["evaluate"])).max()),
        "weights_moved": float(np.abs(single["weights"] - 1.0 / single["weights"].shape[1]).max()),
        "final_weights": single["weights"][-1].tolist(),
    }


def invalid_ids_error(scope):
    """The error for 3 ids out of range, all in one shard of the second batch."""
    x, y, sw = uneven_data()
    x["task_id"] = x["task_id"].copy()
    x["task_id"][[18, 19, 20]] = K  # batch 1, shard 2
    with scope():
        model = MinimaxModel(mlp(), num_tasks=K)
        model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
        try:
            model.fit(x, y, sample_weight=sw, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            message = None
        except ValueError as error:
            message = str(error)
    return {"message": message, "steps": int(model.task_step.numpy())}


def emit(case, result):
    print(json.dumps({"case": case, **result, "cpu_seconds": time.process_time()}), flush=True)


# --- keras-hub BertMaskedLM, per-token task ids -----------------------------

VOCAB, SEQ, MASKED = 50, 12, 4


def bert_data(n=24, bool_mask=False):
    rng = np.random.default_rng(0)
    lengths = rng.integers(6, SEQ + 1, size=n)
    padding = np.arange(SEQ)[None] < lengths[:, None]
    x = {
        "token_ids": rng.integers(1, VOCAB, size=(n, SEQ)).astype("int32"),
        "padding_mask": padding if bool_mask else padding.astype("int32"),
        "segment_ids": np.zeros((n, SEQ), "int32"),
        "mask_positions": np.sort(rng.integers(0, 6, size=(n, MASKED)), axis=1).astype("int32"),
        "task_id": rng.integers(0, K, size=(n, MASKED)).astype("int32"),
    }
    x["task_id"][:3] = 2  # the first batch's group 2 lives in shard 0 only
    x["task_id"][3:BATCH] = np.where(x["task_id"][3:BATCH] == 2, 0, x["task_id"][3:BATCH])
    y = rng.integers(1, VOCAB, size=(n, MASKED)).astype("int32")
    w = np.ones((n, MASKED), "float32")
    w[:, -1] = 0.0  # the last masked slot is padding
    return x, y, w


def bert_train(scope, bool_mask=False):
    import keras_hub

    x, y, w = bert_data(bool_mask=bool_mask)
    with scope():
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
            max_sequence_length=SEQ, dropout=0.0,
        )
        mlm = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None, dropout=0.0)
        mlm.set_weights(initial_weights([v.shape for v in mlm.weights], seed=2, scale=0.2))
        model = MinimaxModel(mlm, task_names=["noun", "verb", "function"])
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        record = RecordWeights()
        history = model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                            callbacks=[MirrorDescent(rules.Softmax(temperature=0.05)), record])
    return {
        "weights": np.array(record.weights),
        "params": [np.array(keras.ops.convert_to_numpy(v)) for v in mlm.weights],
        "history": history.history,
        "evaluate": {"loss": history.history["loss"]},
        "model": model,
    }


# --- Engines ----------------------------------------------------------------


def single_device():
    import contextlib

    return contextlib.nullcontext()


def run_jax(cases):
    import jax

    devices = keras.distribution.list_devices()
    assert len(devices) == REPLICAS and len(jax.devices()) == REPLICAS, devices

    def data_parallel():
        return keras.distribution.DataParallel(devices=devices).scope()

    def model_parallel():
        mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices=devices)
        layout = keras.distribution.LayoutMap(mesh)
        layout[".*hidden/kernel"] = (None, "model")
        layout[".*hidden/bias"] = ("model",)
        layout[".*head/kernel"] = ("model", None)
        return keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch").scope()

    def devices_of(run, variable):
        value = getattr(run["model"], variable).value if isinstance(variable, str) else variable.value
        return {"devices": len(value.sharding.device_set), "replicated": bool(value.sharding.is_fully_replicated)}

    for case in cases:
        if case == "invalid_ids":
            emit(case, {"single": invalid_ids_error(single_device), "distributed": invalid_ids_error(data_parallel)})
            continue
        if case == "bert":
            result = compare(bert_train(single_device), distributed := bert_train(data_parallel))
            emit(case, {**result, "task_weights": devices_of(distributed, "task_weights")})
            continue
        parallel = model_parallel if case.startswith("model_parallel") else data_parallel
        name = case.replace("model_parallel_", "")
        distributed = train(name, parallel)
        result = compare(train(name, single_device), distributed)
        result["task_weights"] = devices_of(distributed, "task_weights")
        result["hidden_kernel"] = devices_of(distributed, distributed["model"].model.get_layer("hidden").kernel)
        emit(case, result)


def run_mirrored(cases):
    import tensorflow as tf

    devices = [f"/cpu:{i}" for i in range(REPLICAS)]
    strategy = tf.distribute.MirroredStrategy(devices)
    assert strategy.num_replicas_in_sync == REPLICAS
    for case in cases:
        if case == "invalid_ids":
            emit(case, {"single": invalid_ids_error(single_device), "distributed": invalid_ids_error(strategy.scope)})
            continue
        if case == "bert":
            # keras-hub's padding mask as bool: the trap DESIGN.md notes.
            result = compare(bert_train(single_device), distributed := bert_train(strategy.scope, bool_mask=True))
            emit(case, {**result, "replicas": distributed["model"].distribute_strategy.num_replicas_in_sync})
            continue
        distributed = train(case, strategy.scope)
        result = compare(train(case, single_device), distributed)
        result["replicas"] = distributed["model"].distribute_strategy.num_replicas_in_sync
        emit(case, result)


def run_multi_worker():
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    distributed = train("exponentiated_gradient", strategy.scope)
    result = {"replicas": strategy.num_replicas_in_sync, "weights": distributed["weights"].tolist(),
              "params": [p.tolist() for p in distributed["params"]]}
    if index == 0:
        result.update(compare(train("exponentiated_gradient", single_device), distributed))
    emit(f"multi_worker_{index}", result)


DDP_CASES = ("exponentiated_gradient", "lookahead", "lookahead_representation", "held_out_exponentiated_gradient")


def ddp_fit(model, x, y, sw, rank, world, descent, epochs=2):
    """The torch DDP loop of the distributed training guide, on shard `rank`."""
    import torch

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    record = []
    shard = BATCH // world
    for epoch in range(epochs):
        descent.on_epoch_begin(epoch)
        for batch, start in enumerate(range(rank * shard, N, BATCH)):
            part = slice(start, start + shard)
            xb = {key: value[part] for key, value in x.items()}
            y_pred = ddp(xb, training=True)
            model.zero_grad()
            loss = model.compute_loss(xb, y[part], y_pred, sw[part], training=True)
            loss.backward()  # DDP averages the gradients over the processes
            with torch.no_grad():
                model.optimizer.apply([v.value.grad for v in model.trainable_variables], model.trainable_variables)
            descent.on_train_batch_end(batch)  # held-out losses, when due: the same on every process
            record.append(keras.ops.convert_to_numpy(model.task_weights.value).copy())
    return np.array(record)


def run_ddp(rank, port):
    import torch

    world = 2
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://localhost:{port}", rank=rank, world_size=world)
    result = {"world": torch.distributed.get_world_size()}
    for case in DDP_CASES:
        factory, settings, descent, data = CASES[case]
        x, y, sw = data()
        model = MinimaxModel(factory(), **settings)
        model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
        descent = descent()
        descent.set_model(model)
        descent.on_train_begin()  # attaches the rule, as `fit` would
        weights = ddp_fit(model, x, y, sw, rank, world, descent)
        params = [np.array(keras.ops.convert_to_numpy(v)) for v in model.model.weights]
        result[case] = {"weights": weights.tolist(), "params": [p.tolist() for p in params]}
        if rank == 0:
            # A fit in this process, not run by DDP: single-process, even
            # with the process group up.
            single = train(case, single_device)
            result[case].update({
                "weights_diff": float(np.abs(single["weights"] - weights).max()),
                "params_diff": max(float(np.abs(a - b).max()) for a, b in zip(single["params"], params)),
                "weights_moved": float(np.abs(weights - 1.0 / weights.shape[1]).max()),
            })
        torch.distributed.barrier()
    emit(f"ddp_{rank}", result)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if ENGINE == "jax":
        run_jax(sys.argv[2:])
    elif ENGINE == "mirrored":
        run_mirrored(sys.argv[2:])
    elif ENGINE == "multi_worker":
        run_multi_worker()
    elif ENGINE == "ddp":
        run_ddp(int(sys.argv[2]), sys.argv[3])
