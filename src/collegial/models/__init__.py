"""Collegial-ensemble layers, the ResNeXt / Wide ResNet / MLP families, and their registry.

:mod:`collegial.models.registry` is the mechanism (``register_model``, ``create_model``,
presets); each family registers itself in its own module when that module is imported. They
are imported here in this order, which is the order of :func:`list_families`: the ResNeXts
(:mod:`~collegial.models.resnext`), the Wide ResNet (:mod:`~collegial.models.wrn`), the MLP
(:mod:`~collegial.models.mlp`).
"""

from collegial.models.arch import ArchError, format_arch, parse_arch, parse_wrn
from collegial.models.datasets import DATASETS, DatasetSpec, get_dataset_spec
from collegial.models.layers import BlockDiagonalLinear, CollegialMLP
from collegial.models.registry import (
    PRESETS,
    Preset,
    SmallConfig,
    create_model,
    get_family,
    list_families,
    register_model,
    validate_arch,
)
from collegial.models.resnext import Bottleneck, ResNeXt, init_resnet_  # registers the ResNeXts
from collegial.models.wrn import WideResNet  # registers wrn
from collegial.models import mlp as _mlp  # noqa: E402, F401 - registers mlp, after wrn

__all__ = [
    "ArchError",
    "BlockDiagonalLinear",
    "Bottleneck",
    "CollegialMLP",
    "DATASETS",
    "DatasetSpec",
    "PRESETS",
    "Preset",
    "ResNeXt",
    "SmallConfig",
    "WideResNet",
    "create_model",
    "format_arch",
    "get_dataset_spec",
    "get_family",
    "init_resnet_",
    "list_families",
    "parse_arch",
    "parse_wrn",
    "register_model",
    "validate_arch",
]
