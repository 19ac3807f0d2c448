"""Markdown tables of `pos-mlm` and `mim` recipe reports: every arm against uniform, over seeds.

Reads `report.json` files written by `keras-taskrobust run pos-mlm|mim
--seeds N [--compare rule@signal,...] --output DIR` and prints, per report:

- a table per measure, a column per arm, mean ± standard deviation over
  seeds. pos-mlm: held-out masked-LM accuracy per part-of-speech group and
  the linear probes; mim: held-out recovery loss per target (lower is
  better) and linear-probe accuracy per downstream task. The mean and the
  worst are computed per seed, then averaged (their spread is the spread
  over seeds);
- the paired differences from `uniform` (same seed, data and budget) of the
  worst and the mean downstream score, mean ± standard deviation over seeds:
  the figure an arm has to win on;
- the final task weights, averaged over seeds.

With `--combined` (mim), one table of the downstream accuracies with a
column per report and rule, e.g. single-target runs (`--targets pixels`)
beside the three-target one.

Usage:

    python benchmarks/research/recipe_results.py DIR/report.json [DIR2/report.json ...]
    python benchmarks/research/recipe_results.py --combined DIR/report.json DIR2/report.json ...
"""

import argparse
import json

import numpy as np

# recipe: [(title, part of each run, which end is worst)]; the last is the downstream score.
MEASURES = {
    "mim": [("held-out recovery loss (lower is better)", "recovery_loss", np.max),
            ("linear-probe accuracy (higher is better)", "downstream", np.min)],
    "pos-mlm": [("held-out masked-LM accuracy (higher is better)", "accuracy", np.min),
                ("linear-probe accuracy (higher is better)", "probes", np.min)],
}
# The score an arm is judged on: pos-mlm's worst part-of-speech group, mim's worst probe.
JUDGED = {"mim": "downstream", "pos-mlm": "accuracy"}


def per_seed_rows(runs, part, worst):
    """`{row: [value per seed]}`: each key of `part`, then mean and worst."""
    keys = list(runs[0][part])
    rows = {k: [r[part][k] for r in runs] for k in keys}
    rows["mean"] = [float(np.mean([r[part][k] for k in keys])) for r in runs]
    rows["worst"] = [float(worst([r[part][k] for k in keys])) for r in runs]
    return rows


def cell(values, sign=False):
    values = np.asarray(values, "float64")
    number = "{:+.3f}" if sign else "{:.3f}"
    if len(values) == 1:
        return number.format(values[0])
    return f"{number.format(values.mean())} ± {values.std(ddof=1):.3f}"


def markdown(report):
    recipe, arms = report["recipe"], list(report["rules"])
    runs = {a: report["rules"][a]["runs"] for a in arms}
    lines = [f"{recipe}, {report['backend']}, seeds {report['seeds']}; mean ± standard deviation over seeds.", ""]
    for title, part, worst in MEASURES[recipe]:
        if part not in runs[arms[0]][0]:
            continue
        rows = {a: per_seed_rows(runs[a], part, worst) for a in arms}
        lines.append(f"| {title} | " + " | ".join(arms) + " |")
        lines.append("|---|" + "---:|" * len(arms))
        for key in rows[arms[0]]:
            name = f"**{key}**" if key in ("mean", "worst") else key
            lines.append(f"| {name} | " + " | ".join(cell(rows[a][key]) for a in arms) + " |")
        lines.append("")
    if "uniform" in arms and len(arms) > 1:
        part = JUDGED[recipe]
        worst = dict((p, w) for _, p, w in MEASURES[recipe])[part]
        base = per_seed_rows(runs["uniform"], part, worst)
        lines += [f"| paired with uniform, same seed ({part}) | worst - uniform's | mean - uniform's |",
                  "|---|---:|---:|"]
        for arm in arms:
            if arm != "uniform":
                rows = per_seed_rows(runs[arm], part, worst)
                diff = {k: np.subtract(rows[k], base[k]) for k in ("worst", "mean")}
                lines.append(f"| {arm} | {cell(diff['worst'], True)} | {cell(diff['mean'], True)} |")
        lines.append("")
    weights = {a: report["rules"][a]["task_weights"] for a in arms}
    lines.append("Final task weights (mean over seeds): " + "; ".join(
        f"{a}: " + ", ".join(f"{k} {v:.2f}" for k, v in weights[a].items()) for a in arms))
    return "\n".join(lines)


def combined(reports):
    """One table per measure, a column per (report, rule) of mim reports."""
    columns = {}
    for report in reports:
        # Reports written before `--targets` existed used all three.
        targets = report["setup"].get("targets", ["pixels", "gradient_histogram", "low_frequency"])
        for rule, result in report["rules"].items():
            label = f"{targets[0]} only" if len(targets) == 1 else f"{len(targets)} targets, {rule}"
            columns[label] = result["runs"]
    lines = [f"{reports[0]['backend']}, seeds {reports[0]['seeds']}; mean ± standard deviation over seeds.", ""]
    for title, part, worst in reversed(MEASURES["mim"]):
        rows = {c: per_seed_rows(runs, part, worst) for c, runs in columns.items()}
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
        if part == "recovery_loss":
            # Each target where it was trained; mean and worst do not compare across target sets.
            keys = [k for k in keys if k not in ("mean", "worst")]
        lines.append(f"| {title} | " + " | ".join(columns) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        for key in keys:
            name = f"**{key}**" if key in ("mean", "worst") else key
            lines.append(f"| {name} | " + " | ".join(cell(rows[c][key]) if key in rows[c] else "" for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="report.json files of the pos-mlm or mim recipe")
    parser.add_argument("--combined", action="store_true", help="mim: one table, a column per report and rule")
    args = parser.parse_args()
    reports = []
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        wanted = ("mim",) if args.combined else tuple(MEASURES)
        if report.get("recipe") not in wanted:
            raise SystemExit(f"{path} is not a report of the {' or '.join(wanted)} recipe "
                             f"(recipe: {report.get('recipe')!r}).")
        reports.append(report)
    if args.combined:
        print(combined(reports))
        return
    for report in reports:
        print(markdown(report))
        print()


if __name__ == "__main__":
    main()
