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
:func:`run_checkpoint` builds that dict, :func:`check_resumable` says whether it continues a
given run, and :func:`read_position` reads back where it stopped (:class:`Position`).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from collegial.errors import UserError
from collegial.io import atomic_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochSums",
    "Position",
    "check_resumable",
    "load_checkpoint",
    "read_position",
    "rng_state",
    "run_checkpoint",
    "save_atomic",
    "set_rng_state",
]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochSums:
    """An epoch's training so far, summed over processes: ``loss`` (each batch's mean loss times
    its images), ``correct`` predictions, ``images`` and training ``seconds``."""

    loss: float = 0.0
    correct: float = 0.0
    images: float = 0.0
    seconds: float = 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.images, 1.0)

    @property
    def error(self) -> float:
        """Training top-1 error in %."""
        return 100.0 * (1 - self.correct / max(self.images, 1.0))

    def as_dict(self) -> dict[str, float]:
        """The checkpoint's ``partial`` entry."""
        return {"loss": self.loss, "correct": self.correct, "images": self.images, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> EpochSums:
        return cls(loss=d["loss"], correct=d["correct"], images=d["images"], seconds=d["seconds"])


@dataclass(frozen=True)
class Position:
    """Where a run (re)starts: the (0-based) ``epoch``, the ``batch``es of it already done (0 at
    an epoch boundary) and that epoch's ``partial`` sums so far."""

    epoch: int = 0
    batch: int = 0
    partial: EpochSums = EpochSums()


def run_checkpoint(
    states: dict[str, Any], position: Position, history: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, Any]:
    """The dict ``last.pt`` holds: ``states`` (model, optimizer, scheduler), the RNG states, the
    position, the history so far and the run's config (see the module docstring)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": states["model"],
        "epoch": position.epoch,
        "batch": position.batch,
        "optimizer": states["optimizer"],
        "scheduler": states["scheduler"],
        "rng": rng_state(),
        "partial": position.partial.as_dict(),
        "history": history,
        "config": config,
    }


def read_position(ckpt: dict[str, Any]) -> tuple[Position, list[dict[str, Any]]]:
    """Where checkpoint ``ckpt`` stopped, and its history."""
    partial = ckpt.get("partial")
    return (
        Position(
            epoch=int(ckpt["epoch"]),
            batch=int(ckpt.get("batch", 0)),
            partial=EpochSums() if partial is None else EpochSums.from_dict(dict(partial)),
        ),
        list(ckpt.get("history", [])),
    )


def check_resumable(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """:class:`UserError` unless checkpoint ``ckpt`` (read from ``path``) continues the run
    ``config`` describes: the same model, data, seed, validation split, numerics (amp,
    channels_last) and recipe (only its epochs may change)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} has checkpoint format {ckpt.get('format')!r}, not {CHECKPOINT_FORMAT}; "
                        "it cannot be resumed (use `overwrite=True`)")
    for key in ("model", "optimizer", "scheduler", "rng", "config"):
        if not isinstance(ckpt.get(key), dict):
            raise UserError(f"{path} lacks its {key} state; it cannot be resumed (use `overwrite=True`)")
    for key in ("epoch", "batch"):
        v = ckpt.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UserError(f"{path}: {key} must be a non-negative integer, got {v!r}; it cannot be resumed")
    old = ckpt.get("config", {})
    _check_same_run(old, config, path)
    _check_same_recipe(dict(old.get("recipe", {})), dict(config["recipe"]), path)
    if ckpt.get("batch", 0) and old.get("world_size") != config["world_size"]:
        raise UserError(
            f"{path} was written mid-epoch by {old.get('world_size')} processes; "
            f"resume it with the same number, not {config['world_size']}"
        )


def _check_same_run(old: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    keys = ["family", "arch", "dataset", "seed", "model_kwargs", "amp", "channels_last"]
    keys += ["data"] if "data" in old else []  # checkpoints written before data fingerprints
    old = {"val_images": 0, **old}  # checkpoints written before validation splits held none out
    for key in [*keys, "val_images"]:
        if old.get(key) != config[key]:
            raise UserError(
                f"{path} was trained with {key}={old.get(key)!r}, not {config[key]!r}; "
                "use another `out` or `overwrite=True`"
            )


def _check_same_recipe(old: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    old.pop("epochs", None)
    new.pop("epochs", None)
    for key, value in new.items():
        if old.get(key) != value:
            raise UserError(
                f"{path} was trained with {key}={old.get(key)!r}, not {value!r}; "
                "resume with the same recipe (only `epochs` may change)"
            )


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
