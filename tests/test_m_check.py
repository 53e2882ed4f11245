"""The 1/m law at the answers (``collegial.search.m_check``): the ratio and its standard error, the
note on the answer's first line, the re-solve with the measured correction, the measurement's
conventions (Algorithm 1's) and a tiny real run through ``collegial search``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from collegial.cli import main
from collegial.ntk.alpha import measure_points, run_algorithm1
from collegial.ntk.curve import MLawPoint
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.variance import NormalizedVariance
from collegial.errors import UserError
from collegial.search.m_check import (
    cached_measure,
    check_answers,
    correct,
    checked_by_default,
    dedicated,
    fit_lam,
    format_m_check,
    points_to_measure,
    run_m_check,
)
from collegial.search.solve import search
from collegial.search.result import format_answer
from collegial.search.variance import synthetic_curve

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = 4


class Table:
    """``A + m B(n)``, ``B(n) = 9 n^2 + 512 n`` (a bottleneck-like cost), params and flops alike."""

    def fixed(self, kind: str) -> int:
        return 100_000

    def per_path(self, kind: str, n) -> np.ndarray:
        n = np.atleast_1d(np.asarray(n, dtype=np.int64))
        return 9 * n * n + 512 * n


def v1(n):
    return np.expm1(2.5 / np.asarray(n, dtype=np.float64))


def _search(widths=np.arange(2, 129), model="empirical"):
    curve = synthetic_curve(v1, widths, model=model, rel_stderr=0.02, draws=20)
    return search("resnext29", "cifar10", "1x128d", curve, table=Table()), curve


def synthetic_measure(c, rel_se=0.01, calls=None):
    """``V(m, n) = c(m, n) V1(n) / m`` exactly for every pair, each with relative error ``rel_se``."""

    def measure(points):
        if calls is not None:
            calls.append(list(points))
        out = {}
        for m, n in points:
            v = float(c(m, n) * v1(n) / m)
            out[(m, n)] = [NormalizedVariance(v, rel_se * v, 1.0, v, 100) for _ in range(PAIRS)]
        return out

    return measure


def test_ratio_and_its_stderr_on_a_synthetic_measurement():
    res, curve = _search()
    assert res.primal.m > 1 and res.dual.m > 1
    calls = []
    mc = check_answers(res, curve, synthetic_measure(lambda m, n: 1.3, calls=calls))
    # every answer's width is in the table: only the answers themselves are measured
    assert calls == [[(res.primal.m, res.primal.n), (res.dual.m, res.dual.n)]]
    fit = curve.fit
    for chk, cand in zip(mc.checks, (res.primal, res.dual)):
        assert chk.v1_source == "table" and chk.point.m == cand.m and chk.point.n == cand.n
        assert chk.point.ratio == pytest.approx(1.3, rel=1e-9)
        se1 = fit.stderr[fit.widths.index(cand.n)] / fit.variance[fit.widths.index(cand.n)]
        sem = 0.01 / math.sqrt(PAIRS)  # identical pairs: the pooled error is the Monte Carlo part
        assert chk.point.ratio_stderr == pytest.approx(1.3 * math.hypot(se1, sem), rel=1e-6)
        assert chk.departs


def test_a_width_outside_the_table_measures_v1_there():
    widths = np.array([2, 4, 8, 16, 32, 64, 128])
    res, curve = _search(widths, model="prop1")
    assert res.primal.n not in curve.fit.widths
    pts = points_to_measure(res, curve.fit)
    assert (1, res.primal.n) in pts and (res.primal.m, res.primal.n) in pts
    # V(1, n) measured 20% above the curve: the ratio is taken against the measurement
    mc = check_answers(res, curve, synthetic_measure(lambda m, n: 1.2 if m == 1 else 1.2))
    chk = mc.checks[0]
    assert chk.v1_source == "measured" and chk.point.ratio == pytest.approx(1.0, rel=1e-9)
    assert not chk.departs


@pytest.mark.parametrize(("c", "rel_se", "noted"), [(1.3, 0.01, True), (0.7, 0.01, True), (1.05, 0.001, False),
                                                     (1.3, 0.3, False)])
def test_first_line_note_only_where_the_law_departs(c, rel_se, noted):
    res, curve = _search()
    mc = run_m_check(res, curve, synthetic_measure(lambda m, n: c, rel_se), Table())
    res.notes = mc.notes()
    first = format_answer(res).splitlines()[0]
    if noted:
        assert first.startswith(f"note: at {res.primal.arch} (primal) the block's variance is {c:.2f} ± ")
        assert f"at {res.dual.arch} (dual)" in first and "the 1/m law does not hold there" in first
        fix = mc.correction
        if c > 1:
            assert f"re-solved with the measured correction: primal {fix.primal.arch}, dual {fix.dual.arch}" in first
        else:  # fewer variance than the law says: no correction, the answers stand
            assert fix.lam == 0 and (fix.primal.arch, fix.dual.arch) == (res.primal.arch, res.dual.arch)
            assert first.endswith("V1(n)/m overstates the variance there, and the answers stand")
    else:
        assert res.notes == [] and first.startswith("primal ")
        assert mc.correction is None
    assert "1/m law at the answers" in format_m_check(mc)


def test_fit_lam_recovers_the_excess_per_inner_channel():
    lam = 0.002
    pts = [MLawPoint(m, n, 0.0, 0.0, 1 + lam * n * (m - 1), 0.05) for m, n in ((20, 6), (66, 6), (174, 3))]
    got, se, chi2 = fit_lam(pts)
    assert got == pytest.approx(lam) and se > 0 and chi2 == pytest.approx(0.0, abs=1e-12)
    assert fit_lam([MLawPoint(20, 6, 0.0, 0.0, 0.8, 0.05)])[0] == 0.0  # below 1: no correction


def test_resolved_answer_moves_to_fewer_paths_and_a_costlier_dual():
    res, curve = _search()
    lam = 0.002
    mc = check_answers(res, curve, synthetic_measure(lambda m, n: 1 + lam * n * (m - 1)))
    assert mc.departs
    k = correct(res, curve, Table(), mc)
    assert k.lam == pytest.approx(lam, rel=1e-6)
    # extra paths are worth less than 1/m: the primal trades paths for width, the dual costs more
    assert k.primal.m < res.primal.m and k.primal.n > res.primal.n
    assert k.dual.rho < res.dual.rho
    # the corrected variances are the model's, V1(n) (1 + lam n (m - 1)) / m
    for c in (k.primal, k.dual):
        assert c.variance == pytest.approx(float(curve(c.n)[0]) * (1 + lam * c.n * (c.m - 1)) / c.m)
    # the corrected dual still reaches the baseline's variance (m_b = 1: c = 1)
    assert k.dual.variance <= float(curve(128)[0]) * (1 + 1e-12)
    # with no departure the re-solve reproduces the search's answers
    k0 = correct(res, curve, Table(), check_answers(res, curve, synthetic_measure(lambda m, n: 1.0)))
    assert (k0.primal.arch, k0.dual.arch) == (res.primal.arch, res.dual.arch)


def test_measure_points_uses_algorithm1s_conventions():
    inputs = ProbeInputs(pairs=2)
    fit = run_algorithm1(family="resnext29", widths=(2, 3, 4), trials=8, inputs=inputs, m_law=())
    got = measure_points([(1, 3)], family="resnext29", trials=8, inputs=inputs)[(1, 3)]
    assert [e.v for e in got] == fit.pair_variance[1]


def test_on_by_default_for_every_measured_curve():
    _, curve = _search()
    assert curve.fit.engine == "synthetic" and not dedicated(curve.fit) and not checked_by_default(curve.fit)
    with pytest.raises(UserError, match="holds no Monte Carlo trials"):
        cached_measure(curve.fit)  # a synthetic table: nothing to repeat
    fit = run_algorithm1(family="resnext29", widths=(2, 3, 4), trials=8, inputs=ProbeInputs(pairs=2), m_law=())
    assert dedicated(fit) and checked_by_default(fit)
    generic = run_algorithm1(family="resnext29", widths=(2, 3, 4), trials=8, inputs=ProbeInputs(pairs=2), m_law=(),
                             engine="generic")
    assert not dedicated(generic) and checked_by_default(generic)  # resnext11's block runs there, and departs most


def test_tiny_real_check_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    alpha = tmp_path / "alpha"
    assert main(["fit-alpha", "--family", "mlp", "--trials", "16", "--pairs", "2", "--widths", "2,4,8,16",
                 "--no-m-law", "--no-progress", "--json", "--out", str(alpha)]) == 0
    argv = ["search", "mlp", "--baseline", "1x16d", "--alpha-file", str(alpha), "--draws", "20", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    mc = obj["m_check"]
    assert mc["trials"] == 16 and len(mc["checks"]) >= 1
    assert all(math.isfinite(c["ratio"]) and c["ratio_stderr"] > 0 for c in mc["checks"])
    assert "measured" in mc["source"]
    # the m-check's own notes, and the one on a curve of few initializations per pair (T=16)
    assert obj["notes"] == [n for n in obj["notes"] if n.startswith("note: at ") or "initializations per input pair" in n]
    assert main(argv) == 0  # again: every point from the cache
    again = json.loads(capsys.readouterr().out)["m_check"]
    assert "measured" not in again["source"] and [c["ratio"] for c in again["checks"]] == [c["ratio"] for c in mc["checks"]]
    assert main([*argv, "--no-m-check"]) == 0
    assert "m_check" not in json.loads(capsys.readouterr().out)
