"""Task mixtures, the offline digit-domains dataset and the main job."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from keras_taskrobust import data

SIZES = {"large": 600, "medium": 300, "small": 100}


def _tasks():
    # Every example carries its task's index in its features and labels.
    return {
        name: (np.full((n, 3), k, "float32"), np.full((n,), 10 * k + 1, "int32"))
        for k, (name, n) in enumerate(SIZES.items())
    }


def _ids(dataset):
    batches = [(x["task_id"].numpy(), x["features"].numpy(), y.numpy()) for x, y in dataset]
    return batches


@pytest.mark.parametrize(
    "sampling, expected",
    [
        ("proportional", [0.6, 0.3, 0.1]),
        ("uniform", [1 / 3] * 3),
        ("temperature", np.sqrt([600, 300, 100]) / np.sqrt([600, 300, 100]).sum()),
    ],
)
def test_task_frequencies_match_the_sampling(sampling, expected):
    assert np.allclose(data.task_probabilities(list(SIZES.values()), sampling, 2.0), expected)
    stream = data.mix_tasks(_tasks(), batch_size=50, sampling=sampling, temperature=2.0, steps_per_epoch=120, seed=1)
    ids = np.concatenate([b[0] for b in _ids(stream)])
    assert len(ids) == 6000
    frequencies = np.bincount(ids, minlength=3) / len(ids)
    # Four standard errors of a binomial proportion: fails by chance about once in 10^4.
    tolerance = 4 * np.sqrt(np.asarray(expected) * (1 - np.asarray(expected)) / len(ids))
    assert np.all(np.abs(frequencies - expected) < tolerance), (frequencies, expected)


def test_task_ids_travel_with_their_examples():
    for ids, features, labels in _ids(data.mix_tasks(_tasks(), batch_size=32, seed=0)):
        assert ids.dtype == np.int32 and ids.shape == (32,)
        np.testing.assert_array_equal(features[:, 0], ids)
        np.testing.assert_array_equal(labels, 10 * ids + 1)


def test_each_pass_draws_new_batches():
    stream = data.mix_tasks(_tasks(), batch_size=32, steps_per_epoch=5, seed=0)
    first, second = (np.concatenate([b[0] for b in _ids(stream)]) for _ in range(2))
    assert not np.array_equal(first, second)


def test_stratified_batches_hold_every_task_in_fixed_counts():
    counts = data.stratified_counts(data.task_probabilities(list(SIZES.values())), 20)
    assert counts.sum() == 20 and np.all(counts >= 1)
    np.testing.assert_array_equal(counts, [11, 6, 3])  # 1 + round(0.6, 0.3, 0.1 * 17)
    stream = data.mix_tasks(_tasks(), batch_size=20, stratified=True, steps_per_epoch=30, seed=0)
    for ids, features, _ in _ids(stream):
        np.testing.assert_array_equal(np.bincount(ids, minlength=3), counts)
        np.testing.assert_array_equal(features[:, 0], ids)


def test_tfds_style_dict_examples_and_datasets():
    images = tf.data.Dataset.from_tensor_slices({"image": np.zeros((10, 2, 2), "uint8"), "label": np.arange(10)})
    pairs = tf.data.Dataset.from_tensor_slices((np.ones((10, 2, 2), "uint8"), np.arange(10)))
    x, y = next(iter(data.mix_tasks({"a": images, "b": pairs}, batch_size=8, seed=0)))
    assert sorted(x) == ["features", "task_id"] and x["features"].shape == (8, 2, 2)
    np.testing.assert_array_equal(x["features"][:, 0, 0].numpy(), x["task_id"].numpy())


def test_with_task_ids_splits_one_dataset_by_a_function():
    labels = np.arange(100) % 20
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((100, 2), "float32"), labels))
    # CIFAR-100-style: 4 superclasses of 5 classes each.
    out = data.with_task_ids(ds, lambda x, y: y // 5, num_tasks=4).batch(25)
    ids = np.concatenate([x["task_id"].numpy() for x, _ in out])
    np.testing.assert_array_equal(ids, labels // 5)
    bad = data.with_task_ids(ds, lambda x, y: y // 5, num_tasks=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, 3\)"):
        list(bad)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="Unknown sampling 'balanced'.*proportional"):
        data.mix_tasks(_tasks(), batch_size=8, sampling="balanced")
    with pytest.raises(ValueError, match="at least the number of tasks"):
        data.mix_tasks(_tasks(), batch_size=2, stratified=True)
    with pytest.raises(TypeError, match="Task 'a'"):
        data.mix_tasks({"a": [1, 2, 3, 4]}, batch_size=2)
    unlabeled = tf.data.Dataset.from_tensor_slices({"image": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="label_key"):
        data.mix_tasks({"a": unlabeled}, batch_size=2)
    with pytest.raises(ValueError, match="Unknown domain.*clean"):
        data.render(np.zeros((1, 8, 8), "uint8"), "sepia")
    with pytest.raises(ValueError, match="Unknown domain.*rotated"):
        data.load_domains(domains=["clean", "sepia"])
    with pytest.raises(ValueError, match="Unknown digit_domains config 'svhn'.*mnist"):
        data.load_domains(config="svhn")


def test_domains_render_as_documented():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2, 8, 8)).astype("uint8")
    x = image.astype("float64")
    np.testing.assert_array_equal(data.render(image, "clean"), image)
    np.testing.assert_array_equal(data.render(image, "rotated")[0], np.rot90(image[0]))
    np.testing.assert_array_equal(data.render(image, "inverted"), 255 - image)
    blocks = x.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(data.render(image, "low_resolution")[:, ::2, ::2], np.rint(blocks))
    # The blur keeps a constant image's interior and spreads a single dot symmetrically.
    dot = np.zeros((1, 28, 28), "uint8")
    dot[0, 14, 14] = 255
    blurred = data.render(dot, "blurred")[0].astype(int)
    assert blurred[14, 14] < 255 and blurred[14, 13] == blurred[14, 15] == blurred[13, 14] > 0
    noisy = data.render(image, "noisy", np.random.default_rng(1)).astype(float)
    assert 40 < np.std(noisy - x) < 110


@pytest.fixture(scope="module")
def digits_dirs(tmp_path_factory):
    dirs = [tmp_path_factory.mktemp(f"tfds{i}") for i in range(2)]
    for d in dirs:
        tfds.builder("digit_domains/digits", data_dir=str(d)).download_and_prepare()
    return dirs


def test_digit_domains_builds_offline_with_documented_splits(digits_dirs):
    builder = tfds.builder("digit_domains/digits", data_dir=str(digits_dirs[0]))
    assert builder.info.splits["train"].num_examples == 8652
    assert builder.info.splits["test"].num_examples == 2130
    assert builder.info.features["image"].shape == (8, 8, 1)
    assert builder.info.features["domain"].names == list(data.DOMAINS)
    test = data.load_domains("test", config="digits", data_dir=digits_dirs[0])
    assert list(test) == list(data.DOMAINS)
    # The test split is the last fifth of each digit's images.
    per_digit = np.bincount(load_digits().target) // 5
    for domain, (x, y) in test.items():
        assert x.shape == (355, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(np.bincount(y, minlength=10), per_digit)
    clean, rotated = test["clean"][0], test["rotated"][0]
    assert abs(clean.mean() - rotated.mean()) < 1e-6  # the same digits, turned
    # tfds.load works by name once the package's data module is imported.
    ds = tfds.load("digit_domains/digits", split="train", data_dir=str(digits_dirs[0]), as_supervised=True)
    image, label = next(iter(ds))
    assert image.shape == (8, 8, 1) and 0 <= int(label) < 10


def test_digit_domains_builds_deterministically(digits_dirs):
    a, b = (data.load_domains("train", config="digits", data_dir=d) for d in digits_dirs)
    for domain in data.DOMAINS:
        np.testing.assert_array_equal(a[domain][0], b[domain][0])
        np.testing.assert_array_equal(a[domain][1], b[domain][1])


def _main(*args, cwd):
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: the command line quiets TensorFlow itself
    return subprocess.run([sys.executable, "-m", "keras_taskrobust", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=900)


def test_main_job_reports_every_view_and_the_sensitivity_check(tmp_path):
    result = _main("--quick", "--output", "out", "--data-dir", str(tmp_path / "tfds"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # What a newcomer reads: a line per run and the tables, no progress bar, no start-up noise.
    lines = result.stdout.splitlines()
    assert [line.split("(")[0].split() for line in lines if line.startswith("seed ")] == [
        ["seed", "0", arm] for arm in ("average", "uniform", "exponentiated_gradient", "sensitivity")]
    assert len(lines) < 40 and max(map(len, lines)) < 200, result.stdout
    assert not [line for line in lines if "━" in line or "/step" in line or "\r" in line], result.stdout
    assert result.stderr.strip() == "", result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["recipe"] == "views" and report["backend"] == os.environ.get("KERAS_BACKEND", "jax")
    views = ["digit", "rotation", "position", "mirror"]
    assert sorted(report["rules"]) == ["average", "exponentiated_gradient", "sensitivity", "uniform"]
    for arm in report["rules"].values():
        assert sorted(arm["downstream"]) == sorted(views)
        scores = [arm["downstream"][v]["mean"] for v in views]
        # One seed: the worst is that seed's worst view, the mean its mean; no spread.
        assert arm["worst"]["mean"] == pytest.approx(min(scores)) and arm["worst"]["std"] == 0.0
        assert arm["mean"]["mean"] == pytest.approx(np.mean(scores))
        assert np.isclose(sum(arm["task_weights"].values()), 1.0)
    # The fixed weighting favours the view that was worst under the average loss.
    average = report["rules"]["average"]["downstream"]
    assert report["sensitivity"]["views"] == [min(average, key=lambda v: average[v]["mean"])]
    favoured = report["sensitivity"]["views"][0]
    assert report["rules"]["sensitivity"]["task_weights"][favoured] == pytest.approx(0.5)
    assert report["sensitivity"]["moved"] == pytest.approx(
        report["rules"]["sensitivity"]["downstream"][favoured]["mean"] - average[favoured]["mean"])
    assert report["robust"]["signal"] == "excess"
    assert (tmp_path / "out" / "views.png").stat().st_size > 10_000
    assert "Sensitivity check" in result.stdout


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "jax") != "torch",
                    reason="the default recipe's quick run covers the command line on every backend; the domains "
                           "recipe runs once, on torch, to keep the suite's time down")
def test_domains_recipe_writes_report_and_figure(tmp_path):
    result = _main("run", "domains", "--quick", "--verbose", "0", "--output", "out", "--data-dir",
                   str(tmp_path / "tfds"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["recipe"] == "domains" and report["backend"] == os.environ.get("KERAS_BACKEND", "jax")
    for rule in ("uniform", "exponentiated_gradient"):
        result_of_rule = report["rules"][rule]
        assert sorted(result_of_rule["downstream"]) == sorted(data.DOMAINS)
        assert result_of_rule["worst"] == min(result_of_rule["downstream"].values())
        assert np.isclose(sum(result_of_rule["task_weights"].values()), 1.0)
    assert (tmp_path / "out" / "domains.png").stat().st_size > 10_000
    assert "Linear-probe accuracy per domain" in result.stdout


def test_cifar100_superclasses_become_tasks():
    # tfds.testing.mock_data fakes the catalogue's CIFAR-100 offline.
    with tfds.testing.mock_data(num_examples=40):
        ds = tfds.load("cifar100", split="train")
        tasks = data.with_task_ids(ds, lambda x, y: x["coarse_label"], num_tasks=20).batch(40)
        x, y = next(iter(tasks))
    assert x["image"].shape == (40, 32, 32, 3) and y.shape == (40,)
    np.testing.assert_array_equal(x["task_id"].numpy(), x["coarse_label"].numpy())
