"""Calibration of the search's P(optimal) and coverage of its optimal sets, on replicates of
the Monte Carlo table around a known truth (``bench/calibration.py`` prints it; the module
docstring there says what is measured).

Truth: the ``smooth`` fit of a curve. Each synthetic replicate's table is the truth at the
measured widths times log-normal noise with the relative standard errors of a table of the
search's T (the truth's own, scaled by ``sqrt(T_truth / T)``), its
standard errors redrawn as estimated from ``pairs`` input pairs (``se * sqrt(chi2(pairs - 1) /
(pairs - 1))``); fresh replicates are Algorithm 1 rerun with other seeds. Each is solved exactly
as :func:`~collegial.search.solve.search` solves, and the truth's own optimum is compared with
what it reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.ntk.curve import AlphaFit
from collegial.search.solve import cost_table, search
from collegial.search.variance import (
    CALIBRATED_SCALE,
    ON_THE_FLY_TRIALS,
    VarianceCurve,
    alpha_on_the_fly,
    load_curve,
)

BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001)


def replicate_fit(fit: AlphaFit, truth: np.ndarray, rng: np.random.Generator, trials: int | None = None) -> AlphaFit:
    """A Monte Carlo table drawn around ``truth`` with ``fit``'s relative errors and ``fit.pairs``;
    with ``trials``, the errors of a table of that many trials (``fit``'s scaled by
    ``sqrt(fit.trials / trials)``)."""
    target = trials if trials and fit.trials else fit.trials  # a synthetic fit records 0 trials: kept
    rel = np.asarray(fit.stderr) / np.asarray(fit.variance) * (math.sqrt(fit.trials / target) if target else 1.0)
    v = truth * np.exp(rng.standard_normal(truth.size) * rel - rel**2 / 2)
    dof = max(fit.pairs - 1, 1)
    se = v * rel * np.sqrt(rng.chisquare(dof, truth.size) / dof)
    return dataclasses.replace(fit, variance=v.tolist(), stderr=se.tolist(), trials=target)


#: What the replicates are compared with (:func:`calibration`'s ``truth``).
TRUTHS: tuple[str, ...] = ("base", "pooled")


def _truth(fit: AlphaFit, variance: np.ndarray, stderr: np.ndarray, model: str) -> VarianceCurve:
    """The noise-free curve of ``(variance, stderr)`` at ``fit``'s widths in ``model`` (``auto``:
    the search's own rule, smooth where it fits, else the table itself), as a curve whose table
    holds the model's values with zero errors (model ``smooth`` or ``empirical``)."""
    table = dataclasses.replace(fit, variance=variance.tolist(), stderr=stderr.tolist())
    curve = VarianceCurve(table, model)
    values = curve(np.asarray(fit.widths))
    exact = dataclasses.replace(fit, variance=values.tolist(), stderr=[0.0] * values.size)
    return VarianceCurve(exact, "empirical" if curve.model == "empirical" else "smooth")


def _pooled(fits: list[AlphaFit]) -> tuple[np.ndarray, np.ndarray]:
    """The mean table of independent runs and its standard error (their spread / sqrt(R))."""
    v = np.asarray([f.variance for f in fits])
    return v.mean(0), v.std(0, ddof=1) / math.sqrt(len(fits))


