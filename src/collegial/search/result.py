"""The search's result: each problem's candidates, curves, per-architecture probabilities and
optimal sets (:class:`SearchResult`), and its text: the answer first (:func:`format_answer`),
then the paper's table (:func:`format_table`). The solver that fills it: :mod:`collegial.search.solve`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from collegial.errors import UserError
from collegial.models.costs import format_flops, format_params

#: Most candidates listed in an optimal set (and labelled in plots).
MAX_SET = 5



@dataclass(frozen=True)
class Candidate:
    arch: str
    m: int
    n: int
    params: int
    flops: int
    variance: float  # V1(n) / m
    rho: float  # cost(baseline) / cost, in the budget's cost kind
    variance_se: float = 0.0  # bootstrap standard error of the variance
    p_best: float | None = None  # bootstrap probability of being the optimum

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["p_best"] is None:
            del d["p_best"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(**{k: d[k] for k in ("arch", "m", "n", "params", "flops", "variance", "rho")},
                   variance_se=d.get("variance_se", 0.0), p_best=d.get("p_best"))


@dataclass
class Curve:
    """One problem's curve over the candidate widths (for plots), ``(N,)`` arrays;
    ``lo``/``hi``: the ``level`` bootstrap interval of ``y``."""

    n: np.ndarray
    m: np.ndarray
    y: np.ndarray  # primal: variance V1(n)/m; dual: rho
    lo: np.ndarray
    hi: np.ndarray
    feasible: np.ndarray

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON lists (infinite bounds, where a width is infeasible, as None)."""
        return {k: [None if isinstance(x, float) and not np.isfinite(x) else x for x in getattr(self, k).tolist()]
                for k in ("n", "m", "y", "lo", "hi", "feasible")}

    @classmethod
    def from_dict(cls, d: dict[str, list[Any]]) -> Curve:
        def arr(k: str, dtype: Any) -> np.ndarray:
            return np.array([np.inf if x is None else x for x in d[k]], dtype=dtype)

        return cls(arr("n", np.int64), arr("m", np.int64), arr("y", np.float64), arr("lo", np.float64),
                   arr("hi", np.float64), np.array(d["feasible"], dtype=bool))


@dataclass(frozen=True)
class OptimalSet:
    """The candidates that hold the optimum with bootstrap probability ``coverage`` (>= the
    level): ``widths`` = (least, greatest) n among them, ``size`` of them in all,
    ``candidates`` = the (at most :data:`MAX_SET`) most probable, by decreasing ``p_best``."""

    widths: tuple[int, int]
    coverage: float
    size: int
    candidates: list[Candidate]
    members: tuple[str, ...] = ()  # every member's MxNd, most probable first

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "coverage": self.coverage,
            "size": self.size,
            "candidates": [c.to_dict() for c in self.candidates],
            "members": list(self.members),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimalSet:
        return cls(tuple(d["widths"]), d["coverage"], d["size"], [Candidate.from_dict(c) for c in d["candidates"]],
                   tuple(d.get("members", ())))


def arch_probabilities(win: np.ndarray, m: np.ndarray) -> list[tuple[int, int, float]]:
    """Bootstrap probability of each architecture being the optimum: ``win`` ``(K,)`` the
    optimum's width index in each draw, ``m`` its multiplicities ``(N,)`` (fixed per width) or
    ``(K, N)`` (per draw). Returns ``(i, m, p)`` by decreasing ``p`` (ties: smaller ``i``, ``m``)."""
    k = win.shape[0]
    mm = m[win] if m.ndim == 1 else m[np.arange(k), win]
    pairs, counts = np.unique(np.stack([win, mm], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))
    return [(int(pairs[j, 0]), int(pairs[j, 1]), float(counts[j] / k)) for j in order]


def optimal_set(probs: list[tuple[int, int, float]], level: float, make: Any, limit: int = MAX_SET) -> OptimalSet:
    """The optimal set from :func:`arch_probabilities`' ``(i, m, p)``; ``make(i, m, p)`` builds
    that candidate."""
    cum = np.cumsum([p for _, _, p in probs])
    k = min(int(np.searchsorted(cum, level - 1e-12) + 1), len(probs))
    every = [make(i, m, p) for i, m, p in probs[:k]]
    widths = (min(c.n for c in every), max(c.n for c in every))
    return OptimalSet(widths, float(cum[k - 1]), k, every[:limit], tuple(c.arch for c in every))


