"""The 1/m law where the answer lives: ``V(m, n)`` of the probe block at the answers' own (m, n).

The search predicts an ensemble's variance as ``V1(n) / m`` (the **1/m law**), which
``fit-alpha`` checks only at m <= 16, n = 8, while the answers use m = 20-300. This module checks
the law at the answers:

* :func:`check_answers` measures ``V(m, n)`` of the curve's probe block at the primal's and the
  dual's (m, n) (a ``measure`` function does the Monte Carlo: :func:`cached_measure` runs it
  through :func:`collegial.ntk.alpha.measure_points` with the curve's own probe, inputs, pairs,
  T and seed) and reports ``ratio = V(m, n) / (V1(n) / m)`` with its standard error
  (:func:`~collegial.ntk.alpha.m_law_ratio`, the two estimates independent). ``V1(n)`` is the
  curve's Monte Carlo table entry when n is a measured width, else ``V(1, n)`` measured here at
  the same T. The law **departs** at an answer when ``|ratio - 1| > 10%`` and ``> 2`` standard
  errors: the answer's first line says so (:meth:`MCheck.notes`).
* Where it departs, :func:`correct` re-solves both problems with the **measured correction**
  ``c(m, n) = V(m, n) m / V1(n) = 1 + lam n (m - 1)``: the excess over the 1/m law grows with
  the inner channels the extra paths add, ``(m - 1) n`` (equivalently, the m paths'
  contributions are equicorrelated with correlation ``kappa = lam n``, and
  ``V(m, n) = V1(n) (kappa + (1 - kappa) / m)``). One number, ``lam``, is fitted by weighted
  least squares to the answers' measured ratios (not to the curve's own 1/m check: another
  estimator, per pair, at m <= 16 where the correction is small), clipped at 0 (a ratio below 1
  means the law overstates the variance; the answers then stand). This form fits the
  bottleneck's measured ratios at n = 3 to 24 and m up to 300 (``docs/search.md``); a constant
  ``kappa`` or a power of m does not. The re-solve is a point solution (no bootstrap) over the
  search's candidate widths, with the same budget, rounding and baseline, and its answers are
  predictions of the correction, not measured.

``measure(points) -> {(m, n): [NormalizedVariance per input pair]}`` is the only way this
module measures, so the logic is testable with a synthetic one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from collegial.errors import UserError
from collegial.io import write_json_atomic
from collegial.models import format_arch
from collegial.ntk.alpha import m_law_ratio, measure_points, probe_spec
from collegial.ntk.curve import SCHEMA_VERSION, AlphaFit, MLawPoint
from collegial.ntk.inputs import DEFAULT_CORRELATION, ProbeInputs
from collegial.ntk.probe import BLOCK_ENGINES
from collegial.ntk.variance import NormalizedVariance, pool_pairs
from collegial.search.problems import primal_m, solve_dual_arrays, solve_primal_arrays
from collegial.search.solve import BUDGETS, CostModel
from collegial.search.result import Candidate, SearchResult
from collegial.search.variance import VarianceCurve, cache_dir, probe_key

#: ``measure(points)``: per-pair estimates of ``V(m, n)`` at each ``(m, n)``.
Measure = Callable[[Sequence[tuple[int, int]]], dict[tuple[int, int], list[NormalizedVariance]]]

#: The law departs where ``|ratio - 1|`` exceeds both this fraction ...
DEPART_FRACTION = 0.10
#: ... and this many standard errors.
DEPART_Z = 2.0
#: The engines that measure the built-in blocks (:class:`~collegial.ntk.probe.ResNeXtBlockProbe`,
#: :class:`~collegial.ntk.probe.MLPProbe`): the check runs by default on curves they measured.
DEDICATED_ENGINES: tuple[str, ...] = tuple(e for e in BLOCK_ENGINES if e != "auto")
#: A correction whose chi^2 per degree of freedom exceeds this does not describe the measured ratios.
POOR_FIT = 3.0


@dataclass(frozen=True)
class AnswerCheck:
    """The 1/m law at one answer: ``point`` holds ``V(m, n)`` (pooled over pairs) and its
    ratio to ``V1(n) / m``; ``v1`` and ``v1_stderr`` the ``V1(n)`` used, from ``v1_source``
    (``table``: the curve's Monte Carlo table; ``measured``: ``V(1, n)`` measured here)."""

    role: str  # "primal" or "dual"
    arch: str
    point: MLawPoint
    v1: float
    v1_stderr: float
    v1_source: str
    departs: bool
    predicted: float = math.nan  # the search's prediction, V1(n) / m in the curve's model

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "arch": self.arch, **asdict(self.point), "v1": self.v1,
                "v1_stderr": self.v1_stderr, "v1_source": self.v1_source, "departs": self.departs,
                "predicted": self.predicted}


