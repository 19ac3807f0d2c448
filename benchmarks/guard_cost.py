"""What `MinimaxModel`'s per-batch checks cost when they wait: sync vs async.

`MinimaxModel.fit` runs a `TaskGuard` callback at every batch end. It reads
the step's loss and per-task vector on the host, to stop training at a bad
batch, on the loop's thread: on JAX and torch every step then waits for the
previous one (plain `fit` with `verbose=0` runs ahead of the device).
Marked `async_safe` (Keras' attribute), Keras would run it in a worker
thread and training would stop a few batches after a bad one. This
diagnostic measures both ways in each repeat, on the MLP workload of
`overhead.py` (K = 8), the tiny BERT masked LM (`--workload bert`) or the
main job's CNN (`--workload cnn`).

Usage: `OMP_NUM_THREADS=1 KERAS_BACKEND=jax python benchmarks/guard_cost.py --repeats 2 [--workload bert|cnn]`
"""

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workload", default="mlp", choices=("mlp", "bert", "cnn"))
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import overhead
    from keras_taskrobust.callbacks.task_guard import TaskGuard

    for _ in range(args.repeats):
        for asynchronous in (False, True):
            TaskGuard.async_safe = asynchronous
            row = overhead.measure(args.workload, 8, args.rounds, args.epochs)
            print(json.dumps({"guard": "async" if asynchronous else "sync (shipped)", **row}), flush=True)
    TaskGuard.async_safe = False


if __name__ == "__main__":
    main()
