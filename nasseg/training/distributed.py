"""Several training processes: torchrun's environment, DistributedDataParallel, BatchNorm.

What: :func:`setup` reads torchrun's variables (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` ...) and starts the process group -- NCCL when the
process trains on CUDA, gloo on CPU; without them it is one process and nothing
is started. :func:`prepare_model` converts BatchNorm layers for the chosen
``bn`` mode and wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`.
Only rank 0 writes files (the caller checks :attr:`DistInfo.is_main`).

BatchNorm across processes (``bn: sync``, the default): with the global batch
split over processes, per-process statistics would make ``n`` processes train a
different network than one process on the same global batch. torch's
:class:`~torch.nn.SyncBatchNorm` (used on CUDA) refuses CPU tensors (torch 2.14:
"SyncBatchNorm expected input tensor to be on GPU or XPU ..."), so on CPU every
``BatchNorm2d`` becomes an :class:`AllReduceBatchNorm2d`, which sums each channel's
count, sum and squared deviations over the processes (a differentiable all-reduce
on a process group of its own, so its collectives never interleave with DDP's)
and normalises with the statistics of the global batch; its running statistics
are updated with them too, so every process holds the same buffers. ``bn: local``
keeps per-process statistics (DDP then broadcasts rank 0's running statistics);
``bn: frozen`` keeps BatchNorm in eval mode (fixed running statistics, trained
affine parameters), as the authors' ``FREEZE_BN`` option, which needs no
communication at all.

Parameters that a training step never reaches (the CVPR auxiliary heads when
their loss weight is 0) are excluded from DDP's gradient reduction (and from the
optimisers) by :func:`unreached_parameters`.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup", "teardown", "env_world", "prepare_model", "AllReduceBatchNorm2d",
           "convert_batchnorm", "freeze_batchnorm", "unreached_parameters", "all_sum", "all_max", "barrier"]

log = logging.getLogger(__name__)


def env_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class DistInfo:
    """This process's place: rank, number of processes, device, backend (None: one process)."""
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> DistInfo:
    """Start the process group when run by torchrun (``device``: auto | cpu | cuda)."""
    rank, world = env_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda, but torch sees no CUDA device; use device: auto or cpu")
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world == 1:
        return DistInfo(0, 1, 0, dev, None)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=dev if cuda else None)
    log.info("process %d of %d on %s (%s)", rank, world, dev, backend)
    return DistInfo(rank, world, local_rank, dev, backend)


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the processes (a new tensor; not differentiable); ``x`` in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_max(x: torch.Tensor) -> torch.Tensor:
    """Maximum of ``x`` over the processes (not differentiable)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``, differentiable: the gradient of each process's
    input is the sum of the processes' output gradients (every loss reads the sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all processes.

    Same parameters, buffers and state-dict keys as :class:`~torch.nn.BatchNorm2d`;
    in eval mode, or in one process, it is one. Two differentiable all-reduces per
    call on ``group``: the channels' sums and the count, then the squared deviations
    from the global mean (two passes, as exact as one process's variance).
    """

    group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.group is not None):
            return super().forward(x)
        c = x.shape[1]
        local = torch.cat([x.sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / c)])
        total = _AllReduceSum.apply(local, self.group)
        count = total[c]
        mean = total[:c] / count
        centred = x - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum(dim=(0, 2, 3)), self.group) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (count / (count - 1).clamp_min(1.0))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def convert_batchnorm(module: nn.Module, group: Any) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``module`` by an :class:`AllReduceBatchNorm2d` on ``group``
    (parameters and buffers shared); returns the module (replaced if it is one)."""
    if type(module) is nn.BatchNorm2d:
        new = AllReduceBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, device="meta")
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(new, name, tensor)
        new.train(module.training)
        new.group = group
        return new
    for name, child in module.named_children():
        new_child = convert_batchnorm(child, group)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics fixed); call after ``train()``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def unreached_parameters(model: nn.Module, aux: bool, *, channels: int = 3, size: int = 64) -> list[str]:
    """Names of the parameters a training step of ``model(x, aux)`` leaves without a gradient.

    Probed on a copy with a small random batch, so ``model``'s BatchNorm statistics are untouched.
    """
    probe = copy.deepcopy(model).cpu().train()
    out = probe(torch.randn(2, channels, size, size), aux)
    total = out.logits.float().mean() + sum(a.float().mean() for a in out.aux_logits)
    total.backward()
    return [name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def prepare_model(model: nn.Module, info: DistInfo, bn: str) -> nn.Module:
    """``model`` on ``info.device`` with BatchNorm converted for ``bn``, wrapped in DDP when
    there are several processes; the caller keeps the unwrapped module for saving."""
    if not info.distributed:
        return model
    if bn == "sync":
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = convert_batchnorm(model, dist.new_group(backend="gloo"))
    import inspect

    from torch.nn.parallel import DistributedDataParallel
    # Rank 0's buffers are broadcast before every forward only with per-process statistics
    # (with sync or frozen BatchNorm the processes' buffers are equal anyway); torch 2.14
    # names the option forward_sync_buffers and deprecates broadcast_buffers.
    sync_buffers = bn == "local"
    option = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
              else "broadcast_buffers")
    return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                                   gradient_as_bucket_view=True, **{option: sync_buffers})