@dataclass
class SearchResult:
    family: str
    dataset: str
    budget_kind: str
    budget: int
    rounding: str
    solver: str
    n_range: tuple[int, int]
    variance_model: str
    variance_desc: str
    alpha: float
    alpha_source: str
    ties: str
    level: float
    draws: int
    baseline: Candidate
    primal: Candidate  # the point optimum
    dual: Candidate  # the point optimum
    near_ties: dict[str, list[Candidate]]
    primal_curve: Curve = field(repr=False)
    dual_curve: Curve = field(repr=False)
    optimal_set: dict[str, OptimalSet] = field(default_factory=dict)
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe: str = ""
    #: The alpha file's probe: family, inputs, correlation, pairs, T, seed, ... (AlphaFit.probe_options).
    probe_options: dict[str, Any] = field(default_factory=dict)
    #: Lines printed before the answer (e.g. where a check finds the 1/m law does not hold).
    notes: list[str] = field(default_factory=list)
    #: The alpha file used: path, SHA-256 of its bytes, its own provenance (VarianceCurve.origin).
    alpha_file: dict[str, Any] = field(default_factory=dict)
    #: Each problem's most probable architecture (the headline; the point optimum when the
    #: bootstrap is degenerate).
    most_probable: dict[str, Candidate] = field(default_factory=dict)

    def headline(self, prob: str) -> Candidate:
        """The answer a user reads first: the most probable architecture of ``prob``."""
        return self.most_probable.get(prob) or getattr(self, prob)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "dataset": self.dataset,
            "budget": self.budget_kind,
            "budget_value": self.budget,
            "rounding": self.rounding,
            "solver": self.solver,
            "n_range": list(self.n_range),
            "baseline": self.baseline.to_dict(),
            "primal": self.primal.to_dict(),
            "dual": self.dual.to_dict(),
            "most_probable": {k: v.to_dict() for k, v in self.most_probable.items()},
            "optimal_set": {k: v.to_dict() for k, v in self.optimal_set.items()},
            "near_ties": {k: [c.to_dict() for c in v] for k, v in self.near_ties.items()},
            "by_model": self.by_model,
            "probe": self.probe,
            "probe_options": self.probe_options,
            "variance_model": self.variance_model,
            "variance_curve": self.variance_desc,
            "alpha": self.alpha,
            "alpha_source": self.alpha_source,
            "alpha_file": self.alpha_file,
            "ties": {"rule": self.ties, "level": self.level, "draws": self.draws},
            "notes": list(self.notes),
            "curves": {"primal": self.primal_curve.to_dict(), "dual": self.dual_curve.to_dict()},
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON of :meth:`to_dict` (what ``search --json`` prints, without provenance)."""
        from collegial.io import strict_json

        return strict_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        """The result :meth:`to_dict` (or a ``search.json``) describes; curves are needed (files
        written before they were saved cannot be read back)."""
        if "curves" not in d:
            raise UserError("this search result has no curves (written by an older version); run the search again")
        cand = Candidate.from_dict
        return cls(
            family=d["family"], dataset=d["dataset"], budget_kind=d["budget"], budget=d["budget_value"],
            rounding=d["rounding"], solver=d["solver"], n_range=tuple(d["n_range"]),
            variance_model=d["variance_model"], variance_desc=d["variance_curve"], alpha=d["alpha"],
            alpha_source=d["alpha_source"], ties=d["ties"]["rule"], level=d["ties"]["level"],
            draws=d["ties"]["draws"], baseline=cand(d["baseline"]), primal=cand(d["primal"]), dual=cand(d["dual"]),
            near_ties={k: [cand(c) for c in v] for k, v in d["near_ties"].items()},
            primal_curve=Curve.from_dict(d["curves"]["primal"]), dual_curve=Curve.from_dict(d["curves"]["dual"]),
            optimal_set={k: OptimalSet.from_dict(v) for k, v in d["optimal_set"].items()},
            by_model=d.get("by_model", {}), probe=d.get("probe", ""), probe_options=d.get("probe_options", {}),
            notes=list(d.get("notes", [])), alpha_file=d.get("alpha_file", {}),
            most_probable={k: cand(v) for k, v in d.get("most_probable", {}).items()},
        )


def _gflops(c: Candidate) -> str:
    return f"{c.flops / 1e9:.2f}" if c.flops >= 1e7 else f"{c.flops / 1e9:.4f}"


def format_answer(res: SearchResult) -> str:
    """The recommendation, first (after :attr:`SearchResult.notes`): one line per problem, then
    each problem's optimal set."""
    lines = list(res.notes)
    for prob, what in (("primal", "least variance at the budget"), ("dual", "least cost at the baseline's variance")):
        c = res.headline(prob)
        point: Candidate = getattr(res, prob)
        var = f"{c.variance:.4g}" + (f" ± {c.variance_se:.2g}" if c.variance_se > 0 else "")
        p = f", P(optimal) = {c.p_best:.2f}" if c.p_best is not None else ""
        beside = f"; point optimum {point.arch}, P(optimal) = {point.p_best:.2f}" if point.arch != c.arch else ""
        lines.append(
            f"{prob:<6} {c.arch:>8}  {format_params(c.params)} params, {format_flops(c.flops)}, variance {var}, "
            f"compression {c.rho:.2f}{p}   ({what}{beside})"
        )
    for prob in ("primal", "dual"):
        st = res.optimal_set.get(prob)
        if st is None:
            continue
        lo, hi = st.widths
        span = f"n = {lo}" if lo == hi else f"n = {lo}..{hi}"
        more = f" (+{st.size - len(st.candidates)} more)" if st.size > len(st.candidates) else ""
        cands = ", ".join(f"{c.arch} {c.p_best:.2f}" for c in st.candidates)
        lines.append(f"{prob} optimal set ({st.coverage:.0%} of draws): {span}; {cands}{more}")
    others = [
        f"{k} {d['primal']}/{d['dual']} ({'chi2/dof %.2f' % d['chi2_per_dof'] if d['chi2_per_dof'] is not None else 'interpolates'})"
        for k, d in res.by_model.items()
        if not d["selected"]
    ]
    if others:
        lines.append("other variance models (primal/dual): " + "; ".join(others))
    return "\n".join(lines)


