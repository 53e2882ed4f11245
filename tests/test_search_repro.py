"""`collegial reproduce search|costs`: the paper's optima against ours, scans, and the dispatch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collegial.cli import main
from collegial.commands.reproduce import TARGETS, load_target
from collegial.experiments import search_repro as sr
from collegial.paper import printed_models
from collegial.search.result import Candidate
from collegial.ntk.curve import AlphaFit, synthetic_fit
from collegial.search.variance import synthetic_curve

WIDTHS = [2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128]


def alpha_obj(alpha=2.5, rel=0.03, widths=WIDTHS):
    """A schema-2 alpha.json whose table follows prop1 exactly, with ``rel`` relative standard errors."""
    return synthetic_fit(lambda n: np.expm1(alpha / n), widths, rel_stderr=rel).to_dict()

CIFAR = sr.SETTINGS[:2]  # CIFAR-10 with parameter and FLOP budgets (one cost table)


def _cand(arch: str) -> Candidate:
    m, n = (int(x) for x in arch[:-1].split("x"))
    return Candidate(arch, m, n, 0, 0, 0.0, 1.0)


def test_match_status():
    assert sr.match_status("37x10d", _cand("37x10d"), []) == "yes"
    assert sr.match_status("37x10d", _cand("33x11d"), ["33x11d", "37x10d"]) == "in set"
    assert sr.match_status("37x10d", _cand("33x11d"), ["47x8d"]) == "no"


def test_settings_are_the_papers():
    got = {(s.dataset, s.baseline, s.budget): (s.primal, s.dual) for s in sr.SETTINGS}
    assert got == {
        ("cifar10", "1x128d", "params"): ("37x10d", "10x10d"),
        ("cifar10", "1x128d", "flops"): ("44x8d", None),
        ("imagenet32", "1x128d", "params"): ("37x10d", "10x10d"),
        ("imagenet64", "1x96d", "params"): ("22x10d", "8x10d"),
        ("imagenet64", "1x128d", "params"): ("37x10d", "10x10d"),
    }


def test_prop1_cannot_give_the_papers_cifar_dual():
    """exp(a/n) - 1 makes V1(10)/V1(128) >= 12.8 for every a > 0, so 10x10d (which needs a ratio
    <= 10) is out of reach; the primal 37x10d needs 1.96 <= alpha <= 3.95."""
    scan = sr.alpha_scan(settings=CIFAR)
    by = {(x["setting"], x["problem"]): x for x in scan["per_optimum"]}
    assert by[("CIFAR-10, params", "dual")]["alpha_ranges"] == []
    (lo, hi), = by[("CIFAR-10, params", "primal")]["alpha_ranges"]
    assert lo == pytest.approx(1.96) and hi == pytest.approx(3.95)
    (lo, hi), = by[("CIFAR-10, FLOPs", "primal")]["alpha_ranges"]
    assert 1.5 < lo < hi < 1.85  # 44x8d
    a = np.linspace(0.05, 40, 200)
    n10, n128 = np.expm1(a / 10), np.expm1(a / 128)
    assert np.all(n10 / n128 >= 12.8)


def test_a_flatter_fit2_curve_reproduces_the_cifar_pair():
    """The fit2 region the scan reports (p = 0.73, alpha = 4.7) gives 37x10d and 10x10d."""
    c = synthetic_curve(lambda n: n**-0.73 * np.exp(4.7 / n), np.arange(2, 129), model="fit2", draws=10)
    rows, _ = sr.run_settings(c, settings=CIFAR[:1])
    assert [(r.problem, r.ours.arch, r.match) for r in rows] == [
        ("primal", "37x10d", "yes"), ("dual", "10x10d", "yes")]
    scan = sr.fit2_scan(settings=CIFAR[:1])
    assert scan["best"] == 2 and scan["best_region"]["p"][0] <= 0.73 <= scan["best_region"]["p"][1]


def test_reproduce_search_report():
    fit = AlphaFit.from_dict(alpha_obj())
    text, summary, results = sr.reproduce_search(fit, model="prop1", draws=50, settings=CIFAR)
    assert summary["matches"] == {"exact": 1, "within_optimal_set": 1, "total": 3}
    assert [r["match"] for r in summary["rows"]] == ["yes", "no", "no"]
    assert "| CIFAR-10, params | primal | floor | 37x10d | 37x10d | 37x10d | yes |" in text
    assert set(summary["per_model"]) == {f"{m}/{s}" for m in ("prop1", "fit2", "smooth", "empirical")
                                         for s in ("integer", "relaxed")}
    r = summary["dual_ratios"][0]
    assert r["ratio"] == pytest.approx(np.expm1(0.25) / np.expm1(2.5 / 128))
    assert r["table_ratio"] == pytest.approx(r["ratio"]) and r["table_ratio_se"] > 0
    assert len(results) == 2


def test_reproduce_dispatch_lists_targets():
    assert {"search", "costs"} <= set(TARGETS)
    for ref in TARGETS.values():
        t = load_target(ref)
        assert callable(t.run) and callable(t.add_arguments) and t.help


def test_reproduce_costs_cli(capsys, tmp_path):
    assert main(["reproduce", "costs", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["matches"] == out["total"] == len(printed_models())
    assert (tmp_path / "costs.md").read_text().count("| yes |") == out["total"]
    assert main(["reproduce", "costs", "--out", str(tmp_path)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_reproduce_search_cli(capsys, tmp_path):
    f = tmp_path / "alpha.json"
    f.write_text(json.dumps(alpha_obj(widths=WIDTHS)))
    out = tmp_path / "repro"
    assert main(["reproduce", "search", "--alpha-file", str(f), "--variance", "prop1", "--draws", "50",
                 "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["matches"]["total"] == 9 and len(summary["rows"]) == 9
    assert summary["matches"]["exact"] == 3  # prop1 alpha=2.5: the three 37x10d primals
    assert (out / "search.md").read_text().startswith("Variance model **prop1**")
    assert len(list(out.glob("*.png"))) == 10