@dataclass(frozen=True)
class Correction:
    """The measured correction ``c(m, n) = V(m, n) m / V1(n) = 1 + lam n (m - 1)`` fitted to
    ``points`` measured ratios (``chi2_per_dof`` against their errors; None with one point),
    and the answers re-solved with it (``variance``: ``V1(n) c(m, n) / m``, a point value)."""

    lam: float
    lam_stderr: float
    points: int
    chi2_per_dof: float | None
    primal: Candidate
    dual: Candidate
    widths: tuple[int, ...] = ()  # the widths of the fitted ratios

    def to_dict(self) -> dict[str, Any]:
        return {"model": "V(m, n) = V1(n) (1 + lam n (m - 1)) / m", "lam": self.lam, "lam_stderr": self.lam_stderr,
                "points": self.points, "widths": list(self.widths), "chi2_per_dof": self.chi2_per_dof,
                "primal": self.primal.to_dict(), "dual": self.dual.to_dict()}


def path_correlation(lam: float, n: np.ndarray | int) -> np.ndarray:
    """``kappa(n) = min(lam n, 1)``: with it ``V(m, n) = V1(n) (kappa + (1 - kappa) / m)``, the
    variance of the mean of m paths whose contributions are equicorrelated with ``kappa``."""
    return np.minimum(lam * np.asarray(n, dtype=np.float64), 1.0)


@dataclass
class MCheck:
    """The 1/m law at the answers (``checks``, one per answer with m > 1), measured with
    ``trials`` initializations per point; ``correction`` where some answer departs."""

    trials: int
    checks: list[AnswerCheck]
    correction: Correction | None = None
    seconds: float = 0.0
    source: str = ""
    skipped: list[str] = field(default_factory=list)  # answers with m = 1 (nothing to check)

    @property
    def departs(self) -> bool:
        return any(c.departs for c in self.checks)

    def notes(self) -> list[str]:
        """The answer's first line where the law departs at some answer (else none)."""
        bad = [c for c in self.checks if c.departs]
        if not bad:
            return []
        at = ", ".join(f"at {c.arch} ({c.role}) {'' if i else 'the block' + chr(39) + 's variance is '}"
                       f"{c.point.ratio:.2f} ± {c.point.ratio_stderr:.2f} x{' V1(n)/m' if not i else ''}"
                       for i, c in enumerate(bad))
        fix = ""
        if self.correction is not None and self.correction.lam > 0:
            fix = (f"; re-solved with the measured correction: primal {self.correction.primal.arch}, "
                   f"dual {self.correction.dual.arch}")
        elif self.correction is not None:
            fix = "; V1(n)/m overstates the variance there, and the answers stand"
        return [f"note: {at}; the 1/m law does not hold there{fix}"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "criterion": {"fraction": DEPART_FRACTION, "z": DEPART_Z},
            "checks": [c.to_dict() for c in self.checks],
            "departs": self.departs,
            "correction": None if self.correction is None else self.correction.to_dict(),
            "skipped": self.skipped,
            "seconds": self.seconds,
            "source": self.source,
        }


def points_to_measure(res: SearchResult, fit: AlphaFit) -> list[tuple[int, int]]:
    """The ``(m, n)`` to measure: each answer with m > 1, and ``(1, n)`` for an answer's
    width n that the curve's table does not hold."""
    pts: list[tuple[int, int]] = []
    for c in (res.primal, res.dual):
        if c.m > 1:
            pts += [(c.m, c.n)] + ([] if c.n in fit.widths else [(1, c.n)])
    return list(dict.fromkeys(pts))


