"""Test set-up: offline, quiet, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
if BACKEND == "torch":
    import torch

    # The test models are tiny: intra-op threads only add synchronisation,
    # which turns into long waits when the two cores are busy.
    torch.set_num_threads(1)

# (run_eagerly, jit_compile) settings each backend offers: compiled and eager.
STEP_MODES = {
    "jax": [(False, True), (True, False)],
    "tensorflow": [(False, True), (False, False), (True, False)],
    "torch": [(False, False)],
}[BACKEND]
# torch.compile takes about a minute per model here: one test uses it.
TRAIN_MODES = STEP_MODES + ([(False, True)] if BACKEND == "torch" else [])


def mode_ids(modes):
    return [("eager" if e else "jit" if j else "graph") for e, j in modes]


STEP_MODE_IDS = mode_ids(STEP_MODES)
TRAIN_MODE_IDS = mode_ids(TRAIN_MODES)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
