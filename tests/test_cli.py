"""The command-line main job: bad input and faults end cleanly, with one error line."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from keras_taskrobust import cli
from keras_taskrobust import data
from keras_taskrobust import recipes
from keras_taskrobust import rules
from keras_taskrobust.recipes import report as recipe_report
from keras_taskrobust.recipes import robust_arms

ENV = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture
def fake_run(monkeypatch):
    """Replaces every recipe's training by `fake_run.body(args)` (by default a tiny report)."""

    class Fake:
        calls = 0
        body = staticmethod(lambda args: {"rules": {"uniform": {"worst": 0.5}}})

        def __call__(self, args):
            self.calls += 1
            return self.body(args)

    fake = Fake()
    for name in recipes.RECIPES:
        monkeypatch.setattr(recipes.get(name), "run", fake)
    return fake


def _error_line(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_main_job_rejects_unknown_names(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output folder
    assert cli.main(["run", "bert"]) == 2
    error = capsys.readouterr().err
    assert "Unknown recipe 'bert'" in error and "domains" in error
    for args, expected in [
        (["--dataset", "cifar"], ["invalid choice: 'cifar'", "'mnist'"]),
        (["--weighting", "average"], ["invalid choice: 'average'", "softmax"]),
        (["--dominant", "sepia"], ["unknown domain 'sepia'", "rotated"]),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["run", "domains", *args])
        message = str(exit_info.value.code) + capsys.readouterr().err
        assert exit_info.value.code != 0 and all(e in message for e in expected), message


@pytest.mark.parametrize("recipe, option, value, requirement", [
    ("domains", "--epochs", "0", "a positive integer"),
    ("domains", "--epochs", "-1", "a positive integer"),
    ("domains", "--epochs", "2.5", "a positive integer"),
    ("domains", "--seed", "-1", "an integer from 0 to 4294967295"),
    ("domains", "--batch-size", "0", "a positive integer"),
    ("domains", "--seeds", "0", "a positive integer"),
    ("domains", "--minor-fraction", "0", "a number in (0, 1]"),
    ("domains", "--minor-fraction", "nan", "a number in (0, 1]"),
    ("domains", "--learning-rate", "0", "a positive number"),
    ("domains", "--learning-rate", "inf", "a positive number"),
    ("domains", "--step-size", "-0.1", "a non-negative number"),
    ("mim", "--mask-ratio", "1", "a number strictly between 0 and 1"),
    ("mim", "--patch-size", "0", "a positive integer"),
    ("mim", "--images-per-domain", "-5", "a positive integer"),
    ("pos-mlm", "--sequence-length", "0", "a positive integer"),
    ("views", "--update-every", "0", "a positive integer"),
    ("views", "--smoothing", "1", "a number in [0, 1)"),
    ("views", "--step-size", "-1", "a non-negative number"),
    ("pos-mlm", "--train-sentences", "0", "a positive integer"),
])
def test_bad_numbers_are_rejected_before_any_work(capsys, fake_run, tmp_path, recipe, option, value, requirement):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", recipe, "--output", str(tmp_path / "out"), f"{option}={value}"])
    assert exit_info.value.code == 2
    assert _error_line(capsys) == f"keras-taskrobust: error: argument {option}: must be {requirement}; got '{value}'"
    assert fake_run.calls == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe, value, problem", [
    ("mim", "exponentiated_gradient@excess", "is not RULE@SIGNAL"),  # per-output tasks: no excess
    ("pos-mlm", "nope@training", "is not RULE@SIGNAL"),
    ("views", "exponentiated_gradient", "is not RULE@SIGNAL"),
    ("pos-mlm", "softmax@training,softmax@training", "give distinct RULE@SIGNAL entries"),
    ("pos-mlm", "average,average", "give distinct RULE@SIGNAL entries"),
    ("mim", "average", "is not RULE@SIGNAL"),  # same-size per-output tasks: pooled is uniform
])
def test_bad_robust_arms_are_rejected_before_any_work(capsys, fake_run, tmp_path, recipe, value, problem):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", recipe, "--output", str(tmp_path / "out"), f"--compare={value}"])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert line.startswith("keras-taskrobust: error: argument --compare:") and problem in line
    assert fake_run.calls == 0


def test_robust_arms_take_the_recipe_defaults_per_signal_and_the_command_line(fake_run, tmp_path):
    arms = []
    fake_run.body = lambda args: arms.extend(robust_arms.arms(args)) or {"rules": {}}
    cli.main(["run", "pos-mlm", "--output", str(tmp_path), "--smoothing", "0.02", "--compare",
              "exponentiated_gradient@training,exponentiated_gradient@held_out,learning_progress@held_out"])
    assert [(a.name, a.signal, type(a.rule).__name__) for a in arms] == [
        ("exponentiated_gradient@training", "training", "ExponentiatedGradient"),
        ("exponentiated_gradient@held_out", "held_out", "ExponentiatedGradient"),
        ("learning_progress@held_out", "held_out", "LearningProgress"),
    ]
    # The recipe's step sizes (0.001 a step, 0.01 an update every 10 steps), the rule's own, and --smoothing.
    assert [a.rule.step_size for a in arms] == [0.001, 0.01, rules.LearningProgress().step_size]
    assert [a.rule.smoothing for a in arms] == [0.02] * 3
    descent = arms[1].callback(held_out=("x", "y"), update_every=7)
    assert descent.held_out == ("x", "y") and descent.update_every == 7 and descent.reference is None
    assert arms[0].callback(held_out=("x", "y")).held_out is None


