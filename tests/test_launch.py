"""Sweeps' launchers (:mod:`collegial.launch`): a submitit task's time-out warning stops a
training run at a checkpoint, then the task is requeued and the same call continues from it."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from collegial.launch import _stop_then_requeue, _Task
from collegial.train.runtime import StopSignal


def _training_like(folder: str) -> str:
    """Listens for the stop request as a training run does (StopSignal); stopped, it writes its
    "checkpoint" and returns; a later call that finds the checkpoint continues from it."""
    ckpt = Path(folder) / "last.pt"
    if ckpt.exists():
        return f"continued from step {ckpt.read_text()}"
    stop = StopSignal()
    step = 0
    with stop.installed():
        while not stop.requested and step < 3000:  # at most ~30 s
            time.sleep(0.01)
            step += 1
    ckpt.write_text(str(step))
    return f"stopped by {stop.signal}" if stop.requested else "ran to the end"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_too_late_to_stop_the_run_is_delivered_again_after_it(sig) -> None:
    """A stop signal the loop never acted on (it came after its last poll) reaches the handler
    installed before the run once the run is over; one the loop acknowledged, or a stop asked
    from within the process (the launcher's warning), does not."""
    calls: list[int] = []
    previous = signal.signal(sig, lambda s, f: calls.append(s))
    try:
        with StopSignal().installed():
            signal.raise_signal(sig)  # during the last evaluation: the run finishes anyway
            assert calls == []
        assert calls == [sig]
        with StopSignal().installed() as stop:
            signal.raise_signal(sig)
            stop.acknowledge()  # the loop stopped on it, after a checkpoint
        with StopSignal().installed() as stop:
            stop.request("SIGUSR2")
        assert calls == [sig]
    finally:
        signal.signal(sig, previous)


def test_the_warning_stops_a_training_run_and_is_passed_on_after_it() -> None:
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        with _stop_then_requeue() as warned:  # no training listening: straight to submitit's handler
            signal.raise_signal(signal.SIGUSR2)
        assert calls == [signal.SIGUSR2] and warned == []
        stop = StopSignal()
        with _stop_then_requeue() as warned, stop.installed():
            signal.raise_signal(signal.SIGUSR2)
            assert stop.requested and stop.signal == "SIGUSR2"  # the training's own stop request
            assert calls == [signal.SIGUSR2]  # submitit waits for the run's checkpoint
        assert len(warned) == 2 and warned[1] == signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) is not previous  # submitit's handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_submitit_local_executor_requeues_after_the_checkpoint(tmp_path) -> None:
    """submitit's local executor sends the time-out warning 12 s into a 24 s limit: the run stops at
    its checkpoint, the task is requeued, and the requeued call continues from the checkpoint."""
    submitit = pytest.importorskip("submitit")
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import tests/
    ex = submitit.LocalExecutor(folder=str(tmp_path / "log"))
    ex.update_parameters(timeout_min=0.4, signal_delay_s=12)
    job = ex.submit(_Task(_training_like, 1), str(tmp_path))
    out = job.result()
    steps = int((tmp_path / "last.pt").read_text())
    assert out == f"continued from step {steps}" and 0 < steps < 3000
    assert "Requeued" in "".join(p.read_text() for p in (tmp_path / "log").glob("*_log.*"))
