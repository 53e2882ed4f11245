"""``collegial reproduce table1|table2|table3`` as a sweep: each seed of each row one run of
``--launcher``; finished runs are skipped and started ones continued, whichever launcher ran them
before; the rows' errors gathered beside the paper's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from collegial.commands import reproduce_tables as rt
from collegial.commands.common import add_output_arguments
from collegial.paper import Row, Table

TINY = Table("tiny", "a tiny table", ("top-1", "top-5"), 2,
             (Row("mlp", "1x8d", "mnist", "MLP 1x8d", "1", "0.1M", (10.0, 1.0)),
              Row("mlp", "2x4d", "mnist", "MLP 2x4d", "1", "0.1M", (11.0, 2.0))))


def _finished(folder: Path, top1: float) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"test_top1_err": top1, "test_top5_err": top1 / 10}))


def _args(target: rt._TableTarget, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    target.add_arguments(p)
    add_output_arguments(p)
    return p.parse_args(list(argv))


def test_train_seed_skips_finished_and_continues_started(tmp_path, monkeypatch) -> None:
    import collegial.train.data
    import collegial.train.loop

    seen = []

    def fake_train(cfg, recipe, data):
        seen.append((cfg.out.name, cfg.resume, cfg.overwrite, cfg.seed, cfg.device))
        (cfg.out / "result.json").write_text(json.dumps({"test_top1_err": 5.0}))
        return type("R", (), {"stopped": None})()

    monkeypatch.setattr(collegial.train.loop, "train", fake_train)
    monkeypatch.setattr(collegial.train.data, "load_dataset", lambda *a, **kw: None)
    _finished(tmp_path / "done", 7.0)
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "last.pt").write_bytes(b"x")
    (tmp_path / "new").mkdir()
    assert rt.train_seed("mlp", "1x8d", "mnist", None, 0, str(tmp_path / "done"), "cpu")["test_top1_err"] == 7.0
    assert rt.train_seed("mlp", "1x8d", "mnist", None, 1, str(tmp_path / "started"), "cpu")["test_top1_err"] == 5.0
    rt.train_seed("mlp", "1x8d", "mnist", None, 2, str(tmp_path / "new"), "cpu")
    assert seen == [("started", True, False, 1, "cpu"), ("new", False, True, 2, "cpu")]


def test_gather_means_over_the_seeds_beside_the_paper() -> None:
    res = [{"test_top1_err": v, "test_top5_err": v / 10} for v in (10.0, 12.0, 20.0, 22.0)]
    obj = rt.gather(TINY, res)
    assert [r["measured"]["top-1"]["mean"] for r in obj["rows"]] == [11.0, 21.0]
    assert obj["rows"][0]["measured"]["top-1"]["se"] == pytest.approx(1.0)
    assert obj["rows"][1]["paper"] == {"top-1": 11.0, "top-5": 2.0}
    text = rt.results_markdown(TINY, obj)
    assert "| MLP 2x4d | mnist | 11.00 | 21.00 ± 1.00 | 2.00 | 2.10 ± 0.10 |" in text


@pytest.mark.parametrize("launcher", [["--launcher", "submitit"], ["--launcher", "local", "--jobs", "2"]])
def test_a_rerun_with_another_launcher_skips_what_finished(launcher, tmp_path, monkeypatch, capsys) -> None:
    """Every run finished before (by the sequential launcher, say): the jobs of submitit's local
    executor (or --jobs 2 processes) find their results and only gather them."""
    if launcher[1] == "submitit":
        pytest.importorskip("submitit")
        monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch: submitit's local executor
    monkeypatch.setattr(rt, "missing_data", lambda table, data_dir: [])
    for i, row in enumerate(TINY.rows):
        for s in range(TINY.seeds):
            _finished(rt.run_dir(TINY, row, str(tmp_path), s), 10.0 * (i + 1) + s)
    target = rt._TableTarget(TINY)
    assert target.run(_args(target, "--data-dir", str(tmp_path), "--runs", str(tmp_path), "--device", "cpu",
                            "--json", *launcher)) == 0
    obj = json.loads(capsys.readouterr().out)
    assert [r["measured"]["top-1"]["per_seed"] for r in obj["rows"]] == [[10.0, 11.0], [20.0, 21.0]]
    assert json.loads((tmp_path / "tiny" / "results.json").read_text())["rows"] == obj["rows"]
