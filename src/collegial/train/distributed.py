"""Multi-process training on an existing engine: ``torchrun`` + DistributedDataParallel.

Launch one process per device with ``torchrun --nproc_per_node N -m collegial.cli train ...``;
torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, and :func:`setup` joins the process
group (NCCL on CUDA, gloo on the CPU) through :mod:`collegial.distributed`. Without those
variables everything here is a no-op and a run is one plain process. Rank 0 alone prints,
writes metrics and checkpoints.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from collegial.devices import DEVICES, Device, check_device
from collegial.distributed import Dist, join, launched
from collegial.errors import UserError

__all__ = ["DEVICES", "Device", "Dist", "setup", "teardown", "all_reduce_sum", "any_rank", "barrier", "wrap_ddp"]


def setup(device: Device) -> tuple[Dist, torch.device]:
    """Join the process group if launched by torchrun; returns this process's :class:`Dist` and
    the device it trains on (``cuda:LOCAL_RANK`` under CUDA)."""
    device = check_device(device)
    info = launched()
    if not info.enabled:
        return Dist(), torch.device(device)
    if device == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs visible"
            )
        torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", info.local_rank)
    else:
        dev = torch.device("cpu")
    join(info, "nccl" if device == "cuda" else "gloo", dev if device == "cuda" else None)
    return info, dev


def teardown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: Dist) -> torch.Tensor:
    """Sum ``t`` over processes in place (identity for one process); returns ``t``."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, info: Dist, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (a collective: every rank must call it)."""
    if not info.enabled:
        return flag
    t = torch.tensor([float(flag)], device=device)
    return bool(all_reduce_sum(t, info).item() > 0)


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def wrap_ddp(model: nn.Module, info: Dist, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` under several processes, else ``model`` itself.

    BatchNorm statistics stay per process (rank 0's running statistics are broadcast at each
    forward, DDP's default), as with the paper's 8-GPU runs.
    """
    if not info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
