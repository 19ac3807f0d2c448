"""Markdown tables of `mim` recipe reports: mean ± standard deviation over seeds.

Reads one or more `report.json` files written by
`keras-taskrobust run mim --seeds N --output DIR` and prints, per report,
the held-out recovery loss of each target (lower is better) and the
linear-probe accuracy of each downstream task (higher is better), with the
mean and the worst of each, uniform against the robust rule. The mean and
worst are computed per seed, then averaged (so their spread is the spread
over seeds).

With `--combined`, one table of the downstream accuracies (and one of the
recovery losses of the targets they share) with a column per report and
rule, e.g. single-target runs (`--targets pixels`) beside the three-target
one.

Usage:

    python benchmarks/research/mim_results.py DIR/report.json [DIR2/report.json ...]
    python benchmarks/research/mim_results.py --combined DIR/report.json DIR2/report.json ...
"""

import argparse
import json

import numpy as np


def per_seed_rows(runs, part, worst):
    """`{row: [value per seed]}`: each key of `part`, then mean and worst."""
    keys = list(runs[0][part])
    rows = {k: [r[part][k] for r in runs] for k in keys}
    rows["mean"] = [float(np.mean([r[part][k] for k in keys])) for r in runs]
    rows["worst"] = [float(worst([r[part][k] for k in keys])) for r in runs]
    return rows


def cell(values):
    values = np.asarray(values, "float64")
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def markdown(report):
    rules = list(report["rules"])
    seeds = len(report["seeds"])
    lines = [f"{report['backend']}, seeds {report['seeds']} ({seeds}); mean ± standard deviation over seeds.", ""]
    for title, part, worst in (
        ("held-out recovery loss (lower is better)", "recovery_loss", np.max),
        ("linear-probe accuracy (higher is better)", "downstream", np.min),
    ):
        rows = {r: per_seed_rows(report["rules"][r]["runs"], part, worst) for r in rules}
        compare = len(rules) > 1
        lines.append(f"| {title} | " + " | ".join(rules) + (" | difference (robust - uniform), per seed |" if compare else " |"))
        lines.append("|---|" + "---:|" * len(rules) + ("---|" if compare else ""))
        for key in rows[rules[0]]:
            name = f"**{key}**" if key in ("mean", "worst") else key
            line = f"| {name} | " + " | ".join(cell(rows[r][key]) for r in rules) + " |"
            if compare:
                diff = np.subtract(rows[rules[-1]][key], rows[rules[0]][key])
                line += " " + ", ".join(f"{d:+.3f}" for d in diff) + " |"
            lines.append(line)
        lines.append("")
    weights = {r: report["rules"][r]["task_weights"] for r in rules}
    lines.append("Final task weights (mean over seeds): " + "; ".join(
        f"{r}: " + ", ".join(f"{k} {v:.2f}" for k, v in weights[r].items()) for r in rules))
    return "\n".join(lines)


def combined(reports):
    """One table per measure, a column per (report, rule)."""
    columns = {}
    for report in reports:
        # Reports written before `--targets` existed used all three.
        targets = report["setup"].get("targets", ["pixels", "gradient_histogram", "low_frequency"])
        for rule, result in report["rules"].items():
            label = f"{targets[0]} only" if len(targets) == 1 else f"{len(targets)} targets, {rule}"
            columns[label] = result["runs"]
    lines = [f"{reports[0]['backend']}, seeds {reports[0]['seeds']}; mean ± standard deviation over seeds.", ""]
    for title, part, worst in (
        ("linear-probe accuracy", "downstream", np.min),
        ("held-out recovery loss", "recovery_loss", np.max),
    ):
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
    parser.add_argument("reports", nargs="+", help="report.json files of the mim recipe")
    parser.add_argument("--combined", action="store_true", help="one table, a column per report and rule")
    args = parser.parse_args()
    reports = []
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        if report.get("recipe") != "mim":
            raise SystemExit(f"{path} is not a report of the mim recipe (recipe: {report.get('recipe')!r}).")
        reports.append(report)
    if args.combined:
        print(combined(reports))
        return
    for report in reports:
        print(markdown(report))
        print()


if __name__ == "__main__":
    main()