def test_pos_mlm_compares_against_the_pooled_average(fake_run, tmp_path):
    arms = []
    fake_run.body = lambda args: arms.extend(robust_arms.arms(args)) or {"rules": {}}
    cli.main(["run", "pos-mlm", "--output", str(tmp_path), "--compare", "softmax@training,average,lookahead@held_out"])
    assert [(a.name, a.signal, type(a.rule).__name__) for a in arms] == [
        ("softmax@training", "training", "Softmax"), ("average", None, "NoneType"),
        ("lookahead@held_out", "held_out", "Lookahead")]
    assert arms[2].rule.layers == ["intermediate_dense", "intermediate_layer_norm"]  # G on the head's transform
    assert [a.pooled for a in arms] == [False, True, False]


@pytest.mark.parametrize("recipe, options, expected", [
    # pos-mlm's default: the robust rule and the pooled average.
    ("pos-mlm", [], [("exponentiated_gradient@excess", "excess"), ("average", None)]),
    # --weighting or --signal alone: that one rule, the other from the recipe.
    ("pos-mlm", ["--weighting", "softmax"], [("softmax", "excess")]),
    ("pos-mlm", ["--signal", "training"], [("exponentiated_gradient", "training")]),
    ("pos-mlm", ["--weighting", "exponentiated_gradient"], [("exponentiated_gradient", "excess")]),
    # A recipe without a default comparison: its --weighting following its --signal.
    ("mim", [], [("learning_progress", "held_out")]),
    ("views", ["--signal", "training"], [("exponentiated_gradient", "training")]),
])
def test_default_arms_of_each_recipe(fake_run, tmp_path, recipe, options, expected):
    arms = []
    fake_run.body = lambda args: arms.extend(robust_arms.arms(args)) or {"rules": {}}
    cli.main(["run", recipe, "--output", str(tmp_path), *options])
    assert [(a.name, a.signal) for a in arms] == expected


def test_step_size_for_a_rule_without_one_is_an_error(capsys, fake_run, tmp_path):
    fake_run.body = robust_arms.arms
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "mim", "--output", str(tmp_path), "--weighting", "lookahead", "--step-size", "0.1"])
    assert "--step-size sets exponentiated_gradient and learning_progress, not lookahead" in str(exit_info.value)


def test_good_numbers_pass(fake_run, tmp_path):
    assert cli.main(["run", "domains", "--epochs", "1", "--seed", "0", "--minor-fraction", "1", "--step-size", "0",
                     "--output", str(tmp_path)]) == 0
    assert fake_run.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no probe file left


@pytest.mark.parametrize("where", ["a_file", "a_file/out", "/proc/self"])
def test_unwritable_output_fails_before_any_work(capsys, fake_run, tmp_path, where):
    (tmp_path / "a_file").write_text("not a folder")
    output = tmp_path / where  # /proc/self stays absolute: a folder even root cannot write in
    if not output.parent.exists():
        pytest.skip("no /proc")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--output", str(output)])
    assert exit_info.value.code == 2
    error = _error_line(capsys)
    assert error.startswith("keras-taskrobust: error: argument --output: ") and error.endswith("with --output."), error
    assert ("'a_file' is a file" in error.replace(str(tmp_path) + "/", "")) == (where != "/proc/self"), error
    assert fake_run.calls == 0
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_second_run_into_the_same_output_fails_fast(capsys, fake_run, tmp_path):
    output = str(tmp_path / "out")

    def run_while_another_starts(args):
        if fake_run.calls > 1:  # the second run trained: it must not
            return {"first": False}
        # A second run starts while this one trains.
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--output", output])
        assert exit_info.value.code == 2
        error = _error_line(capsys)
        assert error == (f"keras-taskrobust: error: the output folder '{output}' is in use by another "
                         "keras-taskrobust run; wait for it to finish or choose another folder with --output.")
        return {"first": True}

    fake_run.body = run_while_another_starts
    assert cli.main(["--output", output]) == 0
    assert fake_run.calls == 1  # the second run never trained
    assert json.loads((tmp_path / "out" / "report.json").read_text())["first"]
    # The lock ends with the run.
    fake_run.body = lambda args: {"first": False}
    assert cli.main(["--output", output]) == 0
    assert not json.loads((tmp_path / "out" / "report.json").read_text())["first"]


def _main_interrupted(args):
    """`cli.main(args)`, a test failure (not the end of the test session) if Ctrl-C escapes it."""
    try:
        return cli.main(args)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main")


