"""Test set-up: offline, quiet, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()

# (run_eagerly, jit_compile) settings each backend offers: compiled and eager.
# torch's compiled mode (torch.compile) is excluded: Keras marks it experimental.
STEP_MODES = {
    "jax": [(False, True), (True, False)],
    "tensorflow": [(False, True), (False, False), (True, False)],
    "torch": [(False, False)],
}[BACKEND]
STEP_MODE_IDS = [("eager" if e else "jit" if j else "graph") for e, j in STEP_MODES]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
