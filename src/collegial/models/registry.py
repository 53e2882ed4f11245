"""Model registry in the style of timm: ``@register_model`` + ``create_model(name, **overrides)``.

The mechanism only: each family registers itself where it is defined (the built-ins in
:mod:`collegial.models.resnext`, :mod:`~collegial.models.wrn` and :mod:`~collegial.models.mlp`,
imported by :mod:`collegial.models`; others through :mod:`collegial.models.plugins`).

A *family* is a function ``fn(arch, *, num_classes, in_channels, resolution, **kw) -> nn.Module``
(``arch`` is ``MxNd`` for collegial families, ``DEPTH-K`` for Wide ResNets). A *preset* names one
of the paper's configurations: family + arch + dataset.

>>> model = create_model("resnext29", arch="37x10d", dataset="cifar10")
>>> model = create_model("cifar10-resnext29-37x10d")          # the same, as a preset
>>> small = create_model("resnext11", arch="4x8d", dataset="mnist")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from collegial.errors import UserError
from collegial.models.arch import ArchError, parse_arch, parse_wrn
from collegial.models.datasets import DATASETS, get_dataset_spec

ArchKind = Literal["ce", "wrn"]
#: ``(m, n) -> nn.Module``: one collegial block of a family (e.g.
#: :func:`collegial.models.resnext.bottleneck_probe`).
ProbeFactory = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class SmallConfig:
    """A family's small member, declared at registration: ``arch`` on ``dataset`` with
    ``overrides`` (keywords of the family function, e.g. fewer blocks) builds and trains a step
    in about a second on a CPU. The tests build every registered family's small member, so a
    new family is tested without editing them."""

    arch: str
    dataset: str
    overrides: Mapping[str, object] = field(default_factory=dict, hash=False)

    def kwargs(self) -> dict[str, object]:
        """``create_model`` keywords: ``arch``, ``dataset`` and the overrides."""
        return {"arch": self.arch, "dataset": self.dataset, **self.overrides}


@dataclass(frozen=True)
class Family:
    """A registered model family. ``probe`` / ``probe_input_shape``: the block Algorithm 1
    measures for it and the shape of one input to that block (None: the family declares none,
    so it has no variance curve of its own)."""

    name: str
    fn: Callable[..., nn.Module]
    arch_kind: ArchKind
    default_dataset: str
    doc: str
    probe: ProbeFactory | None = None
    probe_input_shape: tuple[int, ...] | None = None
    #: Module that registered the family (e.g. ``collegial.models.resnext``).
    module: str = ""
    #: Its small member (None: the family declares none).
    small: SmallConfig | None = None
    #: Its own keywords that must be positive integers (one, or a list of them), checked by
    #: :func:`create_model` with the dataset sizes (:data:`DATASET_SIZES`).
    positive_ints: tuple[str, ...] = ()

    def shares_probe(self, other: Family) -> bool:
        """Whether ``other`` declares the very same probe (factory and input shape)."""
        return (
            self.probe is not None
            and self.probe is other.probe
            and self.probe_input_shape == other.probe_input_shape
        )

    @property
    def probe_owner(self) -> str:
        """The first registered family that declares this family's probe (its canonical name:
        ``resnext29`` for every ResNeXt); the family itself when it declares none."""
        return next((f.name for f in _FAMILIES.values() if f.shares_probe(self)), self.name)


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    arch: str
    dataset: str


_FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, Preset] = {}


def register_model(
    name: str,
    *,
    arch_kind: ArchKind = "ce",
    default_dataset: str = "cifar10",
    probe: ProbeFactory | None = None,
    probe_input_shape: Sequence[int] | None = None,
    small: SmallConfig | None = None,
    positive_ints: Sequence[str] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a family function ``fn(arch, *, num_classes, in_channels,
    resolution, **kw) -> nn.Module`` under ``name``.

    ``probe``: ``(m, n) -> nn.Module``, one collegial block of the family at its real channel
    count (``m`` paths of width ``n``, initialized as the family initializes it), and
    ``probe_input_shape`` the shape of one input to it without the batch axis, e.g.
    ``(32, 8, 8)``. ``collegial fit-alpha --family NAME`` measures that block and
    ``collegial search NAME`` uses its curve. ``small``: the family's small member
    (:class:`SmallConfig`), which the tests build. ``positive_ints``: the family's own keywords
    that must be positive integers (or lists of them), e.g. ``("widen_factor",)``;
    :func:`create_model` refuses another value in one line before building anything (the dataset
    sizes :data:`DATASET_SIZES` are checked for every family). Registering a name twice raises
    ``ValueError`` (the same function again, e.g. a module imported twice, is a no-op).
    """
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise ValueError(f"a model family name is a non-empty word, got {name!r}")
    if arch_kind not in ("ce", "wrn"):
        raise ValueError(f"arch_kind must be 'ce' or 'wrn', got {arch_kind!r}")
    if (probe is None) != (probe_input_shape is None):
        raise ValueError(f"family {name!r}: give probe and probe_input_shape together")
    _check_small(name, arch_kind, small)
    sizes = _positive_ints(name, positive_ints)
    shape: tuple[int, ...] | None = None
    if probe is not None:
        if not callable(probe):
            raise ValueError(f"family {name!r}: probe must be a callable (m, n) -> nn.Module")
        if arch_kind != "ce":
            raise ValueError(f"family {name!r}: only collegial (MxNd) families have a probe")
        shape = tuple(probe_input_shape)  # type: ignore[arg-type]
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(
                f"family {name!r}: probe_input_shape must be positive integers (no batch axis), "
                f"got {probe_input_shape!r}"
            )

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        old = _FAMILIES.get(name)
        if old is not None:
            if _origin(old.fn) == _origin(fn):
                return fn  # the same source imported twice (a path and a module name, an entry point)
            raise ValueError(f"model family {name!r} registered twice (by {old.module} and {fn.__module__})")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _FAMILIES[name] = Family(name, fn, arch_kind, default_dataset, doc, probe, shape,
                                 getattr(fn, "__module__", ""), small, sizes)
        return fn

    return deco


