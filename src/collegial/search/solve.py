"""The search: the primal and dual problems (:mod:`collegial.search.problems`, the one solver)
for a family against a baseline, over the family's candidate widths, with the bootstrap of the
variance curve; the result is a :class:`~collegial.search.result.SearchResult`.

The candidates are the widths of ``n_range`` the family can build, with exact costs
``A + m * B(n)`` from its :class:`~collegial.models.costs.CostTable`. The primal's budget is the
baseline's cost (or ``budget_value``), the dual's target the baseline's variance. The baseline's
own width is always a candidate (it is feasible for both problems), so the primal's variance never
exceeds the baseline's under floor rounding and the dual's rho is >= 1.

**Near-ties.** The curve is a Monte Carlo estimate. Each bootstrap draw of the curve (see
:class:`~collegial.search.variance.VarianceCurve`) re-solves both problems for the same candidate
set (for the dual, ``V_base`` and every ``m`` are recomputed per draw). A candidate is a near-tie
of the optimum when, with ``level`` confidence, the data cannot tell them apart:

* ``ties="paired"`` (default): in at least ``(1 - level) / 2`` of the draws the candidate's
  objective is at most the optimum's (a paired bootstrap test; it keeps the correlation that a
  shared fit induces between widths);
* ``ties="overlap"``: the candidate's and the optimum's ``level`` percentile intervals overlap
  (more generous: it ignores that correlation).

The near-ties are listed best first, with their bootstrap probability of being the optimum
(``p_best``: the share of draws in which the candidate is the optimum). They are printed only on
request (``--all-ties``): the answer's uncertainty is the optimal set's.

**P(optimal) is per architecture.** Each draw's optimum is an architecture ``m x n``: the
primal's m is fixed per width, but the dual's m is recomputed per draw, so its probabilities are
counted over the (m, n) pairs the draws choose, not over widths. The **most probable**
architecture of each problem is the headline answer; the point optimum (the exact solution on
the point estimate of the curve) is shown beside it when it differs.

**Optimal set.** Architectures by decreasing ``p_best`` until their total reaches ``level``: the
set that holds the optimum with that bootstrap probability. Reported as the range of widths it
spans and its (at most :data:`MAX_SET`) most probable members; this is the compact answer, the
full near-tie list stays available.
Arrays below are indexed by candidate width, shape ``(N,)``, or ``(K, N)`` over K draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.models import format_arch, get_dataset_spec, get_family, validate_arch
from collegial.models.arch import MAX_N
from collegial.models.costs import COST_KINDS, CostKind, CostTable
from collegial.ntk.fits import MODELS
from collegial.search.problems import (
    ROUNDINGS,
    SOLVERS,
    ArraySolution,
    Rounding,
    Solver,
    solve_batch,
)
from collegial.search.result import (
    Candidate,
    Curve,
    SearchResult,
    arch_probabilities,
    optimal_set,
)
from collegial.search.variance import VarianceCurve

__all__ = ["BUDGETS", "ROUNDINGS", "SOLVERS", "TIE_RULES", "CostModel", "by_model", "cost_table",
           "parse_n_range", "search"]

#: The cost kind a budget counts (the vocabulary of :mod:`collegial.models.costs`).
Budget = CostKind
BUDGETS: tuple[Budget, ...] = COST_KINDS
#: How near-ties are told apart from the optimum.
TieRule = Literal["paired", "overlap"]
TIE_RULES: tuple[TieRule, ...] = ("paired", "overlap")
DEFAULT_N_RANGE = (2, 128)
#: Largest budget accepted (parameters or FLOPs): far beyond any buildable model, within int64.
MAX_BUDGET = 1e18


class CostModel(Protocol):
    """What the solver needs of a cost table: ``A`` and ``B(n)`` per cost kind."""

    def fixed(self, kind: str) -> int: ...

    def per_path(self, kind: str, n: np.ndarray | int) -> np.ndarray: ...


@lru_cache(maxsize=32)
def cost_table(family: str, dataset: str, bn_flops: bool = False) -> CostTable:
    """A process-wide cached :class:`CostTable` (building one measures a few models: seconds)."""
    return CostTable(family, dataset, bn_flops=bn_flops)


def parse_n_range(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"2:128"`` -> ``(2, 128)`` (inclusive); :class:`UserError` when malformed or empty."""
    if isinstance(text, tuple):
        lo, hi = text
    else:
        parts = str(text).split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise UserError(f"malformed `n_range` {text!r}; expected LO:HI, e.g. 2:128")
        lo, hi = int(parts[0]), int(parts[1])
    if lo < 1:
        raise UserError(f"`n_range` {lo}:{hi} must start at a width >= 1")
    if hi < lo:
        raise UserError(f"`n_range` {lo}:{hi} is empty")
    if hi > MAX_N:
        raise UserError(f"`n_range` {lo}:{hi} exceeds the largest width {MAX_N}")
    return lo, hi


