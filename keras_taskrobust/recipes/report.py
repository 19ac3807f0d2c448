"""What every recipe reports: a weight trace, a side-by-side table, a figure."""

import keras
import numpy as np


class WeightTrace(keras.callbacks.Callback):
    """Records a `MinimaxModel`'s task weights every `every` training steps.

    Reads the `weight/<task>` entries of the batch logs, so it costs no extra
    device read. `steps` and `weights` (an array `[records, K]`) hold the
    trace; `task_names` the order of the columns.
    """

    def __init__(self, every=1):
        super().__init__()
        self.every = int(every)
        self.steps, self.rows, self.task_names, self._step = [], [], None, 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every or not logs:
            return
        if self.task_names is None:
            self.task_names = [k[len("weight/"):] for k in logs if k.startswith("weight/")]
        self.steps.append(self._step)
        self.rows.append([float(logs[f"weight/{name}"]) for name in self.task_names])

    @property
    def weights(self):
        return np.asarray(self.rows, dtype="float64").reshape(len(self.rows), -1)


def finished_runs(args, names):
    """`{name: []}`, the lists each run's result is appended to as it finishes.

    Kept as `args.finished` too: the command line saves the runs that
    finished when the recipe is interrupted (Ctrl-C).
    """
    runs = {name: [] for name in names}
    args.finished = runs
    return runs


def mean_over_seeds(results):
    """The mean over seeds of each number in per-seed results `{part: {key: number}}`."""
    return {
        part: {key: float(np.mean([r[part][key] for r in results])) for key in results[0][part]}
        for part in results[0]
    }


def summarize(scores):
    """`{"mean", "worst", "worst_task"}` of a dict `{task: score}`, higher better."""
    worst_task = min(scores, key=scores.get)
    return {
        "mean": float(np.mean(list(scores.values()))),
        "worst": float(scores[worst_task]),
        "worst_task": worst_task,
    }


def table(title, columns, rows, digits=3):
    """A plain-text table: `rows` is `{row name: [one value per column]}`."""
    width = max([len(str(r)) for r in rows] + [8])
    cell = max([len(str(c)) for c in columns] + [digits + 4])
    lines = [title, " " * width + "  " + "  ".join(f"{c:>{cell}}" for c in columns)]
    for name, values in rows.items():
        text = [f"{v:>{cell}.{digits}f}" if isinstance(v, (float, int, np.floating)) else f"{str(v):>{cell}}" for v in values]
        lines.append(f"{str(name):<{width}}  " + "  ".join(text))
    return "\n".join(lines)


def comparison_figure(path, traces, scores, score_label, title=None):
    """Saves a PNG: task weights over training, and per-task scores by rule.

    Args:
        path: the PNG's path.
        traces: `{rule name: WeightTrace}` (rules with a flat trace, such as
            `uniform`, may be left out).
        scores: `{rule name: {task: score}}`.
        score_label: the y-axis label of the scores (e.g. "probe accuracy").
        title: a title for the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(traces), figsize=(5 * (1 + len(traces)), 3.8))
    axes = np.atleast_1d(axes)
    for ax, (rule, trace) in zip(axes, traces.items()):
        weights = trace.weights
        for k, name in enumerate(trace.task_names or []):
            ax.plot(trace.steps, weights[:, k], label=name)
        ax.set(title=f"task weights ({rule})", xlabel="training step", ylabel="weight")
        ax.legend(fontsize=7)
    ax = axes[-1]
    rules = list(scores)
    tasks = list(next(iter(scores.values())))
    width = 0.8 / len(rules)
    for i, rule in enumerate(rules):
        ax.bar(np.arange(len(tasks)) + i * width, [scores[rule][t] for t in tasks], width, label=rule)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=30, ha="right", fontsize=8)
    values = [v for rule in rules for v in scores[rule].values()]
    low, high = min(values), max(values)
    if low >= 0:  # zoom in on the differences, from a little below the lowest score
        ax.set_ylim(max(0.0, low - 0.5 * (high - low) - 0.02), high + 0.15 * (high - low) + 0.01)
    ax.set(title="downstream, per task", ylabel=score_label)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
