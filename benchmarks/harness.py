"""The command line of the benchmarks that measure each backend on its own.

Keras reads its backend once, when it is first imported, so each backend is
measured in a process of its own:

    python benchmarks/<script>.py --backend torch [options]  # JSON lines
    python benchmarks/<script>.py --all [options]            # markdown table

`--backend B` sets `KERAS_BACKEND=B` (and `HF_HUB_OFFLINE=1`) before Keras
is imported and prints each result row as a JSON line as soon as it is
measured; `--all` runs the script with `--backend B` for every backend in
turn and prints all their rows as one table.
"""

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")


def main(script, description, options, measure, markdown_table):
    """Runs a benchmark's command line.

    Args:
        script: the benchmark's `__file__` (re-run by `--all`).
        description: one line for `--help`.
        options: `{name: (default, help)}`, the benchmark's integer options.
        measure: called as `measure(**options)` in the backend's process;
            yields the result rows (dicts) one by one.
        markdown_table: `markdown_table(rows)`, the rows of every backend as
            a markdown table.
    """
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="run every backend in a subprocess")
    mode.add_argument("--backend", choices=BACKENDS, help="measure this backend, in this process")
    for name, (default, help_) in options.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=help_)
    args = parser.parse_args()
    values = {name: getattr(args, name) for name in options}
    if args.all:
        forwarded = [arg for name, value in values.items() for arg in (f"--{name}", str(value))]
        print(markdown_table(rows_from_backends(script, forwarded)))
        return
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ["HF_HUB_OFFLINE"] = "1"
    for row in measure(**values):
        print(json.dumps(row), flush=True)


def rows_from_backends(script, args):
    """Runs `script --backend B *args` for each backend; its JSON lines as dicts."""
    rows = []
    for backend in BACKENDS:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, script, "--backend", backend, *args],
            env={**os.environ, "KERAS_BACKEND": backend, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE, check=True, text=True,
        ).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        print(f"{backend}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows
