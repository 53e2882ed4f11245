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

import numpy as np

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


def calibration(replicates: int, estimator: str, family: str, dataset: str, baseline: str, seed: int = 0,
                fresh: int = 0, fresh_trials: int = 200, base: VarianceCurve | None = None,
                draws: int = 1000, truth_trials: int | None = None,
                widening: float = CALIBRATED_SCALE) -> dict[str, dict[str, object]]:
    """Calibration and coverage of both problems over ``replicates`` synthetic replicate tables
    and ``fresh`` reruns of Algorithm 1 (seeds 1..fresh, ``fresh_trials`` trials), each solved
    with ``draws`` bootstrap draws made by ``estimator`` (``calibrated``: widened by
    ``widening``). Truth: the smooth fit of ``base``
    (default: the family's own curve, measured with ``truth_trials`` trials, default the
    search's; a truth measured with many more trials than the fresh runs keeps its own Monte
    Carlo error out of the comparison). Per problem: the true optimum, the headline's mean
    reported P and how often it is the true optimum, the optimal set's coverage, the binned
    (reported P, observed frequency) table of the (at most five) most probable set members and
    its count-weighted mean gap; with ``fresh``, ``fresh_bias``: the mean fresh table over the
    base table per width, with the relative standard error of that ratio (both tables' errors)."""
    if base is None:
        base = load_curve(None, family=family, **({} if truth_trials is None else {"trials": truth_trials}))
    fit = base.fit
    truth = base.with_model("smooth")(np.asarray(fit.widths))
    exact = dataclasses.replace(fit, variance=truth.tolist(), stderr=[0.0] * truth.size)
    tab = cost_table(family, dataset)
    true = search(family, dataset, baseline, VarianceCurve(exact, "smooth"), table=tab)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, bool]]] = {"primal": [], "dual": []}
    heads: dict[str, list[tuple[float, bool]]] = {"primal": [], "dual": []}
    cover: dict[str, list[bool]] = {"primal": [], "dual": []}
    # synthetic replicates carry the errors of the search's own table (T = ON_THE_FLY_TRIALS)
    fits = [replicate_fit(fit, truth, rng, ON_THE_FLY_TRIALS) for _ in range(replicates)]
    fits += [alpha_on_the_fly(family=family, trials=fresh_trials, seed=s)[0] for s in range(1, fresh + 1)]
    for r, rep in enumerate(fits):
        curve = VarianceCurve(rep, "auto", draws, seed=r + 1, estimator=estimator, widening=widening)
        res = search(family, dataset, baseline, curve, table=tab)
        for prob in ("primal", "dual"):
            want = getattr(true, prob).arch
            st = res.optimal_set[prob]
            cover[prob].append(want in st.members)
            head = res.headline(prob)
            heads[prob].append((float(head.p_best or 0.0), head.arch == want))
            rows[prob] += [(float(c.p_best or 0.0), c.arch == want) for c in st.candidates]
    out: dict[str, dict[str, object]] = {}
    if fresh:  # reduced-T runs against the base table: a bias that no error bar covers shows here
        runs = fits[replicates:]
        mean = np.mean([f.variance for f in runs], 0)
        rel_fresh = np.std([f.variance for f in runs], 0, ddof=1) / np.sqrt(len(runs)) / mean
        rel_base = np.asarray(fit.stderr) / np.asarray(fit.variance)
        out["fresh_bias"] = {"widths": list(fit.widths), "ratio": (mean / np.asarray(fit.variance)).tolist(),
                             "rel_se": np.hypot(rel_fresh, rel_base).tolist()}  # both tables' errors
    for prob in ("primal", "dual"):
        p, hit = (np.array(x, dtype=float) for x in zip(*rows[prob]))
        hp, hh = (np.array(x, dtype=float) for x in zip(*heads[prob]))
        bins = []
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            sel = (p >= lo) & (p < hi)
            if sel.any():
                bins.append((lo, min(hi, 1.0), int(sel.sum()), float(p[sel].mean()), float(hit[sel].mean())))
        gap = sum(c * abs(rp - f) for _, _, c, rp, f in bins) / sum(c for _, _, c, _, _ in bins)
        out[prob] = {"truth": getattr(true, prob).arch, "head_p": float(hp.mean()), "head_hit": float(hh.mean()),
                     "coverage": float(np.mean(cover[prob])), "bins": bins, "gap": gap}
    return out


