"""The callback that turns the task-weight updates on."""

import keras

from keras_taskrobust import rules


class MirrorDescent(keras.callbacks.Callback):
    """Moves a `MinimaxModel`'s task weights with a weighting rule during `fit`.

    Without this callback the task weights of a `MinimaxModel` stay where
    they are (uniform at first). With it, every training step folds the
    batch's group losses into the loss estimates and, at every
    `update_every`-th step after `warmup_steps` uniform steps, sets the
    weights with `rule.update` (mirror ascent on the simplex for
    `ExponentiatedGradient`). The update runs inside the compiled training
    step on every backend, so it takes effect at every configured step (on
    JAX too, where the step is a stateless jitted function); the callback
    only attaches the rule to the model for the duration of the `fit` call.

    Step sizes and their schedules belong to the rule:
    `ExponentiatedGradient(step_size=keras.optimizers.schedules.ExponentialDecay(...))`
    evaluates the schedule at the number of weight updates made so far.

    Args:
        rule: a `keras_taskrobust.rules.WeightingRule`, or the name of one
            (`"uniform"`, `"exponentiated_gradient"`, `"softmax"`,
            `"hard_max"`) with default settings. Defaults to
            `"exponentiated_gradient"`.
        update_every: update the weights every this many steps. Defaults to 1.
        warmup_steps: number of first training steps with uniform weights
            (counted over the model's whole training, so a resumed run does
            not warm up again). Defaults to 0.

    Example:

    >>> import keras
    >>> from keras_taskrobust.rules import ExponentiatedGradient
    >>> decay = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
    >>> callback = MirrorDescent(ExponentiatedGradient(step_size=decay),
    ...                          update_every=2, warmup_steps=10)
    >>> callback.rule.step_size is decay
    True
    """

    def __init__(self, rule="exponentiated_gradient", update_every=1, warmup_steps=0):
        super().__init__()
        self.rule = rules.get(rule)
        if int(update_every) != update_every or update_every < 1:
            raise ValueError(f"`update_every` must be an integer >= 1; got {update_every}.")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0; got {warmup_steps}.")
        self.update_every = int(update_every)
        self.warmup_steps = int(warmup_steps)

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "mirror_descent"):
            raise TypeError(
                "MirrorDescent updates the task weights of a "
                f"keras_taskrobust.MinimaxModel; got {type(model).__name__}. "
                "Wrap the model: `MinimaxModel(model, num_tasks=K)`."
            )
        # `MinimaxModel.fit` detaches the rule when the fit ends.
        model._attach(self)
