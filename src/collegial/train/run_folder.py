"""A run's folder: refusing to clobber another run, starting over only once every setting is
valid, one run at a time (a lock), and the per-epoch files (``metrics.jsonl``, ``metrics.csv``,
TensorBoard events), each written whole and atomically (rank 0 only)."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collegial.errors import UserError
from collegial.io import TMP_GLOB, folder_lock, strict_json, write_text_atomic
from collegial.train.checkpoint import load_checkpoint
from collegial.train.distributed import Dist, barrier

__all__ = [
    "RUN_FILES",
    "check_out_dir",
    "metrics_csv",
    "metrics_text",
    "prepare_out",
    "run_lock",
    "start_out",
    "write_metrics",
]

#: Files a run writes into its directory (never overwritten unless resuming or ``overwrite``).
RUN_FILES = ("last.pt", "metrics.jsonl", "metrics.csv", "result.json", "config.json", "tensorboard")


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """The run files already in ``out``; :class:`UserError` if there are some and neither
    ``resume`` nor ``overwrite`` allows touching them."""
    if out.exists() and not out.is_dir():
        raise UserError(f"`out={out}` exists and is not a directory")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not (resume or overwrite):
        raise UserError(
            f"{out} already holds a run ({', '.join(existing)}); pass `resume=True` to continue it "
            "or `overwrite=True` to start over"
        )
    last = out / "last.pt"
    if resume and not last.is_file() and (existing or last.is_symlink()):
        why = "is a dangling symlink" if last.is_symlink() else "is missing"
        held = ", ".join(existing) or "no other run files"
        raise UserError(
            f"`resume=True`: {last} {why} ({out} holds {held}); nothing was changed; "
            "pass `overwrite=True` to start over"
        )
    return existing


@contextmanager
def run_lock(out: Path, info: Dist) -> Iterator[None]:
    """An exclusive lock on the run folder (rank 0, :func:`collegial.io.folder_lock`): a second
    run on the same ``out`` stops with one line naming the first one's pid."""
    if not info.is_main:
        yield
        return
    with folder_lock(out, "run"):
        yield


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """Refuse to clobber an existing run; return the checkpoint to resume from (or ``None``) and
    the previous run's files that starting over will delete -- later, once every setting has
    been validated (:func:`start_out`)."""
    existing = check_out_dir(out, resume=resume, overwrite=overwrite)
    ckpt = None
    if resume and (out / "last.pt").is_file():
        ckpt = load_checkpoint(out / "last.pt")
    return ckpt, (existing if ckpt is None else [])


def start_out(out: Path, stale: list[str], info: Dist, files: dict[str, str]) -> None:
    """Delete ``stale`` (a previous run being started over) and write ``files`` (name -> text)."""
    barrier(info)  # every rank has looked before rank 0 changes anything
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for f in stale:
            if (out / f).is_dir() and not (out / f).is_symlink():
                shutil.rmtree(out / f)  # tensorboard/
            else:
                (out / f).unlink(missing_ok=True)
        for tmp in out.glob(TMP_GLOB):  # left by killed writes; we hold the folder's lock
            tmp.unlink(missing_ok=True)
        for name, text in files.items():
            write_text_atomic(out / name, text)
    barrier(info)


def write_metrics(out: Path, history: list[dict[str, Any]], *, tensorboard: bool) -> None:
    """After an epoch: ``metrics.jsonl`` and ``metrics.csv`` rewritten whole (atomically: a full
    disk cannot leave half a line) and, with ``tensorboard``, the last epoch's events."""
    write_text_atomic(out / "metrics.jsonl", metrics_text(history))
    write_text_atomic(out / "metrics.csv", metrics_csv(history))
    if tensorboard:
        _tensorboard_epoch(out / "tensorboard", history[-1])


def metrics_text(history: list[dict[str, Any]]) -> str:
    """``metrics.jsonl``: one strict JSON line per finished epoch."""
    return "".join(strict_json(r) + "\n" for r in history)


def metrics_csv(history: list[dict[str, Any]]) -> str:
    """``metrics.csv``: the same epochs as ``metrics.jsonl``, one row each (for spreadsheets and
    pandas), columns in the order the records first name them; empty cells for missing values."""
    cols = list(dict.fromkeys(k for r in history for k in r)) or ["epoch"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r[k]) for k in cols} for r in history)
    return buf.getvalue()


def _tensorboard_epoch(folder: Path, record: dict[str, Any]) -> None:
    """One finished epoch's numbers as TensorBoard scalars (step = epoch), in ``folder``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder)) as w:
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                w.add_scalar(k, v, record["epoch"])