def _check_small(name: str, arch_kind: ArchKind, small: SmallConfig | None) -> None:
    """``ValueError`` unless ``small`` is None or a :class:`SmallConfig` of the family's kind."""
    if small is None:
        return
    if not isinstance(small, SmallConfig):
        raise ValueError(f"family {name!r}: small must be a SmallConfig(arch, dataset, overrides)")
    try:
        parse_wrn(small.arch) if arch_kind == "wrn" else parse_arch(small.arch)
    except ArchError as e:
        raise ValueError(f"family {name!r}: small member: {e}") from None
    if small.dataset not in DATASETS:
        raise ValueError(f"family {name!r}: small member on unknown dataset {small.dataset!r}")
    if not isinstance(small.overrides, Mapping) or not all(isinstance(k, str) for k in small.overrides):
        raise ValueError(f"family {name!r}: small member overrides must map keyword names to values")


def _positive_ints(name: str, keys: Sequence[str]) -> tuple[str, ...]:
    """``keys`` as a tuple; ``ValueError`` unless it is a sequence of keyword names."""
    if isinstance(keys, str) or not all(isinstance(k, str) and k.isidentifier() for k in keys):
        raise ValueError(f"family {name!r}: positive_ints must be a sequence of keyword names, got {keys!r}")
    return tuple(keys)


def _origin(fn: Callable[..., object]) -> tuple[str, str]:
    """Where a function was defined: (source file, qualified name)."""
    import os

    code = getattr(fn, "__code__", None)
    where = os.path.realpath(code.co_filename) if code is not None else getattr(fn, "__module__", "")
    return where, getattr(fn, "__qualname__", repr(fn))


def list_families() -> list[str]:
    """Every registered family name (built-ins, then plugins: see :mod:`collegial.models.plugins`)."""
    from collegial.models.plugins import load_entry_points

    load_entry_points()
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    from collegial.models.plugins import load_entry_points

    load_entry_points()
    try:
        return _FAMILIES[name]
    except KeyError:
        from collegial.models.plugins import entry_point_errors

        hint = ""
        broken = entry_point_errors()
        if broken:
            hint = f" (an installed plugin failed to load: {broken[0]})"
        if name in RENAMED_PROBES:
            hint = f"; the {name!r} probe is now named by its model family: use {RENAMED_PROBES[name]!r}"
        raise UserError(
            f"unknown model family {name!r}{hint}; choose from {', '.join(_FAMILIES)} "
            "(a family of your own: collegial --import MODULE)"
        ) from None


