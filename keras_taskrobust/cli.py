"""The command-line main job: `keras-taskrobust [run] [recipe] [options]`.

`keras-taskrobust` alone runs the default recipe (`views`: robust against
average-loss pre-training on four views of the digits that ship with the
package, with a sensitivity check); `keras-taskrobust run <recipe>` runs another; `keras-taskrobust
list` lists them. `python -m keras_taskrobust` is the same command.

By default it prints one line per run and the final tables; `--verbose`
adds Keras' progress bars and TensorFlow's own messages (silenced
otherwise, unless `TF_CPP_MIN_LOG_LEVEL` is set).

Errors in the command line are reported as `keras-taskrobust: error: ...`
with exit status 2; an interrupt (Ctrl-C) ends the run with status 130 and
one line on stderr.
"""

import argparse
import importlib.util
import json
import logging
import math
import os
import pathlib
import sys
import tempfile

try:
    import fcntl
except ImportError:  # Windows: runs go unlocked.
    fcntl = None

from keras_taskrobust import recipes

PROG = "keras-taskrobust"
BACKENDS = ("jax", "tensorflow", "torch")
REPORT = "report.json"
INTERRUPTED = "interrupted.json"  # the runs that finished before Ctrl-C


def _number(convert, accept, requirement):
    """An argparse `type=` that converts with `convert` and rejects what `accept` refuses.

    argparse reports the error as `argument --name: must be <requirement>; got '<text>'`.
    """

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}; got {text!r}")
        return value

    return parse


