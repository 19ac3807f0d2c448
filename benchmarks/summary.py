"""The summary table of benchmarks/RESULTS.md: every target, measured on every backend.

Runs, one backend at a time, each in a process of its own:

- `head_to_head.py`: `MinimaxModel` against the PyTorch Group DRO loop and
  plain Keras on the same MLP, Lookahead against ExponentiatedGradient,
  and the compiled torch path;
- `pos_mlm_step_time.py`: the pos-mlm recipe's tiny BERT masked LM against
  plain `fit` on the same batches;
- `mim_step_time.py`: the mim recipe's ViT step against plain `fit` of the
  same three-target model,

and prints one table: what is compared, the ratio, the time it adds per
step, the target and whether it is met. About 25 minutes on 2 shared CPU
cores; `--smoke` runs each for one tiny round (a minute or two).

    OMP_NUM_THREADS=1 python benchmarks/summary.py [--smoke]
"""

import argparse
import os
import pathlib

import harness
import head_to_head

HERE = pathlib.Path(__file__).parent
SCRIPTS = ("head_to_head", "pos_mlm_step_time", "mim_step_time")
# The recipes' workloads: MinimaxModel at most this many times plain `fit`.
RECIPE_TARGETS = {"jax": 1.05, "tensorflow": 1.05, "torch": 1.10}


def recipe_rows(results):
    """`(backend, workload, against, ratio, added us or None, target)` of the recipes' workloads."""
    for r in results.get("pos_mlm_step_time", []):
        added = 1e3 * (r["recipe_ms"] - r["plain_same_ms"])
        yield (r["backend"], "pos-mlm BERT MLM (recipe, tf.data)", "plain `fit`, same batches", r["ratio_same"],
               added, RECIPE_TARGETS[r["backend"]])
        yield (r["backend"], "pos-mlm BERT MLM (recipe, tf.data)", "plain `BertMaskedLM.fit`, keras-hub pipeline",
               r["ratio"], None, None)
    plain = {(r["backend"], r["input"]): r["ms"] for r in results.get("mim_step_time", [])
             if r["variant"] == "plain, 3 targets"}
    for r in results.get("mim_step_time", []):
        if r["variant"] == "MinimaxModel, 3 targets":
            added = 1e3 * (r["ms"] - plain[r["backend"], r["input"]])
            yield (r["backend"], f"mim ViT, 3 targets ({r['input']})", "plain `fit`, same model", r["vs_plain_3"],
                   added, RECIPE_TARGETS[r["backend"]] if r["input"] == "tf.data" else None)


def summary_table(results):
    lines = [
        "| backend | measured | ms/step | against | ratio | + us/step | target | met |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for r in results.get("head_to_head", []):
        if "baseline" not in r:
            continue
        goal = head_to_head.target(r)
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['ms']:.2f} | {head_to_head.LOOP} | {r['vs_loop']:.2f} | | "
            + (f"{goal[0]} | {'yes' if goal[1] else 'no'} |" if goal and goal[2] == head_to_head.LOOP else "| |"))
        if r["baseline"] != head_to_head.LOOP:
            lines.append(
                f"| {r['backend']} | {r['variant']} | | {r['baseline']} | {r['vs_baseline']:.2f} "
                f"| {r['added_us']:+.0f} | "
                + (f"{goal[0]} | {'yes' if goal[1] else 'no'} |" if goal and goal[2] != head_to_head.LOOP
                   else "| |"))
    for backend, workload, against, ratio, added, at_most in recipe_rows(results):
        lines.append(
            f"| {backend} | {workload} | | {against} | {ratio:.2f} | {'' if added is None else f'{added:+.0f}'} | "
            + (f"<= {at_most:.2f} | {'yes' if ratio <= at_most else 'no'} |" if at_most else "| |"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny round of each: check that it runs")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    extra = ["--smoke"] if args.smoke else []
    results = {name: harness.rows_from_backends(str(HERE / f"{name}.py"), extra) for name in SCRIPTS}
    print(summary_table(results))


if __name__ == "__main__":
    main()
