"""Lookahead-DRO: weights that anticipate how the tasks interact."""

from keras import ops

from keras_taskrobust.rules.weighting_rule import WeightingRule
from keras_taskrobust.rules.weighting_rule import log_simplex


class Lookahead(WeightingRule):
    """Weights that minimise the anticipated worst task loss after the step.

    Lookahead-DRO (Michel, Ruder and Yogatama, 2021) looks one step ahead.
    With task gradients `g_k` on the shared parameters, a step
    `theta' = theta - lr * sum_j w_j g_j` changes task k's loss, to first
    order, to

        L'_k(w) = Lbar_k - lr * (G w)_k,    G_kj = g_k . g_j

    (`G` is the K x K Gram matrix of the task gradients). Lookahead chooses

        w = argmin_{w in simplex}  smax_t(L'(w)) - entropy * H(w)

    where `smax_t(v) = t * log sum_k exp(v_k / t)` is the smoothed max and
    `H(w) = -sum_k w_k log w_k`. The entropy bonus keeps training on as many
    tasks as possible: a task whose loss no step can reduce (label noise,
    irreducible loss) offers no anticipated gain, so weight piled on it buys
    nothing and the bonus spreads it back over the others -- where plain
    DRO (`ExponentiatedGradient`) keeps pushing weight onto that task. Tasks
    with aligned gradients (near duplicates) help each other through `G`
    and need not each get weight.

    The problem is solved inside the training step by `inner_steps`
    iterations of mirror descent (exponentiated gradient) from the current
    weights. With the gradient `-lr * G p + entropy * (log w + 1)`,
    `p = softmax(L'(w) / t)`, and the step size `inner_step_size / entropy`,
    one iteration is

        log w <- (1 - s) * log w + s * log softmax(lr * G p / entropy)

    with `s = inner_step_size` in `(0, 1]`: a damped fixed-point iteration
    whose fixed points are the stationary points of the problem. Starting
    from the current weights, few iterations also keep the weights from
    jumping between steps whose batch estimates of `G` are noisy.

    `G` is estimated from two halves of the batch, `G = (J_a J_b^T + J_b J_a^T) / 2`
    with `J_a`, `J_b` the task gradients on the even and odd examples, unless
    `split_batch=False`. The split removes the bias of `g_k . g_k`, which
    otherwise counts the gradient noise of a task as anticipated progress
    and so favours exactly the noisy tasks.

    `MinimaxModel` computes the task gradients with the backend's autodiff
    (`keras_taskrobust.backend`) on one of:

    - all trainable weights of the wrapped model (the default: exact, and
      one backward pass per task and half-batch);
    - the trainable weights of the layers named in `layers`: only the
      layers above them are differentiated;
    - the shared representation, the output of the layer named in
      `representation` (functional and Sequential models): `g_k` is the
      gradient of task k's loss with respect to a per-feature shift of that
      output, `sum_i dL_k / dh_i`. Only the layers above it are
      differentiated and the vectors are short: the cheapest choice. With
      one task id per example, it takes a single backward pass when those
      layers keep the examples apart (no batch normalisation in training
      mode), which `fit` checks once as it begins.

    Memory: each update starts its inner iterations from the current
    weights and moves them a share `inner_step_size` per iteration towards
    the solution for the current estimates and `G`, so the weights forget
    geometrically; plus the running average of the losses (`average`).

    Args:
        learning_rate: `lr`, the step size of the anticipated update. Defaults
            to `1.0`.
        entropy: the entropy bonus coefficient, positive. Defaults to `1.0`.
        temperature: `t` of the smoothed max. Defaults to `1.0`.
        inner_steps: mirror-descent iterations of the inner problem.
            Defaults to `5`.
        inner_step_size: `s`, the damping of those iterations, in `(0, 1]`
            (1 jumps to the fixed point of the current `p`). Defaults to
            `0.5`.
        layers: a list of layer names whose trainable weights carry `G`.
            Defaults to `None`.
        representation: the name of the layer whose output carries `G`.
            Defaults to `None`. With neither, `G` uses all trainable weights.
        split_batch: estimate `G` from two halves of the batch. Defaults to
            `True`.
        average: decay of the running average `Lbar` of the group losses
            (see `WeightingRule`). Defaults to `0.0`.

    Example:

    >>> import numpy as np
    >>> rule = Lookahead(learning_rate=1.0, entropy=0.1)
    >>> gram = np.diag([1.0, 0.0]).astype("float32")  # task 1 cannot improve
    >>> w = rule.update(np.array([0.5, 0.5]), np.array([1.0, 3.0]), 0, gram=gram)
    >>> bool(np.asarray(w)[0] > 0.5)
    True
    """

    needs_gradients = True

    def __init__(
        self,
        learning_rate=1.0,
        entropy=1.0,
        temperature=1.0,
        inner_steps=5,
        inner_step_size=0.5,
        layers=None,
        representation=None,
        split_batch=True,
        average=0.0,
    ):
        super().__init__(average=average)
        for name, value in (("temperature", temperature), ("learning_rate", learning_rate)):
            if not value > 0:
                raise ValueError(f"`{name}` must be positive; got {value}.")
        if not (entropy > 0 and inner_steps >= 1 and 0 < inner_step_size <= 1):
            raise ValueError(
                "Lookahead needs entropy > 0, inner_steps >= 1 and "
                f"0 < inner_step_size <= 1; got {entropy}, {inner_steps}, {inner_step_size}."
            )
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None and representation is not None:
            raise ValueError("Give Lookahead `layers` or `representation`, not both.")
        self.learning_rate = float(learning_rate)
        self.entropy = float(entropy)
        self.temperature = float(temperature)
        self.inner_steps = int(inner_steps)
        self.inner_step_size = float(inner_step_size)
        self.layers = None if layers is None else list(layers)
        self.representation = representation
        self.split_batch = bool(split_batch)

    def update(self, weights, estimates, step, gram=None):
        del step
        if gram is None:
            raise ValueError("Lookahead.update needs `gram`, the K x K task-gradient inner products.")
        losses = ops.convert_to_tensor(estimates, "float32")
        gram = ops.convert_to_tensor(gram, "float32")
        log_w = log_simplex(ops.convert_to_tensor(weights, "float32"))
        s, lr = self.inner_step_size, self.learning_rate
        for _ in range(self.inner_steps):
            anticipated = losses - lr * ops.matmul(gram, ops.exp(log_w))
            p = ops.softmax((anticipated - ops.amax(anticipated)) / self.temperature)
            target = ops.log_softmax(lr * ops.matmul(gram, p) / self.entropy)
            log_w = ops.log_softmax((1.0 - s) * log_w + s * target)
        return ops.exp(log_w)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "entropy": self.entropy,
            "temperature": self.temperature,
            "inner_steps": self.inner_steps,
            "inner_step_size": self.inner_step_size,
            "layers": self.layers,
            "representation": self.representation,
            "split_batch": self.split_batch,
            **super().get_config(),
        }
