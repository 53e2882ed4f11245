"""`collegial reproduce figure1 --quick`: the pipeline, its statistics, resuming, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collegial.cli import main
from collegial.experiments import figure1 as f1
from collegial.train.data import shipped_data_available

pytestmark = pytest.mark.usefixtures("one_thread")
needs_fashion = pytest.mark.skipif(not shipped_data_available("fashion-mnist"),
                                   reason="dataset-fashion-mnist not installed")


def test_spread_widths_keeps_the_musts_and_spreads_the_rest() -> None:
    got = f1.spread_widths(list(range(2, 129)), [128, 6], 5)
    assert len(got) == 5 and {6, 128} <= set(got) and got == sorted(got) and got[0] == 2
    assert f1.spread_widths([4, 8], [8], 5) == [4, 8]


def test_statistics() -> None:
    pts = [f1.Point(f"{m}x{n}d", m, n, 0, v, 0.0, errors=e) for m, n, v, e in
           [(1, 64, 0.3, [10.0, 10.5, 9.8]), (4, 16, 0.2, [9.0, 9.2, 9.1]), (16, 4, 0.1, [8.0, 8.1, 7.9])]]
    sp = f1.spearman_interval(pts, draws=200)
    assert sp["rho"] == pytest.approx(1.0) and sp["lo"] == pytest.approx(1.0)
    d = f1.paired_difference([8.0, 8.1, 7.9], [10.0, 10.5, 9.8])
    assert d["mean"] == pytest.approx(-2.1) and d["lo"] < d["mean"] < d["hi"] < 0
    assert pts[0].error_se == pytest.approx(np.std([10.0, 10.5, 9.8], ddof=1) / np.sqrt(3))


@needs_fashion
def test_quick_sweep_end_to_end_and_resume(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "f1"
    assert main(["reproduce", "figure1", "--quick", "--out", str(out), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    for name in f1.OUT_FILES:
        assert (out / name).stat().st_size > 0
    for prob in ("primal", "dual"):
        cur = obj["curves"][prob]
        assert {"rho", "lo", "hi"} <= set(cur["spearman"]) and len(cur["points"]) == 3
        for p in cur["points"]:
            assert {"arch", "params", "variance", "variance_se", "errors", "error_mean", "error_se",
                    "minus_baseline"} <= set(p)
            assert len(p["errors"]) == 2
        assert {"mean", "lo", "hi"} <= set(obj[f"{prob}_minus_baseline"])
        roles = [p["role"] for p in cur["points"]]
        assert sum("baseline" in r for r in roles) == 1 and sum("optimum" in r for r in roles) == 1
        d = obj[f"{prob}_minus_baseline"]
        assert d["is_baseline"] == ("baseline+optimum" in roles) and d["arch"] == cur["optimum"]
    primal = obj["curves"]["primal"]["points"]
    assert max(p["params"] for p in primal) <= obj["baseline"]["params"]  # equal budget, floor rounding
    # resume: a finished run is skipped, an unfinished one continues from its checkpoint
    runs = sorted((out / "runs").glob("*/seed*"))
    assert len(runs) == len({p["arch"] for c in obj["curves"].values() for p in c["points"]}) * 2
    kept = runs[0] / "result.json"
    stamp = kept.stat().st_mtime_ns
    (runs[1] / "result.json").unlink()  # as if killed after its last checkpoint
    assert main(["reproduce", "figure1", "--quick", "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert kept.stat().st_mtime_ns == stamp and (runs[1] / "result.json").exists()
    assert again["curves"] == obj["curves"]
    # other settings into the same folder are refused, then allowed with --overwrite
    assert main(["reproduce", "figure1", "--quick", "--seeds", "3", "--out", str(out)]) == 2
    assert "other settings (seeds)" in capsys.readouterr().err
    assert main(["reproduce", "figure1", "--quick", "--seeds", "3", "--out", str(out), "--json", "--overwrite"]) == 0
    assert len(json.loads(capsys.readouterr().out)["baseline"]["errors"]) == 3


@pytest.mark.parametrize("extra, msg", [
    (["--seeds", "1"], "--seeds must be >= 2"),
    (["--points", "1"], "--points must be >= 2"),
    (["--family", "wrn"], "no (m, n)"),
    (["--baseline", "1x256d"], "outside Algorithm 1's widths"),
    (["--family", "nope"], "unknown model family"),
])
def test_errors_before_any_work(tmp_path, capsys, extra, msg) -> None:
    assert main(["reproduce", "figure1", "--quick", "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_needs_an_out_dir(capsys) -> None:
    assert main(["reproduce", "figure1", "--quick"]) == 2
    assert "--out" in capsys.readouterr().err


def test_unknown_or_missing_device(tmp_path, capsys) -> None:
    assert main(["reproduce", "figure1", "--quick", "--device", "tpu", "--out", str(tmp_path / "x")]) == 2
    assert "unknown --device" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", [["--launcher", "local", "--jobs", "2"], ["--launcher", "submitit"]])
def test_parallel_launchers_give_the_sequential_sweep(launcher, tmp_path, monkeypatch, capsys) -> None:
    """Runs as separate jobs (2 local processes, or submitit's local executor where no Slurm is
    found) give the same figure1.json as the sequential sweep; a rerun with the other launcher
    skips every finished run."""
    if launcher[1] == "submitit":
        pytest.importorskip("submitit")
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["reproduce", "figure1", "--quick", "--json"]
    assert main([*argv, "--out", str(tmp_path / "seq")]) == 0
    seq = json.loads(capsys.readouterr().out)
    assert main([*argv, "--out", str(tmp_path / "par"), *launcher]) == 0
    par = json.loads(capsys.readouterr().out)
    assert par["curves"] == seq["curves"] and par["baseline"] == seq["baseline"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "par" / "runs").glob("*/seed*/result.json")}
    assert main([*argv, "--out", str(tmp_path / "par")]) == 0  # the sequential launcher reuses them all
    capsys.readouterr()
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_launcher_options_are_checked_first(tmp_path, capsys) -> None:
    assert main(["reproduce", "figure1", "--quick", "--out", str(tmp_path / "x"), "--jobs", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
