"""Data-parallel training follows single-device training, on every engine.

The runs happen in subprocesses (`distributed_runs.py`), which simulate
devices before JAX or TensorFlow start: 4 CPU devices under
`keras.distribution` on JAX, 4 logical CPU devices under `MirroredStrategy`
and two worker processes under `MultiWorkerMirroredStrategy` on TensorFlow,
two processes in a DDP loop on torch. Each run trains the same model on the
same global batches on one device and distributed, with groups spread
unevenly over the shards (a group in one shard only, a group absent), and
reports the largest differences. Checks for an engine run when the suite's
backend is that engine's.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import BACKEND

SCRIPT = pathlib.Path(__file__).with_name("distributed_runs.py")
TOLERANCE = 1e-5
CASES = ["exponentiated_gradient", "lookahead", "lookahead_representation", "softmax_per_output",
         "hard_max_every_2_warmup_1", "held_out_exponentiated_gradient"]
MODEL_PARALLEL = ["model_parallel_exponentiated_gradient", "model_parallel_lookahead"]


def only_on(backend):
    return pytest.mark.skipif(
        BACKEND != backend,
        reason=f"runs when the suite's backend is {backend} (KERAS_BACKEND={backend}); this run's is {BACKEND}",
    )


def env():
    root = str(pathlib.Path(__file__).parent.parent)
    return {
        **os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }


def results(stdout):
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {line["case"]: line for line in lines}


def run(*args):
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                            env=env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return results(result.stdout)


def run_together(commands):
    """Runs processes that talk to each other; returns their merged results."""
    processes = [subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env()) for args in commands]
    merged = {}
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, stderr[-3000:]
            merged.update(results(stdout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return merged


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def assert_matches_single_device(result):
    """The distributed run follows the single-device one, and it moved."""
    assert result["steps"] >= 4
    for key in ("weights_diff", "params_diff", "history_diff", "evaluate_diff"):
        assert result[key] is not None and result[key] <= TOLERANCE, (key, result)
    # The weights moved well away from uniform: the agreement is not trivial.
    assert result["weights_moved"] > 0.05, result


def assert_same_invalid_ids_error(result):
    for run_ in ("single", "distributed"):
        assert result[run_]["message"] is not None and result[run_]["message"].startswith("3 task ids"), result
    # The count is over the global batch, not one shard's. Training stopped
    # at the bad batch (the second) or after it.
    assert result["single"]["message"] == result["distributed"]["message"]
    assert result["single"]["steps"] >= 2 and result["distributed"]["steps"] >= 2, result


# --- JAX: keras.distribution -------------------------------------------------


@pytest.fixture(scope="module")
def jax_runs():
    return run("jax", *CASES, *MODEL_PARALLEL, "invalid_ids", "bert")


@only_on("jax")
@pytest.mark.parametrize("case", CASES)
def test_jax_data_parallel_matches_single_device(jax_runs, case):
    result = jax_runs[case]
    assert_matches_single_device(result)
    # Really distributed: state on all 4 devices, the kernel replicated.
    assert result["task_weights"] == {"devices": 4, "replicated": True}
    assert result["hidden_kernel"] == {"devices": 4, "replicated": True}


@only_on("jax")
@pytest.mark.parametrize("case", MODEL_PARALLEL)
def test_jax_model_parallel_matches_single_device(jax_runs, case):
    result = jax_runs[case]
    assert_matches_single_device(result)
    # The kernel is split over the "model" axis; the task weights replicated.
    assert result["hidden_kernel"] == {"devices": 4, "replicated": False}
    assert result["task_weights"] == {"devices": 4, "replicated": True}


@only_on("jax")
def test_jax_invalid_ids_counted_over_the_global_batch(jax_runs):
    assert_same_invalid_ids_error(jax_runs["invalid_ids"])


@only_on("jax")
def test_jax_bert_masked_lm_per_token_groups(jax_runs):
    assert_matches_single_device(jax_runs["bert"])


# --- TensorFlow: tf.distribute ------------------------------------------------


@pytest.fixture(scope="module")
def mirrored_runs():
    return run("mirrored", *CASES, "invalid_ids", "bert")


@only_on("tensorflow")
@pytest.mark.parametrize("case", CASES)
def test_tf_mirrored_matches_single_device(mirrored_runs, case):
    result = mirrored_runs[case]
    assert result["replicas"] == 4
    assert_matches_single_device(result)


@only_on("tensorflow")
def test_tf_mirrored_invalid_ids_counted_over_the_global_batch(mirrored_runs):
    assert_same_invalid_ids_error(mirrored_runs["invalid_ids"])


@only_on("tensorflow")
def test_tf_mirrored_bert_masked_lm_with_bool_padding_mask(mirrored_runs):
    # keras-hub's bool `padding_mask` makes Keras' own fit fail under
    # MirroredStrategy; MinimaxModel builds from the first replica's shard.
    assert mirrored_runs["bert"]["replicas"] == 4
    assert_matches_single_device(mirrored_runs["bert"])


@only_on("tensorflow")
def test_tf_multi_worker_two_processes():
    ports = free_ports(2)
    workers = run_together([("multi_worker", index, *ports) for index in (0, 1)])
    first, second = workers["multi_worker_0"], workers["multi_worker_1"]
    assert first["replicas"] == second["replicas"] == 2
    # Both workers hold the same task weights at every step, and the same
    # parameters; and these are the single-device ones.
    np.testing.assert_array_equal(first["weights"], second["weights"])
    for a, b in zip(first["params"], second["params"]):
        np.testing.assert_array_equal(a, b)
    assert_matches_single_device(first)


@pytest.mark.skipif(BACKEND == "jax", reason="keras.distribution is implemented on JAX: nothing to refuse")
def test_keras_distribution_off_jax_is_an_error():
    import keras
    from keras_taskrobust import MinimaxModel

    model = MinimaxModel(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), num_tasks=2)
    model.compile(optimizer="sgd", loss="mse")
    x = {"features": np.zeros((4, 2), "float32"), "task_id": np.array([0, 1, 0, 1], "int32")}
    mesh = keras.distribution.DeviceMesh((1,), ["batch"], ["cpu:0"])
    keras.distribution.set_distribution(keras.distribution.DataParallel(device_mesh=mesh))
    try:
        for run_ in (model.fit, model.evaluate):
            with pytest.raises(ValueError, match=f"distributes nothing on the {BACKEND} backend"):
                run_(x, np.zeros((4, 1), "float32"), verbose=0)
    finally:
        keras.distribution.set_distribution(None)


# --- torch: DistributedDataParallel -------------------------------------------


@only_on("torch")
def test_torch_ddp_two_processes():
    (port,) = free_ports(1)
    ranks = run_together([("ddp", rank, port) for rank in (0, 1)])
    first, second = ranks["ddp_0"], ranks["ddp_1"]
    assert first["world"] == second["world"] == 2
    for case in ("exponentiated_gradient", "lookahead", "lookahead_representation", "held_out_exponentiated_gradient"):
        np.testing.assert_array_equal(first[case]["weights"], second[case]["weights"])
        for a, b in zip(first[case]["params"], second[case]["params"]):
            np.testing.assert_array_equal(a, b)
        result = first[case]
        assert len(result["weights"]) >= 4
        assert result["weights_diff"] <= TOLERANCE and result["params_diff"] <= TOLERANCE, (case, result)
        assert result["weights_moved"] > 0.05, (case, result)