def format_table(res: SearchResult, *, all_ties: bool = False) -> str:
    """The answer first (:func:`format_answer`), then the paper's table (model, rho, params,
    GFLOPs, variance) and the settings; the full near-tie lists only with ``all_ties``."""
    fam = res.family.replace("resnext", "ResNeXt-")
    rho_name = "rho" if res.budget_kind == "params" else "rho (FLOPs)"
    lines = [
        format_answer(res),
        "",
        f"| | model | {rho_name} | params | GFLOPs | variance | P(optimal) |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(role: str, c: Candidate) -> str:
        var = f"{c.variance:.4g}" + (f" ± {c.variance_se:.2g}" if c.variance_se > 0 else "")
        p = f"{c.p_best:.2f}" if c.p_best is not None else ""
        return f"| {role} | {fam} {c.arch} | {c.rho:.2f} | {format_params(c.params)} | {_gflops(c)} | {var} | {p} |"

    lines.append(row("baseline", res.baseline))
    lines.append(row("primal", res.primal))
    lines.append(row("dual", res.dual))
    budget = f"{format_params(res.budget)} params" if res.budget_kind == "params" else format_flops(res.budget)
    lines += [
        "",
        f"{res.dataset}, budget {budget} ({res.rounding} rounding, {res.solver} solver), "
        f"n in {res.n_range[0]}..{res.n_range[1]}; {res.variance_desc}",
        f"probe: {res.probe} [{res.alpha_source}]",
    ]
    for prob in ("primal", "dual"):  # the optimal set is the answer's uncertainty; near-ties on request
        ties = res.near_ties[prob]
        if all_ties:
            tie_txt = ", ".join(f"{c.arch} (P={c.p_best:.2f})" for c in ties) if ties else "none"
            lines.append(f"{prob} near-ties ({res.ties}, {res.level:.0%}, {res.draws} draws): {tie_txt}")

    return "\n".join(lines)
