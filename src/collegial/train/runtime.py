"""What a training run sets up around itself: signals that end in a checkpoint
(:class:`StopSignal`), deterministic algorithms, and what the CPU computes natively."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["StopSignal", "cpu_has_bf16", "deterministic_algorithms"]


class StopSignal:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a flag the loop polls, so both end in a checkpoint;
    a second Ctrl-C interrupts at once. Only installable from the main thread.

    The loop calls :meth:`acknowledge` when it stops on the request. A signal that arrives after
    the loop's last poll (during the last evaluation) finds the run finishing anyway: it is
    delivered again, to the handler that was installed before, once the run has written its
    result, so that the process (a sweep of many runs) stops as it was asked to.
    :meth:`request` is a stop asked from within the process (a launcher's time-out warning),
    which is not delivered again."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self.signal = "SIGTERM"
        self._previous: dict[int, Any] = {}
        self._received: int | None = None
        self._acknowledged = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop without waiting for the checkpoint
        self.requested = True
        self.signal = signal.Signals(signum).name
        self._received = signum

    def request(self, name: str) -> None:
        """Ask the run to stop at its next step, as a signal would, without the signal."""
        self.requested = True
        self.signal = name

    def acknowledge(self) -> None:
        """The loop has stopped on the request (after its checkpoint)."""
        self._acknowledged = True

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            if main:
                for sig, prev in self._previous.items():
                    signal.signal(sig, prev)
                if self._received is not None and not self._acknowledged:
                    signal.raise_signal(self._received)  # arrived too late to stop the run


@contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` (and cuDNN's autotuner only when not
    deterministic on CUDA) for the ``with`` block; the previous settings after it."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); ``True`` when unknown."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if not any(found):
        return True
    return any(f() for f in found if f is not None)
