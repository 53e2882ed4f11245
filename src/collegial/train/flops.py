"""Peak FLOP/s of the device, the denominator of the training loop's MFU.

The FLOPs of a model (the numerator, per image) are counted in :mod:`collegial.models.costs`
(:func:`~collegial.models.costs.train_flops_per_image`).
"""

from __future__ import annotations

import torch

__all__ = ["peak_flops"]

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
