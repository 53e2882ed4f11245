"""The one process-group helper, for every layer that runs under ``torchrun``.

``torchrun`` describes each process in the environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ...); without those variables a run is one plain process and
everything here is a no-op.

* :func:`launched` reads the environment into a :class:`Dist`;
* :func:`join` joins the process group it describes (once), on a backend the caller chooses:
  the training loop joins eagerly, NCCL on CUDA and gloo on the CPU
  (:func:`collegial.train.distributed.setup`);
* :func:`rank_and_world` is the lazy form, for code that only shards work: the Monte Carlo of
  Algorithm 1 (:mod:`collegial.ntk.alpha`) joins a gloo group the first time it asks, and only
  when torchrun started it (``WORLD_SIZE > 1`` and ``MASTER_ADDR`` set); a group someone else
  initialized is used as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Dist", "join", "launched", "rank_and_world"]


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


def launched() -> Dist:
    """This process as torchrun's environment describes it; ``Dist()`` (one process) when
    ``WORLD_SIZE`` is unset or 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def join(info: Dist, backend: str, device: torch.device | None = None) -> None:
    """Join the process group of ``info`` (from :func:`launched`) on ``backend`` unless this
    process already has one; ``device``: the device NCCL binds to (``None`` for gloo)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend, rank=info.rank, world_size=info.world_size, device_id=device
        )


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group; joins a gloo group first when
    launched by torchrun and none exists yet; ``(0, 1)`` otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        join(launched(), "gloo")
    return dist.get_rank(), dist.get_world_size()
