"""Checkpoints: written atomically, loadable with ``torch.load(..., weights_only=True)``.

A run directory's latest checkpoint is ``DIR/last.pt``, a dict with

* ``model``: the bare model's ``state_dict`` (no DDP / ``torch.compile`` prefixes);
* ``epoch``: epochs completed; ``batch``: batches of epoch ``epoch`` already done (0 at an
  epoch boundary, > 0 only for a checkpoint written on SIGTERM mid-epoch);
* ``optimizer``, ``scheduler``: their ``state_dict``s; ``rng``: the torch RNG states;
* ``partial``: the running sums of the interrupted epoch (train loss, errors, images, seconds);
* ``history``: the per-epoch metrics so far (``metrics.jsonl`` is rebuilt from it on resume);
* ``config``: what the run was started with (family, arch, dataset, seed, recipe, ...).

Everything in it is tensors, numbers, strings, lists and dicts, so the safe loader reads it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from collegial.errors import UserError
from collegial.io import atomic_file

__all__ = ["save_atomic", "load_checkpoint", "rng_state", "set_rng_state"]


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file beside ``path``, fsync, then rename over ``path``
    (:func:`collegial.io.atomic_file`): a reader (or a crash at any moment) sees the old file or
    the new one, never half of one."""
    with atomic_file(path, binary=True) as f:
        torch.save(obj, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe (``weights_only``) loader after checking the archive's
    CRCs; :class:`UserError` if it is missing, corrupt, unreadable or not a training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint")
    try:  # torch does not check the archive's CRCs: a flipped byte would load silently
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot read checkpoint ({e})") from None
    if bad is not None:
        raise UserError(f"{path}: corrupt checkpoint (CRC mismatch in {bad}); it cannot be resumed")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise UserError(f"{path}: not a training checkpoint (needs 'model' and 'epoch')")
    return ckpt


def rng_state() -> dict[str, Any]:
    """The torch RNG states (CPU, and every CUDA device when CUDA is initialized)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
