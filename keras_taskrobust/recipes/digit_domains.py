"""The default recipe: average-loss against robust pre-training on digit domains.

Pre-training data mixes are imbalanced: one domain dominates. This recipe
pre-trains a small convolutional backbone to classify digits drawn from the
six domains of the `digit_domains` dataset, with the clean domain dominant
(the others get `--minor-fraction` as many images), twice with the same data,
seed and budget, three ways, each domain a task of `MinimaxModel`:

- `average`: the average loss over the examples, the usual pre-training
  objective: the task weights are fixed at each domain's share of a batch;
- `uniform`: the average of the domains' losses (`Uniform`, w = 1/K), which
  already re-balances the domains;
- the robust rule (`--weighting`, default `ExponentiatedGradient`).

Each backbone is then measured by `DownstreamSuite`: a linear probe per
domain, trained on images held out from pre-training and evaluated on the
test split.
"""

import keras
import numpy as np

from keras_taskrobust import MinimaxModel
from keras_taskrobust import cli
from keras_taskrobust import rules
from keras_taskrobust.callbacks import DownstreamSuite
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.downstream import DownstreamTask
from keras_taskrobust.data import DOMAINS
from keras_taskrobust.data import DigitDomains
from keras_taskrobust.data import load_domains
from keras_taskrobust.data import mix_tasks
from keras_taskrobust.data import stratified_counts
from keras_taskrobust.data import task_probabilities
from keras_taskrobust.recipes import report

DESCRIPTION = "average vs robust pre-training on digits in six imbalanced domains, linear probes per domain"


def add_arguments(parser):
    parser.add_argument("--dataset", default="mnist", choices=sorted(c.name for c in DigitDomains.BUILDER_CONFIGS),
                        help="the digit_domains config: mnist (28 x 28, the default) or digits (8 x 8, smaller).")
    parser.add_argument("--dominant", default="clean", help=f"the dominant domain, one of {', '.join(DOMAINS)} (default: clean).")
    parser.add_argument("--minor-fraction", type=cli.fraction, default=0.05,
                        help="each other domain's share of images relative to the dominant one (default: 0.05).")
    parser.add_argument("--step-size", type=cli.non_negative_float, default=0.01, help="the exponentiated gradient's step size (default: 0.01).")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, help="pre-training batch size (default: 64).")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=3e-3, help="Adam's learning rate (default: 3e-3).")
    parser.add_argument("--seeds", type=cli.positive_int, default=1, help="repeat over this many seeds from --seed (default: 1).")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS's).")


def run(args):
    if args.dominant not in DOMAINS:
        raise SystemExit(f"keras-taskrobust: error: unknown domain {args.dominant!r}; the domains are {', '.join(DOMAINS)}.")
    if not 0 < args.minor_fraction <= 1:
        raise SystemExit(f"keras-taskrobust: error: --minor-fraction must be in (0, 1]; got {args.minor_fraction}.")
    epochs = args.epochs or (2 if args.quick else 12)
    sizes = _Sizes(args.quick, args.minor_fraction)
    train, test = (load_domains(split, config=args.dataset, data_dir=args.data_dir) for split in ("train", "test"))
    available = min(len(y) for _, y in train.values()) - sizes.probe_train
    sizes.dominant = min(sizes.dominant, available)
    sizes.minor = min(sizes.minor, sizes.dominant)
    robust_name = args.weighting
    runs = report.finished_runs(args, ["average", "uniform", robust_name])
    traces = {}
    for seed in range(args.seed, args.seed + args.seeds):
        data = _split(train, test, args.dominant, sizes, seed)
        for name in runs:
            result, trace = _pretrain_and_probe(data, name, args, epochs, seed)
            runs[name].append(result)
            traces.setdefault(name, trace)
    return _report(runs, traces, args, epochs, sizes, robust_name)


class _Sizes:
    """How many images each part takes from a domain's train and test splits."""

    def __init__(self, quick, minor_fraction):
        self.dominant = 400 if quick else 3500
        self.minor = max(8, int(round(self.dominant * minor_fraction)))
        self.probe_train = 100 if quick else 500
        self.probe_eval = 200 if quick else 1000
        self.probe_epochs = 5 if quick else 20


def _split(train, test, dominant, sizes, seed):
    rng = np.random.default_rng(seed)
    upstream, held_out, tasks = {}, {}, []
    for domain in DOMAINS:
        x, y = train[domain]
        order = rng.permutation(len(y))
        probe, pool = order[: sizes.probe_train], order[sizes.probe_train :]
        pool = pool[: sizes.dominant if domain == dominant else sizes.minor]
        upstream[domain] = (x[pool], y[pool])
        x_test, y_test = test[domain]
        keep = rng.permutation(len(y_test))[: sizes.probe_eval]
        held_out[domain] = (x_test[keep], y_test[keep])
        tasks.append(DownstreamTask(domain, (x[probe], y[probe]), (x_test[keep], y_test[keep]),
                                    num_classes=10, epochs=sizes.probe_epochs, seed=seed))
    return upstream, held_out, tasks


