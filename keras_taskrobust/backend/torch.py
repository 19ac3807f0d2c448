import threading

import torch

from keras_taskrobust import _keras_compat as compat


def task_gradients(losses, loss_fn, values):
    # Eager autograd: differentiate the step's own graph (all rows in one
    # vmapped backward pass), keeping it for the trainer's backward pass.
    del loss_fn
    n = losses.shape[0]
    grad_outputs = torch.eye(n, dtype=losses.dtype, device=losses.device)
    if n == 1:  # one ordinary backward pass
        gradients = torch.autograd.grad(losses, values, grad_outputs=grad_outputs[0], retain_graph=True, allow_unused=True)
        gradients = [None if g is None else g[None] for g in gradients]
    else:
        gradients = torch.autograd.grad(
            losses, values, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
    rows = [(torch.zeros((n, *v.shape), dtype=v.dtype, device=v.device) if g is None else g).reshape(n, -1)
            for g, v in zip(gradients, values)]
    # One value (a representation): its rows as they are, without a copy.
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def gradient(fn, value):
    with torch.enable_grad():
        value = torch.as_tensor(value).detach().requires_grad_(True)
        return torch.autograd.grad(fn(value), value)[0]


def segment_sums(columns, ids, num_segments):
    # One scatter: Keras' torch `segment_sum` takes about twenty tensor ops,
    # each a few microseconds of eager dispatch in every training step.
    data = torch.stack(columns, dim=1)
    zeros = torch.zeros((num_segments, data.shape[1]), dtype=data.dtype, device=data.device)
    return zeros.index_add(0, ids, data)


# Keras' torch trainer runs in one process. Several processes (one per GPU)
# need a custom training loop with torch DDP (see the distributed training
# guide): each process runs the step on its shard of the global batch and
# DDP averages the gradients. The group statistics are summed over the
# processes when the forward pass ran under DDP -- not merely because a
# process group exists: a process that evaluates or fits on its own must not
# wait for the others.
_forward = threading.local()


def note_forward():
    """Called as `MinimaxModel.call` starts: notes whether DDP runs it."""
    _forward.ddp = compat.ddp_runs_forward()


def _world_size():
    if not getattr(_forward, "ddp", False):
        return 1
    return torch.distributed.get_world_size()


def replica_sum(values):
    values = values.detach()
    if _world_size() == 1:
        return values
    values = values.clone()
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    return values


def num_replicas():
    return _world_size()


def replica_key():
    return 0


def replica_offset(size):
    n = _world_size()
    if n == 1:
        return 0
    # NCCL reduces CUDA tensors only, gloo CPU ones as well.
    nccl = torch.distributed.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
    rank = torch.distributed.get_rank()
    sizes = torch.zeros(n, dtype=torch.int64, device=device)
    sizes[rank] = int(size)
    torch.distributed.all_reduce(sizes, op=torch.distributed.ReduceOp.SUM)
    return int(sizes[:rank].sum())


def loss_scale():
    # DDP averages the processes' gradients: scale each process's share of
    # the global loss by their number so that the average is its gradient.
    return _world_size()


def reducible_logs(logs):
    return logs


def compiled(fn):
    # Eager PyTorch runs each operation natively; nothing to gain.
    return fn