def _band(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(lo, hi)`` (``(N,)`` each) of ``(K, N)`` draws; inf where any draw
    of a column is infinite (an infeasible candidate)."""
    q = (1.0 - level) / 2.0
    finite = np.isfinite(draws).all(axis=0)
    lo = np.full(draws.shape[1], np.inf)
    hi = np.full(draws.shape[1], np.inf)
    if finite.any():
        lo[finite], hi[finite] = np.quantile(draws[:, finite], [q, 1.0 - q], axis=0)
    return lo, hi


def _tie_mask(obj_draws: np.ndarray, best: int, rule: TieRule, level: float) -> np.ndarray:
    """``(N,)`` bool: candidates the bootstrap cannot separate from ``best``."""
    q = (1.0 - level) / 2.0
    finite = np.isfinite(obj_draws).all(axis=0)
    if rule == "paired":
        frac = (obj_draws <= obj_draws[:, best : best + 1]).mean(axis=0)
        mask = frac >= q
    else:  # "overlap"
        lo, hi = _band(obj_draws, level)
        mask = (lo <= hi[best]) & (hi >= lo[best])
    mask &= finite
    mask[best] = False
    return mask


def search(
    family: str,
    dataset: str,
    baseline: str,
    curve: VarianceCurve,
    *,
    budget: Budget = "params",
    rounding: Rounding = "floor",
    n_range: tuple[int, int] | str | None = None,
    budget_value: int | None = None,
    ties: TieRule = "paired",
    level: float = 0.95,
    bn_flops: bool = False,
    solver: Solver = "integer",
    table: CostModel | None = None,
) -> SearchResult:
    """Solve the primal and dual problems for ``family`` on ``dataset`` against ``baseline``.

    ``budget``: the cost kind (``params`` or ``flops``); the primal's budget is the baseline's
    cost unless ``budget_value`` (a positive integer, at most :data:`MAX_BUDGET`) is given. Widths ``n`` range over ``n_range`` (inclusive; default:
    the curve's measured range within :data:`DEFAULT_N_RANGE`) plus the baseline's width."""
    _check_options(budget, rounding, ties, solver, level)
    _check_budget_value(budget_value)
    m_b, n_b = _check_baseline(family, dataset, baseline)
    lo, hi = _search_range(curve, n_range, n_b)
    tab = table if table is not None else cost_table(family, dataset, bn_flops)
    grid = _grid(tab, lo, hi, m_b, n_b)
    cap = grid.base_cost[budget] if budget_value is None else int(budget_value)
    sol = _solve(grid, curve, budget, cap, rounding, solver, ties, level)
    _check_buildable(family, grid.n, sol, cap)
    answers = _answers(grid, sol, budget, level)
    # a most probable m x n out of the family's reach (a draw's huge dual m): the point optimum
    answers["most_probable"] = {k: c if _buildable(family, c.arch) else answers[k]
                                for k, c in answers["most_probable"].items()}
    return SearchResult(
        family=family,
        dataset=dataset,
        budget_kind=budget,
        budget=int(cap),
        rounding=rounding,
        solver=solver,
        n_range=(lo, hi),
        variance_model=curve.model,
        variance_desc=curve.describe(),
        alpha=curve.fit.alpha,
        alpha_source=curve.source,
        ties=ties,
        level=level,
        draws=sol.vd.shape[0],
        **answers,
        by_model=by_model(curve, grid.n, grid.a[budget], grid.b[budget], grid.ib, m_b, cap, rounding),
        probe=curve.fit.probe_label(),
        probe_options=curve.fit.probe_options(),
        alpha_file=dict(curve.origin),
    )


def _check_options(budget: str, rounding: str, ties: str, solver: str, level: float) -> None:
    """The search's string options against their vocabularies, and the confidence level."""
    check_choice("budget", budget, BUDGETS, "cost kind")
    check_choice("rounding", rounding, ROUNDINGS, "rounding rule")
    check_choice("ties", ties, TIE_RULES, "tie rule")
    check_choice("solver", solver, SOLVERS, "solver")
    if not 0.0 < level < 1.0:
        raise UserError(f"confidence `level` {level} must lie strictly between 0 and 1")


def _check_budget_value(value: int | None) -> None:
    """:class:`UserError` unless ``value`` is None or an integer in ``1..MAX_BUDGET``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"`budget_value` {value!r} must be an integer (a count of parameters or FLOPs)")
    if not 0 < value <= MAX_BUDGET:
        raise UserError(f"`budget_value` {value!r} must lie in 1..{MAX_BUDGET:.0e}")


def _check_baseline(family: str, dataset: str, baseline: str) -> tuple[int, int]:
    """``(m_b, n_b)`` of ``baseline``, a member of the (m, n) family ``family`` on ``dataset``."""
    fam = get_family(family)
    get_dataset_spec(dataset)
    if fam.arch_kind != "ce":
        raise UserError(f"family {family!r} has no (m, n) architecture to search")
    try:
        return validate_arch(family, baseline)
    except UserError as e:
        raise UserError(f"baseline {baseline!r} is not a member of {family}: {e}") from None


def _search_range(curve: VarianceCurve, n_range: tuple[int, int] | str | None, n_b: int) -> tuple[int, int]:
    """The searched widths ``(lo, hi)``: ``n_range``, by default the curve's measured range
    within :data:`DEFAULT_N_RANGE`; both ends and the baseline's width inside the curve's domain."""
    if n_range is None:
        d_lo, d_hi = curve.domain
        n_range = (max(d_lo, DEFAULT_N_RANGE[0]), min(d_hi, DEFAULT_N_RANGE[1]))
    lo, hi = parse_n_range(n_range)
    curve.check_domain(np.array([n_b]), what="the baseline's width")
    curve.check_domain(np.array([lo, hi]))
    return lo, hi


@dataclass(frozen=True)
class _Grid:
    """The candidate widths ``n`` ``(N,)`` (``lo..hi`` and the baseline's), the baseline's
    index ``ib`` and multiplicity ``m_b``, and per cost kind ``A``, ``B(n)`` and the baseline's
    cost."""

    n: np.ndarray
    ib: int
    m_b: int
    a: dict[str, int]
    b: dict[str, np.ndarray]
    base_cost: dict[str, int]


def _grid(tab: CostModel, lo: int, hi: int, m_b: int, n_b: int) -> _Grid:
    n = np.arange(lo, hi + 1, dtype=np.int64)
    buildable = getattr(tab, "buildable", None)  # a family may refuse some widths (e.g. odd ones)
    if buildable is not None:
        n = n[np.asarray(buildable(n), dtype=bool)]
    if n_b not in n:
        n = np.sort(np.append(n, n_b))
    ib = int(np.searchsorted(n, n_b))
    a = {k: int(tab.fixed(k)) for k in BUDGETS}
    bb = {k: np.asarray(tab.per_path(k, n), dtype=np.int64) for k in BUDGETS}
    base_cost = {k: a[k] + m_b * int(bb[k][ib]) for k in BUDGETS}
    return _Grid(n, ib, m_b, a, bb, base_cost)


@dataclass(frozen=True)
class _Solution:
    """Both problems on a grid: the point solutions, the curve ``v`` ``(N,)`` and its draws
    ``vd`` ``(K, N)``, the primal's variance draws ``p_obj`` and the dual's cost draws
    ``d_cost`` ``(K, N)``, each problem's architecture probabilities (:func:`arch_probabilities`)
    and near-tie mask ``(N,)``."""

    primal: ArraySolution
    dual: ArraySolution
    v: np.ndarray
    vd: np.ndarray
    p_obj: np.ndarray
    d_cost: np.ndarray
    p_probs: list[tuple[int, int, float]]
    d_probs: list[tuple[int, int, float]]
    p_ties: np.ndarray
    d_ties: np.ndarray


def _solve(
    g: _Grid, curve: VarianceCurve, budget: Budget, cap: int, rounding: Rounding, solver: Solver,
    ties: TieRule, level: float,
) -> _Solution:
    """Both problems at the point estimate and across the bootstrap draws of the curve (the
    dual's target, the baseline's variance, taken on each draw)."""
    a, b = g.a[budget], g.b[budget]

    def solved(v: np.ndarray, how: Solver) -> tuple[Any, Any]:
        v = np.atleast_2d(v)
        return solve_batch(a, b, v, budget=cap, v_target=v[:, g.ib : g.ib + 1] / g.m_b, rounding=rounding,
                           solver=how)

    v = curve(g.n)  # (N,)
    vd = curve.draws(g.n)  # (K, N): standard errors and intervals
    primal, dual = (s.row(0) for s in solved(v, solver))
    p_draws, d_draws = solved(vd, "integer")
    p_rank, d_rank = solved(curve.draws(g.n, for_argmin=True), solver)  # P(optimal), optimal sets, near-ties
    return _Solution(
        primal, dual, v, vd, p_draws.variance, d_draws.cost,
        p_probs=arch_probabilities(p_rank.best, primal.m),
        d_probs=arch_probabilities(d_rank.best, d_rank.m),
        p_ties=_tie_mask(p_rank.objective, primal.best, ties, level),
        d_ties=_tie_mask(d_rank.objective, dual.best, ties, level),
    )


def _check_buildable(family: str, n: np.ndarray, sol: _Solution, cap: int) -> None:
    """:class:`UserError` unless both answers are buildable members of ``family``."""
    for prob, s in (("primal", sol.primal), ("dual", sol.dual)):
        arch = format_arch(int(s.m[s.best]), int(n[s.best]))
        try:
            validate_arch(family, arch)
        except UserError as e:
            what = f"the budget {cap:,}" if prob == "primal" else "the baseline's variance"
            raise UserError(f"the {prob} answer {arch} is not a buildable {family} ({e}); "
                            f"{what} is out of reach of this family") from None


def _buildable(family: str, arch: str) -> bool:
    try:
        validate_arch(family, arch)
    except UserError:
        return False
    return True


def _candidate(g: _Grid, sol: _Solution, budget: Budget, i: int, m: int, vdraw: np.ndarray | None,
               pb: float | None) -> Candidate:
    """Candidate ``i`` of the grid at multiplicity ``m``; its variance's standard error is the
    spread of ``vdraw`` (the variance across draws)."""
    nn_ = int(g.n[i])
    costs = {k: g.a[k] + m * int(g.b[k][i]) for k in BUDGETS}
    se = float(np.std(vdraw, ddof=1)) if vdraw is not None else 0.0
    return Candidate(
        format_arch(int(m), nn_),
        int(m),
        nn_,
        costs["params"],
        costs["flops"],
        float(sol.v[i] / m),
        g.base_cost[budget] / costs[budget],
        se,
        pb,
    )


def _answers(g: _Grid, sol: _Solution, budget: Budget, level: float) -> dict[str, Any]:
    """The :class:`SearchResult` fields built from a solution: baseline, primal and dual
    candidates, near-ties, curves and optimal sets."""
    primal, dual, vd, p_obj = sol.primal, sol.dual, sol.vd, sol.p_obj
    p_of = {(i, m): p for i, m, p in sol.p_probs}
    d_of = {(i, m): p for i, m, p in sol.d_probs}

    def p_cand(i: int, m: int | None = None, p: float | None = None) -> Candidate:
        return _candidate(g, sol, budget, i, int(primal.m[i]), p_obj[:, i], p_of.get((i, int(primal.m[i])), 0.0))

    def d_cand(i: int, m: int | None = None, p: float | None = None) -> Candidate:
        m = int(dual.m[i]) if m is None else m
        return _candidate(g, sol, budget, i, m, vd[:, i] / m, d_of.get((i, m), 0.0))

    p_idx, d_idx = np.flatnonzero(sol.p_ties), np.flatnonzero(sol.d_ties)
    rho_draws = g.base_cost[budget] / sol.d_cost  # (K, N)
    p_var = np.where(primal.m >= 1, sol.v / np.maximum(primal.m, 1), np.inf)  # the integer curve
    return {
        "baseline": _candidate(g, sol, budget, g.ib, g.m_b, vd[:, g.ib] / g.m_b, None),
        "primal": p_cand(primal.best),
        "dual": d_cand(dual.best),
        "near_ties": {
            "primal": [p_cand(int(i)) for i in p_idx[np.argsort(primal.objective[p_idx], kind="stable")]],
            "dual": [d_cand(int(i)) for i in d_idx[np.argsort(dual.objective[d_idx], kind="stable")]],
        },
        "primal_curve": Curve(g.n, primal.m, p_var, *_band(p_obj, level), primal.m >= 1),
        "dual_curve": Curve(g.n, dual.m, g.base_cost[budget] / dual.cost, *_band(rho_draws, level),
                            np.ones(g.n.size, dtype=bool)),
        "optimal_set": {"primal": optimal_set(sol.p_probs, level, p_cand), "dual": optimal_set(sol.d_probs, level, d_cand)},
        "most_probable": {"primal": _top(p_cand(sol.p_probs[0][0]), p_cand(primal.best)),
                          "dual": _top(d_cand(*sol.d_probs[0][:2]), d_cand(dual.best))},
    }


def _top(first: Candidate, point: Candidate) -> Candidate:
    """The most probable candidate; the point optimum when it is as probable."""
    return point if (point.p_best or 0.0) >= (first.p_best or 0.0) else first


def by_model(
    curve: VarianceCurve, n: np.ndarray, a: int, b: np.ndarray, ib: int, m_b: int, cap: int, rounding: Rounding
) -> dict[str, dict[str, Any]]:
    """The point optima (no bootstrap) under every variance model of the curve's fit, with each
    model's goodness of fit: ``{model: {"primal", "dual", "chi2_per_dof", "p_value"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for kind in MODELS:
        try:
            other = curve.with_model(kind)
            v = other(n)
        except UserError:
            continue  # too few widths for this model
        pr, du = solve_batch(a, b, v, budget=cap, v_target=v[ib] / m_b, rounding=rounding)
        gof = other.fitted.summary()
        out[kind] = {
            "primal": pr.archs(n)[0],
            "dual": du.archs(n)[0],
            "chi2_per_dof": gof["chi2_per_dof"],
            "p_value": gof["p_value"],
            "selected": kind == curve.model,
        }
    return out
