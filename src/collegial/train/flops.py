"""FLOPs of a model, counted on the meta device (no memory, no compute), for images/s -> MFU.

Convention (SPEC section 2): 2 x multiply-adds of conv and linear layers (also ``bmm`` /
``baddbmm`` of the block-diagonal layers) for one image. A training step is taken as 3 x the
forward FLOPs (forward + input and weight gradients), the usual convention: torch's
``FlopCounterMode`` over-counts the backward of grouped convolutions (it reports ~7.9x the
forward for ResNeXt-29 37x10d, 3.0x for 1x128d), so the backward is not counted directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from collegial.models import create_model, get_dataset_spec

__all__ = ["forward_flops", "train_flops_per_image", "peak_flops"]


def forward_flops(family: str, arch: str, dataset: str, **model_kwargs: Any) -> int:
    """Forward FLOPs of one image at ``dataset``'s resolution (built on the meta device)."""
    spec = get_dataset_spec(dataset)
    res = int(model_kwargs.get("resolution", spec.resolution))  # type: ignore[arg-type]
    chans = int(model_kwargs.get("in_channels", spec.in_channels))  # type: ignore[arg-type]
    with torch.device("meta"):
        model = create_model(family, arch=arch, dataset=dataset, **model_kwargs)
        x = torch.empty(1, chans, res, res)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(x)
    return int(counter.get_total_flops())


def train_flops_per_image(family: str, arch: str, dataset: str, **model_kwargs: Any) -> int:
    """FLOPs of one training step per image: 3 x :func:`forward_flops`."""
    return 3 * forward_flops(family, arch, dataset, **model_kwargs)


#: Dense peak FLOP/s of known accelerators: (bf16 tensor cores, TF32 tensor cores).
_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
}


def peak_flops(device: torch.device, amp: bool) -> float | None:
    """Peak FLOP/s of a known CUDA device in the precision used (bf16 under ``amp``, else TF32,
    which cuDNN uses for fp32 convolutions by default); ``None`` when unknown (e.g. CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, tf32) in _PEAKS.items():
        if key in name:
            return bf16 if amp else tf32
    return None
