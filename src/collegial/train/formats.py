"""The file formats the dataset readers (:mod:`collegial.train.readers`) parse, every failure
a one-line :class:`~collegial.errors.UserError` naming the file: pickles unpickled with only
plain data allowed (a pickle from a user's path must not run code), IDX arrays, npz archives,
and the checks of the labels they hold.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collegial.errors import UserError

__all__ = ["check_labels", "npz_read", "one_line", "read_idx", "read_pickle", "str_keys", "to_tensors"]


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 and int64 CPU tensors owning writable, contiguous copies where needed."""

    def owned(a: np.ndarray, dtype: type) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=dtype)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    return owned(x, np.uint8), owned(y, np.int64)


def check_labels(path: Path | str, labels: np.ndarray, low: int, high: int) -> np.ndarray:
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


# ---- restricted unpickling (pickles from a user path must not run arbitrary code) -------


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


def read_pickle(path: Path, *, gzipped: bool = False, encoding: str = "bytes") -> Any:
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
        raise UserError(f"{path}: not a readable {kind} ({one_line(exc)})") from None


def str_keys(path: Path, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


# ---- IDX (MNIST / Fashion-MNIST) --------------------------------------------------------


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX array (``.gz`` or raw) of ``ndim`` dimensions."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                blob = fh.read()
        else:
            blob = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read ({one_line(exc)})") from None
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


# ---- npz (downsampled ImageNet) ---------------------------------------------------------


def npz_read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz archive ``path`` (each member is read only if asked)."""
    try:
        fh = open(path, "rb")  # ours to close: np.load leaks its own handle on a bad zip
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({one_line(exc)})") from None
    with fh:
        try:
            npz = np.load(fh, allow_pickle=False)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip/npy errors of a corrupt file
            raise UserError(f"{path}: not a readable npz file ({one_line(exc)})") from None
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
                raise UserError(f"{path}: corrupt npz member ({one_line(exc)})") from None
