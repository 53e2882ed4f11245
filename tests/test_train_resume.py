"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted run.

Three subprocesses (one thread each, deterministic CPU mode): an uninterrupted run; a run that
pauses in the middle of epoch 3 (after epoch 2's checkpoint is on disk) and is SIGKILLed there;
and ``--resume`` of the killed run. The final ``state_dict``s must be ``torch.equal``. The model
has BatchNorm (running statistics), the data random crops and flips, the schedule a milestone.

This file is also the driver: ``python tests/test_train_resume.py OUT EPOCHS [--resume]
[--pause-at-step K]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

EPOCHS = 4
TRAIN, BATCH = 192, 32  # 6 steps per epoch
PAUSE_STEP = 2 * (TRAIN // BATCH) + 3  # epoch 3, step 3


def _driver(argv: list[str]) -> None:
    import collegial.train.loop as loop
    from collegial.train.data import synthetic_dataset
    from collegial.train.loop import RunConfig, train
    from collegial.train.recipes import get_recipe

    out, epochs = Path(argv[0]), int(argv[1])
    pause = int(argv[argv.index("--pause-at-step") + 1]) if "--pause-at-step" in argv else 0
    if pause:  # stand still mid-epoch (after `pause - 1` steps) until the test kills us

        class PausingF:
            calls = 0

            def __getattr__(self, name):
                return getattr(torch.nn.functional, name)

            def cross_entropy(self, logits, y, reduction="mean"):
                if reduction == "mean":
                    PausingF.calls += 1
                    if PausingF.calls == pause:
                        (out / "PAUSED").write_text("1")
                        time.sleep(600)
                return torch.nn.functional.cross_entropy(logits, y, reduction=reduction)

        loop.F = PausingF()  # type: ignore[assignment]
    data = synthetic_dataset(
        name="mnist", channels=1, resolution=28, num_train=TRAIN, num_test=64, seed=3
    )
    recipe = get_recipe("mnist").override(
        epochs=epochs, batch_size=BATCH, lr=0.05, milestones=(3,), crop_padding=2, flip=True
    )
    cfg = RunConfig(
        "resnext11",
        "2x4d",
        "mnist",
        out,
        seed=7,
        resume="--resume" in argv,
        verbose=False,
        model_kwargs={"base_channels": 8, "stem_channels": 8},
    )
    train(cfg, recipe, data)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, __file__, *args], env=_env(), capture_output=True, text=True,
        timeout=300, check=check,
    )


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(str(full), str(EPOCHS))

    killed.mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, str(killed), str(EPOCHS), "--pause-at-step", str(PAUSE_STEP)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (killed / "PAUSED").exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "run never reached the pause point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(killed / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (2, 0)  # the last epoch boundary
    assert not (killed / "result.json").exists()

    res = _run(str(killed), str(EPOCHS), "--resume")
    assert res.returncode == 0, res.stderr[-2000:]

    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert a["model"].keys() == b["model"].keys()
    assert any("running_mean" in k for k in a["model"])  # BatchNorm buffers are compared too
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    ra = json.loads((full / "result.json").read_text())
    rb = json.loads((killed / "result.json").read_text())
    assert ra["test_top1_err"] == rb["test_top1_err"] and ra["test_loss"] == rb["test_loss"]
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == list(range(1, EPOCHS + 1))


def test_checkpoint_file_is_replaced_atomically(tmp_path):
    """The temp file is renamed over last.pt: no partial file or leftover temp is ever seen."""
    from collegial.train.checkpoint import save_atomic

    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.zeros(3)}, "epoch": 1}, path)
    save_atomic({"model": {"w": torch.ones(3)}, "epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unreadable_checkpoint_is_a_user_error(tmp_path):
    from collegial.errors import UserError
    from collegial.train.checkpoint import load_checkpoint

    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


if __name__ == "__main__":
    _driver(sys.argv[1:])
