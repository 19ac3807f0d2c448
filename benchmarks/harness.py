"""The timing harness every benchmark shares: its command line and its clock.

Keras reads its backend once, when it is first imported, so each backend is
measured in a process of its own:

    python benchmarks/<script>.py --backend torch [options]  # JSON lines
    python benchmarks/<script>.py --all [options]            # markdown table
    python benchmarks/<script>.py --backend torch --smoke    # one tiny round

`--backend B` sets `KERAS_BACKEND=B` (and `HF_HUB_OFFLINE=1`) before Keras
is imported and prints each result row as a JSON line as soon as it is
measured; `--all` runs the script with `--backend B` for every backend in
turn and prints all their rows as one table. `--smoke` sets every option to
its smoke value (one round, one epoch) and `SMOKE`, which the scripts read to
cut their workloads to the smallest: it checks that a benchmark runs, not
what it measures (`tests/test_benchmarks.py`).

How a benchmark times (the rules of every script here): the variants it
compares run in one process, one after another in rounds, each round
starting with the next variant, so that the noise of a shared machine hits
them alike; round 0 compiles and is dropped; a sample is the wall time of
one epoch / its steps (`epoch_step_times`); reported are medians, and ratios
as the median over rounds of each round's ratio.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")
# Set by `--smoke` (and by the smoke test): the scripts cut their workloads.
SMOKE = False


def smoke_values(options):
    """`{name: smoke value}` of `options` (`{name: (default, help[, smoke value])}`; 1 unless given)."""
    return {name: spec[2] if len(spec) > 2 else 1 for name, spec in options.items()}


def main(script, description, options, measure, markdown_table):
    """Runs a benchmark's command line.

    Args:
        script: the benchmark's `__file__` (re-run by `--all`).
        description: one line for `--help`.
        options: `{name: (default, help[, smoke value])}`, the benchmark's
            integer options (the smoke value defaults to 1).
        measure: called as `measure(**options)` in the backend's process;
            yields the result rows (dicts) one by one.
        markdown_table: `markdown_table(rows)`, the rows of every backend as
            a markdown table.
    """
    global SMOKE
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="run every backend in a subprocess")
    mode.add_argument("--backend", choices=BACKENDS, help="measure this backend, in this process")
    parser.add_argument("--smoke", action="store_true", help="one tiny round: check that it runs")
    for name, (default, help_, *_) in options.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=help_)
    args = parser.parse_args()
    values = {name: getattr(args, name) for name in options}
    if args.smoke:
        values, SMOKE = smoke_values(options), True
    if args.all:
        forwarded = [arg for name, value in values.items() for arg in (f"--{name}", str(value))]
        forwarded += ["--smoke"] if args.smoke else []
        print(markdown_table(rows_from_backends(script, forwarded)))
        return
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ["HF_HUB_OFFLINE"] = "1"
    for row in measure(**values):
        print(json.dumps(row), flush=True)


def rows_from_backends(script, args, backends=BACKENDS):
    """Runs `script --backend B *args` for each backend; its JSON lines as dicts."""
    rows = []
    for backend in backends:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, script, "--backend", backend, *args],
            env={**os.environ, "KERAS_BACKEND": backend, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE, check=True, text=True,
        ).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        print(f"{script} {backend}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def epoch_step_times(fit, data, batch_size, epochs, callbacks=()):
    """Calls `fit` for `1 + epochs` epochs; returns each epoch's seconds/step but the first's.

    Epochs rather than batches: Keras dispatches the plain model's batch-end
    callbacks asynchronously on JAX and torch, so per-batch timings would
    miss compute still in flight; by `on_epoch_end` it has all been waited
    for. The first epoch holds the fit's own set-up.
    """
    import keras

    starts, times = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - starts[-1]),
    )
    fit(**data, batch_size=batch_size, epochs=1 + epochs, shuffle=False,
        verbose=0, callbacks=[*callbacks, timer])
    steps = -(-len(data["y"]) // batch_size)
    return [t / steps for t in times[1:]]


def alternate(runs, rounds):
    """Runs `runs` (`{name: () -> [seconds per step]}`) in turn for `1 + rounds` rounds.

    Each round starts with the next run; round 0 (compilation) is dropped,
    but under `SMOKE`, where `rounds` may be 0, it is kept.
    Returns `(samples, medians)`: every sample of each run, and each run's
    median per round (`{name: [one per round]}`, for per-round ratios).
    """
    names = list(runs)
    samples = {name: [] for name in names}
    medians = {name: [] for name in names}
    for round_ in range(1 + rounds):
        first = round_ % len(names)
        for name in names[first:] + names[:first]:
            times = runs[name]()
            if round_ or SMOKE:
                samples[name] += times
                medians[name].append(statistics.median(times))
    return samples, medians


def ratio(medians, name, baseline):
    """The median over rounds of `name`'s step time / `baseline`'s in the same round."""
    return statistics.median(a / b for a, b in zip(medians[name], medians[baseline]))
