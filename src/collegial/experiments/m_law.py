"""The 1/m law of SPEC section 1 on the Algorithm 1 probe block, and why the block departs from it.

SPEC section 1 says ``V(m, n) = V1(n) / m`` for an ensemble of m independent paths. On the probe
block (standard parameterization: ``K`` differentiates with respect to the weights themselves)
``fit-alpha`` measures ``V(m, 8) / (V(1, 8) / m)`` of 0.76, 0.59, 0.45, 0.47 for m = 2..16.
This experiment splits each trial's ``K`` into its three layers' terms (the parameter groups
``reduce``, ``grouped``, ``expand`` of :func:`~collegial.ntk.whole.parameter_groups`, computed for
T = 2000 trials by the probe's fast
:meth:`~collegial.ntk.probe.ResNeXtBlockProbe.gram_terms`, which ``tests/test_m_law.py`` checks
against :class:`~collegial.ntk.whole.WholeModelNtk`'s group terms of the same block) and their
shares of ``E[K]`` and ``Var[K]`` with :func:`~collegial.ntk.whole.group_shares`, the split
``collegial verify`` prints for whole models. It shows the cause: with Kaiming fan-in init the expand layer's std is ``sqrt(2 / (m n))``, so
the block is ``(1/sqrt(m)) sum_j F_n(theta_j)`` as SPEC section 1 requires, but the gradient with
respect to the expand weights is not scaled by ``1/sqrt(m)``: that term of ``K`` is a SUM over the
paths while the other two are a MEAN. Its share of ``E[K]`` grows with m and ``K`` is not the mean
of the paths' NTKs. Dividing the expand term by m (the mean-of-paths form, which the NTK
parameterization gives up to one constant per layer) brings the ratio back near 1; what is left
comes from the ReLU after the residual addition, whose mask depends on every path
(``--no-final-relu`` removes it).

The weights of multiplicity m are drawn exactly as :func:`collegial.ntk.alpha.monte_carlo` draws
them (same chunks and seeds), so the standard-form column equals ``fit-alpha``'s 1/m check.

    collegial reproduce m-law [--trials 2000] [--width 8] [--m 1,2,4,8,16] [--no-final-relu]
                              [--json] [--out DIR]   (collegial.commands.reproduce_m_law)
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from collegial.errors import UserError
from collegial.io import save_figure
from collegial.ntk.alpha import m_law_ratio, trial_chunks
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import ResNeXtBlockProbe, chunk_seed
from collegial.ntk.variance import Moments, NormalizedVariance, normalized_variance
from collegial.ntk.whole import group_shares, parameter_groups

#: The probe block's parameter groups, in the order of ``gram_terms``' columns.
TERMS = ("reduce", "grouped", "expand")


@dataclass(frozen=True)
class MLawConfig:
    """Multiplicities (1 is added when missing), the path width n, trials per m, block channels
    C, the seed (the probe's input pair and readout, and every trial's weights) and whether the
    block keeps its ReLU after the residual addition. ``inputs``/``correlation``: the probe's one
    input pair (:mod:`collegial.ntk.inputs`; default ``gaussian``, the inputs whose 1/m ratios this
    experiment explains)."""

    multiplicities: tuple[int, ...] = (1, 2, 4, 8, 16)
    width: int = 8
    trials: int = 2000
    channels: int = 256
    seed: int = 0
    final_relu: bool = True
    inputs: str = "gaussian"
    correlation: float = 0.6


@dataclass(frozen=True)
class MLawRow:
    """One multiplicity: ``v`` and its standard error for the standard ``K`` and the
    mean-of-paths form, their ratios to ``V(1, n) / m`` (with standard errors), and each layer's
    share of ``E[K]`` and of ``Var[K]`` (standard form; :func:`~collegial.ntk.whole.group_shares`)."""

    m: int
    v_standard: float
    se_standard: float
    ratio_standard: float
    ratio_se_standard: float
    v_mean_form: float
    se_mean_form: float
    ratio_mean_form: float
    ratio_se_mean_form: float
    share: dict[str, float]
    share_var: dict[str, float]


def check_config(cfg: MLawConfig) -> tuple[int, ...]:
    """The sorted multiplicities to measure (1 included); :class:`UserError` for settings that
    cannot run."""
    if cfg.inputs == "data":
        raise UserError("reproduce m-law takes --inputs relu or gaussian")
    ProbeInputs(cfg.inputs, cfg.correlation, pairs=1)  # validates both
    if cfg.trials < 2:
        raise UserError(f"--trials must be >= 2, got {cfg.trials}")
    if cfg.width < 1 or cfg.channels < 1:
        raise UserError("--width and --channels must be >= 1")
    if any(m < 1 for m in cfg.multiplicities):
        raise UserError(f"multiplicities must be >= 1, got {list(cfg.multiplicities)}")
    return tuple(sorted({1, *cfg.multiplicities}))


def layer_terms(probe: ResNeXtBlockProbe, m: int, n: int, trials: int, seed: int) -> torch.Tensor:
    """``(trials, 3)`` unweighted terms of ``K`` by parameter group (columns :data:`TERMS`),
    drawn chunk by chunk as :func:`collegial.ntk.alpha.monte_carlo` draws them."""
    names = tuple(parameter_groups(probe.block(m, n)).names)
    if names != TERMS:
        raise RuntimeError(f"the probe block's parameter groups are {names}, not {TERMS}")
    parts = [
        probe.gram_terms(probe.sample(m, n, b, chunk_seed(seed, m, n, c)))
        for c, b in trial_chunks(trials, probe.chunk_size(m, n))
    ]
    return torch.cat(parts).to(torch.float64)


def run_m_law(cfg: MLawConfig = MLawConfig(), progress: bool = False) -> list[MLawRow]:
    """Measure both forms of ``K`` for every multiplicity (standard parameterization, no BN)."""
    ms = check_config(cfg)
    probe = ResNeXtBlockProbe(channels=cfg.channels, seed=cfg.seed, engine="gram", final_relu=cfg.final_relu,
                              inputs=ProbeInputs(cfg.inputs, cfg.correlation, pairs=1))
    stats: dict[int, tuple[NormalizedVariance, NormalizedVariance, tuple[torch.Tensor, torch.Tensor]]] = {}
    for m in ms:
        if progress:
            print(f"m = {m}, n = {cfg.width}: {cfg.trials} trials", file=sys.stderr)
        t = layer_terms(probe, m, cfg.width, cfg.trials, cfg.seed)
        standard = t.sum(1)
        mean_form = t[:, 0] + t[:, 1] + t[:, 2] / m
        share = group_shares(t.unsqueeze(1))
        stats[m] = (normalized_variance(Moments.of(standard)), normalized_variance(Moments.of(mean_form)), share)
    rows = []
    base_s, base_f, _ = stats[1]
    for m in ms:
        s, f, share = stats[m]
        # at m = 1 both sides are the same sample: ratio 1, no error
        rs, rs_se = m_law_ratio(s, base_s, m) if m > 1 else (1.0, 0.0)
        rf, rf_se = m_law_ratio(f, base_f, m) if m > 1 else (1.0, 0.0)
        rows.append(MLawRow(
            m=m,
            v_standard=s.v, se_standard=s.stderr, ratio_standard=rs, ratio_se_standard=rs_se,
            v_mean_form=f.v, se_mean_form=f.stderr, ratio_mean_form=rf, ratio_se_mean_form=rf_se,
            share={name: float(x) for name, x in zip(TERMS, share[0])},
            share_var={name: float(x) for name, x in zip(TERMS, share[1])},
        ))
    return rows


def markdown(rows: list[MLawRow], cfg: MLawConfig) -> str:
    """The table, with one line of interpretation computed from the rows."""
    block = "" if cfg.final_relu else ", without the ReLU after the residual addition"
    inputs = ProbeInputs(cfg.inputs, cfg.correlation, pairs=1).label
    lines = [
        f"1/m law on the probe block (C = {cfg.channels}, 8x8, no BN, standard parameterization{block}), "
        f"inputs {inputs} (one pair), n = {cfg.width}, T = {cfg.trials}, seed {cfg.seed}; "
        "ratio = V(m, n) / (V(1, n) / m)",
        "",
        "| m | V standard | ratio | V mean-of-paths form | ratio | expand share of E[K] | of Var[K] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.m} | {r.v_standard:.4g} ± {r.se_standard:.2g} | {r.ratio_standard:.2f} ± {r.ratio_se_standard:.2f} "
            f"| {r.v_mean_form:.4g} ± {r.se_mean_form:.2g} | {r.ratio_mean_form:.2f} ± {r.ratio_se_mean_form:.2f} "
            f"| {r.share['expand']:.2f} | {r.share_var['expand']:.2f} |"
        )
    last = rows[-1]
    lines += [
        "",
        "Standard form: K as fit-alpha measures it. Mean-of-paths form: the expand term divided by m,",
        "i.e. K^e = (1/m) sum_j K_j, the ensemble NTK of the 1/m law. The expand term's share of E[K] goes from "
        f"{rows[0].share['expand']:.2f} (m = 1) to {last.share['expand']:.2f} (m = {last.m}), of Var[K] from "
        f"{rows[0].share_var['expand']:.2f} to {last.share_var['expand']:.2f}: "
        "in the standard parameterization it is a sum over paths, not a mean.",
    ]
    return "\n".join(lines)


def result(rows: list[MLawRow], cfg: MLawConfig) -> dict[str, Any]:
    """The JSON-able result: the configuration and the rows."""
    return {"config": asdict(cfg), "rows": [asdict(r) for r in rows]}


def plot(rows: list[MLawRow], path: str | Path) -> None:
    """Both ratios against m with 1-s.e. error bars, and the law (ratio 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [r.m for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.axhline(1.0, color="gray", lw=1, ls="--", label="V(1, n) / m (the 1/m law)")
    ax.errorbar(ms, [r.ratio_standard for r in rows], [r.ratio_se_standard for r in rows],
                marker="o", capsize=3, label="standard parameterization (fit-alpha)")
    ax.errorbar(ms, [r.ratio_mean_form for r in rows], [r.ratio_se_mean_form for r in rows],
                marker="s", capsize=3, label="mean of the paths' NTKs")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("multiplicity m")
    ax.set_ylabel("V(m, n) / (V(1, n) / m)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
