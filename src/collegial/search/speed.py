"""The primal under a measured throughput budget (``search --budget throughput``).

Parameters and FLOPs are what the paper budgets; what a user pays is training time. Here the
budget is the baseline's own training throughput (images per second on the user's device,
measured by the caller's ``measure(arch) -> images/s``; :mod:`collegial.train.throughput` in
the CLI): the primal is the least ``V1(n) / m`` among the architectures that train at least as
fast as the baseline.

Candidates: at each width ``n`` of ``widths`` (the curve's measured widths in the search range,
and the baseline's), the largest ``m`` whose measured throughput is at least the baseline's,
found by doubling ``m`` from 1 and then bisecting, assuming the throughput falls as ``m`` grows
at a fixed ``n`` (each measured point is reported, so a user can see where it does not). A
width whose ``m = 1`` is already slower than the baseline has no candidate. P(optimal) per
architecture comes from the curve's bootstrap draws over the same candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collegial.errors import UserError
from collegial.models import format_arch, validate_arch
from collegial.models.arch import MAX_M
from collegial.search.result import arch_probabilities
from collegial.search.variance import VarianceCurve


@dataclass
class SpeedAnswer:
    """``candidates``: per width its largest fast-enough m, variance and images/s; ``best``: the
    least-variance candidate; ``p_best``: P(optimal) per architecture; ``measured``: every
    (arch, images/s) measured, in order."""

    baseline: str
    baseline_rate: float
    candidates: list[dict[str, Any]]
    best: dict[str, Any]
    p_best: dict[str, float]
    measured: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "baseline_images_per_s": self.baseline_rate,
                "candidates": self.candidates, "best": self.best, "p_best": self.p_best,
                "measured": [{"arch": a, "images_per_s": r} for a, r in self.measured]}


def _largest_fast_m(n: int, fast: Callable[[int], bool], m_cap: int) -> int:
    """The largest ``m`` in ``1..m_cap`` with ``fast(m)`` (0 if ``fast(1)`` fails), assuming
    ``fast`` holds up to some m and fails beyond."""
    if not fast(1):
        return 0
    lo, hi = 1, 2
    while hi <= m_cap and fast(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, m_cap + 1)
    while hi - lo > 1:  # fast(lo), not fast(hi) (or hi beyond the cap)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fast(mid) else (lo, mid)
    return lo


def throughput_primal(family: str, baseline: str, curve: VarianceCurve, widths: list[int],
                      measure: Callable[[str], float], *, m_cap: int = MAX_M) -> SpeedAnswer:
    """The primal under the baseline's throughput (see the module docstring)."""
    m_b, n_b = validate_arch(family, baseline)
    rates: dict[str, float] = {}

    def rate(m: int, n: int) -> float:
        arch = format_arch(m, n)
        if arch not in rates:
            rates[arch] = float(measure(arch))
        return rates[arch]

    base = rate(m_b, n_b)
    cands: list[dict[str, Any]] = []
    for n in sorted({*widths, n_b}):

        def fast(m: int, n: int = n) -> bool:
            try:
                validate_arch(family, format_arch(m, n))
            except UserError:
                return False
            return m == m_b and n == n_b or rate(m, n) >= base

        m = _largest_fast_m(n, fast, m_cap)
        if m >= 1:
            arch = format_arch(m, n)
            cands.append({"arch": arch, "m": m, "n": n, "variance": float(curve(n)[0] / m),
                          "images_per_s": rates.get(arch, base), "ratio": rates.get(arch, base) / base})
    ns = np.array([c["n"] for c in cands])
    ms = np.array([c["m"] for c in cands])
    obj = curve.draws(ns, for_argmin=True) / ms  # (K, C)
    probs = arch_probabilities(np.argmin(obj, axis=1), ms)
    p_best = {format_arch(int(ms[i]), int(ns[i])): p for i, _, p in probs}
    best = min(cands, key=lambda c: (c["variance"], -c["images_per_s"]))
    for c in cands:
        c["p_best"] = p_best.get(c["arch"], 0.0)
    return SpeedAnswer(baseline, base, cands, best, p_best, list(rates.items()))


def format_speed(ans: SpeedAnswer) -> str:
    """The answer first, then every candidate."""
    b = ans.best
    lines = [f"primal under the baseline's throughput ({ans.baseline_rate:.0f} img/s): {b['arch']}, variance "
             f"{b['variance']:.4g}, {b['images_per_s']:.0f} img/s ({b['ratio']:.2f}x the baseline), "
             f"P(optimal) = {b['p_best']:.2f}",
             "  per width, the most paths that train at least as fast as the baseline:"]
    for c in ans.candidates:
        lines.append(f"  {c['arch']:>8}  variance {c['variance']:.4g}  {c['images_per_s']:>8.0f} img/s "
                     f"({c['ratio']:.2f}x)  P(optimal) {c['p_best']:.2f}")
    lines.append(f"  ({len(ans.measured)} architectures timed)")
    return "\n".join(lines)


def throughput_cache_dir() -> Path:
    """Where measured training throughputs are cached (beside Algorithm 1's curves)."""
    from collegial.search.variance import cache_dir

    return cache_dir().parent / "throughput"
