"""A callback that reports worst-case downstream transfer during pre-training."""

import csv
import json
import os
import warnings

import keras

from keras_taskrobust import _keras_compat as compat
from keras_taskrobust.downstream.transfer_evaluator import PREFIX
from keras_taskrobust.downstream.transfer_evaluator import TransferEvaluator


class DownstreamSuite(keras.callbacks.Callback):
    """Measures how well the backbone being pre-trained transfers, worst case.

    At the end of every `every_n_epochs`-th epoch (and once more at the end
    of training if the last epoch was not one of them), the suite adapts the
    current backbone to each `DownstreamTask` -- a linear probe on frozen
    features or a fine-tuned copy -- and measures the task's metric on its
    evaluation data, as `keras_taskrobust.downstream.evaluate_transfer`
    does outside `fit`. It adds to the epoch's `logs`:

    - `downstream/<task>`: the metric of every task;
    - `downstream/worst`: the worst task's score;
    - `downstream/mean`: the mean score.

    A task's score is its metric when higher is better, and minus the metric
    when lower is better (an error such as `"mae"`), so `downstream/worst`
    and `downstream/mean` are always "higher is better": monitor them with
    `mode="max"`. They compare tasks on one scale only if the metrics share
    one (accuracies, or R^2 scores); the name of the worst task is in
    `results` and in the printed table.

    Callbacks that read these keys -- `EarlyStopping`, `ModelCheckpoint`,
    `CSVLogger`, `TensorBoard` -- must come *after* the suite in the
    `callbacks` list (`History` and the progress bar always do). Like
    `validation_freq`, epochs that are not evaluated have no `downstream/`
    keys; `CSVLogger` fixes its columns at the first epoch, so with
    `every_n_epochs > 1` write the suite's own `log_file` instead.

    Adaptation never changes the pre-training model: its weights, optimizer
    state and task weights are bit-for-bit the same after the suite runs,
    and the global random generators are restored, so the pre-training run
    shuffles and samples exactly as it would without the suite. The suite
    holds one `keras_taskrobust.downstream.TransferEvaluator`, which keeps
    its compiled probes and fine-tuning copy from one evaluation to the
    next; see it for how the backbone's output becomes features.

    Args:
        backbone: the part of the pre-training model that produces the
            features: a layer or model, or its name, searched through the
            nested models of the model being trained (e.g. inside a
            `MinimaxModel`'s `.model`).
        tasks: a list of `DownstreamTask` with distinct names.
        every_n_epochs: evaluate after every this many epochs (epochs
            `n - 1, 2n - 1, ...` counted from 0, as Keras' `validation_freq`).
            Defaults to 1.
        features: which output of the backbone is the feature (a key, an
            index or a function of the outputs), as in `evaluate_transfer`.
            Defaults to `None`.
        pooling: `"mean"` or `"first"`: how a sequence of features becomes
            one vector, as in `evaluate_transfer`. Defaults to `"mean"`.
        mask_key: the key of dict inputs that holds the padding mask for
            mean pooling. Defaults to `"padding_mask"`.
        log_file: a path ending in `.csv` or `.json`; every evaluation is
            written to it (the whole file is rewritten each time). Defaults
            to `None`.
        verbose: 1 prints a table of the tasks after each evaluation, 0 is
            silent. Defaults to 1.

    Attributes:
        results: a list with one dict per evaluation (across `fit` calls):
            `epoch` (0-based, `None` for a call of `evaluate` outside
            `fit`), `seconds`, `worst_task`, and the logged values.

    Example:

    >>> import numpy as np, keras
    >>> from keras_taskrobust import MinimaxModel
    >>> from keras_taskrobust.callbacks import DownstreamSuite
    >>> from keras_taskrobust.downstream import DownstreamTask
    >>> x = np.random.rand(96, 8).astype("float32")
    >>> net = keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", name="encoder"),
    ...     keras.layers.Dense(1)])
    >>> model = MinimaxModel(net, num_tasks=2)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> label = (x[:, 0] > 0.5).astype("int32")
    >>> suite = DownstreamSuite("encoder", [DownstreamTask(
    ...     "first_feature", (x[:64], label[:64]), (x[64:], label[64:]),
    ...     num_classes=2)], verbose=0)
    >>> stop = keras.callbacks.EarlyStopping("downstream/worst", mode="max")
    >>> history = model.fit({"x": x, "task_id": np.arange(96) % 2}, x[:, :1],
    ...                     epochs=2, verbose=0, callbacks=[suite, stop])
    >>> sorted(k for k in history.history if k.startswith("downstream/"))
    ['downstream/first_feature', 'downstream/mean', 'downstream/worst']
    """

    def __init__(
        self,
        backbone,
        tasks,
        every_n_epochs=1,
        features=None,
        pooling="mean",
        mask_key="padding_mask",
        log_file=None,
        verbose=1,
    ):
        super().__init__()
        # === Config ===
        if not isinstance(backbone, (str, keras.layers.Layer)):
            raise TypeError(
                "DownstreamSuite's `backbone` must be a Keras layer or model, or "
                f"the name of one inside the model being trained; got {backbone!r}."
            )
        if int(every_n_epochs) != every_n_epochs or every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be an integer >= 1; got {every_n_epochs}.")
        if log_file is not None and not str(log_file).endswith((".csv", ".json")):
            raise ValueError(f"`log_file` must end in .csv or .json; got {log_file!r}.")
        # Checks the tasks, `features`, `pooling` and `mask_key`.
        self._evaluator = TransferEvaluator(tasks, features=features, pooling=pooling, mask_key=mask_key)
        self.backbone = backbone
        self.every_n_epochs = int(every_n_epochs)
        self.log_file = None if log_file is None else os.fspath(log_file)
        self.verbose = verbose

        # === State ===
        self.results = []
        self._last_epoch = None
        self._evaluated_epoch = None
        self._warned = False

    @property
    def tasks(self):
        """The `DownstreamTask`s, in order."""
        return self._evaluator.tasks

    # --- Callback hooks ---------------------------------------------------

    def on_train_begin(self, logs=None):
        # Fail before the first epoch if the backbone cannot be found.
        self._find_backbone(self.model)
        self._last_epoch = None
        self._evaluated_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every_n_epochs == 0:
            record = self.evaluate(epoch=epoch)
            if logs is not None:
                logs.update(_log_values(record))

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._evaluated_epoch != self._last_epoch:
            record = self.evaluate(epoch=self._last_epoch)
            if logs is not None:
                logs.update(_log_values(record))

    # --- Evaluation -------------------------------------------------------

    def evaluate(self, model=None, epoch=None):
        """Adapts the backbone to every task and measures the metrics.

        Called by the callback hooks; call it directly to evaluate a model
        outside `fit`.

        Args:
            model: the model that holds the backbone. Defaults to the model
                being trained.
            epoch: the epoch to record with the results. Defaults to `None`.

        Returns:
            A dict with `epoch`, `seconds`, `worst_task`, `downstream/<task>`
            for every task, `downstream/worst` and `downstream/mean`. It is
            also appended to `results`.
        """
        if model is not None:
            self.set_model(model)
        # `self.model` syncs JAX's training state into the variables.
        backbone = self._find_backbone(self.model)
        record = {"epoch": epoch, **self._evaluator(backbone)}
        self.results.append(record)
        self._evaluated_epoch = epoch
        if self.log_file:
            self._write_log()
        if self.verbose:
            compat.print_msg(self._table(record))
        return record

    def _find_backbone(self, model):
        # `flatten_layers` searches nested models and tracked attributes
        # (a `MinimaxModel` holds the user's model in `.model`).
        layers = compat.flatten_layers(model)
        if isinstance(self.backbone, keras.layers.Layer):
            if not self._warned and not any(layer is self.backbone for layer in layers):
                self._warned = True
                warnings.warn(
                    f"DownstreamSuite's backbone {self.backbone.name!r} is not a "
                    f"part of the model {model.name!r}: the suite measures a "
                    "backbone that this training does not change.",
                    stacklevel=2,
                )
            return self.backbone
        found = []
        for layer in layers:
            if layer.name == self.backbone and not any(layer is f for f in found):
                found.append(layer)
        if len(found) == 1:
            return found[0]
        names = list(dict.fromkeys(layer.name for layer in layers))
        if found:
            raise ValueError(
                f"DownstreamSuite: {len(found)} different layers of model "
                f"{model.name!r} are named {self.backbone!r}; pass the backbone "
                "object itself instead of its name."
            )
        shown = ", ".join(repr(n) for n in names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise ValueError(
            f"DownstreamSuite: no layer named {self.backbone!r} in model "
            f"{model.name!r} (nested models searched). Its layers are: {shown}. "
            "Pass one of these names or the backbone object itself, e.g. "
            "`DownstreamSuite(backbone=model.backbone, ...)`."
        )

    # --- Reporting --------------------------------------------------------

    def _table(self, record):
        epoch = record["epoch"]
        when = f"after epoch {epoch + 1}" if epoch is not None else "of the current backbone"
        rows = [("task", "mode", "metric", "value")]
        for task in self.tasks:
            metric = task.metric_name + ("" if task.higher_is_better else " (lower is better)")
            rows.append((task.name, task.mode, metric, f"{record[PREFIX + task.name]:.4f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        # A leading newline, as Keras' callbacks do: the progress bar's
        # line is still open at `on_epoch_end`.
        lines = [f"\nDownstream transfer {when} ({record['seconds']:.1f} s)"]
        for row in rows:
            mark = "  <- worst" if row[0] == record["worst_task"] else ""
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + mark)
        lines.append(
            f"  worst {record[PREFIX + 'worst']:.4f} ({record['worst_task']}), "
            f"mean {record[PREFIX + 'mean']:.4f}"
        )
        return "\n".join(lines)

    def _write_log(self):
        directory = os.path.dirname(self.log_file)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.log_file.endswith(".json"):
            with open(self.log_file, "w") as f:
                json.dump(self.results, f, indent=2)
            return
        fields = list(dict.fromkeys(key for record in self.results for key in record))
        with open(self.log_file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.results)


def _log_values(record):
    return {k: v for k, v in record.items() if k.startswith(PREFIX)}
