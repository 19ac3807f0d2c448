"""MinimaxModel's step-time overhead as the MLP of `overhead.py` gets wider.

The task logic adds a fixed cost to every step (`loss_cost.py`: about 50 us
on JAX, 120 us on TensorFlow and 430 us on torch, the same at K = 8 and
K = 256), and the wrapper one more model call. Against the 1-6 ms step of
`overhead.py`'s MLP (two hidden layers of 256 units) that misses the targets;
this measures the same comparison, in the same way (`overhead.measure`: the
plain net, the forwarding floor and the minimax model fit in turn, the median
over rounds of each round's ratio), with hidden layers of 256, 512 and 1024
units, at K = 8, to show at which step time the overhead falls within the
targets (1.05 on JAX and TensorFlow, 1.10 on torch).

Usage:

    python benchmarks/overhead_by_width.py --all            # 3 backends, markdown table
    python benchmarks/overhead_by_width.py --backend torch  # one backend, JSON lines
"""

import overhead
import per_backend

WIDTHS = (256, 512, 1024)


def measure_backend(rounds, epochs):
    """Yields a result row per width, for the backend of this process."""
    for width in WIDTHS:
        row = overhead.measure("mlp", 8, rounds, epochs, width=width)
        yield {**row, "workload": f"mlp, {width} units", "width": width}


if __name__ == "__main__":
    per_backend.main(
        __file__, __doc__.splitlines()[0],
        {"rounds": (15, "plain/minimax alternations"), "epochs": (1, "timed epochs per fit")},
        measure_backend, overhead.markdown_table,
    )
