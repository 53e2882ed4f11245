"""PNG plots of the primal and dual curves (matplotlib, Agg backend).

* primal: ``V1(n) / m(n)`` along the budget (m chosen per width by the rounding rule), against
  the width n, with its bootstrap band;
* dual: ``rho(n)`` along ``V = V(baseline)``, against n, with its band.

The optimum is a star, the other most probable members of the optimal set (at most four) are
circles, the optimal set's width range is shaded, the baseline a square; each is labelled
``MxNd``.
"""

from __future__ import annotations

from pathlib import Path

from collegial.io import save_figure
from collegial.search.result import Candidate, SearchResult


def _pyplot():  # imported lazily: matplotlib costs ~0.3 s to import
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark(
    ax, c: Candidate, y_of: dict[int, float], style: dict, label: str | None,
    text: bool = True, offset: tuple[int, int] = (4, 6),
) -> None:
    y = y_of.get(c.n)
    if y is None:
        return
    ax.plot([c.n], [y], linestyle="none", label=label, **style)
    if text:
        ax.annotate(c.arch, (c.n, y), textcoords="offset points", xytext=offset, fontsize=6.5)


def _plot(res: SearchResult, which: str, path: Path) -> Path:
    plt = _pyplot()
    curve = res.primal_curve if which == "primal" else res.dual_curve
    ok = curve.feasible
    n, y = curve.n[ok], curve.y[ok]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.fill_between(n, curve.lo[ok], curve.hi[ok], color="C0", alpha=0.2, lw=0,
                    label=f"{res.level:.0%} bootstrap band")
    ax.plot(n, y, color="C0", lw=1.2, marker=".", ms=3,
            label="V1(n)/m along the budget" if which == "primal" else "rho along V = V(baseline)")
    y_of = {int(a): float(b) for a, b in zip(n, y)}
    best = getattr(res, which)
    st = res.optimal_set.get(which)
    if st is not None:
        ax.axvspan(st.widths[0] - 0.5, st.widths[1] + 0.5, color="C1", alpha=0.08, lw=0,
                   label=f"optimal set n = {st.widths[0]}..{st.widths[1]} ({st.coverage:.0%})")
        others = [c for c in st.candidates if c.arch != best.arch]
        for i, c in enumerate(others):  # at most MAX_SET - 1 labels, alternating above and below
            _mark(ax, c, y_of, {"marker": "o", "mfc": "none", "mec": "C1", "ms": 7},
                  "most probable others" if i == 0 else None, True, (4, -12) if i % 2 == 0 else (4, 8))
    _mark(ax, best, y_of, {"marker": "*", "color": "C3", "ms": 13}, f"optimum {best.arch}",
          offset=(6, 10))
    if which == "primal":
        y_of_b = dict(y_of)
        y_of_b.setdefault(res.baseline.n, res.baseline.variance)
        _mark(ax, res.baseline, y_of_b, {"marker": "s", "color": "k", "ms": 6}, "baseline")
        ax.set_yscale("log")
        ax.set_ylabel("ensemble variance V1(n) / m")
        unit = "params" if res.budget_kind == "params" else "FLOPs"
        ax.set_title(f"{res.family} {res.dataset}: primal, budget {res.budget:,} {unit} ({res.rounding})",
                     fontsize=9)
    else:
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_ylabel("rho = cost(baseline) / cost" + ("" if res.budget_kind == "params" else " (FLOPs)"))
        ax.set_title(f"{res.family} {res.dataset}: dual, V <= V({res.baseline.arch}) = "
                     f"{res.baseline.variance:.3g}", fontsize=9)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width n (m chosen per n)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.text(0.01, 0.01, res.variance_desc, transform=ax.transAxes, fontsize=6, color="0.4")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_primal(res: SearchResult, path: str | Path) -> Path:
    return _plot(res, "primal", Path(path))


def plot_dual(res: SearchResult, path: str | Path) -> Path:
    return _plot(res, "dual", Path(path))


def plot_both(res: SearchResult, out_dir: str | Path, prefix: str = "") -> list[Path]:
    out = Path(out_dir)
    return [plot_primal(res, out / f"{prefix}primal.png"), plot_dual(res, out / f"{prefix}dual.png")]


__all__ = ["plot_both", "plot_dual", "plot_primal"]
