"""Reproduce the paper's search results (SPEC section 6) and its cost figures.

Targets for ``collegial reproduce``:

* ``search``: for each setting of SPEC section 6 (CIFAR-10 with parameter and FLOP budgets,
  ImageNet32, ImageNet64 with both baselines), the paper's optimum, ours, our near-ties and
  whether they match, as a markdown table; plus the match counts of every variance model, the
  range of Proposition-1 alphas that would reproduce each of the paper's optima, and the measured
  variance ratios that decide the dual problems.
* ``costs``: every parameter count, GFLOPs figure and rho of SPEC section 6 against ours.

A match is ``yes`` when our optimum is the paper's, ``in set`` when the paper's optimum is in our
optimal set (the candidates that hold the optimum with 95% bootstrap probability), ``no``
otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from collegial.errors import UserError
from collegial.models import format_arch, parse_arch
from collegial.models.costs import model_costs
from collegial.paper import SETTINGS, Setting, printed_models
from collegial.search.problems import SOLVERS, solve_batch
from collegial.search.solve import cost_table, search
from collegial.search.result import Candidate, SearchResult
from collegial.ntk.curve import AlphaFit
from collegial.ntk.fits import MODELS
from collegial.search.variance import DEFAULT_VARIANCE_MODEL, VarianceCurve

#: Algorithm 1 trials per width when ``reproduce search`` runs it itself (the paper's T).
REPRO_TRIALS = 2000


@dataclass
class Row:
    setting: Setting
    problem: str  # "primal" | "dual"
    paper: str
    ours: Candidate
    ties: list[str]  # our optimal set's members (MxNd), most probable first
    match: str
    paper_rho: float | None = None
    paper_near: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting.name,
            "dataset": self.setting.dataset,
            "family": self.setting.family,
            "baseline": self.setting.baseline,
            "budget": self.setting.budget,
            "rounding": self.setting.rounding,
            "problem": self.problem,
            "paper": self.paper,
            "paper_rho": self.paper_rho,
            "paper_vicinity": list(self.paper_near),
            "ours": self.ours.to_dict(),
            "optimal_set": list(self.ties),
            "match": self.match,
        }


def match_status(paper: str, ours: Candidate, members: list[str]) -> str:
    if ours.arch == paper:
        return "yes"
    if paper in members:
        return "in set"
    return "no"


def run_settings(
    curve: VarianceCurve,
    *,
    ties: str = "paired",
    level: float = 0.95,
    solver: str = "integer",
    settings: tuple[Setting, ...] = SETTINGS,
) -> tuple[list[Row], list[SearchResult]]:
    rows: list[Row] = []
    results: list[SearchResult] = []
    for s in settings:
        res = search(s.family, s.dataset, s.baseline, curve, budget=s.budget, rounding=s.rounding,
                     ties=ties, level=level, solver=solver)
        results.append(res)
        p_set = list(res.optimal_set["primal"].members)
        rows.append(Row(s, "primal", s.primal, res.primal, p_set, match_status(s.primal, res.primal, p_set),
                        None, s.vicinity))
        if s.dual is not None:
            d_set = list(res.optimal_set["dual"].members)
            rows.append(Row(s, "dual", s.dual, res.dual, d_set, match_status(s.dual, res.dual, d_set), s.dual_rho))
    return rows, results


def counts(rows: list[Row]) -> tuple[int, int, int]:
    """(exact matches, matches within our optimal sets, rows)."""
    exact = sum(r.match == "yes" for r in rows)
    return exact, exact + sum(r.match == "in set" for r in rows), len(rows)


def markdown_rows(rows: list[Row]) -> str:
    lines = [
        "| setting | problem | rounding | paper | ours | our optimal set | match |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = r.paper + (f" (rho {r.paper_rho})" if r.paper_rho else "")
        if r.paper_near:
            paper += f"; {', '.join(r.paper_near)} near it"
        ours = r.ours.arch + (f" (rho {r.ours.rho:.2f})" if r.problem == "dual" else "")
        ties = ", ".join(r.ties[:5]) + (f" +{len(r.ties) - 5}" if len(r.ties) > 5 else "")
        lines.append(
            f"| {r.setting.name} | {r.problem} | {r.setting.rounding} | {paper} | {ours} | "
            f"{ties or '-'} | {r.match} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Which curves would reproduce the paper? Scans over Proposition 1's alpha and fit2's (p, alpha).

_N = np.arange(2, 129, dtype=np.int64)


def optima_many(
    s: Setting, v: np.ndarray, n: np.ndarray = _N, solver: str = "integer"
) -> tuple[list[str], list[str]]:
    """Primal and dual optima (``MxNd``) of setting ``s`` for each row of ``v`` (``(G, N)``,
    the curve at widths ``n``, which must hold the baseline's width)."""
    tab = cost_table(s.family, s.dataset)
    m_b, n_b = parse_arch(s.baseline)
    a = tab.fixed(s.budget)
    b = np.asarray(tab.per_path(s.budget, n), dtype=np.int64)
    ib = int(np.searchsorted(n, n_b))
    primal, dual = solve_batch(a, b, v, budget=a + m_b * int(b[ib]), v_target=v[:, ib : ib + 1] / m_b,
                               rounding=s.rounding, solver=solver)  # type: ignore[arg-type]
    return primal.archs(n), dual.archs(n)


def _hits(v: np.ndarray, settings: tuple[Setting, ...], solver: str) -> list[tuple[Setting, str, str, np.ndarray]]:
    """Per paper optimum: ``(setting, problem, paper arch, (G,) bool hit)``."""
    out = []
    for s in settings:
        primal, dual = optima_many(s, v, _N, solver)
        for prob, got, paper in (("primal", primal, s.primal), ("dual", dual, s.dual)):
            if paper is not None:
                out.append((s, prob, paper, np.array([g == paper for g in got])))
    return out


def _intervals(grid: np.ndarray, hit: np.ndarray) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    start = prev = None
    for g, h in zip(grid, hit):
        if h and start is None:
            start = g
        if not h and start is not None:
            out.append((float(start), float(prev)))
            start = None
        prev = g
    if start is not None:
        out.append((float(start), float(grid[-1])))
    return out


PROP1_GRID = np.round(np.arange(0.05, 40.0001, 0.01), 4)
FIT2_P = np.round(np.arange(0.0, 2.0001, 0.02), 4)
FIT2_ALPHA = np.round(np.arange(0.0, 30.0001, 0.1), 4)


def alpha_scan(
    alphas: np.ndarray = PROP1_GRID, settings: tuple[Setting, ...] = SETTINGS, solver: str = "integer"
) -> dict[str, Any]:
    """For each paper optimum, the Proposition-1 alphas (grid) whose search returns it, and the
    most optima any single alpha reproduces at once."""
    v = np.expm1(alphas[:, None] / _N[None, :])
    hits = _hits(v, settings, solver)
    score = np.sum([h for *_, h in hits], axis=0)
    best = int(score.max())
    per = []
    for s, prob, paper, h in hits:
        vicinity = np.zeros_like(h)
        if prob == "primal" and s.vicinity:
            primal, _ = optima_many(s, v, _N, solver)
            vicinity = np.array([g in s.vicinity for g in primal])
        per.append({"setting": s.name, "problem": prob, "paper": paper,
                    "alpha_ranges": _intervals(alphas, h), "vicinity_ranges": _intervals(alphas, vicinity)})
    return {"solver": solver, "per_optimum": per, "best": best, "total": len(hits),
            "best_alpha_ranges": _intervals(alphas, score == best)}


def fit2_scan(
    ps: np.ndarray = FIT2_P,
    alphas: np.ndarray = FIT2_ALPHA,
    settings: tuple[Setting, ...] = SETTINGS,
    solver: str = "integer",
) -> dict[str, Any]:
    """Over a grid of fit2 curves ``n^-p exp(alpha/n)`` (beta cancels in every decision): the
    fraction reproducing each paper optimum and the most optima one curve reproduces at once."""
    pp, aa = np.meshgrid(ps, alphas, indexing="ij")
    pf, af = pp.ravel(), aa.ravel()
    v = np.exp(-pf[:, None] * np.log(_N)[None, :] + af[:, None] / _N[None, :])
    hits = _hits(v, settings, solver)
    score = np.sum([h for *_, h in hits], axis=0)
    best = int(score.max())
    at = score == best
    return {
        "solver": solver,
        "grid": {"p": [float(ps[0]), float(ps[-1])], "alpha": [float(alphas[0]), float(alphas[-1])],
                 "points": int(pf.size)},
        "per_optimum": [{"setting": s.name, "problem": prob, "paper": paper, "fraction": float(h.mean())}
                        for s, prob, paper, h in hits],
        "best": best,
        "total": len(hits),
        "best_region": {"count": int(at.sum()), "p": [float(pf[at].min()), float(pf[at].max())],
                        "alpha": [float(af[at].min()), float(af[at].max())]},
        "missed_at_best": sorted({f"{s.name} {prob} {paper}" for s, prob, paper, h in hits if not h[at].any()}),
    }


def variance_ratios(curve: VarianceCurve, settings: tuple[Setting, ...] = SETTINGS) -> list[dict[str, Any]]:
    """``m_b V1(n) / V1(n_b)`` at the paper's dual widths: the dual's least m at width n is
    ``M`` exactly when ``M - 1 < m_b V1(n) / V1(n_b) <= M``."""
    out = []
    seen = set()
    for s in settings:
        if s.dual is None:
            continue
        m_b, n_b = parse_arch(s.baseline)
        m_d, n_d = parse_arch(s.dual)
        key = (n_d, n_b, m_b)
        if key in seen:
            continue
        seen.add(key)
        try:
            nn = np.array(sorted({n_d, n_b}))
            point, draws = curve(nn), curve.draws(nn)
        except UserError:
            continue  # outside an empirical table
        i, j = int(np.searchsorted(nn, n_d)), int(np.searchsorted(nn, n_b))
        rd = m_b * draws[:, i] / draws[:, j]
        row = {"n": n_d, "n_b": n_b, "m_b": m_b, "paper_m": m_d,
               "ratio": float(m_b * point[i] / point[j]), "ratio_se": float(np.std(rd, ddof=1)),
               "needed": [m_d - 1, m_d]}
        w = list(curve.fit.widths)
        if n_d in w and n_b in w:  # both measured: the Monte Carlo table's own ratio
            a, b = w.index(n_d), w.index(n_b)
            va, vb = curve.fit.variance[a], curve.fit.variance[b]
            sa, sb = curve.fit.stderr[a], curve.fit.stderr[b]
            r = m_b * va / vb
            row["table_ratio"] = r
            row["table_ratio_se"] = r * math.sqrt((sa / va) ** 2 + (sb / vb) ** 2)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------


def _fmt_ranges(r: list[tuple[float, float]]) -> str:
    return ", ".join(f"{a:.2f}..{b:.2f}" if a != b else f"{a:.2f}" for a, b in r) or "none"


def _per_model(
    curve: VarianceCurve,
    done: tuple[str, str],
    done_counts: tuple[int, int, int],
    *,
    ties: str,
    level: float,
    settings: tuple[Setting, ...],
) -> dict[str, tuple[int, int, int] | str]:
    """Match counts of every variance model and solver (``"model/solver"`` -> counts, or why it
    could not run); ``done`` already has ``done_counts``."""
    per_model: dict[str, tuple[int, int, int] | str] = {}
    for other in MODELS:
        for slv in SOLVERS:
            key = f"{other}/{slv}"
            if (other, slv) == done:
                per_model[key] = done_counts
                continue
            try:
                c = curve.with_model(other)
                per_model[key] = counts(run_settings(c, ties=ties, level=level, solver=slv, settings=settings)[0])
            except UserError as e:
                per_model[key] = str(e)  # e.g. no fit2 entry, or a table too short
    return per_model


def _per_model_lines(per_model: dict[str, tuple[int, int, int] | str]) -> list[str]:
    lines = ["Every variance model and solver on the same alpha file:", "",
             "| variance model | solver | exact | within optimal set |", "|---|---|---|---|"]
    for k, v in per_model.items():
        mdl, slv = k.split("/")
        lines.append(f"| {mdl} | {slv} | {v[0]}/{v[2]} | {v[1]}/{v[2]} |" if isinstance(v, tuple)
                     else f"| {mdl} | {slv} | n/a: {v} | |")
    return lines


def _scan_lines(fit: AlphaFit, scans: dict[str, Any], f2: dict[str, Any]) -> list[str]:
    """Which Proposition-1 alphas and fit2 curves reproduce the paper's optima."""
    lines = ["Which curves could reproduce the paper at all: Proposition-1 alphas (grid 0.05..40, step 0.01) "
             f"whose search returns each optimum (ours: alpha = {fit.alpha:.4g} ± {fit.alpha_stderr:.2g}):", "",
             "| setting | problem | paper | alpha range (integer) | alpha range (relaxed) |", "|---|---|---|---|---|"]
    for a, b in zip(scans["integer"]["per_optimum"], scans["relaxed"]["per_optimum"]):
        vic = f" (vicinity: {_fmt_ranges(a['vicinity_ranges'])})" if a["vicinity_ranges"] else ""
        lines.append(f"| {a['setting']} | {a['problem']} | {a['paper']} | {_fmt_ranges(a['alpha_ranges'])}{vic} | "
                     f"{_fmt_ranges(b['alpha_ranges'])} |")
    lines.append("")
    for slv in SOLVERS:
        sc, g = scans[slv], f2[slv]
        br = g["best_region"]
        lines.append(
            f"- {slv} solver: the best single prop1 alpha reproduces {sc['best']}/{sc['total']} "
            f"(alpha in {_fmt_ranges(sc['best_alpha_ranges'])}); the best fit2 curve n^-p exp(alpha/n) "
            f"(grid p {g['grid']['p'][0]:g}..{g['grid']['p'][1]:g} x alpha {g['grid']['alpha'][0]:g}.."
            f"{g['grid']['alpha'][1]:g}, {g['grid']['points']} curves) reproduces {g['best']}/{g['total']} "
            f"({br['count']} curves, p {br['p'][0]:.2f}..{br['p'][1]:.2f}, alpha {br['alpha'][0]:.1f}.."
            f"{br['alpha'][1]:.1f}; missed: {', '.join(g['missed_at_best']) or 'none'})."
        )
    f2fit = fit.fit2
    lines.append(f"- our fit2: p = {f2fit['p']:.3g}, alpha = {f2fit['alpha']:.3g}, beta = {f2fit['beta']:.3g}.")
    return lines


def _ratio_lines(ratios: list[dict[str, Any]], model: str) -> list[str]:
    if not ratios:
        return []
    lines = ["", f"Dual decisions: m_b V1(n)/V1(n_b) under {model} (the paper's M x nd needs M-1 < ratio <= M):", ""]
    for r in ratios:
        tab = (f"; Monte Carlo table {r['table_ratio']:.2f} ± {r['table_ratio_se']:.2f}"
               if "table_ratio" in r else "")
        lines.append(f"- n={r['n']} vs baseline {format_arch(r['m_b'], r['n_b'])}: {r['ratio']:.2f} ± {r['ratio_se']:.2f}{tab} "
                     f"(paper's {format_arch(r['paper_m'], r['n'])} needs {r['needed'][0]} < ratio <= {r['needed'][1]})")
    return lines


def reproduce_search(
    fit: AlphaFit,
    *,
    model: str = DEFAULT_VARIANCE_MODEL,
    solver: str = "integer",
    ties: str = "paired",
    level: float = 0.95,
    draws: int = 1000,
    seed: int = 0,
    command: str = "",
    source: str = "<memory>",
    settings: tuple[Setting, ...] = SETTINGS,
) -> tuple[str, dict[str, Any], list[SearchResult]]:
    """The markdown report, a JSON-able summary and the search results of ``model``."""
    curve = VarianceCurve(fit, model, draws, seed, source)
    model = curve.model
    rows, results = run_settings(curve, ties=ties, level=level, solver=solver, settings=settings)
    exact, within, total = counts(rows)
    per_model = _per_model(curve, (model, solver), (exact, within, total), ties=ties, level=level, settings=settings)
    scans = {slv: alpha_scan(settings=settings, solver=slv) for slv in SOLVERS}
    f2 = {slv: fit2_scan(settings=settings, solver=slv) for slv in SOLVERS}
    ratios = variance_ratios(curve, settings)

    lines = [f"Variance model **{curve.requested}** ({curve.describe()}), {solver} solver; probe: "
             f"{fit.probe_label()}; source: {source}."]
    if command:
        lines.append(f"Command: `{command}`")
    lines += ["", markdown_rows(rows), "",
              f"**Matches ({model}, {solver} solver): {exact}/{total} exact, {within}/{total} within our "
              f"optimal sets** ({level:.0%} of {draws} bootstrap draws).", ""]
    lines += _per_model_lines(per_model) + [""] + _scan_lines(fit, scans, f2) + _ratio_lines(ratios, model)
    summary = {
        "variance_model": model,
        "variance_requested": curve.requested,
        "solver": solver,
        "alpha": fit.alpha,
        "fit2": fit.fit2,
        "alpha_source": source,
        "probe": fit.probe_options(),
        "rows": [r.to_dict() for r in rows],
        "matches": {"exact": exact, "within_optimal_set": within, "total": total},
        "per_model": {k: (dict(zip(("exact", "within_optimal_set", "total"), v)) if isinstance(v, tuple) else v)
                      for k, v in per_model.items()},
        "alpha_scan": scans,
        "fit2_scan": f2,
        "dual_ratios": ratios,
    }
    return "\n".join(lines), summary, results


# ---------------------------------------------------------------------------------------------
# reproduce costs: the paper's cost figures (SPEC section 6)


def costs_rows() -> list[dict[str, Any]]:
    """Ours against every figure the paper prints (:func:`collegial.paper.printed_models`; params to 0.1M, GFLOPs rounded up to 0.01 as
    the paper does, rho to within 0.06)."""
    rows = []
    for pm in printed_models():
        ds, fam, arch = pm.key
        c = model_costs(fam, arch, ds)
        row: dict[str, Any] = {"dataset": ds, "family": fam, "arch": arch, "params": c.params, "flops": c.flops}
        checks = []
        if pm.params_m is not None:
            row["paper_params_m"] = pm.params_m
            checks.append(round(c.params / 1e6, 1) == pm.params_m)
        if pm.gflops is not None:
            row["paper_gflops"] = pm.gflops
            checks.append(math.ceil(c.flops / 1e7) / 100 == pm.gflops)
        if pm.rho is not None and pm.rho_baseline is not None:
            base = model_costs(fam, pm.rho_baseline, ds).params
            row["rho"] = base / c.params
            row["paper_rho"] = pm.rho
            row["rho_baseline"] = pm.rho_baseline
            checks.append(abs(base / c.params - pm.rho) < 0.06)
        row["match"] = all(checks)
        rows.append(row)
    return rows


def costs_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | model | params (paper) | GFLOPs (paper) | rho (paper) | match |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        p = f"{r['params'] / 1e6:.2f}M" + (f" ({r['paper_params_m']}M)" if "paper_params_m" in r else "")
        g = f"{r['flops'] / 1e9:.3f}" + (f" ({r['paper_gflops']})" if "paper_gflops" in r else "")
        rho = f"{r['rho']:.2f} vs {r['rho_baseline']} ({r['paper_rho']})" if "rho" in r else "-"
        lines.append(f"| {r['dataset']} | {r['family']} {r['arch']} | {p} | {g} | {rho} | "
                     f"{'yes' if r['match'] else 'no'} |")
    n_ok = sum(r["match"] for r in rows)
    lines.append("")
    lines.append(f"**{n_ok}/{len(rows)} rows match the paper** (params to 0.1M; GFLOPs rounded up to 0.01; rho within 0.06).")
    return "\n".join(lines)
