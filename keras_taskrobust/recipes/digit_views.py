"""The default recipe: four views of the same digits, a narrow backbone, linear probes per view.

Pre-training data mixes are imbalanced, and their parts need different
features. Here one pool of 5000 MNIST digits (the `clean` domain of the
offline `digit_domains` TFDS dataset, both splits) gives four natural
upstream sub-tasks, each a label function of the images and a task of
`MinimaxModel`:

- `digit`: the image's digit class (10 classes), the dominant sub-task
  (2500 images);
- `rotation`: which quarter turn was applied (4 classes, 125 images);
- `position`: which way a 2-pixel shift went, up, down, left or right
  (4 classes, 125 images);
- `mirror`: whether the image was flipped left-right (2 classes, 125 images).

They share a small convolutional backbone whose output (the layer
`"backbone"`) has only 16 units, with one softmax head per sub-task. With the
average loss over examples, the digit sub-task takes most of those units and
the other views get what is left. Downstream, one linear probe per view is
trained on the frozen backbone, on images disjoint from pre-training and
from the held-out sets, and evaluated on 1000 more.

Four runs with the same data, seed and budget:

- `average`: the pooled average over examples (the task weights fixed at
  each sub-task's share of a batch), the usual pre-training objective;
- `uniform`: the average of the sub-tasks' losses (w = 1/K);
- the robust rule (`--weighting`, default `ExponentiatedGradient(0.1,
  smoothing=0.01)`), every 10 steps, on each sub-task's *excess* loss on a
  held-out set of 150 images over the `uniform` run's model (DoReMi's
  reference model, here trained with the same budget): training losses of
  the small sub-tasks are driven to zero by memorisation and stop meaning
  anything, and the sub-tasks' losses are on different scales (a 10-way
  against a 2-way cross-entropy), which the excess over a reference
  removes. `--signal held_out` uses the plain held-out losses, `--signal
  training` the training batch's;
- `sensitivity`: a fixed weighting with half of the weight on the view whose
  probe is worst under `average`: it shows whether any weighting can move
  that probe, i.e. whether this evaluation can test the method at all.
"""

import keras
import numpy as np
from keras import ops

from keras_taskrobust import MinimaxModel
from keras_taskrobust import cli
from keras_taskrobust.data import load_domains
from keras_taskrobust.data import mix_tasks
from keras_taskrobust.data import stratified_counts
from keras_taskrobust.data import task_probabilities
from keras_taskrobust.downstream import DownstreamTask
from keras_taskrobust.downstream import TransferEvaluator
from keras_taskrobust.recipes import report
from keras_taskrobust.recipes import robust_arms

DESCRIPTION = "four views of the same digits (class, rotation, position, mirror), linear probes per view"
VIEWS = {"digit": 10, "rotation": 4, "position": 4, "mirror": 2}  # view: number of classes
SHIFT = 2  # pixels
# The robust rule's settings on this recipe where they differ from the rule's own.
ROBUST_DEFAULTS = {"exponentiated_gradient": {"step_size": 0.1, "smoothing": 0.01}}


def add_arguments(parser):
    robust_arms.add_arguments(parser, ROBUST_DEFAULTS, signal="excess", signals=("excess", "held_out", "training"))
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, help="pre-training batch size (default: 64).")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=3e-3, help="Adam's learning rate (default: 3e-3).")
    parser.add_argument("--seeds", type=cli.positive_int, default=1, help="repeat over this many seeds from --seed (default: 1).")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS's).")


class _Sizes:
    """How many base images each part takes, per seed (disjoint)."""

    def __init__(self, quick):
        self.dominant = 400 if quick else 2500
        self.minor = 40 if quick else 125
        self.held_out = 40 if quick else 150
        self.probe_train = 100 if quick else 500
        self.probe_eval = 200 if quick else 1000
        self.probe_epochs = 5 if quick else 20


def run(args):
    robust = robust_arms.arms(args)
    epochs = args.epochs or (2 if args.quick else 10)
    sizes = _Sizes(args.quick)
    parts = [load_domains(split, data_dir=args.data_dir)["clean"] for split in ("train", "test")]
    images, labels = (np.concatenate(a) for a in zip(*parts))
    arms = ("average", "uniform", *[arm.name for arm in robust], "sensitivity")
    by_name = {arm.name: arm for arm in robust}
    runs = report.finished_runs(args, arms)
    traces = {}
    for seed in range(args.seed, args.seed + args.seeds):
        data = _split(images, labels, sizes, seed)
        models = {}
        for arm in arms:
            favoured = None
            if arm == "sensitivity":
                probes = runs["average"][-1]["downstream"]
                favoured = min(probes, key=probes.get)
            result, trace, models[arm] = _pretrain_and_probe(
                data, arm, by_name.get(arm), args, epochs, seed, favoured, models.get("uniform"))
            runs[arm].append(result)
            traces.setdefault(arm, trace)
    return _report(runs, traces, args, epochs, sizes, robust)


