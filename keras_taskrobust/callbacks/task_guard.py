"""The callback that turns a `MinimaxModel` step's task vector into logs and stops on bad input."""

import inspect
import math
import warnings

import keras

from keras_taskrobust.callbacks.task_progbar_logger import TaskProgbarLogger
from keras_taskrobust.metrics.task_losses import TASK_LOGS_KEY
from keras_taskrobust.metrics.task_losses import count_rejected
from keras_taskrobust.metrics.task_losses import expand_task_logs


def run_guarded(minimax, run, args, kwargs, training):
    """Runs `fit` or `evaluate` (`run`, unbound from `minimax`'s parent) with a `TaskGuard`.

    For `fit`, it first configures the training step: the `MirrorDescent`
    among the callbacks (at most one) drives it for this `fit` only. The
    guard's error, if any, is raised after the loop
    ends cleanly (so the model state is synced on every backend).
    """
    bound = inspect.signature(run).bind(*args, **kwargs)
    callbacks = bound.arguments.get("callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        # `fit` validating: its own callbacks already hold the guard.
        return run(*bound.args, **bound.kwargs)
    _check_distribution()
    callbacks = list(callbacks or [])
    guard = TaskGuard(minimax)
    bound.arguments["callbacks"] = [guard] + callbacks + _progress_bar(minimax, callbacks, bound)
    if not training:
        result = run(*bound.args, **bound.kwargs)
    else:
        # Imported here: MirrorDescent's held-out signal imports the models.
        from keras_taskrobust.callbacks.mirror_descent import MirrorDescent

        descents = [c for c in callbacks if isinstance(c, MirrorDescent)]
        for callback in callbacks:
            save_freq = getattr(callback, "save_freq", None)
            if isinstance(callback, keras.callbacks.BackupAndRestore) and type(save_freq) is int:
                raise ValueError(
                    f"BackupAndRestore(save_freq={save_freq}) cannot resume a MinimaxModel: "
                    "Keras restores mid-epoch weights but replays the epoch from its first "
                    "batch, so the task weights, step and loss estimates would drift from an "
                    "uninterrupted run. Use BackupAndRestore(save_freq='epoch')."
                )
        if len(descents) > 1:
            raise ValueError(
                f"{len(descents)} MirrorDescent callbacks were given to one `fit`; "
                "the task weights follow one rule. Pass a single MirrorDescent."
            )
        weighting = minimax.weighting
        minimax.use_weighting(descents[0] if descents else None)
        try:
            result = run(*bound.args, **bound.kwargs)
        finally:
            # The rule drives this `fit` only; the step traced for it is
            # kept, and reused by the next `fit` with the same settings.
            minimax.weighting = weighting
    if guard.error is not None:
        raise guard.error
    return result


def _progress_bar(minimax, callbacks, bound):
    """`[TaskProgbarLogger]` where Keras would add its own progress bar, else `[]`.

    Keras adds a `ProgbarLogger` when `verbose` is not 0 and none is given;
    one given by the user (Keras' own shows every task) is kept as it is.
    """
    verbose = bound.arguments.get("verbose", "auto")
    if verbose == 0 or any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        return []
    return [TaskProgbarLogger(minimax.task_names)]


def _check_distribution():
    distribution = keras.distribution.distribution()
    if distribution is not None and keras.backend.backend() != "jax":
        # Keras implements keras.distribution on JAX only; elsewhere it
        # would silently train on one device.
        raise ValueError(
            f"A keras.distribution ({type(distribution).__name__}) is set, but it "
            f"distributes nothing on the {keras.backend.backend()} backend: Keras "
            "implements it on JAX only. On TensorFlow, create and compile the "
            "model under `tf.distribute.MirroredStrategy().scope()` (or "
            "`MultiWorkerMirroredStrategy`); on torch, use a DDP training loop "
            "(see guides/distributed_training.py). Or unset it with "
            "`keras.distribution.set_distribution(None)`."
        )


class TaskGuard(keras.callbacks.Callback):
    """Turns the step's internal logs into user logs; stops on bad input.

    It is the first callback of every `MinimaxModel.fit` and `evaluate`: it
    spreads the packed per-task vector into `loss/<task>`, `weight/<task>`
    and `loss/worst` floats before the other callbacks see the logs. A
    compiled step cannot raise, so the step counts the invalid task ids and
    negative sample weights in that vector; this callback stops the loop at
    that batch (so the model state is synced on every backend) and
    `run_guarded` raises after. A non-finite loss stops it at that batch
    too; the warning names the tasks with a non-finite loss over the epoch
    and counts the non-finite steps, none of which changed anything
    (`MinimaxModel`'s optimizer skips a step whose gradients are not finite,
    and its step keeps the task state). It holds the model directly:
    `self.model` would sync JAX state each batch.

    It reads every batch's logs on the training loop's thread, so on JAX and
    torch each step waits for the previous one. On the main job's CNN and
    on the tiny BERT masked LM that costs nothing measurable
    (benchmarks/RESULTS.md, "What a synchronous per-batch guard costs").

    Args:
        minimax: the `MinimaxModel` being run.
    """

    def __init__(self, minimax):
        super().__init__()
        self.minimax = minimax
        self.error = None
        self.non_finite_batch = None
        self.non_finite_steps = 0

    def _expand(self, logs, prefix=""):
        """Expands `logs` in place; True if they counted bad ids or sample weights."""
        if not logs:
            return False
        m = self.minimax
        bad_ids, negative = count_rejected(logs.get(prefix + TASK_LOGS_KEY), m.num_tasks)
        expand_task_logs(logs, m.task_names, prefix)
        if negative and self.error is None:
            self.error = ValueError(
                f"{negative} sample weights are negative (MinimaxModel with tasks "
                f"{m.task_names}): sample weights must be >= 0; give positions to "
                "ignore weight 0."
            )
        elif bad_ids and self.error is None:
            self.error = ValueError(
                f"{bad_ids} task ids in x[{m.task_key!r}] are outside "
                f"[0, {m.num_tasks}) for MinimaxModel with tasks {m.task_names}. "
                "Map every id into that range or set `num_tasks` to the number "
                "of tasks; give positions to ignore sample weight 0."
            )
        return bad_ids + negative > 0

    def on_train_batch_end(self, batch, logs=None):
        if self._expand(logs):
            self.minimax.stop_training = True
        if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
            if self.non_finite_batch is None:
                self.non_finite_batch = batch
            self.non_finite_steps += 1
            self.minimax.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self._expand(logs):
            self.minimax.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        # The callbacks after this one, History and the progress bar see one
        # float per task.
        if self._expand(logs):
            self.minimax.stop_training = True
        self._expand(logs, "val_")
        if self.non_finite_batch is not None:
            names = self.minimax.task_names
            bad = [name for name in names if not math.isfinite(logs.get(f"loss/{name}", 0.0))]
            steps = self.non_finite_steps
            warnings.warn(
                f"Non-finite loss for task(s) {bad or names} at batch "
                f"{self.non_finite_batch} of epoch {epoch}: training stopped. "
                f"{'That step' if steps == 1 else f'Each of those {steps} steps'} changed "
                "nothing (model weights, optimizer state and task state were kept). "
                "Check that task's data and labels, or lower the learning rate.",
                RuntimeWarning,
                stacklevel=2,
            )
            self.non_finite_batch = None
            self.non_finite_steps = 0

    def on_test_end(self, logs=None):
        self._expand(logs)
