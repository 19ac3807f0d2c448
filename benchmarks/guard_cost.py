"""What `MinimaxModel`'s per-batch checks would cost if they waited: sync vs async.

`MinimaxModel.fit` runs a `_TaskGuard` callback at every batch end. It reads
the step's loss on the host (and the per-task vector with its count of
out-of-range task ids, when the step outputs it) to stop training on a bad
batch. It is `async_safe`: on JAX and torch Keras runs it in a worker
thread and the loop goes on, so training stops a few batches after a bad
batch. Marked not `async_safe`, it would stop
*at* the bad batch, but Keras would then dispatch batch-end callbacks on the
loop's thread and every step would wait for the previous one (on JAX, plain
`fit` with `verbose=0` runs ahead of the device). This diagnostic measures the
MLP workload of `overhead.py` (K = 8) both ways in each repeat.

Usage: `OMP_NUM_THREADS=1 KERAS_BACKEND=jax python benchmarks/guard_cost.py --repeats 2`
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
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import overhead
    from keras_taskrobust.callbacks.task_guard import TaskGuard

    for _ in range(args.repeats):
        for asynchronous in (False, True):
            TaskGuard.async_safe = asynchronous
            row = overhead.measure("mlp", 8, args.rounds, args.epochs)
            print(json.dumps({"guard": "async (shipped)" if asynchronous else "sync", **row}), flush=True)
    TaskGuard.async_safe = True


if __name__ == "__main__":
    main()
