"""Multi-process training on an existing engine: ``torchrun`` + DistributedDataParallel.

Launch one process per device with ``torchrun --nproc_per_node N -m collegial.cli train ...``;
torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, and :func:`setup` joins the process
group (NCCL on CUDA, gloo on the CPU). Without those variables everything here is a no-op and a
run is one plain process. Rank 0 alone prints, writes metrics and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from collegial.errors import UserError

__all__ = ["Dist", "setup", "teardown", "all_reduce_sum", "barrier", "wrap_ddp"]


@dataclass(frozen=True)
class Dist:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group if launched by torchrun; returns this process's :class:`Dist` and
    the device it trains on (``cuda:LOCAL_RANK`` under CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    if world_size <= 1:
        return Dist(), torch.device(device)
    info = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} GPUs visible"
            )
        torch.cuda.set_device(info.local_rank)
        dev = torch.device("cuda", info.local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device == "cuda" else "gloo",
            rank=info.rank,
            world_size=world_size,
            device_id=dev if device == "cuda" else None,
        )
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
