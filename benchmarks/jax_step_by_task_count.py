"""MinimaxModel's compiled JAX training step against the plain one, by K.

`step_overhead.py` at more values of K, on JAX only: Keras' own jitted
`train_function`, called on one batch already on the device, for the plain
MLP of `overhead.py`, the wrapper floor and `MinimaxModel(net, num_tasks=K)`
with `MirrorDescent(ExponentiatedGradient())` attached (see
`step_overhead.measure`).

K = 8 and 256 are `overhead.py`'s; the others show how the excess depends on
K (RESULTS.md: it steps up between K = 255 and 256). XLA's CPU compiler
options can be set with `XLA_FLAGS`, which the output echoes.

Usage:

    python benchmarks/jax_step_by_task_count.py --rounds 21  # sets KERAS_BACKEND=jax itself
    python benchmarks/jax_step_by_task_count.py --task-counts 255,256  # other values of K
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "jax"

from step_overhead import markdown_table  # noqa: E402
from step_overhead import measure  # noqa: E402

TASK_COUNTS = (8, 240, 256, 512)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="alternations of the three models")
    parser.add_argument("--task-counts", default=",".join(map(str, TASK_COUNTS)),
                        help="comma-separated values of K (default: %(default)s)")
    args = parser.parse_args()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n")
    print(markdown_table([measure(int(k), args.rounds) for k in args.task_counts.split(",")]))


if __name__ == "__main__":
    main()
