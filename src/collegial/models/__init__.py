"""Collegial-ensemble layers, the ResNeXt / Wide ResNet / MLP families, and their registry."""

from collegial.models.arch import ArchError, format_arch, parse_arch, parse_wrn
from collegial.models.datasets import DATASETS, DatasetSpec, get_dataset_spec
from collegial.models.layers import BlockDiagonalLinear, CollegialMLP
from collegial.models.registry import (
    PRESETS,
    Preset,
    create_model,
    get_family,
    list_families,
    register_model,
    validate_arch,
)
from collegial.models.resnext import Bottleneck, ResNeXt, init_resnet_
from collegial.models.wrn import WideResNet

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
