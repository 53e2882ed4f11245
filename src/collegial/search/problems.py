"""The primal and dual problems over integer (m, n) (SPEC section 4), batched over curves: the
one solver the search, its bootstrap, the reproduction's scans and Figure 1's curves call.

With ``cost(m, n) = A + m * B(n)`` (exact, :class:`~collegial.models.costs.CostTable`) and ``K``
variance curves ``V1(n)`` at ``N`` candidate widths (``v``: ``(K, N)``, one row per curve or
bootstrap draw):

* **primal** (optimally smooth): for each width n the multiplicity that meets the budget,
  ``m = floor((budget - A) / B(n))`` (``rounding="floor"``: never above the budget) or the ``m``
  whose cost is nearest the budget (``rounding="nearest"``); minimize ``V1(n) / m``. The budget
  does not depend on the curve, so neither does m;
* **dual** (optimally compact): for each n the least ``m`` with ``V1(n) / m <= V_target`` (per
  curve: the search's target is the baseline's variance ``V1(n_b) / m_b`` on the same curve);
  minimize the cost.

``solver="relaxed"`` takes n from the continuous relaxation instead (m real), where both problems
reduce to ``argmin_n V1(n) * B(n)`` over the primal's feasible widths and share n; m is then the
primal's (floor or nearest) and the dual's least feasible one. The default, ``"integer"``, solves
the integer problems exactly.

**One argmin, one tie rule** (:func:`argmin_ties`): the least objective; among exact ties the
primal takes the cheaper candidate, the dual the smoother one, the relaxed solver the smaller
``B(n)``; then the first (smallest n). **No overflow**: the dual's m is capped at ``2**62`` and its
cost ``A + m * B(n)`` is computed in float64 (at tiny widths m reaches 1e14 and more, where int64
products wrap around); the primal's cost stays an exact int64 (it is at most the budget plus one
path). Pure numpy: no models, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.models.arch import format_arch

#: How the primal's m meets the budget.
Rounding = Literal["floor", "nearest"]
ROUNDINGS: tuple[Rounding, ...] = ("floor", "nearest")
#: Exact integer problems, or n from the continuous relaxation.
Solver = Literal["integer", "relaxed"]
SOLVERS: tuple[Solver, ...] = ("integer", "relaxed")
#: The dual's largest m (no int64 wrap-around for absurd curves).
M_CAP = 2**62


def primal_m(a: int, b: np.ndarray, budget: int, rounding: Rounding = "floor") -> np.ndarray:
    """Multiplicity per width meeting ``budget``: ``(N,)`` int64, 0 where no ``m >= 1`` fits.

    ``floor``: the largest m with ``a + m * b <= budget``; ``nearest``: the m minimizing
    ``|a + m * b - budget|`` (ties to the smaller m)."""
    check_choice("rounding", rounding, ROUNDINGS, "rounding rule")
    b = np.asarray(b, dtype=np.int64)
    if np.any(b <= 0):
        raise ValueError("per-path costs must be positive")
    room = np.int64(budget) - np.int64(a)
    if room <= 0:
        return np.zeros_like(b)
    m = room // b
    if rounding == "nearest":
        rem = room - m * b
        m = m + (2 * rem > b)
    return m.astype(np.int64)


def dual_m(v: np.ndarray, v_target: np.ndarray | float) -> np.ndarray:
    """Least integer ``m >= 1`` with ``v / m <= v_target`` (as computed in float64), elementwise,
    at most :data:`M_CAP`. ``v``: ``(..., N)``; ``v_target``: broadcastable to it."""
    v = np.asarray(v, dtype=np.float64)
    vt = np.asarray(v_target, dtype=np.float64)
    m = np.maximum(np.ceil(v / vt) - 1, 1.0)
    for _ in range(4):  # float rounding: at most a couple of increments
        over = (v / m) > vt
        if not over.any():
            break
        m = m + over
    return np.minimum(m, float(M_CAP)).astype(np.int64)


def argmin_ties(objective: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Per row of ``(K, N)`` arrays: the index of the least ``objective``; among exact ties the
    least ``tie``, then the first. ``(K,)`` int64."""
    obj = np.asarray(objective, dtype=np.float64)
    tied = obj == obj.min(axis=-1, keepdims=True)
    key = np.where(tied, np.broadcast_to(np.asarray(tie, dtype=np.float64), obj.shape), np.inf)
    best = np.argmin(key, axis=-1)
    rows = np.arange(obj.shape[0])
    off = ~tied[rows, best]  # every tied tie-key infinite: the first tied index
    best[off] = np.argmax(tied[off], axis=-1)
    return best.astype(np.int64)