#: Probe names of collegial < 0.2 and the family that declares the same probe now.
RENAMED_PROBES = {"resnext-block": "resnext29"}


def validate_arch(family: str, arch: str) -> tuple[int, int]:
    """Parse ``arch`` for ``family``: (m, n) for collegial families, (depth, k) for WRN."""
    fam = get_family(family)
    if fam.arch_kind == "wrn":
        return parse_wrn(arch)
    return parse_arch(arch)


def create_model(
    name: str, arch: str | None = None, dataset: str | None = None, **overrides: object
) -> nn.Module:
    """Build a model from a family or preset name.

    ``dataset`` sets ``num_classes``, ``in_channels`` and ``resolution`` (any of which can be
    overridden); every other keyword goes to the family function.
    """
    if name in PRESETS:
        p = PRESETS[name]
        for what, given, own in (("arch", arch, p.arch), ("dataset", dataset, p.dataset)):
            if given is not None and given != own:
                raise UserError(f"preset {name!r} is {own!r}; it conflicts with {what}={given!r}")
        name, arch, dataset = p.family, p.arch, p.dataset
    fam = get_family(name)
    if arch is None:
        raise UserError(f"model family {name!r} needs an architecture string")
    validate_arch(name, arch)
    spec = get_dataset_spec(dataset or fam.default_dataset)
    kw: dict[str, object] = {
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "resolution": spec.resolution,
    }
    kw.update(overrides)
    _check_sizes(fam, kw)
    _check_fits(fam, arch, kw)
    try:
        return fam.fn(arch, **kw)
    except (ArchError, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - a family function (a plugin's too) failing: one line
        msg = str(e).splitlines()[0] if str(e) else ""
        if not isinstance(e, (ValueError, TypeError)) or not msg:
            msg = f"{type(e).__name__}{': ' + msg if msg else ''}"
        raise UserError(f"cannot build {name} {arch}: {msg}") from None


#: The sizes every family takes (``dataset`` fills them): positive integers.
DATASET_SIZES = ("num_classes", "in_channels", "resolution")


def _check_sizes(fam: Family, kw: dict[str, object]) -> None:
    """:class:`UserError` (one line) for a dataset size or a keyword of ``fam.positive_ints``
    that is not a positive integer (or a non-empty list of them)."""
    name = fam.name
    for key in DATASET_SIZES + fam.positive_ints:
        if key not in kw or kw[key] is None:
            continue
        vals = kw[key] if isinstance(kw[key], (list, tuple)) else [kw[key]]
        if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):  # type: ignore[union-attr]
            raise UserError(f"cannot build {name}: {key} must be a positive integer, got {kw[key]!r}")


#: Models above this many parameters (320 GB of fp32 weights) could never be trained in memory.
MAX_PARAMS = 80_000_000_000


def _check_fits(fam: Family, arch: str, kw: dict[str, object]) -> None:
    """Reject, before allocating anything, a model too large to ever fit in memory."""
    a, b = validate_arch(fam.name, arch)
    if (a * b if fam.arch_kind == "ce" else b * 256) <= 4096:
        return  # small enough by construction; skip the meta-device build
    import torch

    with torch.device("meta"):
        params = sum(p.numel() for p in fam.fn(arch, **kw).parameters())
    if params > MAX_PARAMS:
        raise ArchError(
            f"{fam.name} {arch} would have {params / 1e9:.0f}G parameters; too large to fit in memory"
        )



def _add_presets() -> None:
    """One preset per model the paper names (:data:`collegial.paper.MODELS`)."""
    from collegial.paper import MODELS

    for m in MODELS:
        PRESETS[m.preset] = Preset(m.preset, m.family, m.arch, m.dataset)


_add_presets()
