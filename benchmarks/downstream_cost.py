"""Cost of one `DownstreamSuite` evaluation against one pre-training epoch.

Measures, side by side in one run, the wall time of

- one pre-training epoch of a `MinimaxModel` (K = 4 tasks, per-example task
  ids) on N examples, and
- one `DownstreamSuite.evaluate` with 4 linear-probe tasks whose training
  sets together hold N examples (N/4 each), each with an evaluation set of
  the same size (N/4): the backbone runs forward on 2N examples, and each
  head trains with the defaults (10 epochs, head batch 256, Adam(0.1)),

on two workloads:

- `mlp`: 64 inputs, backbone Dense(256, relu) x 2, a 10-class softmax
  head, N = 8192, batch 128 for pre-training and for feature extraction;
- `bert`: a tiny keras-hub `BertBackbone` from config (2 layers, hidden 64,
  sequence 64) pre-trained as a `BertMaskedLM` (10 masked positions, one
  task id per masked position), N = 384, batch 32; the probes read the
  pooled output.

Each backend uses its default jit settings. After one discarded warm-up
round (which compiles everything: its suite time is reported as "first"),
`--rounds` rounds alternate one pre-training epoch and one evaluation, so
that the noise of a shared machine hits both alike. The epoch is timed from
`on_epoch_begin` to `on_epoch_end` of a 1-epoch `fit`. Reported: medians,
their ratio, and the part of the evaluation spent extracting features.

Usage:

    python benchmarks/downstream_cost.py --all            # 3 backends, markdown
    python benchmarks/downstream_cost.py --backend torch  # one backend, JSON lines
"""

import statistics
import time

import numpy as np

import harness

NUM_TASKS = 4


def mlp_workload(rng):
    """Returns `(model, backbone, batch_size, pretraining_data, tasks)`."""
    import keras
    from keras_taskrobust.downstream import DownstreamTask
    from keras_taskrobust import MinimaxModel

    n, batch_size = 256 if harness.SMOKE else 8192, 128
    backbone = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
    ], name="backbone")
    inputs = keras.Input((64,))
    net = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(backbone(inputs)))
    model = MinimaxModel(net, num_tasks=NUM_TASKS)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    features = rng.normal(size=(n, 64)).astype("float32")
    pretraining = {
        "x": {"features": features, "task_id": rng.integers(0, NUM_TASKS, n).astype("int32")},
        "y": rng.integers(0, 10, n).astype("int32"),
    }
    tasks = []
    for k in range(NUM_TASKS):
        train, test = (rng.normal(size=(n // NUM_TASKS, 64)).astype("float32") for _ in range(2))
        label = lambda x, k=k: (x[:, k] > 0).astype("int32")
        tasks.append(DownstreamTask(f"task_{k}", (train, label(train)), (test, label(test)),
                                    num_classes=2, batch_size=batch_size))
    return model, "backbone", batch_size, pretraining, tasks


def bert_workload(rng):
    """A tiny BERT masked LM; the probes classify sentences from the pooled output."""
    import keras
    import keras_hub
    from keras_taskrobust.downstream import DownstreamTask
    from keras_taskrobust import MinimaxModel

    n, seq, masks, vocab, batch_size = 384, 64, 10, 1000, 32
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, num_layers=2, num_heads=2, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=seq, name="backbone",
    )
    mlm = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    model = MinimaxModel(mlm, num_tasks=NUM_TASKS)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=None)

    def sentences(count):
        lengths = rng.integers(masks, seq + 1, count)
        padding_mask = (np.arange(seq) < lengths[:, None]).astype("int32")
        return {
            "token_ids": rng.integers(0, vocab, (count, seq)).astype("int32") * padding_mask,
            "padding_mask": padding_mask,
            "segment_ids": np.zeros((count, seq), "int32"),
        }

    x = sentences(n)
    lengths = x["padding_mask"].sum(1)
    x["mask_positions"] = rng.integers(0, lengths[:, None], (n, masks)).astype("int32")
    x["task_id"] = rng.integers(0, NUM_TASKS, (n, masks)).astype("int32")
    pretraining = {
        "x": x,
        "y": rng.integers(0, vocab, (n, masks)).astype("int32"),
        "sample_weight": np.ones((n, masks), "float32"),
    }
    tasks = []
    for k in range(NUM_TASKS):
        train, test = sentences(n // NUM_TASKS), sentences(n // NUM_TASKS)
        label = lambda s, k=k: (s["token_ids"][:, k] % 2).astype("int32")
        tasks.append(DownstreamTask(f"task_{k}", (train, label(train)), (test, label(test)),
                                    num_classes=2, batch_size=batch_size))
    return model, "backbone", batch_size, pretraining, tasks


WORKLOADS = {"mlp": mlp_workload, "bert": bert_workload}
OPTIONS = {"rounds": (5, "epoch/evaluation alternations")}


def epoch_seconds(model, data, batch_size):
    """Fits one epoch; returns its wall time from `on_epoch_begin` to `on_epoch_end`."""
    import keras

    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: times.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.__setitem__(-1, times[-1] + time.perf_counter()),
    )
    model.fit(**data, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return times[0]


def measure(workload, rounds):
    """Alternates pre-training epochs and suite evaluations; returns a result row."""
    import keras
    from keras_taskrobust.callbacks import DownstreamSuite
    from keras_taskrobust.downstream import transfer_evaluator

    # Time spent extracting features, accumulated by a wrapper (benchmark only).
    extraction = [0.0]
    extract = transfer_evaluator._extract

    def timed_extract(*args):
        start = time.perf_counter()
        result = extract(*args)
        extraction[0] += time.perf_counter() - start
        return result

    transfer_evaluator._extract = timed_extract

    keras.utils.set_random_seed(0)
    model, backbone, batch_size, data, tasks = WORKLOADS[workload](np.random.default_rng(0))
    suite = DownstreamSuite(backbone, tasks, verbose=0)
    epochs, evaluations, extractions = [], [], []
    first = None
    for round_ in range(1 + rounds):
        epoch = epoch_seconds(model, data, batch_size)
        extraction[0] = 0.0
        start = time.perf_counter()
        suite.evaluate(model)
        evaluation = time.perf_counter() - start
        if round_ == 0:
            first = evaluation  # compiles the extractor and the probes
            continue
        epochs.append(epoch)
        evaluations.append(evaluation)
        extractions.append(extraction[0])
    epoch, evaluation = statistics.median(epochs), statistics.median(evaluations)
    return {
        "backend": keras.backend.backend(), "workload": workload, "N": len(data["y"]),
        "epoch_s": epoch, "suite_s": evaluation, "ratio": evaluation / epoch,
        "extract_s": statistics.median(extractions), "first_suite_s": first,
        "round_ratios": [e / p for e, p in zip(evaluations, epochs)],
    }


def measure_backend(rounds):
    """Yields a result row per workload, for the backend of this process."""
    for workload in list(WORKLOADS)[:1] if harness.SMOKE else WORKLOADS:
        yield measure(workload, rounds)


def markdown_table(rows):
    lines = [
        "| backend | workload | N | pre-training epoch (s) | suite, 4 linear probes (s) "
        "| ratio | per-round ratios (min-max) | of which extraction (s) | first evaluation, with compilation (s) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['workload']} | {r['N']} | {r['epoch_s']:.2f} | {r['suite_s']:.2f} "
            f"| {r['ratio']:.2f} | {min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f} "
            f"| {r['extract_s']:.2f} | {r['first_suite_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(
        __file__, __doc__.splitlines()[0], OPTIONS,
        measure_backend, markdown_table,
    )
