"""The one device rule, for the library and the commands: where models train and probes run.

``cpu`` or ``cuda`` (one GPU of several is chosen with ``CUDA_VISIBLE_DEVICES``; under torchrun
each process takes its ``LOCAL_RANK``), never ``cuda:K``. Messages name the library argument,
```device```; a command writes it as ``--device`` (:func:`collegial.errors.flag_message`).
"""

from __future__ import annotations

from typing import Literal

from collegial.errors import UserError

__all__ = ["DEVICES", "Device", "check_device"]

Device = Literal["cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("cpu", "cuda")


def check_device(name: str | None) -> Device:
    """``name``, by default cuda when available, else cpu; :class:`UserError` (one line) when it
    is not one of :data:`DEVICES` or it is cuda and no CUDA device is available."""
    import torch

    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in DEVICES:
        raise UserError(f"`device={device!r}`: choose one of {', '.join(DEVICES)} (a GPU with CUDA_VISIBLE_DEVICES)")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("`device='cuda'`: no CUDA device is available (use `device='cpu'`)")
    return device  # type: ignore[return-value]