def calibration(replicates: int, estimator: str, family: str, dataset: str, baseline: str, seed: int = 0,
                fresh: int = 0, fresh_trials: int = 200, base: VarianceCurve | None = None,
                draws: int = 1000, truth_trials: int | None = None,
                widening: float = CALIBRATED_SCALE, truth: str = "base",
                score_fresh: bool = True, pool: int = 0,
                pool_trials: int | None = None) -> dict[str, dict[str, object]]:
    """Calibration and coverage of both problems over ``replicates`` synthetic replicate tables
    and ``fresh`` reruns of Algorithm 1 (seeds 1..fresh, ``fresh_trials`` trials), each solved
    with ``draws`` bootstrap draws made by ``estimator`` (``calibrated``: widened by
    ``widening``).

    ``truth`` (:data:`TRUTHS`): ``base``: the smooth fit of ``base`` (default: the family's own
    curve, measured with ``truth_trials`` trials, default the search's; many more trials keep its
    Monte Carlo error out of the comparison, but not the error of its input pairs: every seed
    draws its own pairs, and more trials per pair do not average over pairs); ``pooled``: for
    each fresh run, the mean table of the *other* fresh runs in the search's own model rule
    (``auto``; the curve over the probe design's input pairs, estimated from ``8 (fresh - 1)``
    pairs), and for the synthetic replicates the mean of all of them. Per problem: the true optimum (the most frequent one
    under ``pooled``), the headline's mean reported P and how often it is the true optimum, the
    optimal set's coverage and its mean reported mass (``set_mass``: the share of the draws the
    set holds, at least the level), the binned (reported P, observed frequency) table of the (at most
    five) most probable set members and its count-weighted mean gap; with ``fresh``,
    ``fresh_bias``: the mean fresh table over the base table per width, with the relative
    standard error of that ratio (both tables' errors). ``score_fresh=False``: the fresh runs
    only make the pooled truth; the replicates scored are the synthetic ones. ``pool`` runs
    (seeds 1..pool, default ``fresh``) at ``pool_trials`` trials (default ``fresh_trials``) make
    the pooled truth; the fresh run of seed s is compared with the pool without seed s (a seed
    fixes the input pairs whatever the trials)."""
    check_choice("truth", truth, TRUTHS, "calibration truth")
    pool = pool or fresh
    if truth == "pooled" and (pool < 3 or pool < fresh):
        raise UserError("a pooled truth needs at least 3 fresh runs (`fresh`), and a `pool` of at least `fresh`")
    if base is None:
        base = load_curve(None, family=family, **({} if truth_trials is None else {"trials": truth_trials}))
    fit = base.fit
    tab = cost_table(family, dataset)
    runs = [alpha_on_the_fly(family=family, trials=fresh_trials, seed=s)[0] for s in range(1, fresh + 1)]
    if any(list(r.widths) != list(fit.widths) for r in runs):
        raise UserError("the fresh runs were measured at other widths than the base curve")
    if truth == "pooled":  # in the search's own model rule: a precise table may reject the smooth fit
        same = pool_trials in (None, fresh_trials)  # the scored runs are the pool's first ones
        pooled = (runs if same else []) + [alpha_on_the_fly(family=family, trials=pool_trials or fresh_trials, seed=s)[0]
                                           for s in range(len(runs) + 1 if same else 1, pool + 1)]
        exact = _truth(fit, *_pooled(pooled), "auto")
        truths = [_truth(fit, *_pooled(pooled[:i] + pooled[i + 1:]), "auto") for i in range(fresh)]
    else:
        exact = _truth(fit, np.asarray(fit.variance), np.asarray(fit.stderr), "smooth")
        truths = [exact] * fresh

    def solve_truth(curve: VarianceCurve) -> Any:
        return search(family, dataset, baseline, curve, table=tab)

    rng = np.random.default_rng(seed)
    truth_all = solve_truth(exact)
    # synthetic replicates carry the errors of the search's own table (T = ON_THE_FLY_TRIALS)
    fits = [replicate_fit(fit, np.asarray(exact.fit.variance), rng, ON_THE_FLY_TRIALS) for _ in range(replicates)]
    answers = [truth_all] * replicates + [solve_truth(t) if truth == "pooled" else truth_all for t in truths]
    if not score_fresh:
        answers = answers[:replicates]
    solved = [(search(family, dataset, baseline,
                      VarianceCurve(rep, "auto", draws, seed=r + 1, estimator=estimator, widening=widening), table=tab),
               true) for r, (rep, true) in enumerate(zip(fits + runs, answers))]
    out: dict[str, dict[str, object]] = {}
    if fresh:  # fresh runs against the base table: a bias that no error bar covers shows here
        out["fresh_bias"] = _fresh_bias(runs, fit)
    for prob in ("primal", "dual"):
        out[prob] = _summary(prob, solved)
    return out


def _fresh_bias(runs: list[AlphaFit], fit: AlphaFit) -> dict[str, object]:
    """The mean fresh table over the base table per width, with the ratio's relative standard
    error (both tables' errors)."""
    mean = np.mean([f.variance for f in runs], 0)
    rel_fresh = np.std([f.variance for f in runs], 0, ddof=1) / np.sqrt(len(runs)) / mean
    rel_base = np.asarray(fit.stderr) / np.asarray(fit.variance)
    return {"widths": list(fit.widths), "ratio": (mean / np.asarray(fit.variance)).tolist(),
            "rel_se": np.hypot(rel_fresh, rel_base).tolist()}


def _summary(prob: str, solved: list[tuple[Any, Any]]) -> dict[str, object]:
    """Problem ``prob``'s calibration over ``(replicate's search result, true answer)`` pairs: the
    (most frequent) true optimum, the headline's mean reported P and hit rate, the optimal set's
    coverage and mean mass, the binned (reported P, observed) table and its gap."""
    rows: list[tuple[float, bool]] = []
    heads: list[tuple[float, bool]] = []
    cover, mass, wanted = [], [], []
    for res, true in solved:
        want = getattr(true, prob).arch
        st, head = res.optimal_set[prob], res.headline(prob)
        wanted.append(want)
        cover.append(want in st.members)
        mass.append(float(st.coverage))
        heads.append((float(head.p_best or 0.0), head.arch == want))
        rows += [(float(c.p_best or 0.0), c.arch == want) for c in st.candidates]
    p, hit = (np.array(x, dtype=float) for x in zip(*rows))
    hp, hh = (np.array(x, dtype=float) for x in zip(*heads))
    bins = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (p >= lo) & (p < hi)
        if sel.any():
            bins.append((lo, min(hi, 1.0), int(sel.sum()), float(p[sel].mean()), float(hit[sel].mean())))
    gap = sum(c * abs(rp - f) for _, _, c, rp, f in bins) / sum(c for _, _, c, _, _ in bins)
    return {"truth": Counter(wanted).most_common(1)[0][0], "head_p": float(hp.mean()), "head_hit": float(hh.mean()),
            "coverage": float(np.mean(cover)), "set_mass": float(np.mean(mass)), "bins": bins, "gap": gap}
