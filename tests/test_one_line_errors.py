"""Failures end in one line and exit code 2, never a traceback: crafted checkpoints,
impossible model sizes, degenerate NTK inputs, devices that are not there, a full disk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collegial.cli import main
from collegial.errors import UserError
from collegial.models import create_model
from collegial.ntk import empirical_ntk
from collegial.train.checkpoint import load_checkpoint, save_atomic
from collegial.train.data import synthetic_dataset
from collegial.train.loop import RunConfig, train
from collegial.train.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=128, num_test=32, seed=2)


def _run(out, **kw):
    rec = get_recipe("mnist").override(epochs=kw.pop("epochs", 1), batch_size=32, lr=0.02)
    return rec, RunConfig("mlp", "2x8d", "mnist", out, verbose=False, **kw)


@pytest.mark.parametrize("edit, msg", [
    (lambda c: c.pop("optimizer"), "lacks its optimizer"),
    (lambda c: c.pop("rng"), "lacks its rng"),
    (lambda c: c.update(epoch="abc"), "epoch must be a non-negative integer"),
    (lambda c: c.update(epoch=-3), "epoch must be a non-negative integer"),
    (lambda c: c.update(format=99), "checkpoint format 99"),
    (lambda c: c["model"].update({k: torch.zeros(1) for k in c["model"]}), "does not fit this run"),
])
def test_crafted_checkpoints_are_refused(tmp_path, data, edit, msg):
    out = tmp_path / "run"
    rec, cfg = _run(out)
    train(cfg, rec, data)
    ckpt = load_checkpoint(out / "last.pt")
    edit(ckpt)
    save_atomic(ckpt, out / "last.pt")
    rec2, cfg2 = _run(out, resume=True, epochs=2)
    with pytest.raises(UserError, match=msg):
        train(cfg2, rec2, data)


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, monkeypatch):
    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 128 vs 64")

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / "last.pt").write_bytes(b"old")
    with pytest.raises(UserError, match="is the disk full"):
        save_atomic({"model": {}}, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == b"old" and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("kw", [dict(widen_factor=0), dict(base_channels=0), dict(blocks_per_stage=0),
                                dict(num_classes=0), dict(stem_channels=-1), dict(activation="gelu")])
def test_impossible_models(kw):
    with pytest.raises(UserError, match="cannot build"):
        create_model("resnext29", arch="4x8d", dataset="cifar10", **kw)


def test_a_preset_with_a_conflicting_arch():
    with pytest.raises(UserError, match="conflicts with arch='4x8d'"):
        create_model("cifar10-resnext29-37x10d", arch="4x8d")
    assert create_model("cifar10-resnext29-37x10d", arch="37x10d") is not None


def test_degenerate_ntk_inputs():
    model = nn.Linear(3, 2)
    assert empirical_ntk(model, torch.zeros(0, 3)).shape == (0, 0)
    assert empirical_ntk(model, torch.zeros(0, 3), torch.randn(4, 3), trace=False).shape == (0, 4, 2, 2)
    for method in ("auto", "ntk_vps", "jacobian", "structured"):
        with pytest.raises(ValueError, match="batch"):
            empirical_ntk(model, torch.randn(4), method=method)
    with pytest.raises(ValueError, match="differ in input shape"):
        empirical_ntk(model, torch.randn(2, 3), torch.randn(2, 4))


@pytest.mark.parametrize("device, msg", [("meta", "invalid choice: 'meta'"), ("cuda", "no CUDA device")])
def test_ntk_dynamics_devices(device, msg, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    try:
        rc = main(["ntk-dynamics", "--device", device])
    except SystemExit as e:  # a usage error: argparse's one line
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