@dataclass(frozen=True)
class Solution:
    """One problem on ``K`` curves: per curve and candidate ``(K, N)`` the multiplicity ``m``,
    ``cost`` (int64 for the primal, float64 for the dual), ``variance`` ``V1 / m`` and the
    minimized ``objective`` (inf where infeasible), and each curve's optimum ``best`` ``(K,)``."""

    best: np.ndarray
    m: np.ndarray
    cost: np.ndarray
    variance: np.ndarray
    objective: np.ndarray

    def row(self, k: int = 0) -> ArraySolution:
        """Curve ``k``'s solution."""
        return ArraySolution(int(self.best[k]), self.m[k], self.cost[k], self.objective[k])

    def archs(self, n: np.ndarray) -> list[str]:
        """Each curve's optimum as ``MxNd`` (``n``: the candidate widths ``(N,)``)."""
        rows = np.arange(self.best.size)
        return [format_arch(int(m), int(w)) for m, w in zip(self.m[rows, self.best], np.asarray(n)[self.best])]


@dataclass(frozen=True)
class ArraySolution:
    """One curve's solution: the optimum's index and ``(N,)`` per-candidate values."""

    best: int
    m: np.ndarray
    cost: np.ndarray
    objective: np.ndarray  # variance (primal) or cost (dual); inf where infeasible


def _rows(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v[None, :] if v.ndim == 1 else v


def solve_primal(a: int, b: np.ndarray, v: np.ndarray, budget: int, rounding: Rounding = "floor") -> Solution:
    """The primal on every row of ``v`` (``(K, N)``, or ``(N,)`` for one curve); :class:`UserError`
    when no candidate fits the budget."""
    v = _rows(v)
    m = primal_m(a, b, budget, rounding)
    ok = m >= 1
    if not ok.any():
        raise UserError(f"budget {budget:,} is below the smallest member of the search "
                        f"(cost {int(a + np.min(b)):,} at m=1)")
    cost = np.int64(a) + m * np.asarray(b, dtype=np.int64)  # <= budget + one path: no overflow
    var = np.where(ok, v / np.maximum(m, 1), np.inf)
    mk, ck = np.broadcast_to(m, v.shape), np.broadcast_to(cost, v.shape)
    return Solution(argmin_ties(var, ck), mk, ck, var, var)


def solve_dual(a: int, b: np.ndarray, v: np.ndarray, v_target: np.ndarray | float) -> Solution:
    """The dual on every row of ``v`` (``(K, N)`` or ``(N,)``); ``v_target`` broadcastable to
    ``(K, N)`` (a scalar, ``(K, 1)`` per curve, ``(N,)`` per width)."""
    v = _rows(v)
    m = np.broadcast_to(dual_m(v, v_target), v.shape)
    cost = a + m.astype(np.float64) * np.asarray(b, dtype=np.float64)  # float64: m can be huge
    var = v / m
    return Solution(argmin_ties(cost, var), m, cost, var, cost)


def solve_batch(
    a: int, b: np.ndarray, v: np.ndarray, *, budget: int, v_target: np.ndarray | float,
    rounding: Rounding = "floor", solver: Solver = "integer",
) -> tuple[Solution, Solution]:
    """Both problems on every row of ``v`` (``(K, N)`` curves at the ``N`` candidate widths with
    per-path costs ``b`` ``(N,)``): the primal at ``budget``, the dual at ``v_target``. With
    ``solver="relaxed"`` both share each curve's ``argmin V1(n) B(n)``, which is then their
    objective."""
    check_choice("solver", solver, SOLVERS, "solver")
    primal = solve_primal(a, b, v, budget, rounding)
    dual = solve_dual(a, b, v, v_target)
    if solver == "integer":
        return primal, dual
    bb = np.broadcast_to(np.asarray(b, dtype=np.float64), primal.m.shape)
    point = np.where(primal.m >= 1, _rows(v) * bb, np.inf)
    star = argmin_ties(point, bb)
    return (Solution(star, primal.m, primal.cost, primal.variance, point),
            Solution(star, dual.m, dual.cost, dual.variance, point))


def solve_primal_arrays(a: int, b: np.ndarray, v: np.ndarray, budget: int, rounding: Rounding = "floor") -> ArraySolution:
    """The primal on one curve ``v`` ``(N,)`` (:func:`solve_primal`)."""
    return solve_primal(a, b, v, budget, rounding).row(0)


def solve_dual_arrays(a: int, b: np.ndarray, v: np.ndarray, v_target: np.ndarray | float) -> ArraySolution:
    """The dual on one curve ``v`` ``(N,)`` (:func:`solve_dual`)."""
    return solve_dual(a, b, v, v_target).row(0)
