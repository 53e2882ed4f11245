"""The text and plot of a whole-model check (:mod:`collegial.search.verify`): the headline,
the table answer first, the split by parameter group, markdown, and measured against
predicted."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from collegial.io import save_figure
from collegial.search.verify import Measured, VerifyResult, predictor_table

def _pm(v: float | None, se: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g} ± {se:.2g}" if se is not None else f"{v:.{digits}g}"


def headline(result: VerifyResult) -> str:
    """One line: how far the whole model's variance moves between the reference (the baseline,
    else the first row) and the row the block predicts lowest, beside the block's prediction."""
    rows = result.rows
    ref = next((r for r in rows if r.role == "baseline"), rows[0])
    preds = [r for r in rows if r.predicted is not None]
    if len(rows) < 2:
        return f"whole-model variance of {ref.arch}: {_pm(ref.v, ref.stderr)}"
    low = min(preds, key=lambda r: r.predicted) if preds else min(rows, key=lambda r: r.v)  # type: ignore[arg-type, return-value]
    if low is ref:
        low = min((r for r in rows if r is not ref), key=lambda r: r.v)
    fall = ref.v / low.v
    fall_se = fall * math.hypot(ref.stderr / ref.v, low.stderr / low.v)
    text = (f"from {ref.arch} to {low.arch} the whole model's variance changes by a factor {1 / fall:.2f} "
            f"({_pm(ref.v, ref.stderr)} -> {_pm(low.v, low.stderr)}; fall {fall:.2f} ± {fall_se:.2f}x)")
    if ref.predicted is not None and low.predicted is not None:
        text += f"; the probe block predicts a {ref.predicted / low.predicted:.2f}x fall"
    return text


def format_verify(result: VerifyResult) -> str:
    """The human report: the headline, measured against predicted, then where K comes from."""
    s = result.settings
    if not any("batchnorm" in r.share_mean for r in result.rows):
        bn = "no BatchNorm"
    elif s.bn == "batch":
        bn = f"BatchNorm on the statistics of the probe batch (the {2 * s.pairs} pair images)"
    else:
        bn = "BatchNorm on its running statistics"
    lines = [headline(result),
             f"whole {result.family} as built on {s.dataset}: {s.pairs} {'' if s.pair_kind == 'any' else s.pair_kind + '-class '}"
             f"pairs of training images x {s.trials} initializations, unit random readout of the logits, {bn}; "
             "± = s.e. over pairs and initializations"]
    lines += result.notes
    hdr = f"{'arch':>9} {'role':<13}{'params':>9} {'measured v':>17} {'MC s.e.':>8} {'block predicts':>18} {'ratio':>14} {'E[K]':>10}"
    lines += ["", hdr]
    for r in result.rows:
        ratio = r.ratio
        lines.append(f"{r.arch:>9} {r.role:<13}{r.params:>9,} {_pm(r.v, r.stderr):>17} {r.mc_stderr:>8.2g} "
                     f"{_pm(r.predicted, r.predicted_se):>18} {_pm(*ratio) if ratio else '-':>14} {r.mean_k:>10.4g}")
    if result.resolved:
        rv = result.resolved
        lines.append("")
        for which in ("primal", "dual"):
            got = rv.get(which)
            lines.append(f"re-solved on the measured values ({rv['candidates']} candidates): {which} "
                         + ("none" if got is None else f"{got['arch']} (v {_pm(got['v'], got['stderr'])})"))
    table = predictor_table(result)
    if table:
        lines += ["", f"which predictor orders the measured variances (Spearman rho over {table[0]['n']} architectures, "
                  "two-sided permutation p):"]
        lines += [f"  {t['predictor']:<32} rho = {t['spearman']:+.2f}   p = {t['p_value']:.3g}" for t in table]
    lines += ["", "share of E[K] / share of Var[K] (covariances included) by parameter group:"]
    lines += _share_table(result.rows)
    return "\n".join(lines)


def _share_table(rows: list[Measured]) -> list[str]:
    groups = list(dict.fromkeys(g for r in rows for g in r.share_mean))
    width = 14
    out = [f"{'group':<18}" + "".join(f"{r.arch:>{width}}" for r in rows)]
    for g in groups:
        cells = []
        for r in rows:
            cells.append(f"{r.share_mean[g]:.0%} / {r.share_var[g]:.0%}" if g in r.share_mean else "-")
        out.append(f"{g:<18}" + "".join(f"{c:>{width}}" for c in cells))
    cells = [f"{a:.0%} / {b:.0%}" for a, b in (r.collegial_share() for r in rows)]
    out.append(f"{'collegial layers':<18}" + "".join(f"{c:>{width}}" for c in cells))
    return out


def markdown(result: VerifyResult, command: str = "") -> str:
    """``verify.md``: the same report as markdown tables."""
    s = result.settings
    lines = [f"# Whole-model NTK variance: {result.family} on {s.dataset}", "", headline(result), ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"{s.pairs} pairs ({s.pair_kind}) x {s.trials} initializations, BatchNorm: {s.bn}, seed {s.seed}. "
              "± is the standard error over pairs and initializations.", ""]
    lines += ["| arch | role | params | measured v | block predicts | ratio | E[K] |", "|---|---|---|---|---|---|---|"]
    for r in result.rows:
        ratio = r.ratio
        lines.append(f"| {r.arch} | {r.role} | {r.params:,} | {_pm(r.v, r.stderr)} | {_pm(r.predicted, r.predicted_se)} | "
                     f"{_pm(*ratio) if ratio else '-'} | {r.mean_k:.4g} |")
    table = predictor_table(result)
    if table:
        lines += ["", f"Which predictor orders the measured variances ({table[0]['n']} architectures; Spearman rho, "
                  "two-sided permutation p):", "", "| predictor | rho | p |", "|---|---|---|"]
        lines += [f"| {t['predictor']} | {t['spearman']:+.2f} | {t['p_value']:.3g} |" for t in table]
    lines += ["", "Share of E[K] / share of Var[K] by parameter group:", "",
              "| group | " + " | ".join(r.arch for r in result.rows) + " |",
              "|---|" + "---|" * len(result.rows)]
    for row in _share_table(result.rows)[1:]:
        name = row[:18].strip()
        lines.append(f"| {name} | " + " | ".join(row[18 + 14 * i: 18 + 14 * (i + 1)].strip()
                                                 for i in range(len(result.rows))) + " |")
    lines += [""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def plot_verify(result: VerifyResult, path: Any) -> bool:
    """Measured against predicted, log-log with error bars and the identity line (False when no
    row has a prediction)."""
    rows = [r for r in result.rows if r.predicted is not None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    x = np.array([r.predicted for r in rows])
    y = np.array([r.v for r in rows])
    ax.errorbar(x, y, xerr=[r.predicted_se or 0.0 for r in rows], yerr=[r.stderr for r in rows], fmt="o", ms=4,
                capsize=2)
    for r in rows:
        ax.annotate(r.arch, (r.predicted, r.v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    lo = min(x.min(), y.min()) / 2
    hi = max(x.max(), y.max()) * 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("block prediction V1(n)/m")
    ax.set_ylabel(f"whole-model Var[K]/E[K]^2 ({result.settings.dataset})")
    ax.set_title(f"{result.family}: measured vs predicted", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return True
