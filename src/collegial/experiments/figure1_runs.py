"""The resumable folder of a Figure 1 sweep: its settings (``sweep.json``), its runs
(``runs/ARCH/lrLR/seedS``), and the rule for reusing, continuing or redoing one run.

A finished run is reused only when its ``result.json`` carries this run's family, arch, seed,
data fingerprint and whole recipe (its learning rate included), holds a test error in [0, 100]
that agrees with its ``metrics.jsonl``, and (with a validation split) a validation error; any
other run is redone, with a note. An unfinished run continues from its ``last.pt`` (started over
when that checkpoint cannot be continued). Used by :mod:`collegial.experiments.figure1`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from collegial.errors import UserError
from collegial.io import strict_json, write_json_atomic
from collegial.provenance import provenance

#: What a sweep writes besides ``sweep.json`` and ``runs/`` (deleted when it starts over).
OUT_FILES = ("figure1.json", "figure1.md", "figure1.png")


@dataclass(frozen=True)
class RunKey:
    """One training run of a sweep: an architecture at a learning rate and a seed."""

    arch: str
    lr: float
    seed: int

    def folder(self, root: Path) -> Path:
        return root / "runs" / self.arch / f"lr{self.lr:g}" / f"seed{self.seed}"


@dataclass(frozen=True)
class RunOutcome:
    """A finished run's errors in % (``val``: on the held-out validation images; None without)."""

    test: float
    val: float | None


@dataclass(frozen=True)
class RunSpec:
    """What every run of a sweep shares: how it trains and what its result must carry."""

    family: str
    dataset: str
    device: str
    val_images: int
    recipe: Any  # collegial.train.recipes.Recipe at the shared learning rate
    identity: dict[str, Any]  # data fingerprint, family, epochs (see :func:`run_identity`)
    train_limit: int | None = None  # for a job that loads its own data
    test_limit: int | None = None

    def recipe_at(self, lr: float) -> Any:
        return self.recipe.override(lr=lr)


def run_identity(family: str, dataset: str, recipe: Any, data: Any, val_images: int) -> dict[str, Any]:
    """What a run's ``result.json`` must carry to be reused by this sweep (besides its arch,
    seed and recipe): the family, the data (name, sizes, fingerprint), epochs, the validation
    split (the model's keyword arguments: none)."""
    from collegial.train.loop import data_fingerprint

    return json.loads(strict_json({"family": family, "dataset": dataset, "epochs": recipe.epochs,
                                   "data": data_fingerprint(data), "model_kwargs": {},
                                   "val_images": val_images}))


def read_json(path: Path) -> tuple[Any, str]:
    """``path``'s JSON, or ``(None, "")`` when it does not exist, ``(None, why)`` when it is
    unreadable; :class:`UserError` when it is a folder (or another non-file)."""
    if not path.exists():
        return None, ""
    if not path.is_file():
        raise UserError(f"{path} is not a file; remove it or use another --out")
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError, RecursionError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__})"


def _percent(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and 0 <= x <= 100


def reusable(d: Path, expect: dict[str, Any], with_val: bool) -> tuple[RunOutcome | None, str]:
    """The errors of the finished run in ``d`` when its ``result.json`` is this run's (every
    field of ``expect`` matches), in range and agrees with ``metrics.jsonl``'s last line; else
    ``(None, why)`` and the run is redone. :class:`UserError` if ``result.json`` is no file."""
    r, why = read_json(d / "result.json")
    if r is None:
        return None, why and f"its {why}"
    try:
        last = json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError, RecursionError):
        return None, "its metrics.jsonl is unreadable"
    if not isinstance(r, dict) or not isinstance(last, dict):
        return None, "its result.json is no result"
    diff = sorted(k for k, v in expect.items() if r.get(k) != v)
    if diff:
        return None, f"its result.json is another run's ({', '.join(diff)} differ)"
    e, v = r.get("test_top1_err"), r.get("val_top1_err")
    if not _percent(e):
        return None, f"its test error {e!r} is not a percentage"
    if with_val and not _percent(v):
        return None, f"its validation error {v!r} is not a percentage"
    if last.get("test_top1_err") != e or last.get("epoch") != expect["epochs"]:
        return None, "its result.json disagrees with its metrics.jsonl"
    return RunOutcome(float(e), float(v) if with_val else None), ""


