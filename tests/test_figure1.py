"""`collegial reproduce figure1 --quick`: the pipeline, its statistics, resuming, and its errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from collegial.cli import main
from collegial.experiments import figure1 as f1
from collegial.experiments import figure1_report as report
from collegial.train.data import shipped_data_available

pytestmark = pytest.mark.usefixtures("one_thread")
needs_fashion = pytest.mark.skipif(not shipped_data_available("fashion-mnist"),
                                   reason="dataset-fashion-mnist not installed")


def test_spread_widths_keeps_the_musts_and_spreads_the_rest() -> None:
    got = f1.spread_widths(list(range(2, 129)), [128, 6], 5)
    assert len(got) == 5 and {6, 128} <= set(got) and got == sorted(got) and got[0] == 2
    assert f1.spread_widths([4, 8], [8], 5) == [4, 8]


def _pts(k: int = 5) -> list[f1.Point]:
    return [f1.Point(f"{2 ** i}x{64 // 2 ** i}d", 2 ** i, 64 // 2 ** i, 1000, 0.1 * (i + 1), 0.0) for i in range(k)]


def test_joint_seed_bootstrap_keeps_a_shared_seed_effect_out_of_the_ranks() -> None:
    """Errors = architecture effect (ordered by the variance) + a large seed effect shared by every
    architecture (seed s shares its data order): resampling the seeds jointly leaves the order
    intact, so the interval is the point; resampling each architecture's seeds on its own would
    scramble it."""
    pts = _pts()
    seed_effect = np.array([0.0, 3.0, -2.0, 5.0, 1.0])
    errors = np.array([[10 + 0.1 * i + s for s in seed_effect] for i in range(5)])
    draws = report.seed_draws(5, 400, 0)
    assert draws.shape == (400, 5)
    rows = {r["predictor"]: r for r in report.predictor_table(pts, errors, draws)}
    v = rows["block variance V1(n)/m"]
    assert v["spearman"] == pytest.approx(1.0) and v["lo"] == pytest.approx(1.0) and v["hi"] == pytest.approx(1.0)
    assert v["spearman_p"] == pytest.approx(2 / 120) and v["kendall"] == pytest.approx(1.0)
    assert rows["width n"]["spearman"] == pytest.approx(-1.0)
    assert "whole-model variance" not in rows  # not measured: no row rather than a made-up one
    independent = np.random.default_rng(0)
    scrambled = [np.corrcoef(np.argsort(np.argsort([e[independent.integers(0, 5, 5)].mean() for e in errors])),
                             np.arange(5))[0, 1] for _ in range(200)]
    assert min(scrambled) < 0.9  # what the old per-architecture resampling would have reported


def test_beyond_width_compares_the_variance_with_the_width_on_the_same_draws() -> None:
    pts = _pts()
    pts[1].variance, pts[3].variance = 0.45, 0.05  # the variance no longer follows n
    errors = np.array([[10 + 0.1 * i + 0.01 * s for s in range(4)] for i in range(5)])
    rows = report.predictor_table(pts, errors, report.seed_draws(4, 200, 0))
    bw = report.beyond_width(rows)
    assert bw is not None and bw["difference"] < 0 and bw["hi"] < 0  # n orders the errors, the variance less


def test_the_learning_rate_is_chosen_on_validation_never_on_test() -> None:
    cfg = f1.config_for("mlp", quick=True, lrs=[0.025, 0.05, 0.1], select_seeds=1)
    got = {f1.RunKey("1x8d", lr, 0): f1.RunOutcome(test=t, val=v)
           for lr, t, v in ((0.025, 5.0, 30.0), (0.05, 9.0, 20.0), (0.1, 1.0, 25.0))}
    lr, val = f1.choose_rates(cfg, ["1x8d"], got)["1x8d"]
    assert lr == 0.05 and val == {"0.025": 30.0, "0.05": 20.0, "0.1": 25.0}
    tie = {k: f1.RunOutcome(k.lr, 20.0) for k in got}  # a tie goes to the shared rate
    assert f1.choose_rates(cfg, ["1x8d"], tie)["1x8d"][0] == cfg.lr


def test_verdicts_of_the_preregistered_criteria() -> None:
    prereg = {"criteria": {"primal": {"bound": 0.0, "testable": True, "optimum": "4x8d", "baseline": "1x32d",
                                      "test": "t"},
                           "dual": {"bound": 0.3, "testable": False, "optimum": "1x32d", "baseline": "1x32d",
                                    "test": "t"}}}
    diffs = {"primal": {"mean": -0.4, "lo": -0.6, "hi": -0.1}, "dual": {"mean": 0.0, "lo": 0.0, "hi": 0.0}}
    v = report.verdict(prereg, diffs, quick=False)
    assert v["primal"]["status"] == "pass" and v["dual"]["status"].startswith("not testable")
    diffs["primal"]["hi"] = 0.05
    assert report.verdict(prereg, diffs, quick=False)["primal"]["status"] == "fail"
    assert report.verdict(prereg, diffs, quick=True)["primal"]["status"] == "smoke test: no conclusion"


def test_power_from_the_pilot() -> None:
    cfg = f1.config_for("mlp", quick=True, seeds=4, pilot_seeds=3, target_difference=0.5)
    pts = {"primal": _pts(3), "dual": _pts(3)}
    pts["primal"][0].role, pts["primal"][2].role = "baseline", "optimum"
    got = {f1.RunKey(a, cfg.lr, s): f1.RunOutcome(e, None) for a, es in
           ((pts["primal"][2].arch, [10.0, 10.2, 9.9]), (pts["primal"][0].arch, [10.5, 10.5, 10.6])) for s, e in enumerate(es)}
    p = f1.pilot(cfg, pts, got)
    d = np.array([10.0, 10.2, 9.9]) - np.array([10.5, 10.5, 10.6])
    assert p["sd"] == pytest.approx(d.std(ddof=1)) and p["seeds_needed"] == 3 and p["enough"]
    assert "needs 3 seeds; this sweep runs 4" in f1.pilot_line(p)


def test_criteria_are_written_before_any_run_trains(tmp_path, monkeypatch, capsys) -> None:
    """The pre-registered criteria are in figure1.json (and the log) when the first run starts."""
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "f1"
    seen = []

    def fake(spec, key, root, data, log):
        if not seen:
            obj = json.loads((root / "figure1.json").read_text())
            seen.append(obj)
        return f1.RunOutcome(10.0 + key.seed + 0.01 * key.lr, 11.0 - key.lr)

    monkeypatch.setattr(f1.runs, "train_one", fake)
    monkeypatch.setattr(f1, "measure_predictors", lambda cfg, curves, log: None)
    assert main(["reproduce", "figure1", "--quick", "--out", str(out), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert seen and seen[0]["status"].startswith("registered") and "curves" not in seen[0]
    assert seen[0]["preregistered"] == obj["preregistered"]
    assert set(obj["preregistered"]["criteria"]) == {"primal", "dual"}
    assert {p["lr"] for p in obj["curves"]["primal"]["points"]} == {0.1}  # least validation error
    assert all(v["status"] == "smoke test: no conclusion" for v in obj["verdict"].values())


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
    assert obj["smoke_test"] and "smoke test: no conclusion" in (out / "figure1.md").read_text()
    assert {"pooled", "shared_lr", "verdict", "preregistered", "pilot"} <= set(obj)
    for p in primal:  # each point's runs: its seeds at its chosen rate and at the shared one
        for lr in {p["lr"], obj["config"]["lr"]}:
            for s in range(2):
                r = json.loads((out / "runs" / p["arch"] / f"lr{lr:g}" / f"seed{s}" / "result.json").read_text())
                assert r["val_images"] == 128 and 0 <= r["val_top1_err"] <= 100  # held out of every run
        assert p["whole_variance"] > 0 and p["images_per_s"] > 0 and p["flops"] > 0
    # resume: a finished run is skipped, an unfinished one continues from its checkpoint
    runs = sorted((out / "runs").glob("*/lr*/seed*"))
    kept = runs[0] / "result.json"
    stamp = kept.stat().st_mtime_ns
    (runs[1] / "result.json").unlink()  # as if killed after its last checkpoint
    assert main(["reproduce", "figure1", "--quick", "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert kept.stat().st_mtime_ns == stamp and (runs[1] / "result.json").exists()
    assert again["curves"] == obj["curves"]
    # more seeds continue the sweep: every finished run is reused, the new seeds are added
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/lr*/seed*/result.json")}
    assert main(["reproduce", "figure1", "--quick", "--seeds", "3", "--out", str(out), "--json"]) == 0
    three = json.loads(capsys.readouterr().out)
    assert len(three["baseline"]["errors"]) == 3 and three["baseline"]["errors"][:2] == obj["baseline"]["errors"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # other settings into the same folder are refused, then allowed with --overwrite
    assert main(["reproduce", "figure1", "--quick", "--epochs", "2", "--out", str(out)]) == 2
    assert "other settings (epochs)" in capsys.readouterr().err
    assert main(["reproduce", "figure1", "--quick", "--epochs", "2", "--out", str(out), "--json", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["epochs"] == 2


@pytest.mark.parametrize("extra, msg", [
    (["--seeds", "1"], "--seeds must be >= 2"),
    (["--points", "1"], "--points must be >= 2"),
    (["--family", "wrn"], "no (m, n)"),
    (["--baseline", "1x256d"], "outside Algorithm 1's widths"),
    (["--family", "nope"], "unknown model family"),
    (["--val-images", "0"], "needs a validation split"),
    (["--pilot-seeds", "3"], "cannot exceed --seeds"),
    (["--target-difference", "0"], "must be > 0"),
    (["--val-images", "600"], "fewer than one batch"),
    (["--lrs", "0.1,-1"], "positive numbers"),
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
    with pytest.raises(SystemExit):  # argparse: --device is cpu or cuda
        main(["reproduce", "figure1", "--quick", "--device", "tpu", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_the_experiment_checks_the_device_with_the_one_rule(monkeypatch) -> None:
    """The library's figure1 config, the train setup and the commands share collegial.devices:
    an unknown device and an absent GPU are one line naming the argument."""
    import torch

    from collegial.devices import check_device
    from collegial.errors import UserError
    from collegial.experiments.figure1 import DEFAULTS, check_config

    with pytest.raises(UserError, match=r"`device='tpu'`: choose one of cpu, cuda"):
        check_config(dataclasses.replace(DEFAULTS["mlp"], device="tpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"`device='cuda'`: no CUDA device is available"):
        check_config(dataclasses.replace(DEFAULTS["mlp"], device="cuda"))
    assert check_device(None) == "cpu"


@pytest.mark.parametrize("launcher", [["--launcher", "local", "--jobs", "2"], ["--launcher", "submitit"]])
def test_parallel_launchers_give_the_sequential_sweep(launcher, tmp_path, monkeypatch, capsys) -> None:
    """Runs as separate jobs (2 local processes, or submitit's local executor) give the same
    figure1.json as the sequential sweep; a rerun with the other launcher skips every finished run."""
    if launcher[1] == "submitit":
        pytest.importorskip("submitit")
        from collegial.commands import reproduce_figure1 as rf1

        chosen = rf1.launcher_from_args  # pinned to submitit's local executor, even where srun is on PATH
        monkeypatch.setattr(rf1, "launcher_from_args", lambda args: dataclasses.replace(chosen(args), cluster="local"))
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["reproduce", "figure1", "--quick", "--json"]
    assert main([*argv, "--out", str(tmp_path / "seq")]) == 0
    seq = json.loads(capsys.readouterr().out)
    assert main([*argv, "--out", str(tmp_path / "par"), *launcher]) == 0
    par = json.loads(capsys.readouterr().out)
    assert par["curves"] == seq["curves"] and par["baseline"] == seq["baseline"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "par" / "runs").glob("*/lr*/seed*/result.json")}
    assert main([*argv, "--out", str(tmp_path / "par")]) == 0  # the sequential launcher reuses them all
    capsys.readouterr()
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_launcher_options_are_checked_first(tmp_path, capsys) -> None:
    assert main(["reproduce", "figure1", "--quick", "--out", str(tmp_path / "x"), "--jobs", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_pilot_only_stops_after_the_pilot(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(spec, key, root, data, log):
        calls.append(key)
        return f1.RunOutcome(10.0 + 0.3 * key.seed ** 2 + (0.5 if "x2d" in key.arch else 0.0), 11.0)

    monkeypatch.setattr(f1.runs, "train_one", fake)
    monkeypatch.setattr(f1, "measure_predictors", lambda cfg, curves, log: None)
    out = tmp_path / "f1"
    assert main(["reproduce", "figure1", "--quick", "--seeds", "3", "--pilot-seeds", "3", "--out", str(out),
                 "--pilot-only"]) == 0
    text = capsys.readouterr().out
    assert len(calls) == 6 and {k.lr for k in calls} == {0.05}  # 2 architectures x 3 seeds, the shared rate
    obj = json.loads((out / "figure1.json").read_text())
    assert obj["status"] == "registered, pilot only" and obj["pilot"]["seeds"] == 3
    assert text.startswith("pilot: paired s.d.") and "seeds" in text
