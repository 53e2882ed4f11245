"""The in-memory dataset (:class:`ImageData`), its normalization, the validation split held out
of its training images, what identifies it, and synthetic data for tests.

Normalization (SPEC section 7), carried by :class:`ImageData` as ``mean``/``std`` in [0, 1] units:
CIFAR uses the paper's constants; MNIST / Fashion-MNIST the training set's per-channel mean and
std; downsampled ImageNet subtracts the training-set mean image (the files' ``mean`` / 255) and
divides by 1. :func:`normalization_stats` gives the other kinds a recipe may ask for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from collegial.errors import UserError

__all__ = [
    "NORMALIZATIONS",
    "VALIDATION_SEED",
    "HeldOut",
    "ImageData",
    "channel_stats",
    "data_fingerprint",
    "hold_out",
    "normalization_stats",
    "synthetic_dataset",
    "validation_indices",
]


#: Normalization kinds understood by :func:`normalization_stats` (and recipes).
NORMALIZATIONS = ("dataset", "per-channel", "mean-image", "none")


@dataclass(frozen=True, eq=False)
class ImageData:
    """A whole image-classification dataset in memory (CPU tensors).

    Attributes:
        name: dataset name (a key of :data:`collegial.models.DATASETS`, or free-form for
            synthetic data).
        train_x: uint8 ``(N, C, H, W)``, contiguous.
        train_y: int64 ``(N,)``, values in ``[0, num_classes)``.
        test_x: uint8 ``(M, C, H, W)``, contiguous.
        test_y: int64 ``(M,)``.
        num_classes: number of classes.
        mean: float32 ``(C, 1, 1)`` per-channel mean or ``(C, H, W)`` mean image, in [0, 1] units.
        std: float32 ``(C, 1, 1)`` (all ones where only the mean image is subtracted).

    A network input is ``(x_uint8 / 255 - mean) / std``; :class:`DeviceLoader` computes it.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x: torch.Tensor = getattr(self, f"{split}_x")
            y: torch.Tensor = getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.dim() != 4 or not x.is_contiguous():
                raise ValueError(f"{split}_x must be a contiguous uint8 (N, C, H, W) tensor")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"{split}_y must be int64 (N,) with N = {split}_x.shape[0]")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError("train_x and test_x image shapes differ")
        c, h, w = self.train_x.shape[1:]
        if self.mean.dtype != torch.float32 or tuple(self.mean.shape) not in ((c, 1, 1), (c, h, w)):
            raise ValueError(f"mean must be float32 ({c}, 1, 1) or ({c}, {h}, {w})")
        if self.std.dtype != torch.float32 or tuple(self.std.shape) != (c, 1, 1):
            raise ValueError(f"std must be float32 ({c}, 1, 1)")
        if not bool((self.std > 0).all()):
            raise ValueError("std must be positive")

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Image height (all supported datasets are square)."""
        return int(self.train_x.shape[2])

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_x.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.train_x.shape[1:]
        return (
            f"ImageData({self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"image={c}x{h}x{w}, classes={self.num_classes}, mean={tuple(self.mean.shape)})"
        )


def data_fingerprint(data: ImageData) -> dict[str, Any]:
    """What identifies the data a run trains on: its name, split sizes and a SHA-1 of its labels
    and of at most 4096 evenly spaced images per split (cheap even for ImageNet32)."""
    h = hashlib.sha1()
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        step = max(1, x.shape[0] // 4096)
        h.update(x[::step].contiguous().numpy().tobytes())
        h.update(y.numpy().tobytes())
    return {"name": data.name, "train": int(data.train_y.numel()), "test": int(data.test_y.numel()),
            "sha1": h.hexdigest()}


def normalization_stats(
    data: ImageData, kind: str = "dataset"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` for ``DeviceLoader`` under a normalization ``kind``:

    * ``"dataset"``: the dataset's own (SPEC section 7), i.e. ``data.mean, data.std``;
    * ``"per-channel"``: per-channel mean and std, ``(C, 1, 1)`` each (the dataset's own when it
      is per-channel, e.g. CIFAR's constants; else computed exactly from ``train_x``);
    * ``"mean-image"``: the ``(C, H, W)`` mean image and a std of ones (the dataset's own when it
      has one, e.g. downsampled ImageNet's file mean; else computed from ``train_x``);
    * ``"none"``: zeros and ones (inputs in [0, 1]).
    """
    c, h, w = data.train_x.shape[1:]
    per_channel = tuple(data.mean.shape) == (c, 1, 1)
    if kind == "dataset":
        return data.mean, data.std
    if kind == "per-channel":
        return (data.mean, data.std) if per_channel else channel_stats(data.train_x)
    if kind == "mean-image":
        if not per_channel:
            return data.mean, torch.ones(c, 1, 1)
        return _mean_image(data.train_x), torch.ones(c, 1, 1)
    if kind == "none":
        return torch.zeros(c, 1, 1), torch.ones(c, 1, 1)
    raise UserError(f"unknown normalization {kind!r}; choose from {', '.join(NORMALIZATIONS)}")


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std (population) of uint8 ``(N, C, H, W)`` in [0, 1] units,
    from 256-bin histograms (no float copy of the data)."""
    c = x.shape[1]
    mean = torch.empty(c, dtype=torch.float64)
    std = torch.empty(c, dtype=torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for ch in range(c):
        counts = torch.zeros(256, dtype=torch.float64)
        for start in range(0, x.shape[0], 65536):  # bounded temporary memory
            part = x[start : start + 65536, ch].reshape(-1)
            counts += torch.bincount(part, minlength=256).to(torch.float64)
        total = counts.sum()
        m = (counts * levels).sum() / total
        mean[ch] = m
        std[ch] = ((counts * (levels - m) ** 2).sum() / total).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float().view(c, 1, 1), std.float().view(c, 1, 1)


def _mean_image(x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """The ``(C, H, W)`` mean image of uint8 ``(N, C, H, W)`` in [0, 1] units."""
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].sum(0, dtype=torch.float64)
    return (total / (255.0 * max(x.shape[0], 1))).float()


# ---- the validation split ---------------------------------------------------------------


#: The seed of the validation split, fixed: every run seed and architecture that trains on the
#: same training images holds out the same validation images.
VALIDATION_SEED = 0x5EED_0FF5


def validation_indices(num_train: int, n: int, seed: int = VALIDATION_SEED) -> torch.Tensor:
    """The (sorted, int64) indices of the ``n`` training images held out for validation, drawn
    without replacement from ``range(num_train)`` by a CPU generator seeded with ``seed`` only.
    :class:`UserError` unless ``0 <= n < num_train``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"val_images must be a non-negative integer, got {n!r}")
    if n >= num_train:
        raise UserError(
            f"val_images={n} would hold out every one of the {num_train} training images; "
            "hold out fewer"
        )
    order = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))
    return order[:n].sort().values


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Training images split in two: ``train_x``/``train_y`` are trained on, ``val_x``/``val_y``
    (the training images at ``val_index``) are only evaluated. The test split is no part of it."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_index: torch.Tensor

    @property
    def num_val(self) -> int:
        return int(self.val_index.numel())


