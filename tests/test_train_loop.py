"""The training loop in-process: files, checkpoints, resume (epoch boundary and SIGTERM
mid-epoch), non-finite loss, refusal to overwrite, and learning on synthetic data."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from collegial.errors import UserError
from collegial.models import create_model
from collegial.train import loop
from collegial.train.checkpoint import load_checkpoint
from collegial.train.data import synthetic_dataset
from collegial.train.loop import RunConfig, TrainingDiverged, train
from collegial.train.recipes import get_recipe


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(
        name="mnist", channels=1, resolution=28, num_train=384, num_test=128, seed=1
    )


def _recipe(**kw):
    base = dict(epochs=3, batch_size=32, lr=0.02, milestones=(2,), gamma=0.5)
    base.update(kw)
    return get_recipe("mnist").override(**base)


def _cfg(out: Path, family: str = "mlp", arch: str = "2x16d", **kw) -> RunConfig:
    kw.setdefault("verbose", False)
    return RunConfig(family, arch, "mnist", out, **kw)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_writes_metrics_checkpoint_and_result(tmp_path, data):
    res = train(_cfg(tmp_path / "run"), _recipe(), data)
    out = tmp_path / "run"
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    rec = _recipe()
    assert [r["lr"] for r in lines] == [rec.lr_at(e) for e in range(3)] == [0.02, 0.02, 0.01]
    for r in lines:
        assert 0 <= r["test_top1_err"] <= 100 and 0 <= r["test_top5_err"] <= r["test_top1_err"]
        assert r["images_per_s"] > 0 and math.isfinite(r["train_loss"])
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["batch"] == 0
    fresh = create_model("mlp", arch="2x16d", dataset="mnist")
    fresh.load_state_dict(ckpt["model"])  # bare keys: no DDP/compile prefixes
    result = json.loads((out / "result.json").read_text())
    assert result["test_top1_err"] == res.test_top1_err == lines[-1]["test_top1_err"]
    assert json.loads((out / "config.json").read_text())["recipe"]["lr"] == 0.02


def test_learns_synthetic_data(tmp_path, data):
    """Class-dependent brightness is easy: well below the 90% chance error after 4 epochs."""
    res = train(_cfg(tmp_path / "r"), _recipe(epochs=4, lr=0.01, milestones=()), data)
    first, last = res.history[0], res.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["test_top1_err"] < 75.0


def test_refuses_to_overwrite_without_flag(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(_cfg(out), _recipe(epochs=1), data)
    assert (out / "last.pt").read_bytes() == before
    res = train(_cfg(out, overwrite=True), _recipe(epochs=1), data)
    assert res.epochs == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_from_epoch_boundary_is_bit_exact(tmp_path, data):
    """2 epochs, then resume to 3 (only --epochs changes) == 3 epochs straight; BatchNorm on."""
    small_model = {"base_channels": 8, "stem_channels": 8}
    kw = dict(family="resnext11", arch="2x4d", model_kwargs=small_model)
    small = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=96, num_test=32)
    rec = _recipe(epochs=3, batch_size=32, crop_padding=2, flip=True)
    full = train(_cfg(tmp_path / "full", **kw), rec, small)
    train(_cfg(tmp_path / "part", **kw), rec.override(epochs=2), small)
    resumed = train(_cfg(tmp_path / "part", resume=True, **kw), rec, small)
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    _assert_same_weights(a["model"], b["model"])
    errs = [r["test_top1_err"] for r in full.history]
    assert [r["test_top1_err"] for r in resumed.history] == errs
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]


def test_resume_refuses_a_different_recipe_or_model(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    with pytest.raises(UserError, match="lr"):
        train(_cfg(out, resume=True), _recipe(epochs=2, lr=0.5), data)
    with pytest.raises(UserError, match="arch"):
        train(_cfg(out, arch="4x16d", resume=True), _recipe(epochs=2), data)


class _FakeF:
    """``torch.nn.functional`` whose training cross-entropy misbehaves at call ``at``."""

    def __init__(self, at: int, action: str) -> None:
        self.calls, self.at, self.action = 0, at, action

    def __getattr__(self, name):
        return getattr(F, name)

    def cross_entropy(self, logits, y, reduction="mean"):
        loss = F.cross_entropy(logits, y, reduction=reduction)
        if reduction != "mean":  # evaluation
            return loss
        self.calls += 1
        if self.calls == self.at:
            if self.action == "nan":
                return loss * float("nan")
            signal.raise_signal(signal.SIGINT if self.action == "sigint" else signal.SIGTERM)
        return loss


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
    steps = 384 // 32
    monkeypatch.setattr(loop, "F", _FakeF(at=steps + 3, action="nan"))  # epoch 2, step 3
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="not finite at epoch 2 step 3"):
        train(_cfg(out), _recipe(), data)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["batch"] == 0
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (out / "result.json").exists()


def test_sigterm_checkpoints_mid_epoch_and_resume_is_bit_exact(tmp_path, data, monkeypatch):
    rec = _recipe(epochs=2, crop_padding=2, flip=True)
    full = train(_cfg(tmp_path / "full"), rec, data)
    monkeypatch.setattr(loop, "F", _FakeF(at=5, action="sigterm"))
    stopped = train(_cfg(tmp_path / "run"), rec, data)
    assert stopped.stopped == "SIGTERM"
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    monkeypatch.setattr(loop, "F", F)
    resumed = train(_cfg(tmp_path / "run", resume=True), rec, data)
    assert resumed.stopped is None
    _assert_same_weights(
        load_checkpoint(tmp_path / "full" / "last.pt")["model"],
        load_checkpoint(tmp_path / "run" / "last.pt")["model"],
    )
    for a, b in zip(full.history, resumed.history, strict=True):
        for key in ("train_loss", "train_top1_err", "test_loss", "test_top1_err"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), key


def test_sigterm_during_the_last_evaluation_finishes_the_run_then_reaches_the_caller(tmp_path, data, monkeypatch):
    """Too late to stop the run (its last poll is behind it): the run writes its result, and the
    signal then reaches the handler installed before it, so a sweep of runs stops too."""
    evaluate = loop._evaluate_all

    def late_signal(ctx, trainee, loaders):
        out = evaluate(ctx, trainee, loaders)
        signal.raise_signal(signal.SIGTERM)
        return out

    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        monkeypatch.setattr(loop, "_evaluate_all", late_signal)
        res = train(_cfg(tmp_path / "run"), _recipe(epochs=1), data)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert res.stopped is None and (tmp_path / "run" / "result.json").is_file()
    assert calls == [signal.SIGTERM]


def test_data_and_model_shapes_must_agree(tmp_path):
    cifar_like = synthetic_dataset(name="x", channels=3, resolution=32, num_train=64, num_test=8)
    with pytest.raises(UserError, match="expects"):
        train(_cfg(tmp_path / "r"), _recipe(epochs=1), cifar_like)


def test_amp_and_channels_last_run(tmp_path):
    small = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=32)
    kw = dict(model_kwargs={"base_channels": 8, "stem_channels": 8})
    res = train(
        _cfg(tmp_path / "r", "resnext11", "2x4d", amp=True, channels_last=True, **kw),
        _recipe(epochs=1),
        small,
    )
    assert math.isfinite(res.test_loss)


# ---- no lost work: a resume that cannot continue and an invalid --overwrite refuse and keep the run;
# Ctrl-C checkpoints mid-epoch and the resume continues bit-exactly


def test_resume_without_a_readable_checkpoint_refuses_and_keeps_everything(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    (out / "last.pt").unlink()
    before = {f: (out / f).read_bytes() for f in ("metrics.jsonl", "result.json", "config.json")}
    with pytest.raises(UserError, match="last.pt is missing.*nothing was changed"):
        train(_cfg(out, resume=True), _recipe(epochs=2), data)
    (out / "last.pt").symlink_to(tmp_path / "nowhere.pt")
    with pytest.raises(UserError, match="dangling symlink"):
        train(_cfg(out, resume=True), _recipe(epochs=2), data)
    assert {f: (out / f).read_bytes() for f in before} == before
    # an empty folder under --resume simply starts the run
    res = train(_cfg(tmp_path / "fresh", resume=True), _recipe(epochs=1), data)
    assert res.epochs == 1 and (tmp_path / "fresh" / "result.json").exists()


def test_overwrite_validates_before_deleting(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    before = (out / "result.json").read_bytes()
    with pytest.raises(UserError):  # a batch larger than the training set: invalid
        train(_cfg(out, overwrite=True), _recipe(epochs=1, batch_size=4096), data)
    assert (out / "result.json").read_bytes() == before and (out / "last.pt").exists()
    train(_cfg(out, overwrite=True), _recipe(epochs=2), data)  # a valid one does start over
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_checkpoints_mid_epoch_and_resume_is_bit_exact(tmp_path, data, monkeypatch):
    rec = _recipe(epochs=2)
    full = train(_cfg(tmp_path / "full"), rec, data)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    monkeypatch.setattr(loop, "F", _FakeF(at=4, action="sigint"))
    stopped = train(_cfg(tmp_path / "run"), rec, data)
    assert stopped.stopped == "SIGINT"
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 4)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    monkeypatch.setattr(loop, "F", F)
    train(_cfg(tmp_path / "run", resume=True), rec, data)
    _assert_same_weights(
        load_checkpoint(tmp_path / "full" / "last.pt")["model"],
        load_checkpoint(tmp_path / "run" / "last.pt")["model"],
    )
    assert full.epochs == 2


# ---- what a run depends on (data, settings), its files' integrity, its folder


def test_resume_checks_data_and_numerics(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    other = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=256, num_test=128, seed=1)
    with pytest.raises(UserError, match="data="):
        train(_cfg(out, resume=True), _recipe(epochs=2), other)
    with pytest.raises(UserError, match="channels_last="):
        train(_cfg(out, resume=True, channels_last=True), _recipe(epochs=2), data)
    train(_cfg(out, resume=True), _recipe(epochs=2), data)  # the same data and numerics go on


def test_a_flipped_byte_in_the_checkpoint_is_caught(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    raw = bytearray((out / "last.pt").read_bytes())
    import zipfile

    with zipfile.ZipFile(out / "last.pt") as zf:  # flip one byte inside a tensor's data
        info = max(zf.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0x01
    (out / "last.pt").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt checkpoint"):
        load_checkpoint(out / "last.pt")
    with pytest.raises(UserError, match="corrupt checkpoint"):
        train(_cfg(out, resume=True), _recipe(epochs=2), data)


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, data):
    import fcntl
    import os

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"4242", 0)
    try:
        with pytest.raises(UserError, match=r"in use by another run \(pid 4242\)"):
            train(_cfg(out), _recipe(epochs=1), data)
        assert not (out / "config.json").exists()
    finally:
        os.close(fd)
    train(_cfg(out), _recipe(epochs=1), data)  # free again


def test_killed_writes_leave_no_temporary_files_behind(tmp_path, data):
    out = tmp_path / "run"
    train(_cfg(out), _recipe(epochs=1), data)
    (out / ".last.pt.tmp-99999").write_bytes(b"x" * 1000)
    train(_cfg(out, resume=True), _recipe(epochs=2), data)
    assert not list(out.glob(".*.tmp-*"))