def train_one(spec: RunSpec, key: RunKey, root: Path, data: Any, log: Any) -> RunOutcome:
    """Train (or reuse, or continue) run ``key`` of the sweep in ``root``."""
    from collegial.io import FolderInUse
    from collegial.train.loop import RunConfig, train

    d = key.folder(root)
    recipe = spec.recipe_at(key.lr)
    expect = {**spec.identity, "arch": key.arch, "seed": key.seed, "recipe": recipe.as_dict()}
    done, why = reusable(d, expect, spec.val_images > 0)
    if done is not None:
        return done
    if why:
        log(f"[figure1] {key.arch} lr {key.lr:g} seed {key.seed}: redone, {why}")
    run = RunConfig(family=spec.family, arch=key.arch, dataset=spec.dataset, out=d, seed=key.seed, resume=False,
                    overwrite=True, progress=False, verbose=False, device=spec.device,
                    val_images=spec.val_images)
    if not why and (d / "last.pt").exists():
        try:  # an unfinished run continues from its checkpoint
            res = train(replace(run, resume=True, overwrite=False), recipe, data)
        except FolderInUse:
            raise
        except UserError as e:  # nothing was changed: a checkpoint this sweep cannot continue
            log(f"[figure1] {key.arch} lr {key.lr:g} seed {key.seed}: started over, {e}")
            res = train(run, recipe, data)
    else:
        res = train(run, recipe, data)
    if res.stopped:
        raise UserError(f"run {d} stopped ({res.stopped}); rerun the same command to continue it")
    val = res.val_top1_err if spec.val_images > 0 else None
    return RunOutcome(float(res.test_top1_err), None if val is None else float(val))


def read_sweep(sweep: Path) -> tuple[dict[str, Any] | None, str]:
    """The settings stored in ``sweep.json`` (``None`` when there is none) and what is wrong
    with it ("" when it is readable)."""
    old, why = read_json(sweep)
    if old is None:
        return None, why and f"{sweep.parent}/{why}"
    if not isinstance(old, dict) or "family" not in old:
        return None, f"{sweep} is not a figure1 sweep file"
    old.pop("provenance", None)  # where it came from, not a setting
    return old, ""


def resizable(key: dict[str, Any]) -> dict[str, Any]:
    """The settings a rerun may change and still continue the sweep: the number of seeds (no run
    depends on it; more seeds add runs, fewer report the first ones)."""
    return {"seeds": key.get("seeds")}


def plan(key: dict[str, Any], root: Path, overwrite: bool) -> bool:
    """Check ``root`` against this sweep's settings, changing nothing; whether the sweep starts
    over (its previous runs and outputs to be deleted, once everything else is validated). A
    rerun that changes only :func:`resizable` settings continues the sweep."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    old, bad = read_sweep(root / "sweep.json")
    if old == key or (old is not None and {**old, **resizable(key)} == key):
        return overwrite
    if old is None and not bad:  # a fresh folder, or one holding files of no sweep
        foreign = [n for n in (*OUT_FILES, "runs") if (root / n).exists()]
        if foreign and not overwrite:
            raise UserError(f"{root} holds {', '.join(foreign)} but no sweep.json (not a figure1 sweep's); "
                            "use another --out or pass --overwrite to replace them")
        return bool(foreign)
    if not overwrite:
        what = bad or ("a figure1 sweep with other settings ("
                       + ", ".join(sorted(k for k in set(old or {}) | set(key)
                                   if (old or {}).get(k) != key.get(k) and k not in resizable(key)))
                       + ")")
        raise UserError(f"{root} holds {what}; use another --out, the same settings to continue it, "
                        "or --overwrite to start over")
    return True


def start(key: dict[str, Any], root: Path, start_over: bool) -> None:
    """Delete the previous sweep (``start_over``), then record this one's settings."""
    if start_over:
        shutil.rmtree(root / "runs", ignore_errors=True)
        for name in OUT_FILES:
            (root / name).unlink(missing_ok=True)
    write_json_atomic(root / "sweep.json", {**key, "provenance": provenance(key.get("seed"))})
