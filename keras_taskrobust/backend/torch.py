import torch


def task_gradients(losses, loss_fn, variables):
    # Eager autograd: differentiate the step's own graph, keeping it for
    # the trainer's backward pass.
    values = [v.value for v in variables]
    rows = []
    for k in range(losses.shape[0]):
        gradients = torch.autograd.grad(losses[k], values, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1) for g, v in zip(gradients, values)])
        )
    return torch.stack(rows)
