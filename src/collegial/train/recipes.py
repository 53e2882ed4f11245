"""Training recipes: the paper's (SPEC section 7) and the project's short CPU recipes.

The paper's numbers and their sources are :data:`collegial.paper.PAPER_RECIPES` (cifar10/100,
imagenet32, imagenet64 from the paper; imagenet from the official code); :data:`RECIPES` builds
one :class:`Recipe` from each and adds the project's own MNIST / Fashion-MNIST recipe (not in
the paper: milestones at 50% and 75% of training, no augmentation; source "project"), which
trains small CPU models in minutes.

All recipes: SGD with momentum 0.9, no Nesterov, weight decay on all parameters, cross-entropy,
learning rate multiplied by ``gamma`` at each epoch in ``milestones`` (``MultiStepLR``);
:meth:`Recipe.optimizer` and :meth:`Recipe.schedule` build the two for the training loop.
``batch_size`` and ``lr`` are *global*: with several processes each one takes
``batch_size / world_size`` images per step (``DeviceLoader(global_batch_size=...)``).
All use normalization "dataset", the dataset's own (SPEC section 7): CIFAR's constant
per-channel mean/std, downsampled ImageNet's training mean image, MNIST's and Fashion-MNIST's
training-set per-channel mean/std.

Milestones beyond ``epochs`` simply never fire. A run of another length follows the recipe's
schedule scaled to its epochs (:meth:`Recipe.scaled`, what :meth:`Recipe.with_overrides` does when
``epochs`` changes and no ``milestones`` are given), unless it asks for fixed milestones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR
from torch.optim.optimizer import ParamsT

from collegial.errors import UserError
from collegial.models.datasets import get_dataset_spec
from collegial.paper import PAPER_RECIPES, PaperRecipe
from collegial.train.images import NORMALIZATIONS

__all__ = [
    "NORMALIZATIONS",
    "RECIPES",
    "Recipe",
    "RecipeField",
    "get_recipe",
    "recipe_fields",
]


@dataclass(frozen=True)
class Recipe:
    """One training recipe (see the module docstring for the values).

    Attributes:
        dataset: dataset name.
        epochs: number of epochs (>= 1).
        batch_size: global batch size (summed over processes).
        lr: initial learning rate for ``batch_size``.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay on all parameters.
        milestones: epochs at which the learning rate is multiplied by ``gamma`` (increasing).
        gamma: learning-rate factor at each milestone.
        crop_padding: zero padding (pixels) of the random crop; 0 = no crop.
        flip: random horizontal flip.
        normalization: one of :data:`NORMALIZATIONS`.
        source: where the recipe comes from ("paper", "official code", "project").
    """

    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    crop_padding: int = 0
    flip: bool = False
    normalization: str = "dataset"
    source: str = "paper"

    def __post_init__(self) -> None:
        _validate(self)

    def override(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (values may be typed or command-line strings);
        ``None`` values mean "keep". Raises :class:`UserError` for unknown fields or invalid
        values."""
        fields = {f.name: f for f in recipe_fields()}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise UserError(f"unknown recipe field {name!r}; fields: {', '.join(fields)}")
            if value is not None:
                clean[name] = fields[name].parse(value) if isinstance(value, str) else value
        if not clean:
            return self
        return dataclasses.replace(self, **_coerce(clean))

    def scaled(self, epochs: int) -> Recipe:
        """A copy trained for ``epochs`` with the milestones scaled by ``epochs / self.epochs``
        (rounded, kept distinct and at least 1)."""
        out = self.override(epochs=epochs)
        ratio = out.epochs / self.epochs
        scaled: list[int] = []
        for m in self.milestones:
            value = max(1, round(m * ratio), (scaled[-1] + 1) if scaled else 1)
            scaled.append(value)
        return dataclasses.replace(out, milestones=tuple(scaled))

    def with_overrides(self, overrides: dict[str, Any], *, fixed_milestones: bool = False) -> Recipe:
        """:meth:`override` for a run: when ``overrides`` changes ``epochs`` but gives no
        ``milestones``, the milestones follow the new length (:meth:`scaled`), so that a
        2-epoch run of a 10-epoch recipe still decays its learning rate; ``fixed_milestones``
        keeps them as they are (those beyond the new length never fire)."""
        changes = dict(overrides)
        if changes.get("epochs") is not None and changes.get("milestones") is None and not fixed_milestones:
            epochs = self.override(epochs=changes.pop("epochs")).epochs
            return self.scaled(epochs).override(**changes)
        return self.override(**changes)

    def lr_at(self, epoch: int) -> float:
        """Learning rate during (0-based) ``epoch``, as ``MultiStepLR`` stepped once per epoch."""
        return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (milestones as a list)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def optimizer(self, params: ParamsT) -> torch.optim.Optimizer:
        """The recipe's optimizer over ``params``: SGD with ``lr``, ``momentum``, ``nesterov``
        and ``weight_decay`` (on every parameter)."""
        return torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )

    def schedule(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        """The recipe's learning-rate schedule for ``optimizer``, stepped once per epoch:
        ``MultiStepLR`` multiplying the rate by ``gamma`` at each of ``milestones`` (see
        :meth:`lr_at`)."""
        return MultiStepLR(optimizer, milestones=list(self.milestones), gamma=self.gamma)


def _fail(field: str, message: str, value: Any) -> UserError:
    return UserError(f"recipe field `{field}`: {message}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _coerce(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "milestones" in out and isinstance(out["milestones"], (list, tuple)):
        out["milestones"] = tuple(out["milestones"])
    for name in ("lr", "momentum", "weight_decay", "gamma"):
        if name in out and _is_int(out[name]):
            out[name] = float(out[name])
    return out


def _validate(r: Recipe) -> None:
    get_dataset_spec(r.dataset)
    if not _is_int(r.epochs) or r.epochs < 1:
        raise _fail("epochs", "must be an integer >= 1", r.epochs)
    if not _is_int(r.batch_size) or r.batch_size < 1:
        raise _fail("batch_size", "must be an integer >= 1", r.batch_size)
    if not _is_real(r.lr) or r.lr <= 0:
        raise _fail("lr", "must be a positive finite number", r.lr)
    if not _is_real(r.momentum) or not 0 <= r.momentum < 1:
        raise _fail("momentum", "must be in [0, 1)", r.momentum)
    if not isinstance(r.nesterov, bool):
        raise _fail("nesterov", "must be true or false", r.nesterov)
    if r.nesterov and r.momentum == 0:
        raise _fail("nesterov", "needs momentum > 0", r.nesterov)
    if not _is_real(r.weight_decay) or r.weight_decay < 0:
        raise _fail("weight_decay", "must be a finite number >= 0", r.weight_decay)
    ms = r.milestones
    if (
        not isinstance(ms, tuple)
        or not all(_is_int(m) and m >= 1 for m in ms)
        or any(a >= b for a, b in zip(ms, ms[1:], strict=False))
    ):
        raise _fail("milestones", "must be strictly increasing integers >= 1", ms)
    if not _is_real(r.gamma) or r.gamma <= 0:
        raise _fail("gamma", "must be a positive finite number", r.gamma)
    if not _is_int(r.crop_padding) or r.crop_padding < 0:
        raise _fail("crop_padding", "must be an integer >= 0", r.crop_padding)
    if not isinstance(r.flip, bool):
        raise _fail("flip", "must be true or false", r.flip)
    if r.normalization not in NORMALIZATIONS:
        raise _fail("normalization", f"must be one of {', '.join(NORMALIZATIONS)}", r.normalization)
    if not isinstance(r.source, str):
        raise _fail("source", "must be a string", r.source)


# ---- the recipes -------------------------------------------------------------------------


def _from_paper(dataset: str, r: PaperRecipe) -> Recipe:
    """The :class:`Recipe` of the paper's numbers ``r`` for ``dataset``."""
    return Recipe(dataset, **dataclasses.asdict(r))


_DIGITS = dict(
    epochs=10,
    batch_size=128,
    lr=0.05,
    weight_decay=5e-4,
    milestones=(5, 8),
    gamma=0.1,
    crop_padding=0,
    flip=False,
    source="project",
)

RECIPES: dict[str, Recipe] = {
    r.dataset: r
    for r in (
        *(_from_paper(dataset, r) for dataset, r in PAPER_RECIPES.items()),
        Recipe("mnist", **_DIGITS),
        Recipe("fashion-mnist", **_DIGITS),
    )
}


def get_recipe(dataset: str) -> Recipe:
    """The default recipe of ``dataset``; :class:`UserError` for an unknown name."""
    spec = get_dataset_spec(dataset)
    try:
        return RECIPES[spec.name]
    except KeyError:  # pragma: no cover - every dataset has a recipe (tested)
        raise UserError(f"no training recipe for dataset {dataset!r}") from None


# ---- the overridable fields and their text values ----------------------------------------
# (the argparse options built from this table live in collegial.commands.recipe_options)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on", "y", "t"):
        return True
    if t in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_milestones(text: str) -> tuple[int, ...]:
    t = text.strip()
    if t in ("", "none", "-"):
        return ()
    return tuple(int(p) for p in t.replace(" ", ",").split(",") if p)


@dataclass(frozen=True)
class RecipeField:
    """One overridable recipe field: ``--{flag}`` on the command line."""

    name: str
    flag: str
    kind: str  # "int" | "float" | "bool" | "ints" | "choice" | "str"
    help: str
    choices: tuple[str, ...] | None = None

    def parse(self, text: str) -> Any:
        """The typed value of a command-line string; :class:`UserError` if it does not parse."""
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                return float(text)
            if self.kind == "bool":
                return _parse_bool(text)
            if self.kind == "ints":
                return _parse_milestones(text)
        except ValueError:
            raise UserError(f"--{self.flag}: cannot parse {text!r} as {self._what()}") from None
        if self.choices is not None and text not in self.choices:
            raise UserError(f"--{self.flag}: {text!r} is not one of {', '.join(self.choices)}")
        return text

    def _what(self) -> str:
        return {
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "ints": "comma-separated integers",
        }.get(self.kind, "text")


_HELP = {
    "epochs": "training epochs",
    "batch_size": "global batch size (split over processes)",
    "lr": "initial learning rate (for the global batch)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "weight decay on all parameters",
    "milestones": "comma-separated epochs at which lr *= gamma ('none' for a constant lr)",
    "gamma": "learning-rate factor at each milestone",
    "crop_padding": "random-crop zero padding in pixels (0 = no crop)",
    "flip": "random horizontal flip of the training images",
    "normalization": "input normalization: " + ", ".join(NORMALIZATIONS),
}
_KIND = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "tuple[int, ...]": "ints",
}


def recipe_fields() -> list[RecipeField]:
    """Every overridable field of :class:`Recipe` (all but ``dataset`` and ``source``), in
    declaration order, with its command-line flag, kind and help."""
    out = []
    for f in dataclasses.fields(Recipe):
        if f.name in ("dataset", "source"):
            continue
        choices = NORMALIZATIONS if f.name == "normalization" else None
        kind = "choice" if choices else _KIND[f.type]
        out.append(RecipeField(f.name, f.name.replace("_", "-"), kind, _HELP[f.name], choices))
    return out
