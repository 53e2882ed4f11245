"""Batches on the device (:class:`DeviceLoader`): the uint8 images live on the device; each batch
is gathered, augmented (zero-padded random crop, horizontal flip) and normalized there with a few
tensor ops. All randomness is a function of ``(generator_seed, epoch)`` only, drawn on the CPU, so a run is
reproduced batch for batch on any device, after a resume, and under any number of DDP processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from collegial.errors import UserError

__all__ = ["DeviceLoader"]


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one random stream of one epoch, a pure function of its arguments."""
    state = np.random.SeedSequence([seed & (2**64 - 1), epoch, stream]).generate_state(
        1, np.uint64
    )[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _check_images(x_uint8: torch.Tensor, y: torch.Tensor, crop_padding: int, dtype: torch.dtype) -> None:
    """``ValueError`` for arrays or a dtype :class:`DeviceLoader` cannot use (a programming
    error), :class:`UserError` for a bad crop padding."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise ValueError(
            f"x_uint8 must be uint8 (N, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}"
        )
    if y.dim() != 1 or y.shape[0] != x_uint8.shape[0]:
        raise ValueError(f"y must be (N,) with N = {x_uint8.shape[0]}, got {tuple(y.shape)}")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise UserError(f"crop padding must be a non-negative integer, got {crop_padding!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")


def _process_batch(batch_size: int | None, global_batch_size: int | None, rank: int, world_size: int) -> int:
    """The per-process batch size from exactly one of ``batch_size`` and ``global_batch_size``
    (divided by ``world_size``); :class:`UserError` for a bad setting."""
    if not (
        isinstance(world_size, int)
        and world_size >= 1
        and isinstance(rank, int)
        and 0 <= rank < world_size
    ):
        raise UserError(
            f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
        )
    if (batch_size is None) == (global_batch_size is None):
        raise ValueError("give exactly one of batch_size and global_batch_size")
    if global_batch_size is not None:
        if not isinstance(global_batch_size, int) or global_batch_size < 1:
            raise UserError(f"batch size must be a positive integer, got {global_batch_size!r}")
        if global_batch_size % world_size:
            raise UserError(
                f"global batch size {global_batch_size} is not divisible by "
                f"{world_size} processes"
            )
        batch_size = global_batch_size // world_size
    assert batch_size is not None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def _normalizing_affine(
    mean: torch.Tensor, std: torch.Tensor, shape: torch.Size, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` on ``device`` with ``x_uint8 * scale - shift == (x_uint8 / 255 - mean)
    / std`` for images of ``shape`` ``(N, C, H, W)``; ``mean`` / ``std`` ``(C, 1, 1)`` or
    ``(C, H, W)``."""
    _, c, h, w = shape
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    if tuple(mean.shape) not in ((c, 1, 1), (c, h, w)) or tuple(std.shape) not in (
        (c, 1, 1),
        (c, h, w),
    ):
        raise ValueError(f"mean/std must be ({c}, 1, 1) or ({c}, {h}, {w})")
    return (1.0 / (255.0 * std)).to(device), (mean / std).to(device)


class DeviceLoader:
    """Batches of normalized, augmented images from uint8 data kept on ``device``.

    Batch sizes and distributed training: the data are split into *global* batches of
    ``global_batch_size = batch_size * world_size`` consecutive samples of one epoch's global
    order (a permutation of all N samples that depends on ``(generator_seed, epoch)`` only, the
    identity when not shuffling). Process ``rank`` takes the ``rank``-th slice of ``batch_size``
    samples of each global batch, with that sample's crop offsets and flip, also drawn per
    global position. So ``world_size`` processes with ``batch_size = B / world_size`` see, in
    union, exactly the batches of one process with ``batch_size = B`` -- same images, same
    augmentation, same order -- and averaging their equal-size batch gradients (DDP)
    reproduces the one-process step. Pass ``global_batch_size=B`` instead of ``batch_size`` to
    have it divided by ``world_size`` (it must divide evenly).

    ``drop_last`` (default: ``train``) drops the final partial global batch. Otherwise that batch
    is split across ranks as evenly as possible (``torch.tensor_split``), so a rank's last batch
    may be smaller than the others' or even empty (0 images) -- sum counts, not means, when
    evaluating. Every rank yields ``len(self)`` batches.

    Augmentation (only when ``train``): zero padding of ``crop_padding`` pixels (black, in pixel
    space, as torchvision's ``RandomCrop(size, padding)`` before ``Normalize``) and a random
    crop back to H x W, then a horizontal flip with probability 1/2 if ``flip``. Output:
    ``(x, y)`` with ``x`` of ``dtype`` ``(b, C, H, W)`` equal to ``(x_uint8 / 255 - mean) / std``
    and ``y`` int64 ``(b,)``, both on ``device``.

    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); the default is
    epoch 0. ``set_epoch(e, start_batch=k)`` resumes epoch ``e`` at its ``k``-th batch.

    Args:
        x_uint8: uint8 ``(N, C, H, W)`` images (copied to ``device`` once).
        y: int64 ``(N,)`` labels.
        batch_size: images per batch *in this process*.
        mean, std: ``(C, 1, 1)`` or ``(C, H, W)`` float, in [0, 1] units.
        train: shuffle and augment (and drop the last partial batch by default).
        shuffle: overrides ``train`` for shuffling only.
        global_batch_size: alternative to ``batch_size`` (see above).
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int | None = None,
        mean: torch.Tensor,
        std: torch.Tensor,
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        device: str | torch.device = "cpu",
        generator_seed: int = 0,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        global_batch_size: int | None = None,
        shuffle: bool | None = None,
    ) -> None:
        _check_images(x_uint8, y, crop_padding, dtype)
        batch_size = _process_batch(batch_size, global_batch_size, rank, world_size)
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        n = self.x.shape[0]
        self._scale, self._shift = _normalizing_affine(mean, std, self.x.shape, self.device)

        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.global_batch_size = batch_size * world_size
        self.train = bool(train)
        self.shuffle = self.train if shuffle is None else bool(shuffle)
        self.crop_padding = crop_padding if self.train else 0
        self.flip = bool(flip) and self.train
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.generator_seed = int(generator_seed)
        self.channels_last = channels_last
        self.dtype = dtype
        self.num_samples = n
        if len(self) == 0:
            raise UserError(
                f"{n} images make no full batch of {self.global_batch_size}"
                f"{f' ({world_size} x {batch_size})' if world_size > 1 else ''}; "
                "lower the batch size or use more data"
            )
        self._epoch = 0
        self._start_batch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Select the epoch whose order/augmentation the next iteration uses; ``start_batch``
        skips that many batches (to resume mid-epoch)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)
        self._start_batch = int(start_batch)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        g = self.global_batch_size
        return self.num_samples // g if self.drop_last else -(-self.num_samples // g)

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Global order ``(N,)`` and per-position crop offsets ``(N, 2)`` and flips ``(N,)``."""
        n = self.num_samples
        seed, epoch = self.generator_seed, self._epoch
        order = (
            torch.randperm(n, generator=_epoch_generator(seed, epoch, 0))
            if self.shuffle
            else torch.arange(n)
        )
        offsets = flips = None
        if self.crop_padding:
            offsets = torch.randint(
                0, 2 * self.crop_padding + 1, (n, 2), generator=_epoch_generator(seed, epoch, 1)
            )
        if self.flip:
            flips = torch.randint(0, 2, (n,), generator=_epoch_generator(seed, epoch, 2)).bool()
        return order, offsets, flips

    def _rank_slice(self, batch: int) -> slice:
        start = batch * self.global_batch_size
        size = min(self.global_batch_size, self.num_samples - start)
        if size == self.global_batch_size:
            lo = start + self.rank * self.batch_size
            return slice(lo, lo + self.batch_size)
        # Final partial global batch: split as evenly as torch.tensor_split does.
        base, extra = divmod(size, self.world_size)
        lo = start + self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (1 if self.rank < extra else 0))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = (
            None if t is None else t.to(self.device, non_blocking=True) for t in self._epoch_plan()
        )
        assert order is not None
        start_batch, self._start_batch = self._start_batch, 0
        for batch in range(start_batch, len(self)):
            sl = self._rank_slice(batch)
            idx = order[sl]
            xb = self.x.index_select(0, idx)
            if offsets is not None or flips is not None:
                xb = self._augment(
                    xb,
                    None if offsets is None else offsets[sl],
                    None if flips is None else flips[sl],
                )
            yield self._normalize(xb), self.y.index_select(0, idx)

    def _augment(
        self, x: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
    ) -> torch.Tensor:
        """Padded random crop and flip of uint8 ``(b, C, H, W)`` via one gather."""
        b, c, h, w = x.shape
        p = self.crop_padding
        if p:
            x = F.pad(x, (p, p, p, p))
        hp, wp = h + 2 * p, w + 2 * p
        rows = torch.arange(h, device=x.device).expand(b, h)
        cols = torch.arange(w, device=x.device).expand(b, w)
        if flips is not None:
            cols = torch.where(flips[:, None], (w - 1) - cols, cols)
        if offsets is not None:
            rows = rows + offsets[:, :1]
            cols = cols + offsets[:, 1:]
        index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(x.reshape(b, c, hp * wp), 2, index).view(b, c, h, w)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        out = x.to(torch.float32).mul_(self._scale).sub_(self._shift)
        if self.dtype != torch.float32:
            out = out.to(self.dtype)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