def _view(view, x, y, rng):
    """`(images, labels)` of `view` for base images `x` `[N, 28, 28, 1]` with digit labels `y`."""
    if view == "digit":
        return x, y
    k = rng.integers(0, VIEWS[view], len(x)).astype("int32")
    if view == "rotation":
        return np.stack([np.rot90(image, int(turns)) for image, turns in zip(x, k)]), k
    if view == "position":
        moves = [(-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT)]  # up, down, left, right
        return np.stack([np.roll(image, moves[int(d)], axis=(0, 1)) for image, d in zip(x, k)]), k
    return np.where(k[:, None, None, None] == 1, x[:, :, ::-1], x), k  # mirror


def _split(images, labels, sizes, seed):
    """Upstream data per view, the held-out set, and one probe per view, from disjoint base images."""
    rng = np.random.default_rng(seed)
    order = iter(np.split(rng.permutation(len(labels)), np.cumsum(
        [sizes.dominant] + [sizes.minor] * 3 + [sizes.held_out] * 4 + [sizes.probe_train, sizes.probe_eval])))
    offsets = dict(zip(VIEWS, np.cumsum([0, *VIEWS.values()])[:-1]))  # each view's classes in the shared head
    upstream, held_out = {}, []
    for view in VIEWS:
        part = next(order)
        x, y = _view(view, images[part], labels[part], rng)
        upstream[view] = (x, (y + offsets[view]).astype("int32"))
    for k, view in enumerate(VIEWS):
        part = next(order)
        x, y = _view(view, images[part], labels[part], rng)
        held_out.append((x, (y + offsets[view]).astype("int32"), np.full(len(y), k, "int32")))
    x, y, ids = (np.concatenate(a) for a in zip(*held_out))
    held_out = ({"image": x, "task_id": ids}, y)
    train, test = next(order), next(order)
    probes = TransferEvaluator([
        DownstreamTask(view, _view(view, images[train], labels[train], rng), _view(view, images[test], labels[test], rng),
                       num_classes=classes, epochs=sizes.probe_epochs, seed=seed)
        for view, classes in VIEWS.items()
    ])
    return upstream, held_out, probes


def per_view_crossentropy(y_true, y_pred):
    """Softmax cross-entropy over the classes of the label's own view: one head per view."""
    view_of_class = ops.convert_to_tensor(np.repeat(np.arange(len(VIEWS)), list(VIEWS.values())).astype("int32"))
    y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    same_view = ops.equal(view_of_class[None, :], ops.take(view_of_class, y)[:, None])
    logits = ops.where(same_view, y_pred, -1e9)
    return ops.logsumexp(logits, axis=1) - ops.take_along_axis(logits, y[:, None], axis=1)[:, 0]


def build_network(width=16):
    """A small CNN whose layer `"backbone"` gives `width` features, and a head over every view's classes."""
    backbone = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(width, activation="relu"),
    ], name="backbone")
    inputs = keras.Input((28, 28, 1), name="image")
    return keras.Model(inputs, keras.layers.Dense(sum(VIEWS.values()), name="heads")(backbone(inputs)))


def _pretrain_and_probe(data, arm, robust, args, epochs, seed, favoured=None, reference=None):
    """Pre-trains arm `arm` (`robust`: its `robust_arms.Arm`, if robust) and probes it; `(result, trace, model)`.

    `reference`: the `uniform` run's model, for the excess signal.
    """
    upstream, held_out, probes = data
    keras.utils.set_random_seed(seed)
    model = MinimaxModel(build_network(), task_names=list(VIEWS))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=per_view_crossentropy)
    stream = mix_tasks(upstream, args.batch_size, stratified=True, seed=seed, features_key="image")
    callbacks = []
    if arm == "average":
        counts = stratified_counts(task_probabilities([len(y) for _, y in upstream.values()]), args.batch_size)
        model.task_weights.assign(counts / counts.sum())  # sum_k (c_k / B) * mean_k = the batch mean
    elif arm == "sensitivity":
        weights = np.full(len(VIEWS), 0.5 / (len(VIEWS) - 1))
        weights[list(VIEWS).index(favoured)] = 0.5
        model.task_weights.assign(weights)
    elif arm != "uniform":
        callbacks.append(robust.callback(held_out, reference, args.update_every))
    trace = report.WeightTrace(every=5)
    model.fit(stream, epochs=epochs, verbose=args.verbose, shuffle=False, callbacks=[*callbacks, trace])
    scores = probes(model.model.get_layer("backbone"))
    return {
        "downstream": {view: float(scores[f"downstream/{view}"]) for view in VIEWS},
        "task_weights": dict(zip(model.task_names, np.asarray(model.task_weights.numpy(), "float64").tolist())),
        **({"favoured": favoured} if favoured else {}),
    }, trace, model.model