# Types for the numeric options of the command line and of the recipes'
# `add_arguments`. A zero or a NaN would otherwise slip through: `args.epochs
# or default` reads `--epochs 0` as "the default", and `0 < nan` is False.
positive_int = _number(int, lambda v: v > 0, "a positive integer")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a non-negative number")
fraction = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
open_fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
share = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
# NumPy's global seed (keras.utils.set_random_seed) must fit in 32 bits.
seed = _number(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors read `keras-taskrobust: error: ...`.

    `prog` names the recipe for the usage line (`keras-taskrobust run
    domains`); the error line names the command alone, like every other
    error of the command line.
    """

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def _common_parser(recipe):
    from keras_taskrobust import rules

    parser = _Parser(prog=f"{PROG} run {recipe}", description=recipes.RECIPES[recipe][1])
    parser.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND or jax).")
    parser.add_argument("--epochs", type=positive_int, help="pre-training epochs (default: the recipe's).")
    parser.add_argument("--output", default=None, help="output folder (default: taskrobust-output/<recipe>).")
    parser.add_argument("--seed", type=seed, default=0, help="random seed of data, model and rule (default: 0).")
    parser.add_argument(
        "--weighting", default="exponentiated_gradient",
        choices=[n for n in rules.available() if n != "uniform"],
        help="the robust rule compared with uniform task weights (default: exponentiated_gradient; "
             "mim: learning_progress).",
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast run (for CI and smoke tests).")
    parser.add_argument(
        "--verbose", type=int, nargs="?", const=1, default=0, choices=(0, 1, 2),
        help="Keras' output during training: --verbose (or 1) its progress bars, 2 a summary line per epoch "
             "(default: 0, one line per run).",
    )
    return parser


def _split_recipe(argv):
    """`(recipe, rest)` from `[run] [recipe] options...`."""
    if argv and argv[0] == "run":
        argv = argv[1:]
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    return recipes.DEFAULT_RECIPE, argv


def _check_writable(parser, output):
    """Makes the output folder and writes (then removes) a probe file in it.

    Run before any work: a bad `--output` must fail in a second, not with a
    traceback after all the training.
    """
    blocker = next((p for p in (output, *output.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        parser.error(f"argument --output: '{blocker}' is a file, not a folder; choose another folder with --output.")
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-probe-") as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as error:
        parser.error(f"argument --output: cannot write to '{output}' ({error.strerror or error}); "
                     "choose a writable folder with --output.")


def _lock_output(parser, output):
    """Locks the output folder for this run; returns the descriptor that holds the lock.

    Two runs into the same folder would overwrite each other's report and
    figures: the second one fails at once instead. The lock (`flock` on the
    folder itself, so it leaves no file behind) lasts until the descriptor is
    closed or the process ends, however it ends.
    """
    descriptor = os.open(output, os.O_RDONLY)
    if fcntl is None:
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        parser.error(f"the output folder '{output}' is in use by another {PROG} run; "
                     "wait for it to finish or choose another folder with --output.")
    except OSError:
        pass  # a file system without locks: run unlocked rather than not at all
    return descriptor


def _write_report(path, report):
    """Writes `report` as JSON to `path`, whole or not at all.

    The JSON goes to a temporary file in the same folder, which then replaces
    `path` in one rename: an interrupt or a crash while writing leaves the
    previous report (or none), never half of one.
    """
    # Named by the process (not tempfile.mkstemp, whose files are private to
    # their owner) so the report gets the usual permissions.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as file:
            json.dump(report, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _interrupted(path, args):
    """Saves the runs that finished before an interrupt; the line that says what was kept."""
    kept = f"{path} is from an earlier run" if path.exists() else "no report was written"
    finished = {name: runs for name, runs in getattr(args, "finished", {}).items() if runs}
    if finished:
        partial = args.output / INTERRUPTED
        _write_report(partial, {"recipe": args.recipe, "backend": args.backend, "seed": args.seed,
                                "interrupted": True, "finished_runs": finished})
        count = sum(len(runs) for runs in finished.values())
        kept = f"the {count} run{'s' if count > 1 else ''} that finished are in {partial}; {kept}"
    return f"{PROG}: interrupted; {kept}."


def _run(recipe, args):
    """Runs the recipe and writes its report; returns the exit status."""
    path = args.output / REPORT
    args.finished = {}  # the recipe's finished runs (`report.finished_runs`)
    try:
        report = recipe.run(args)
        _write_report(path, {"recipe": args.recipe, "backend": args.backend, "seed": args.seed, **report})
    except KeyboardInterrupt:
        # Ctrl-C: one line, not a traceback; 130 is the shell's status for SIGINT.
        print(_interrupted(path, args), file=sys.stderr)
        return 130
    print(f"Report: {path}")
    return 0


def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the run started (imports, parsing); `_run` handles the rest.
        print(f"{PROG}: interrupted.", file=sys.stderr)
        return 130


def quiet_tensorflow(argv):
    """Silences TensorFlow for a run of the command line, unless `--verbose` is among `argv`.

    TensorFlow prints start-up messages (CUDA probing, CPU features,
    oneDNN) from C++ as it loads and as it first lists its devices: some
    obey `TF_CPP_MIN_LOG_LEVEL`, read once as it loads, and some (Abseil's,
    written before logging is set up) go to the process's standard error
    whatever the level. So the level is set (unless the user set one) and
    TensorFlow, if installed, is loaded and its devices listed with standard
    error sent to /dev/null; a Python error still raises. The package calls
    this before it imports Keras, which loads TensorFlow on its backend.
    Its Python warnings (retracing) go through the `tensorflow` and `absl`
    loggers, which keep their errors.
    """
    if any(arg.startswith("--verbose") for arg in argv) or (argv and argv[0] in ("list", "-l", "-h", "--help")):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_tensorflow(argv)
    if argv and argv[0] in ("list", "-l"):
        for name in sorted(recipes.RECIPES):
            print(f"{name:10s} {recipes.RECIPES[name][1]}")
        return 0
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nrecipes: {', '.join(sorted(recipes.RECIPES))}; `{PROG} run <recipe> --help` for options.")
        return 0
    recipe_name, rest = _split_recipe(argv)
    try:
        recipe = recipes.get(recipe_name)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    parser = _common_parser(recipe_name)
    recipe.add_arguments(parser)
    args = parser.parse_args(rest)

    import keras

    if args.backend and args.backend != keras.backend.backend():
        # The backend is fixed when Keras is imported (it already is, by this
        # package): start again with it set.
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        os.execve(sys.executable, [sys.executable, "-m", "keras_taskrobust", "run", recipe_name, *rest], env)
    args.backend = keras.backend.backend()
    if not args.verbose and "tensorflow_datasets" in sys.modules:
        # TFDS draws progress bars as it builds a dataset (once per data folder).
        sys.modules["tensorflow_datasets"].disable_progress_bar()
    args.recipe = recipe_name
    args.output = pathlib.Path(args.output or pathlib.Path("taskrobust-output") / recipe_name)
    _check_writable(parser, args.output)
    lock = _lock_output(parser, args.output)
    more = "" if args.verbose else "; --verbose shows Keras' progress bars"
    print(f"{PROG} run {recipe_name} on {args.backend}: results in {args.output}{more}", flush=True)
    try:
        return _run(recipe, args)
    finally:
        os.close(lock)