def hold_out(data: ImageData, n: int, seed: int = VALIDATION_SEED) -> HeldOut:
    """``data``'s training images with the ``n`` of :func:`validation_indices` held out (``n=0``:
    all trained on, an empty validation set)."""
    index = validation_indices(data.num_train, n, seed)
    keep = torch.ones(data.num_train, dtype=torch.bool)
    keep[index] = False
    if n == 0:
        return HeldOut(data.train_x, data.train_y, data.train_x[:0], data.train_y[:0], index)
    return HeldOut(
        data.train_x[keep].contiguous(), data.train_y[keep],
        data.train_x[index].contiguous(), data.train_y[index], index,
    )


# ---- synthetic data ---------------------------------------------------------------------


def synthetic_dataset(
    *,
    name: str = "synthetic",
    num_classes: int = 10,
    channels: int = 3,
    resolution: int = 32,
    num_train: int = 256,
    num_test: int = 64,
    seed: int = 0,
) -> ImageData:
    """Random uint8 images with learnable labels (a class-dependent brightness), for tests."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randint(0, 128, (n, channels, resolution, resolution), generator=g)
        level = (y * (127 // max(num_classes - 1, 1))).view(n, 1, 1, 1)
        return (noise + level).to(torch.uint8).contiguous(), y

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    mean, std = channel_stats(train_x)
    return ImageData(name, train_x, train_y, test_x, test_y, num_classes, mean, std)
