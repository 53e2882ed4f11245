"""The one way collegial writes files: atomically, strictly, and under a lock where two
processes could race.

* :func:`atomic_file` is the primitive: it yields a temporary file beside ``path`` (same folder,
  so the rename cannot cross file systems); on success the data is flushed, fsynced and renamed
  over ``path`` (``os.replace``); on any failure the temporary file is removed and ``path`` is
  left as it was. A reader, or a crash at any moment, sees the old file or the new one, never an
  empty or truncated one. With ``exclusive=True`` the file is published with ``os.link``, which
  fails when ``path`` exists: two writers cannot both "create" it.
* :func:`write_text_atomic` and :func:`write_json_atomic` write text and strict JSON through it
  (:func:`strict_json`: NaN/inf become ``null``, numpy numbers Python numbers; ``allow_nan=False``
  guards the rest, so no file says ``NaN``).
* :func:`folder_lock` is the one advisory lock (``fcntl.flock`` on ``DIR/.lock``, which holds the
  owner's pid): a second process on the same folder stops with one line naming the first.

A failure to write (a full disk, a read-only folder, a name too long) is a
:class:`~collegial.errors.UserError` of one line naming the file. This module imports only the
standard library, numpy and :mod:`collegial.errors`, so every layer can use it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from collegial.errors import UserError

__all__ = [
    "FolderInUse",
    "atomic_file",
    "finite_json",
    "folder_lock",
    "fsync_dir",
    "os_reason",
    "save_figure",
    "strict_json",
    "write_json_atomic",
    "write_text_atomic",
]

#: The prefix of temporary files (``.NAME.tmp-PID``); a folder's owner may delete leftovers.
TMP_GLOB = ".*.tmp-*"


class FolderInUse(UserError):
    """Another process holds the folder's lock."""


def finite_json(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python numbers, recursively."""
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def strict_json(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as strict JSON (NaN/inf -> null, numpy numbers -> Python): one line, or indented."""
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False)


def os_reason(e: BaseException) -> str:
    """A short reason for an OS-level failure: ``strerror`` (``No space left on device``), else
    the first line of the message, else the type's name."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform has directory fds)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name[:200]}.tmp-{os.getpid()}")


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, binary: bool = False, exclusive: bool = False) -> Iterator[IO[Any]]:
    """Yield a file to write ``path``'s new content into; see the module docstring. ``exclusive``:
    :class:`UserError` (and nothing written) when ``path`` already exists."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(f"{path} was created by another process meanwhile; it is kept, nothing was written") from None
        else:
            os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save on a full disk raises RuntimeError
        hint = "; is the disk full?" if getattr(e, "errno", None) == errno.ENOSPC or isinstance(e, RuntimeError) else ""
        raise UserError(f"cannot write {path} ({os_reason(e)}{hint}); the previous file, if any, is kept") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # pragma: no cover - e.g. the folder itself vanished
            pass
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, exclusive: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`); returns ``path``."""
    with atomic_file(path, exclusive=exclusive) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 1, *, exclusive: bool = False) -> Path:
    """Write ``obj`` as strict JSON (:func:`strict_json`) and a final newline, atomically."""
    return write_text_atomic(path, strict_json(obj, indent=indent) + "\n", exclusive=exclusive)


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig: Any) -> Path:
    """``fig.savefig`` (a matplotlib figure) atomically, in the format of ``path``'s suffix; the
    figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, binary=True) as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", **savefig)
    finally:
        plt.close(fig)
    return Path(path)


@contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "run", *, arg: str = "out") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block:
    :class:`FolderInUse` naming the holder's pid if another process has it. ``what`` names the
    holder in the message ("run", "sweep"), ``arg`` the argument to change."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot use `{arg}={folder}`: {os_reason(e)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(
                f"{folder} is in use by another {what} (pid {pid}); wait for it or use another `{arg}`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