def _callbacks(name, args):
    if name == "average":
        return []  # no MirrorDescent: the weights stay where they were set
    if name == "exponentiated_gradient":
        return [MirrorDescent(rules.ExponentiatedGradient(step_size=args.step_size))]
    return [MirrorDescent(rules.get(name))]


def build_classifier(image_shape=(28, 28, 1), num_classes=10, width=32):
    """A small convolutional network; its layer `"backbone"` gives the features."""
    backbone = keras.Sequential([
        keras.Input(image_shape),
        keras.layers.Conv2D(width // 2, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(width * 2, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(width * 2, activation="relu"),
    ], name="backbone")
    inputs = keras.Input(image_shape, name="image")
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="digit")(backbone(inputs)))


def _pretrain_and_probe(data, name, args, epochs, seed):
    upstream, held_out, tasks = data
    keras.utils.set_random_seed(seed)
    image_shape = next(iter(upstream.values()))[0].shape[1:]
    model = MinimaxModel(build_classifier(image_shape), task_names=list(upstream))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Stratified batches: every domain in every batch, in proportion to its size.
    stream = mix_tasks(upstream, args.batch_size, stratified=True, seed=seed)
    if name == "average":
        counts = stratified_counts(task_probabilities([len(y) for _, y in upstream.values()]), args.batch_size)
        model.task_weights.assign(counts / counts.sum())  # sum_k (c_k / B) * mean_k = the batch mean
    suite = DownstreamSuite("backbone", tasks, every_n_epochs=epochs, verbose=0)
    trace = report.WeightTrace(every=5)
    history = model.fit(stream, epochs=epochs, verbose=args.verbose, shuffle=False,
                        callbacks=[*_callbacks(name, args), suite, trace])
    probe = suite.results[-1]
    return {
        "downstream": {t.name: float(probe[f"downstream/{t.name}"]) for t in tasks},
        "task_weights": dict(zip(model.task_names, np.asarray(model.task_weights.numpy(), "float64").tolist())),
        "upstream_train_loss": {name: float(history.history[f"loss/{name}"][-1]) for name in model.task_names},
        # The pre-trained classifier itself, on the held-out images of each domain.
        "upstream_accuracy": {
            name: float(np.mean(np.argmax(model.model.predict(x, batch_size=256, verbose=0), -1) == y))
            for name, (x, y) in held_out.items()
        },
    }, trace


def _report(runs, traces, args, epochs, sizes, robust_name):
    mean = {name: report.mean_over_seeds(results) for name, results in runs.items()}
    columns = list(runs)
    rows = {domain: [mean[r]["downstream"][domain] for r in columns] for domain in DOMAINS}
    summaries = {r: _summary(runs[r], "downstream") for r in columns}
    rows["mean"] = [summaries[r]["mean"] for r in columns]
    rows["worst"] = [summaries[r]["worst"] for r in columns]  # each seed's worst domain, averaged
    seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
    print(report.table(f"\nLinear-probe accuracy per domain ({epochs} epochs, {seeds}; "
                       f"{args.dominant}: {sizes.dominant} images, others: {sizes.minor})", columns, rows))
    upstream = {d: [mean[r]["upstream_accuracy"][d] for r in columns] for d in DOMAINS}
    upstream_summaries = {r: _summary(runs[r], "upstream_accuracy") for r in columns}
    upstream["mean"] = [upstream_summaries[r]["mean"] for r in columns]
    upstream["worst"] = [upstream_summaries[r]["worst"] for r in columns]
    print(report.table("\nThe pre-trained classifier's accuracy per domain (held-out images)", columns, upstream))
    weights = {d: [mean[r]["task_weights"][d] for r in columns] for d in DOMAINS}
    print(report.table("\nTask weights at the end of pre-training", columns, weights))
    figure = args.output / "domains.png"
    report.comparison_figure(
        figure, {robust_name: traces[robust_name]}, {r: mean[r]["downstream"] for r in columns},
        "linear-probe accuracy", title=f"Digit domains: uniform vs {robust_name}",
    )
    print(f"Figure: {figure}")
    return {
        "epochs": epochs,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
        "dataset": f"digit_domains/{args.dataset}",
        "images": {"dominant": args.dominant, "dominant_images": sizes.dominant, "minor_images": sizes.minor,
                   "probe_train": sizes.probe_train, "probe_eval": sizes.probe_eval},
        "rules": {
            r: {**mean[r], **summaries[r], "upstream_summary": upstream_summaries[r], "runs": runs[r]}
            for r in columns
        },
        "figure": str(figure),
    }


def _summary(results, part):
    """Mean over seeds of each seed's mean and worst domain (and the worst domain of each)."""
    per_seed = [report.summarize(r[part]) for r in results]
    return {
        "mean": float(np.mean([s["mean"] for s in per_seed])),
        "worst": float(np.mean([s["worst"] for s in per_seed])),
        "worst_task": [s["worst_task"] for s in per_seed],
    }
