"""NumPy references of the task-weight rules, written independently of the library."""

import numpy as np


def estimate(est, losses, present, seen, average=0.0):
    new = est.copy()
    for k in range(len(est)):
        if present[k]:
            new[k] = losses[k] if not seen[k] else average * est[k] + (1 - average) * losses[k]
    known = present | seen
    if (~known).any():
        new[~known] = new[known].mean() if known.any() else 0.0
    return new


def exponentiated_gradient(w, losses, eta, adjustment=0.0, sizes=None, smoothing=0.0):
    if adjustment:
        losses = losses + adjustment / np.sqrt(np.asarray(sizes, float))
    w = w * np.exp(eta * losses)
    w = w / w.sum()
    return (1 - smoothing) * w + smoothing / len(w)


def learning_progress(w, losses, previous, eta, smoothing=0.0, loss_weighted=False):
    progress = np.clip((previous - losses) / np.maximum(previous, 1e-12), -1.0, 1.0)
    signal = losses * np.maximum(progress, 0.0) if loss_weighted else progress
    w = w * np.exp(eta * signal)
    w = w / w.sum()
    return (1 - smoothing) * w + smoothing / len(w)


def softmax(losses, temperature):
    e = np.exp((losses - losses.max()) / temperature)
    return e / e.sum()


def hard_max(losses):
    worst = (losses == losses.max()).astype(float)
    return worst / worst.sum()


def group_losses(per_element, ids, weight, k):
    """Per-task weighted means and weight sums of one batch."""
    sums = np.array([(per_element * weight)[ids == t].sum() for t in range(k)])
    counts = np.array([weight[ids == t].sum() for t in range(k)])
    return np.divide(sums, counts, out=np.zeros(k), where=counts > 0), counts


def linear_mse_task_gradients(x, y, ids, weight, kernel, bias, k):
    """Rows: gradient of each task's weighted-mean MSE w.r.t. [kernel, bias]."""
    pred = x @ kernel + bias
    rows = []
    for t in range(k):
        w = weight * (ids == t)
        d_pred = (w / max(w.sum(), 1e-12))[:, None] * 2 * (pred - y) / y.shape[1]
        rows.append(np.concatenate([(x.T @ d_pred).ravel(), d_pred.sum(0)]))
    return np.array(rows)


def lookahead(w, losses, gram, lr, entropy, temperature, steps, damping):
    """The Lookahead inner solver, written as mirror descent on the simplex."""
    for _ in range(steps):
        anticipated = losses - lr * gram @ w
        p = softmax(anticipated, temperature)
        # Mirror-descent step of size damping / entropy on
        # smax(anticipated) - entropy * H(w).
        gradient = -lr * gram @ p + entropy * (np.log(w) + 1)
        w = w * np.exp(-(damping / entropy) * gradient)
        w = w / w.sum()
    return w


def keep_unseen(old, new, known):
    """Tasks not seen yet keep their weight; the seen ones share the rest, in proportion to `new`."""
    out = old.copy()
    out[known] = new[known] / new[known].sum() * (1.0 - old[~known].sum())
    return out
