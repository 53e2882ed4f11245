"""Model registry in the style of timm: ``@register_model`` + ``create_model(name, **overrides)``.

A *family* is a function ``fn(arch, *, num_classes, in_channels, resolution, **kw) -> nn.Module``
(``arch`` is ``MxNd`` for collegial families, ``DEPTH-K`` for Wide ResNets). A *preset* names one
of the paper's configurations: family + arch + dataset.

>>> model = create_model("resnext29", arch="37x10d", dataset="cifar10")
>>> model = create_model("cifar10-resnext29-37x10d")          # the same, as a preset
>>> small = create_model("resnext11", arch="4x8d", dataset="mnist")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from collegial.errors import UserError
from collegial.models.arch import ArchError, parse_arch, parse_wrn
from collegial.models.datasets import get_dataset_spec
from collegial.models.layers import CollegialMLP
from collegial.models.probes import (
    BOTTLENECK_SHAPE,
    MLP_SHAPE,
    RESNEXT11_SHAPE,
    bottleneck_probe,
    mlp_probe,
    resnext11_probe,
)
from collegial.models.resnext import ResNeXt
from collegial.models.wrn import WideResNet

ArchKind = Literal["ce", "wrn"]
#: ``(m, n) -> nn.Module``: one collegial block of a family (see :mod:`collegial.models.probes`).
ProbeFactory = Callable[[int, int], nn.Module]


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
    #: Module that registered the family (``collegial.models.registry`` for the built-ins).
    module: str = ""

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
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a family function ``fn(arch, *, num_classes, in_channels,
    resolution, **kw) -> nn.Module`` under ``name``.

    ``probe``: ``(m, n) -> nn.Module``, one collegial block of the family at its real channel
    count (``m`` paths of width ``n``, initialized as the family initializes it), and
    ``probe_input_shape`` the shape of one input to it without the batch axis, e.g.
    ``(32, 8, 8)``. ``collegial fit-alpha --family NAME`` measures that block and
    ``collegial search NAME`` uses its curve. Registering a name twice raises ``ValueError``
    (the same function again, e.g. a module imported twice, is a no-op).
    """
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise ValueError(f"a model family name is a non-empty word, got {name!r}")
    if arch_kind not in ("ce", "wrn"):
        raise ValueError(f"arch_kind must be 'ce' or 'wrn', got {arch_kind!r}")
    if (probe is None) != (probe_input_shape is None):
        raise ValueError(f"family {name!r}: give probe and probe_input_shape together")
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
                                 getattr(fn, "__module__", ""))
        return fn

    return deco


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
    _check_sizes(name, kw)
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


#: Size overrides that must be positive integers (``blocks_per_stage``: one, or one per stage).
POSITIVE_INTS = ("num_classes", "in_channels", "resolution", "widen_factor", "base_channels",
                 "stem_channels", "depth", "num_stages", "blocks_per_stage")


def _check_sizes(name: str, kw: dict[str, object]) -> None:
    for key in POSITIVE_INTS:
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


def _resnext(
    arch: str,
    *,
    blocks: tuple[int, ...],
    stem: str,
    num_classes: int,
    in_channels: int,
    resolution: int,
    widen_factor: int = 4,
    base_channels: int = 64,
    stem_channels: int = 64,
    stem_stride: int = 1,
    blocks_per_stage: int | None = None,
    bn: bool = True,
) -> nn.Module:
    m, n = parse_arch(arch)
    if blocks_per_stage is not None:
        blocks = (blocks_per_stage,) * len(blocks)
    channels = tuple(base_channels * widen_factor * 2**i for i in range(len(blocks)))
    del resolution  # global average pooling: any resolution works
    return ResNeXt(
        cardinality=m,
        width=n,
        blocks=blocks,
        stage_channels=channels,
        num_classes=num_classes,
        in_channels=in_channels,
        stem=stem,
        stem_channels=stem_channels,
        stem_stride=stem_stride,
        bn=bn,
    )


@register_model("resnext29", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE)
def resnext29(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-29 (CIFAR, ImageNet32): 3 stages x 3 blocks, out 256/512/1024, 3x3 stem."""
    return _resnext(arch, blocks=(3, 3, 3), stem="cifar", **kw)  # type: ignore[arg-type]


@register_model("resnext38", default_dataset="imagenet64", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE)
def resnext38(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-38 (ImageNet64): ResNeXt-29 plus a 4th stage of 3 blocks, out 2048, stride 2."""
    return _resnext(arch, blocks=(3, 3, 3, 3), stem="cifar", **kw)  # type: ignore[arg-type]


@register_model("resnext50", default_dataset="imagenet", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE)
def resnext50(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-50 (ImageNet 224): 7x7/2 stem + max pool, stages [3, 4, 6, 3]."""
    return _resnext(arch, blocks=(3, 4, 6, 3), stem="imagenet", **kw)  # type: ignore[arg-type]


@register_model("resnext101", default_dataset="imagenet", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE)
def resnext101(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-101 (ImageNet 224): 7x7/2 stem + max pool, stages [3, 4, 23, 3]."""
    return _resnext(arch, blocks=(3, 4, 23, 3), stem="imagenet", **kw)  # type: ignore[arg-type]


@register_model("resnext11", default_dataset="mnist", probe=resnext11_probe, probe_input_shape=RESNEXT11_SHAPE)
def resnext11(arch: str, **kw: object) -> nn.Module:
    """Small CPU member: ResNeXt-29's layout, 1 block per stage, out 32/64/128, stem 16 stride 2."""
    kw.setdefault("widen_factor", 1)
    kw.setdefault("base_channels", 32)
    kw.setdefault("stem_channels", 16)
    kw.setdefault("stem_stride", 2)
    return _resnext(arch, blocks=(1, 1, 1), stem="cifar", **kw)  # type: ignore[arg-type]


@register_model("wrn", arch_kind="wrn", default_dataset="imagenet32")
def wrn(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    num_stages: int | None = None,
) -> nn.Module:
    """Wide ResNet WRN-DEPTH-K of Chrabaszcz et al. 2017 (4 stages at 64x64, else 3)."""
    depth, k = parse_wrn(arch)
    stages = num_stages if num_stages is not None else (4 if resolution >= 64 else 3)
    return WideResNet(depth, k, num_classes=num_classes, in_channels=in_channels, num_stages=stages)


@register_model("mlp", default_dataset="mnist", probe=mlp_probe, probe_input_shape=MLP_SHAPE)
def mlp(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    depth: int = 4,
    activation: str = "relu",
    parameterization: str = "standard",
    bias: bool = True,
) -> nn.Module:
    """Fully connected collegial ensemble: m paths of width n, depth 4, on flattened inputs."""
    m, n = parse_arch(arch)
    return CollegialMLP(
        in_channels * resolution * resolution,
        num_classes,
        m,
        n,
        depth=depth,
        activation=activation,  # type: ignore[arg-type]
        parameterization=parameterization,  # type: ignore[arg-type]
        bias=bias,
    )


def _add_presets() -> None:
    """One preset per model the paper names (:data:`collegial.paper.MODELS`)."""
    from collegial.paper import MODELS

    for m in MODELS:
        PRESETS[m.preset] = Preset(m.preset, m.family, m.arch, m.dataset)


_add_presets()
