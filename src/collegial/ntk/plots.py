"""The figure of a measured variance curve (appendix Figure 2): the Monte Carlo ``v(n)`` of an
:class:`~collegial.ntk.curve.AlphaFit` with error bars and every model of
:mod:`collegial.ntk.fits` with its chi^2 (``alpha.png``, written by ``AlphaFit.save``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from collegial.io import save_figure
from collegial.ntk.fits import MODELS, min_widths

if TYPE_CHECKING:
    from collegial.ntk.curve import AlphaFit


def plot_alpha(fit: AlphaFit, path: str | os.PathLike[str]) -> None:
    """Appendix Figure 2: Monte Carlo ``v(n)`` with error bars and every model, with its chi^2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.asarray(fit.widths, dtype=float)
    grid = np.geomspace(n.min(), n.max(), 300)
    fig, ax = plt.subplots(figsize=(6.0, 4.3), dpi=120)
    ax.errorbar(n, fit.variance, yerr=fit.stderr, fmt="o", color="k", ms=3.5, capsize=2.5,
                label=f"Monte Carlo (T={fit.trials}, {fit.pairs} pairs)", zorder=5)
    styles = {"prop1": "-", "fit2": "--", "smooth": "-.", "empirical": ":"}
    for kind in MODELS:
        if len(fit.widths) < min_widths(kind, dof=1):
            continue
        mdl = fit.model(kind)
        ax.plot(grid, mdl(grid), styles[kind], lw=1.3, color="gray" if kind == "empirical" else None,
                label=f"{kind}: {mdl.gof()}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("Var[K] / E[K]^2")
    ax.set_title(f"NTK variance: {fit.probe_label()}", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
