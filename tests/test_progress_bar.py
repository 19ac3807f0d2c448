"""The progress bar of a MinimaxModel stays readable at many tasks; every key still reaches the callbacks."""

import csv
import re

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust.callbacks import TaskProgbarLogger

K = 64
N = 128


@pytest.fixture(scope="module")
def model():
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    minimax = MinimaxModel(net, num_tasks=K)
    minimax.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return minimax


def data():
    rng = np.random.default_rng(0)
    x = {"features": rng.normal(size=(N, 3)).astype("float32"), "task_id": (np.arange(N) % K).astype("int32")}
    # Task 5's targets are far off: it is the worst task.
    y = (rng.normal(size=(N, 1)) + 10.0 * (x["task_id"] == 5)[:, None]).astype("float32")
    return x, y


def fit(model, capsys, **kwargs):
    x, y = data()
    capsys.readouterr()
    history = model.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), **kwargs)
    return history, screen_lines(capsys.readouterr().out)


def screen_lines(out):
    """The lines a terminal shows: colours dropped, and each `\\r` or backspace rewrite is a line."""
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    return [line.rstrip() for part in re.split(r"[\r\n]", out) for line in part.split("\b") if line.strip()]


def every_task_key(prefix=""):
    return {f"{prefix}{kind}/task_{k}" for kind in ("loss", "weight") for k in range(K)}


@pytest.mark.parametrize("verbose", [1, 2])
def test_default_bar_is_short_and_names_the_worst_task(model, capsys, tmp_path, verbose):
    csv_path = tmp_path / "log.csv"
    history, lines = fit(model, capsys, verbose=verbose, callbacks=[keras.callbacks.CSVLogger(str(csv_path))])
    assert lines and max(map(len, lines)) < 200, max(lines, key=len)
    # Every key still reaches History and the other callbacks.
    keys = every_task_key() | every_task_key("val_") | {"loss", "loss/worst", "val_loss", "val_loss/worst"}
    assert keys <= set(history.history)
    with open(csv_path) as f:
        assert keys <= set(next(csv.reader(f)))
    epoch_lines = [line for line in lines if re.match(r"4/4 ", line) and "val_loss" in line]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        for key in ("loss", "loss/worst", "weight/max", "val_loss/worst", "mae"):
            assert f" {key}: " in line
        # The worst task is named by its own entry; no other task is shown.
        assert re.findall(r" (?:val_)?(?:loss|weight)/(task_\d+):", line) == ["task_5"]
    assert history.history["loss/worst"][-1] == pytest.approx(history.history["loss/task_5"][-1])


def test_keras_progress_bar_shows_every_task(model, capsys):
    _, lines = fit(model, capsys, verbose=2, callbacks=[keras.callbacks.ProgbarLogger()])
    shown = set(re.findall(r" ((?:val_)?(?:loss|weight)/task_\d+):", "\n".join(lines)))
    assert shown == every_task_key() | every_task_key("val_")


def test_evaluate_bar_is_short(model, capsys):
    x, y = data()
    capsys.readouterr()
    logs = model.evaluate(x, y, batch_size=32, verbose=1, return_dict=True)
    lines = screen_lines(capsys.readouterr().out)
    assert lines and max(map(len, lines)) < 200, max(lines, key=len)
    assert every_task_key() <= set(logs)
    assert " loss/task_5: " in lines[-1] and " loss/worst: " in lines[-1]


def test_verbose_0_prints_nothing(model, capsys):
    _, lines = fit(model, capsys, verbose=0)
    assert lines == []


def test_summary_of_logs_without_task_names():
    # Given by hand, without the model's task names: every `loss/<name>` and
    # `weight/<name>` entry is summed up.
    logs = {"loss": 1.0, "loss/a": 2.0, "loss/b": 3.0, "loss/worst": 3.0, "weight/a": 0.3, "weight/b": 0.7,
            "acc": 0.5, "val_loss/a": 1.0, "val_weight/a": 0.3}
    shown = TaskProgbarLogger()._summary(logs, name_worst=True)
    assert shown == {"loss": 1.0, "loss/worst": 3.0, "loss/b": 3.0, "weight/max": 0.7, "acc": 0.5}