def _spread(values):
    values = np.asarray(values, "float64")
    return {"mean": float(values.mean()), "std": float(values.std())}


def _report(runs, traces, args, epochs, sizes, robust):
    arms = list(runs)
    summary = {}
    for arm, results in runs.items():
        scores = np.array([[r["downstream"][v] for v in VIEWS] for r in results])
        summary[arm] = {
            "downstream": {v: _spread(scores[:, j]) for j, v in enumerate(VIEWS)},
            "mean": _spread(scores.mean(axis=1)),
            "worst": _spread(scores.min(axis=1)),  # each seed's worst view
            "task_weights": report.mean_over_seeds([{"w": r["task_weights"]} for r in results])["w"],
            "runs": results,
        }
    sensitivity = _sensitivity(runs)
    rows = {v: [f"{summary[a]['downstream'][v]['mean']:.3f}±{summary[a]['downstream'][v]['std']:.3f}" for a in arms]
            for v in VIEWS}
    for part in ("mean", "worst"):
        rows[part] = [f"{summary[a][part]['mean']:.3f}±{summary[a][part]['std']:.3f}" for a in arms]
    seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
    print(report.table(f"\nLinear-probe accuracy per view ({epochs} epochs, {seeds}, mean±std; worst: each seed's "
                       f"worst view)", arms, rows))
    weights = {v: [summary[a]["task_weights"][v] for a in arms] for v in VIEWS}
    print(report.table("\nTask weights at the end of pre-training", arms, weights))
    moved = "more" if sensitivity["moves_more_than_spread"] else "LESS"
    print(f"\nSensitivity check: half the weight on {sensitivity['views']} moves its probe by "
          f"{sensitivity['moved']:+.3f} over average, {moved} than the seed spread ({sensitivity['spread']:.3f}).")
    for arm in robust:
        worst, mean = summary[arm.name]["worst"]["mean"], summary[arm.name]["mean"]["mean"]
        print(f"{arm.name} against average: worst {worst - summary['average']['worst']['mean']:+.3f}, mean "
              f"{mean - summary['average']['mean']['mean']:+.3f}; against uniform: worst "
              f"{worst - summary['uniform']['worst']['mean']:+.3f}.")
    figure = args.output / "views.png"
    first = robust[0]
    report.comparison_figure(
        figure, {first.name: traces[first.name]},
        {a: {v: summary[a]["downstream"][v]["mean"] for v in VIEWS} for a in arms},
        "linear-probe accuracy", title=f"Digit views: average, uniform, {first.name} ({first.signal} signal)",
    )
    print(f"Figure: {figure}")
    return {
        "epochs": epochs,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
        "dataset": "digit_domains/mnist (clean, train and test)",
        "images": {"digit": sizes.dominant, "each other view": sizes.minor, "held_out_per_view": sizes.held_out,
                   "probe_train": sizes.probe_train, "probe_eval": sizes.probe_eval},
        "robust": {"rule": repr(robust[0].rule), "signal": robust[0].signal, "update_every": args.update_every},
        "arms": {arm.name: {"rule": repr(arm.rule), "signal": arm.signal} for arm in robust},
        "rules": summary,
        "sensitivity": sensitivity,
        "figure": str(figure),
    }


def _sensitivity(runs):
    """How far the fixed weighting moved the probe it favoured, against the seed spread."""
    moved, spread, favoured = [], [], []
    for fixed, average in zip(runs["sensitivity"], runs["average"]):
        view = fixed["favoured"]
        favoured.append(view)
        moved.append(fixed["downstream"][view] - average["downstream"][view])
    for arm in ("average", "sensitivity"):
        for view in set(favoured):
            spread.append(float(np.std([r["downstream"][view] for r in runs[arm]])))
    moved, spread = float(np.mean(moved)), max(spread)
    return {"views": sorted(set(favoured)), "moved": moved, "spread": spread,
            "moves_more_than_spread": bool(moved > spread)}