def _previous_report(tmp_path):
    report = tmp_path / "report.json"
    report.write_text('{"previous": true}\n')
    return report


def test_ctrl_c_exits_with_one_line_and_keeps_the_previous_report(capsys, fake_run, tmp_path):
    report = _previous_report(tmp_path)

    def interrupted(args):
        raise KeyboardInterrupt

    fake_run.body = interrupted
    assert _main_interrupted(["--output", str(tmp_path)]) == 130
    assert capsys.readouterr().err == f"keras-taskrobust: interrupted; {report} is from an earlier run.\n"
    assert report.read_text() == '{"previous": true}\n'
    report.unlink()
    assert _main_interrupted(["--output", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "keras-taskrobust: interrupted; no report was written.\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_keeps_the_runs_that_finished(capsys, fake_run, tmp_path):
    report = _previous_report(tmp_path)

    def interrupted_after_two_runs(args):
        runs = recipe_report.finished_runs(args, ["average", "uniform", "robust"])
        runs["average"].append({"worst": 0.7})
        runs["uniform"].append({"worst": 0.8})
        raise KeyboardInterrupt  # during the third

    fake_run.body = interrupted_after_two_runs
    assert _main_interrupted(["--output", str(tmp_path)]) == 130
    partial = tmp_path / "interrupted.json"
    assert capsys.readouterr().err == (f"keras-taskrobust: interrupted; the 2 runs that finished are in {partial}; "
                                       f"{report} is from an earlier run.\n")
    saved = json.loads(partial.read_text())
    assert saved["interrupted"] and saved["finished_runs"] == {"average": [{"worst": 0.7}], "uniform": [{"worst": 0.8}]}
    assert report.read_text() == '{"previous": true}\n'


class _InterruptedWhileWritten(dict):
    """A report part whose JSON encoding is interrupted: Ctrl-C while report.json is written."""

    def items(self):
        raise KeyboardInterrupt


def test_ctrl_c_while_writing_the_report_leaves_no_half_report(capsys, fake_run, tmp_path):
    report = _previous_report(tmp_path)
    fake_run.body = lambda args: {"rules": {"uniform": {"worst": 0.5}}, "late": _InterruptedWhileWritten(a=1)}
    assert _main_interrupted(["--output", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert report.read_text() == '{"previous": true}\n'
    assert list(tmp_path.iterdir()) == [report]  # no temporary file left


_BUILD = """
import hashlib, pathlib, sys, time
from keras_taskrobust.data import load_domains
folder, me = pathlib.Path(sys.argv[1]), sys.argv[2]
(folder.parent / f"ready-{me}").touch()
while len(list(folder.parent.glob("ready-*"))) < 2:  # start building together
    time.sleep(0.01)
digest = hashlib.sha256()
for x, y in load_domains("train", config="digits", data_dir=str(folder)).values():
    digest.update(x.tobytes() + y.tobytes())
print(digest.hexdigest())
"""


def test_two_processes_build_the_dataset_into_one_fresh_folder(tmp_path):
    # Two runs started together on a fresh --data-dir: TFDS's second build
    # used to fail renaming its temporary folder (FileExistsError).
    folder = tmp_path / "tfds"
    builds = [subprocess.Popen([sys.executable, "-c", _BUILD, str(folder), me], env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for me in "ab"]
    outputs = [build.communicate(timeout=300) for build in builds]
    for build, (_, stderr) in zip(builds, outputs):
        assert build.returncode == 0, stderr[-3000:]
    digests = [stdout.split()[-1] for stdout, _ in outputs]
    assert digests[0] == digests[1]
    # The same data as reading the built dataset again.
    digest = hashlib.sha256()
    for x, y in data.load_domains("train", config="digits", data_dir=str(folder)).values():
        digest.update(x.tobytes() + y.tobytes())
    assert digest.hexdigest() == digests[0]


@pytest.mark.parametrize("options, verbose", [([], 0), (["--verbose"], 1), (["--verbose", "2"], 2), (["--verbose=0"], 0)])
def test_verbose_is_a_flag_that_still_takes_a_level(fake_run, tmp_path, options, verbose):
    seen = []
    fake_run.body = lambda args: seen.append(args.verbose) or {}
    assert cli.main(["--output", str(tmp_path), *options]) == 0
    assert seen == [verbose]


def test_a_run_prints_one_line_per_finished_run(capsys, fake_run, tmp_path):
    def two_runs(args):
        runs = recipe_report.finished_runs(args, ["uniform", "robust"])
        runs["uniform"].append({"downstream": {"a": 0.5, "b": 0.25}})
        runs["robust"].append({"downstream": {"a": 0.75, "b": 0.5}})
        return {}

    fake_run.body = two_runs
    assert cli.main(["--output", str(tmp_path), "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("keras-taskrobust run views on ") and "--verbose" in lines[0]
    assert [line.split("(")[0].split() + line.split(":", 1)[1].split() for line in lines[1:3]] == [
        ["seed", "3", "uniform", "a", "0.500", "b", "0.250"], ["seed", "3", "robust", "a", "0.750", "b", "0.500"]]