def check_answers(res: SearchResult, curve: VarianceCurve, measure: Measure) -> MCheck:
    """Measure ``V(m, n)`` at the primal's and dual's (m, n) and compare with ``V1(n) / m``."""
    fit = curve.fit
    t0 = time.perf_counter()
    pts = points_to_measure(res, fit)
    stats = measure(pts) if pts else {}
    checks, skipped = [], []
    for role in ("primal", "dual"):
        c: Candidate = getattr(res, role)
        if c.m <= 1:
            skipped.append(f"{role} {c.arch}")
            continue
        if c.n in fit.widths:
            i = fit.widths.index(c.n)
            v1 = NormalizedVariance(fit.variance[i], fit.stderr[i], 0.0, 0.0, fit.trials)
            src = "table"
        else:
            v1, src = pool_pairs(stats[(1, c.n)]), "measured"
        vm = pool_pairs(stats[(c.m, c.n)])
        ratio, rse = m_law_ratio(vm, v1, c.m)
        departs = (math.isfinite(ratio) and abs(ratio - 1) > DEPART_FRACTION
                   and abs(ratio - 1) > DEPART_Z * rse)
        checks.append(AnswerCheck(role, c.arch, MLawPoint(c.m, c.n, vm.v, vm.stderr, ratio, rse),
                                  v1.v, v1.stderr, src, departs, c.variance))
    return MCheck(fit.trials, checks, seconds=time.perf_counter() - t0, skipped=skipped)


def fit_lam(points: Sequence[MLawPoint]) -> tuple[float, float, float | None]:
    """``lam`` of ``ratio = 1 + lam n (m - 1)`` by weighted least squares (weights
    ``1 / ratio_stderr^2``; the line passes through ratio 1 at m = 1), clipped at 0; its standard
    error and chi^2 per degree of freedom (None with one point). Points without a finite ratio
    and error, and at m = 1, are ignored."""
    ok = [p for p in points if math.isfinite(p.ratio) and math.isfinite(p.ratio_stderr) and p.ratio_stderr > 0
          and p.m > 1]
    if not ok:
        return 0.0, math.nan, None
    x = np.array([p.n * (p.m - 1.0) for p in ok])
    y = np.array([p.ratio - 1.0 for p in ok])
    w = 1.0 / np.array([p.ratio_stderr for p in ok]) ** 2
    sxx = float(np.sum(w * x * x))
    lam = max(float(np.sum(w * x * y)) / sxx, 0.0)
    chi2 = float(np.sum(w * (y - lam * x) ** 2))
    return lam, 1.0 / math.sqrt(sxx), (chi2 / (len(ok) - 1) if len(ok) > 1 else None)


