"""``train --seeds K`` under a launcher: each seed is a job (``_seed_job``) that submitit may run
again (requeued after a time-out or a preemption); a job whose folder holds its own checkpoint
continues it instead of being refused or starting over."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from collegial.cli import main
from collegial.commands import train as train_cmd
from collegial.train.data import synthetic_dataset
from collegial.train.loop import RunConfig
from collegial.train.recipes import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    return synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=32)


def _epochs(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def _stored_recipe(folder: Path, **changes) -> Recipe:
    stored = json.loads((folder / "config.json").read_text())["recipe"]
    return Recipe(**{**stored, "milestones": tuple(stored["milestones"])}).override(**changes)


@pytest.fixture
def first_run(tmp_path, monkeypatch, capsys) -> Path:
    """A finished one-epoch seed 0 of a two-seed run: DIR/seed0 holds last.pt."""
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: _data())
    argv = ["train", "mlp", "1x8d", "--batch-size", "32", "--epochs", "1", "--seeds", "2", "--no-progress",
            "--device", "cpu", "--out", str(tmp_path / "base")]
    assert main(argv) == 0
    capsys.readouterr()
    return tmp_path / "base" / "seed0"


def _cfg(out: Path, **changes) -> RunConfig:
    return RunConfig(family="mlp", arch="1x8d", dataset="mnist", out=out, seed=0, device="cpu", progress=False,
                     **changes)


def test_a_requeued_seed_job_continues_its_checkpoint(first_run) -> None:
    """The same call again (resume and overwrite as the command gave them: neither) finds the
    job's last.pt and continues it: epoch 1 is the stored one, epoch 2 is new."""
    before = _epochs(first_run)
    res = train_cmd._seed_job(_cfg(first_run), _stored_recipe(first_run, epochs=2), None, None, None, time.time())
    after = _epochs(first_run)
    assert len(before) == 1 and len(after) == 2 and after[0] == before[0]
    assert res.stopped is None and res.test_top1_err == json.loads((first_run / "result.json").read_text())[
        "test_top1_err"]


def test_with_overwrite_only_a_checkpoint_of_this_command_is_continued(first_run) -> None:
    """--overwrite: a last.pt older than the submission is the run being started over (another
    learning rate shows it is redone, not continued); one written after it is the job's own."""
    before = _epochs(first_run)
    mtime = (first_run / "last.pt").stat().st_mtime
    recipe = _stored_recipe(first_run, epochs=2)
    train_cmd._seed_job(_cfg(first_run, overwrite=True), recipe, None, None, None, mtime - 1)  # its own: continued
    assert _epochs(first_run)[0] == before[0] and len(_epochs(first_run)) == 2
    os.utime(first_run / "last.pt", (mtime, mtime))
    other = _stored_recipe(first_run, epochs=1, lr=recipe.lr / 2)
    train_cmd._seed_job(_cfg(first_run, overwrite=True), other, None, None, None, time.time() + 1)  # older: redone
    redone = _epochs(first_run)
    assert len(redone) == 1 and redone[0]["lr"] == other.lr and redone[0] != before[0]
