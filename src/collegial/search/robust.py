"""Is the answer a property of the family, or of the probe's design? (``search --robust``)

The curve ``V1(n)`` is measured on one probe design: post-ReLU inputs of one correlation, or
images of one dataset, and fitted by one variance model. ``docs/search.md`` measured the input
correlation alone moving resnext29's primal width from n = 6 to n = 19. This module solves the
same search under every design of :func:`probe_designs` and every variance model whose fit is
acceptable (chi^2 p-value >= :data:`~collegial.ntk.fits.GOOD_FIT_P`, or the model the search
selected), and reports for each problem:

* how many (design, model) combinations agree with the answer's most probable architecture;
* the union of their optimal sets, each member with the number of combinations whose set holds
  it (the answer's set when the probe design is part of the uncertainty);
* one line for the answer's first lines: *robust* ("primal 37x10d under 4 of 5 probe
  designs/models") or *conditional on the probe* ("primal n = 6..19 depending on the probe
  design").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from collegial.errors import UserError
from collegial.ntk.fits import GOOD_FIT_P, MODELS
from collegial.ntk.inputs import DATA_DATASETS, DEFAULT_CORRELATION, DEFAULT_PAIRS, ProbeInputs
from collegial.search.result import SearchResult
from collegial.search.variance import VarianceCurve

#: The documented input correlations of the relu design (docs/search.md measured each).
CORRELATIONS: tuple[float, ...] = (0.3, 0.6, 0.9)
#: Share of combinations that must agree for an answer to be called robust.
ROBUST_SHARE = 0.75
PROBLEMS = ("primal", "dual")


def probe_designs(dataset: str, pairs: int = DEFAULT_PAIRS, images: Any = None) -> list[ProbeInputs]:
    """relu inputs at each of :data:`CORRELATIONS`, and images of ``dataset`` when it is shipped
    here and ``images`` (its standardized training images) are given."""
    designs = [ProbeInputs("relu", c, pairs) for c in CORRELATIONS]
    if dataset in DATA_DATASETS and images is not None:
        designs.append(ProbeInputs("data", DEFAULT_CORRELATION, pairs, dataset=dataset, images=images))
    return designs


def acceptable_models(curve: VarianceCurve) -> list[str]:
    """The curve's selected model and every other model whose fit is acceptable."""
    out = [curve.model]
    for kind in MODELS:
        if kind == curve.model:
            continue
        try:
            gof = curve.with_model(kind).fitted.summary()
        except UserError:  # too few widths for this model, or it cannot be fitted
            continue
        if gof["p_value"] is not None and gof["p_value"] >= GOOD_FIT_P:
            out.append(kind)
    return out


@dataclass(frozen=True)
class Combination:
    """One (probe design, variance model) and the search's answers under it."""

    design: str
    model: str
    answer: dict[str, str]  # problem -> most probable architecture
    n: dict[str, int]  # problem -> its width
    members: dict[str, list[str]]  # problem -> optimal-set members


@dataclass
class Robustness:
    """The answers under every combination (see the module docstring)."""

    main: dict[str, str]  # problem -> the answer's most probable architecture
    combos: list[Combination] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # designs not measured, and why

    def agree(self, prob: str) -> int:
        return sum(c.answer[prob] == self.main[prob] for c in self.combos)

    def robust(self, prob: str) -> bool:
        return self.agree(prob) >= ROBUST_SHARE * len(self.combos)

    def union(self, prob: str) -> list[tuple[str, int]]:
        """Every optimal-set member of any combination, with how many combinations hold it,
        most held first."""
        held = Counter(a for c in self.combos for a in c.members[prob])
        return sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))

    def line(self, prob: str) -> str:
        total = len(self.combos)
        if self.robust(prob):
            return f"robust: {prob} {self.main[prob]} under {self.agree(prob)} of {total} probe designs/models"
        widths = sorted({c.n[prob] for c in self.combos})
        by = Counter(c.answer[prob] for c in self.combos).most_common(3)
        return (f"conditional on the probe: {prob} n = {widths[0]}..{widths[-1]} depending on the probe design "
                f"({', '.join(f'{a} in {k}' for a, k in by)} of {total}; the answer's {self.main[prob]} in "
                f"{self.agree(prob)})")

    def to_dict(self) -> dict[str, Any]:
        return {"main": dict(self.main), "combinations": [asdict(c) for c in self.combos],
                "robust": {p: self.robust(p) for p in PROBLEMS},
                "union": {p: [{"arch": a, "held_by": k} for a, k in self.union(p)] for p in PROBLEMS},
                "skipped": list(self.skipped), "robust_share": ROBUST_SHARE}


def robustness(res: SearchResult, curves: dict[str, VarianceCurve],
               solve: Callable[[VarianceCurve], SearchResult]) -> Robustness:
    """The answers of ``solve`` (the search with the user's settings) under every curve of
    ``curves`` (design label -> curve) and each of its acceptable variance models; ``res`` is the
    search's own answer."""
    out = Robustness({p: res.headline(p).arch for p in PROBLEMS})
    for label, curve in curves.items():
        for kind in acceptable_models(curve):
            r = solve(curve.with_model(kind))
            out.combos.append(Combination(
                label, kind,
                {p: r.headline(p).arch for p in PROBLEMS},
                {p: r.headline(p).n for p in PROBLEMS},
                {p: list(r.optimal_set[p].members) for p in PROBLEMS},
            ))
    return out


def format_robustness(rob: Robustness, limit: int = 8) -> str:
    """The per-combination answers and the union of the optimal sets."""
    designs = len({c.design for c in rob.combos})
    lines = [f"robustness to the probe design ({designs} probe designs x their acceptable variance models: "
             f"{len(rob.combos)} combinations):"]
    for c in rob.combos:
        lines.append(f"  {c.design:<28} {c.model:<10} primal {c.answer['primal']:>8}   dual {c.answer['dual']:>8}")
    for p in PROBLEMS:
        u = rob.union(p)
        more = f" (+{len(u) - limit} more)" if len(u) > limit else ""
        lines.append(f"{p} optimal set over designs: " + ", ".join(f"{a} ({k})" for a, k in u[:limit]) + more)
    lines += [f"  not measured: {s}" for s in rob.skipped]
    return "\n".join(lines)