def correct(res: SearchResult, curve: VarianceCurve, table: CostModel, mc: MCheck) -> Correction:
    """Both problems re-solved with ``V(m, n) = V1(n) (kappa + (1 - kappa) / m)``,
    ``kappa = min(lam n, 1)`` (:func:`path_correlation`), ``lam`` fitted (:func:`fit_lam`) to the
    answers' ratios; the integer problems over the candidate widths, budget, rounding and
    baseline of ``res``; ``table`` prices the candidates (the search's cost table)."""
    points = [c.point for c in mc.checks]
    lam, lam_se, chi2 = fit_lam(points)
    kind = res.budget_kind
    n = np.asarray(res.primal_curve.n, dtype=np.int64)
    a, b = int(table.fixed(kind)), np.asarray(table.per_path(kind, n), dtype=np.int64)
    v1 = np.asarray(curve(n), dtype=np.float64)
    kap = path_correlation(lam, n)
    # primal: m per width from the budget as before, variance V1 (kappa + (1 - kappa) / m) = v / m
    pm = np.maximum(primal_m(a, b, res.budget, res.rounding), 1)  # type: ignore[arg-type]
    primal = solve_primal_arrays(a, b, v1 * (kap * pm + 1.0 - kap), res.budget, res.rounding)  # type: ignore[arg-type]
    # dual: least m with V1 (1 - kappa) / m <= V_base - kappa V1, V_base the baseline's corrected variance
    ib = int(np.searchsorted(n, res.baseline.n))
    v_base = v1[ib] * (kap[ib] + (1.0 - kap[ib]) / res.baseline.m)
    room = v_base - kap * v1
    ok = room > 0  # elsewhere no number of paths reaches V_base: m = 2^62 there (never the least cost)
    dual = solve_dual_arrays(a, b, np.where(ok, v1 * (1.0 - kap), 1.0), np.where(ok, room, 1e-300))

    def cand(i: int, m: int) -> Candidate:
        costs = {k: int(table.fixed(k)) + m * int(np.asarray(table.per_path(k, n[i : i + 1]))[0]) for k in BUDGETS}
        base = {"params": res.baseline.params, "flops": res.baseline.flops}
        return Candidate(format_arch(m, int(n[i])), m, int(n[i]), costs["params"], costs["flops"],
                         float(v1[i] * (kap[i] + (1.0 - kap[i]) / m)), base[kind] / costs[kind])

    used = [p for p in points if p.m > 1]
    return Correction(lam, lam_se, len(used), chi2, cand(primal.best, int(primal.m[primal.best])),
                      cand(dual.best, int(dual.m[dual.best])), tuple(sorted({p.n for p in used})))


def run_m_check(res: SearchResult, curve: VarianceCurve, measure: Measure, table: CostModel) -> MCheck:
    """:func:`check_answers`, then :func:`correct` where some answer departs."""
    mc = check_answers(res, curve, measure)
    if mc.departs:
        mc.correction = correct(res, curve, table, mc)
    return mc


