"""Does the main job's robust run beat the average loss on the worst view? The 3-backend table.

Runs the default `keras-taskrobust` (recipe `views`) over `--seeds` seeds on
each backend, in a process of its own, and prints the markdown table of
`benchmarks/RESULTS.md`: per arm, each view's linear-probe accuracy, the
mean and the worst view (each seed's worst, averaged), mean ± standard
deviation over seeds, and the sensitivity check. Extra options go to the
recipe (e.g. `--signal training`).

    python benchmarks/research/main_job.py --seeds 3 [--output DIR] [recipe options]

About 5 minutes a backend on one CPU core.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

BACKENDS = ("jax", "tensorflow", "torch")


def run(backend, seeds, output, extra):
    folder = pathlib.Path(output) / backend
    env = {**os.environ, "KERAS_BACKEND": backend, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "keras_taskrobust", "--seeds", str(seeds), "--verbose", "0",
                    "--output", str(folder), *extra], env=env, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((folder / "report.json").read_text())
    report["wall_seconds"] = time.perf_counter() - start
    return report


def table(reports):
    views = list(next(iter(reports[0]["rules"].values()))["downstream"])
    lines = ["| backend | arm | " + " | ".join(views) + " | mean | worst |", "|---|---|" + "---|" * (len(views) + 2)]
    cell = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"
    for report in reports:
        for arm, summary in report["rules"].items():
            lines.append(f"| {report['backend']} | {arm} | " + " | ".join(f"{summary['downstream'][v]['mean']:.3f}"
                                                                        for v in views)
                         + f" | {cell(summary['mean'])} | {cell(summary['worst'])} |")
    lines.append("")
    lines.append("| backend | favoured view | moved over average | seed spread | wall time (s) |")
    lines.append("|---|---|---|---|---|")
    for report in reports:
        s = report["sensitivity"]
        lines.append(f"| {report['backend']} | {', '.join(s['views'])} | {s['moved']:+.3f} | {s['spread']:.3f} "
                     f"| {report['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default="taskrobust-output/main_job")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args, extra = parser.parse_known_args()
    print(table([run(backend, args.seeds, args.output, extra) for backend in args.backends]))


if __name__ == "__main__":
    main()
