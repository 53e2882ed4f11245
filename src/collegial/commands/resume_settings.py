"""``collegial train --out DIR --resume``: the settings of the run being continued.

``--resume`` alone continues DIR's run with every setting it was started with, read from its
``config.json`` (``DIR/config.json``, or for a ``--seeds K`` run the first ``DIR/seedS/config.json``):
family, architecture, dataset, the whole recipe, the seed (and the seeds of a ``--seeds K`` run:
its ``seedS`` folders), the number of training, test and held-out validation images, amp and channels_last (the device, threads and batch size of evaluation are the
machine's choice). A setting given again must equal the stored one, or
the command stops in one line naming each difference; only ``--epochs`` may change (to train a
finished run longer; the milestones stay those the run started with, so that the epochs already
trained keep their schedule). Nothing is read or checked without ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from collegial.errors import UserError
from collegial.train.recipes import Recipe, recipe_fields


def stored_run(args: argparse.Namespace) -> tuple[Path, dict[str, Any]] | None:
    """The ``config.json`` of the run ``--out --resume`` continues and its settings; None when
    there is nothing to resume (no ``--resume``, no ``--out``, or no run there yet)."""
    if not args.resume or not args.out:
        return None
    out = Path(args.out)
    seeds = sorted(out.glob("seed*/config.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    found = [p for p in (out / "config.json", *seeds) if p.is_file()]
    if not found:
        return None
    return found[0], _load_config(found[0], "--resume", "; pass --overwrite to start over")


def _load_config(path: Path, flag: str, advice: str = "") -> dict[str, Any]:
    """A run's ``config.json`` as a dict; :class:`UserError` naming ``flag`` when unreadable."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{flag}: {path} is unreadable ({type(e).__name__}){advice}") from None
    if not isinstance(old, dict) or not isinstance(old.get("recipe"), dict) or "family" not in old:
        raise UserError(f"{flag}: {path} is not a run's config.json{advice}")
    return old


def read_config(path: str) -> tuple[Path, dict[str, Any]]:
    """``--config FILE``: a finished (or any) run's ``config.json``, or the one in folder FILE."""
    p = Path(path)
    p = p / "config.json" if p.is_dir() else p
    if not p.is_file():
        raise UserError(f"--config: no config.json at {p}")
    return p, _load_config(p, "--config")


def fill_from_config(args: argparse.Namespace, old: dict[str, Any]) -> None:
    """``--config``: every setting of ``old`` the command line did not give (flags override):
    the model (when no FAMILY is given), seed, data sizes (validation images included), amp and
    channels_last."""
    data = old.get("data") if isinstance(old.get("data"), dict) else {}
    if args.family is None:
        args.family, args.arch = old.get("family"), old.get("arch")
    if args.dataset is None and args.family == old.get("family"):
        args.dataset = old.get("dataset")
    for name, value in (("seed", old.get("seed")), ("train_limit", data.get("train")), ("test_limit", data.get("test")),
                        ("val_images", old.get("val_images"))):
        if getattr(args, name, None) is None and value is not None:
            setattr(args, name, value)
    for flag in ("amp", "channels_last"):
        setattr(args, flag, bool(getattr(args, flag) or old.get(flag)))


def restore(args: argparse.Namespace, path: Path, old: dict[str, Any]) -> None:
    """Fill ``args`` with ``old``'s settings where the command line gave none; :class:`UserError`
    naming every flag given with another value than ``old``'s (``--epochs`` may change)."""
    single = path.parent == Path(args.out)
    data = old.get("data") if isinstance(old.get("data"), dict) else {}
    seeds = [old.get("seed")] if single else _seed_folders(Path(args.out))
    fill = {"seed": min(seeds) if seeds and None not in seeds else None, "seeds": len(seeds) or None,
            "train_limit": data.get("train"), "test_limit": data.get("test"),
            "val_images": old.get("val_images", 0)}
    for name, value in fill.items():
        if getattr(args, name, None) is None and value is not None:
            setattr(args, name, value)
    diffs = []
    if single and args.seed != old.get("seed"):
        diffs.append(f"--seed {args.seed} (it has {old.get('seed')})")
    if args.val_images != old.get("val_images", 0):  # runs from before validation splits held none out
        diffs.append(f"--val-images {args.val_images} (it has {old.get('val_images', 0)})")
    for flag in ("amp", "channels_last"):
        if getattr(args, flag) and not old.get(flag):
            diffs.append(f"--{flag.replace('_', '-')} (it ran without)")
        setattr(args, flag, bool(getattr(args, flag) or old.get(flag)))
    if args.family is None:
        if args.arch is not None:
            raise UserError("train: ARCH without FAMILY")
        args.family, args.arch = old.get("family"), old.get("arch")
        args.dataset = args.dataset or old.get("dataset")
    if diffs:
        raise UserError(f"--resume: {path} was run with other settings: {', '.join(diffs)}; "
                        "drop those flags to continue it as it was")


def _seed_folders(out: Path) -> list[int]:
    """The seeds of a multi-seed run's folders ``out/seedS`` (those holding a run)."""
    found = []
    for p in out.glob("seed*/config.json"):
        tail = p.parent.name[len("seed"):]
        if tail.isdigit():
            found.append(int(tail))
    return sorted(found)


def check_model(path: Path, old: dict[str, Any], family: str, arch: str, dataset: str) -> None:
    """The model given again is the stored run's."""
    diffs = [f"{k} {v!r} (it has {old.get(k)!r})" for k, v in (("family", family), ("arch", arch), ("dataset", dataset))
             if old.get(k) != v]
    if diffs:
        raise UserError(f"--resume: {path} is a run of another model: {', '.join(diffs)}; "
                        "give no FAMILY ARCH to continue it, or use another --out")


def stored_recipe(path: Path, old: dict[str, Any], overrides: dict[str, Any]) -> Recipe:
    """The stored recipe with ``overrides`` (the recipe flags given); :class:`UserError` naming
    each given flag whose value differs from the stored one (but ``--epochs``)."""
    base = _stored_base(path, old, "--resume", "; pass --overwrite to start over")
    recipe = base.override(**overrides)
    diffs = [f"{_given(k, overrides[k])} (it has {getattr(base, k)!r})" for k in overrides
             if k != "epochs" and getattr(recipe, k) != getattr(base, k)]
    if diffs:
        raise UserError(f"--resume: {path} was run with another recipe: {', '.join(diffs)}; "
                        "drop those flags to continue it (only --epochs may change)")
    return recipe


def _given(name: str, value: Any) -> str:
    """A recipe flag as it was given: ``--lr 0.1``, or ``--flip`` / ``--no-flip`` for a switch."""
    flag = {f.name: f.flag for f in recipe_fields()}[name]
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _stored_base(path: Path, old: dict[str, Any], flag: str, advice: str = "") -> Recipe:
    stored = dict(old["recipe"])
    try:
        return Recipe(**{**stored, "milestones": tuple(stored.get("milestones") or ())})
    except (TypeError, ValueError, UserError) as e:
        raise UserError(f"{flag}: {path} holds no valid recipe ({e}){advice}") from None


def config_recipe(path: Path, old: dict[str, Any], overrides: dict[str, Any], *,
                  fixed_milestones: bool = False) -> Recipe:
    """``--config``: the stored recipe with the recipe flags given (they override it; its
    milestones follow a new ``--epochs`` as a recipe's do, unless ``fixed_milestones``)."""
    return _stored_base(path, old, "--config").with_overrides(overrides, fixed_milestones=fixed_milestones)
