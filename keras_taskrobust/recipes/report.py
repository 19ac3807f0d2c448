"""What every recipe reports: a weight trace, a side-by-side table, a figure."""

import time

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
    finished when the recipe is interrupted (Ctrl-C). Appending a result
    prints one line: the run, its seed, its time and its scores (the
    command line's progress at its default verbosity).
    """
    clock = [time.monotonic()]
    runs = {name: _FinishedRuns(name, args, clock) for name in names}
    args.finished = runs
    return runs


class _FinishedRuns(list):
    """One rule's results, a run per seed; `append` prints the run's line."""

    def __init__(self, name, args, clock):
        super().__init__()
        self.name, self.first_seed, self.clock = name, getattr(args, "seed", 0), clock

    def append(self, result):
        super().append(result)
        now = time.monotonic()
        seconds, self.clock[0] = now - self.clock[0], now
        print(f"seed {self.first_seed + len(self) - 1} {self.name:>24s} ({seconds:4.0f} s): {_scores(result)}",
              flush=True)


def _scores(result):
    """The run's scores per task, from the first of its parts that holds them."""
    for part in ("downstream", "accuracy"):
        scores = result.get(part) if isinstance(result, dict) else None
        if isinstance(scores, dict):
            return "  ".join(f"{task} {value:.3f}" for task, value in scores.items())
    return "done"


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

    Each task keeps one colour in every panel and its own dash and markers,
    so that curves at the same weight stay visible; each rule's worst task
    (lowest score) is drawn thick, under the others, in its weight panel and
    its bar is hatched.
    The legends sit below the panels and every bar carries its score.

    Args:
        path: the PNG's path.
        traces: `{rule name: WeightTrace}` (rules with a flat trace, such as
            `uniform`, may be left out).
        scores: `{rule name: {task: score}}`, higher better.
        score_label: the y-axis label of the scores (e.g. "probe accuracy").
        title: a title for the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rules = list(scores)
    tasks = list(next(iter(scores.values())))
    worst = {rule: min(scores[rule], key=scores[rule].get) for rule in rules}
    colour = {task: plt.cm.tab10(k % 10) for k, task in enumerate(tasks)}
    dashes, markers = ["-", "--", "-.", ":"], "osD^vP*X"
    fig, axes = plt.subplots(1, 1 + len(traces), figsize=(5.2 * (1 + len(traces)), 4.8), squeeze=False)
    axes = axes[0]
    for ax, (rule, trace) in zip(axes, traces.items()):
        weights, steps = trace.weights, trace.steps
        every = max(1, len(steps) // 8)
        for k, name in enumerate(trace.task_names or []):
            is_worst = name == worst.get(rule)
            ax.plot(steps, weights[:, k], color=colour.get(name, plt.cm.tab10(k % 10)), linestyle=dashes[k % 4],
                    marker=markers[k % len(markers)], markevery=(k % every, every), markersize=4,
                    linewidth=4.0 if is_worst else 1.4, label=f"{name} (worst)" if is_worst else name,
                    alpha=0.6 if is_worst else 1.0, zorder=1 if is_worst else 2)  # thick, under the others
        ax.set(title=f"task weights ({rule})", xlabel="training step", ylabel="weight")
        ax.margins(y=0.15)  # weights that barely move still show apart
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(tasks)),
                  frameon=False, title="task", title_fontsize=7)
    ax = axes[-1]
    width = 0.8 / len(rules)
    x = np.arange(len(tasks))
    for i, rule in enumerate(rules):
        values = [scores[rule][t] for t in tasks]
        bars = ax.bar(x + i * width, values, width, color=plt.cm.Dark2(i % 8), label=rule,
                      hatch=["//" if t == worst[rule] else "" for t in tasks],
                      edgecolor=["black" if t == worst[rule] else "none" for t in tasks])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x + 0.4 - width / 2, tasks, rotation=30, ha="right", fontsize=8)
    values = [v for rule in rules for v in scores[rule].values()]
    low, high = min(values), max(values)
    if low >= 0:  # zoom in on the differences, from a little below the lowest score; room for the labels
        ax.set_ylim(max(0.0, low - 0.5 * (high - low) - 0.02), high + 0.3 * (high - low) + 0.03)
    ax.set(title="downstream, per task", ylabel=score_label)
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=plt.cm.Dark2(i % 8), label=rule) for i, rule in enumerate(rules)]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="the rule's worst task"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22),
              ncol=min(3, len(handles)), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