def format_m_check(mc: MCheck) -> str:
    """The check's section of the search's report."""
    lines = [f"1/m law at the answers (probe block, T={mc.trials}; ratio = V(m, n) / (V1(n)/m), "
             f"departs where |ratio - 1| > {DEPART_FRACTION:.0%} and > {DEPART_Z:g} s.e.):"]
    for c in mc.checks:
        p = c.point
        lines.append(f"  {c.role:<6} {c.arch:>8}  V(m, n) = {p.variance:.4g} ± {p.stderr:.2g}, V1(n)/m = "
                     f"{c.v1 / p.m:.4g} ± {c.v1_stderr / p.m:.2g} ({c.v1_source}; the curve's model: "
                     f"{c.predicted:.4g}), ratio = {p.ratio:.3f} ± {p.ratio_stderr:.3f}"
                     f"{'  DEPARTS' if c.departs else ''}")
    for s in mc.skipped:
        lines.append(f"  {s}: m = 1, nothing to check")
    k = mc.correction
    if k is not None:
        chi = f", chi2/dof {k.chi2_per_dof:.2f}" if k.chi2_per_dof is not None else ""
        if len(k.widths) == 1:
            chi += f"; all at n = {k.widths[0]}: the growth with n is assumed, not measured"
        if k.chi2_per_dof is not None and k.chi2_per_dof > POOR_FIT:
            chi += "; it does not describe them: read the re-solved answers as indicative"
        lines.append(f"  correction: V(m, n) = V1(n) (1 + lam n (m - 1)) / m, lam = {k.lam:.3g} ± {k.lam_stderr:.2g} "
                     f"(fitted to {k.points} measured ratios{chi})")
        for role in ("primal", "dual"):
            c2: Candidate = getattr(k, role)
            lines.append(f"  re-solved {role:<6} {c2.arch:>8}  variance {c2.variance:.4g} (corrected, not measured), "
                         f"compression {c2.rho:.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The measurement: the curve's own probe through collegial.ntk, cached on disk per (m, n).


def probe_arguments(fit: AlphaFit, images: Tensor | None = None) -> dict[str, Any]:
    """The :func:`~collegial.ntk.alpha.measure_points` arguments that reproduce ``fit``'s
    probe: its family's declared block at the fit's channels and size, BatchNorm mode,
    parameterization, engine, inputs, pairs, T and seed. ``images``: for a curve measured on
    images (``inputs == "data"``), the caller loads them (``collegial.ntk`` never loads data)."""
    if fit.trials < 2 * fit.pairs:
        raise UserError(f"the curve {fit.probe_label()} holds no Monte Carlo trials to repeat; the 1/m check "
                        "needs a measured curve")
    engine = "generic" if fit.engine == "generic" else "auto"
    kind = probe_spec(fit.family, engine=engine).kind  # type: ignore[arg-type]
    if fit.inputs == "data" and images is None:
        raise UserError(f"the curve was measured on {fit.input_data} images; load them to check the 1/m law")
    rho = DEFAULT_CORRELATION if fit.correlation is None else fit.correlation
    inputs = ProbeInputs(fit.inputs, rho, fit.pairs, dataset=fit.input_data, images=images)
    size: dict[str, Any] = {}
    if kind == "bottleneck":
        size = {"channels": fit.channels, "spatial": fit.spatial}
    elif kind == "mlp":
        size = {"channels": fit.channels}
    return {"family": fit.family, "trials": fit.trials, "inputs": inputs, "bn": fit.bn, "seed": fit.seed,
            "parameterization": fit.parameterization, "engine": engine, **size}


def checked_by_default(fit: AlphaFit) -> bool:
    """Whether the search checks the 1/m law at its answers by default: for every curve that
    Algorithm 1 measured (a synthetic table holds no trials to repeat). resnext11's block runs
    on the generic engine (48 s uncached on a busy 2-core machine) but departs the most (up to
    20x), so it is checked too; ``--no-m-check`` skips it."""
    return fit.engine != "synthetic" and fit.trials > 0


def dedicated(fit: AlphaFit) -> bool:
    """Whether ``fit`` was measured on a built-in dedicated engine (the bottleneck's or the
    MLP's), where the check is cheap enough to run by default (not a synthetic table)."""
    return fit.engine in DEDICATED_ENGINES and probe_spec(fit.family).kind != "generic"


def m_check_cache_dir() -> Path:
    """Where measured points are cached: beside the curves (:func:`~collegial.search.variance.cache_dir`)."""
    return cache_dir().parent / "m_check"


def cached_measure(fit: AlphaFit, images: Tensor | None = None) -> tuple[Measure, list[str]]:
    """A :data:`Measure` of ``fit``'s probe (:func:`probe_arguments`) that caches each point
    in ``m_check_cache_dir()/<sha1 of the probe options, m, n>.json`` (the probe identified as
    for the curves: :func:`~collegial.search.variance.probe_key`); also the list it appends
    where each point came from (``measured`` or ``cached``)."""
    kw = probe_arguments(fit, images)
    base = {"schema": SCHEMA_VERSION, **probe_key(fit.family), **fit.probe_options(), "engine": kw["engine"]}
    log: list[str] = []

    def path(m: int, n: int) -> Path:
        key = hashlib.sha1(json.dumps({**base, "m": m, "n": n}, sort_keys=True).encode()).hexdigest()[:16]
        return m_check_cache_dir() / f"{key}.json"

    def load(m: int, n: int) -> list[NormalizedVariance] | None:
        try:
            obj = json.loads(path(m, n).read_text())
            return [NormalizedVariance(**e) for e in obj["pairs"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, corrupt or outdated: measured again

    def measure(points: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[NormalizedVariance]]:
        out = {p: v for p in points if (v := load(*p)) is not None}
        todo = [p for p in points if p not in out]
        log.extend([f"{format_arch(*p)} cached" for p in out] + [f"{format_arch(*p)} measured" for p in todo])
        if todo:
            fresh = measure_points(todo, **kw)
            for (m, n), v in fresh.items():
                out[(m, n)] = v
                try:
                    f = path(m, n)
                    f.parent.mkdir(parents=True, exist_ok=True)
                    write_json_atomic(f, {"m": m, "n": n, "pairs": [asdict(e) for e in v]}, None)
                except (OSError, UserError):
                    pass  # caching is best effort
        return out

    return measure, log
