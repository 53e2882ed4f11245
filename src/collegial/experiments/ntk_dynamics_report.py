"""What ``collegial reproduce ntk-dynamics`` writes: its figure (``ntk_dynamics.png``), its JSON
and its markdown report (:mod:`collegial.experiments.ntk_dynamics` runs the experiment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from collegial.experiments.ntk_dynamics import OUTPUT_FILES, PANEL_LABELS, PANELS
from collegial.io import save_figure, write_json_atomic


def plot_ntk_dynamics(result: dict[str, Any], path: str | Path) -> None:
    """Figure-3-style PNG: one column per recorded time; top |K_t - K_0|, bottom the relative
    change, against d (log-log); one curve per panel with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    times = result["times"]  # every per-time list is in this order
    width_c = result["config"]["width_c"]
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:red"}
    markers = {"a": "o", "b": "s", "c": "^"}
    fig, axes = plt.subplots(2, len(times), figsize=(3.6 * len(times), 6.6), squeeze=False, sharex=True,
                             sharey="row")
    all_d = sorted({q["d"] for q in result["points"]})
    for j, t in enumerate(times):
        for row, (key, se_key) in enumerate((("abs_dK_mean", "abs_dK_se"), ("rel_dK_mean", "rel_dK_se"))):
            ax = axes[row][j]
            for panel in PANELS:
                qs = [q for q in result["points"] if q["panel"] == panel]
                if not qs:
                    continue
                d = np.array([q["d"] for q in qs], dtype=float)
                mean = np.array([q[key][j] for q in qs])
                se = np.array([q[se_key][j] for q in qs])
                lower = np.minimum(se, mean * 0.999)  # keep the bar inside the log axis
                label = PANEL_LABELS[panel].format(w=width_c)
                if row == 0:
                    fit = result["slopes"][j][panel]
                    if fit["slope"] is not None:
                        se_txt = f" ± {fit['se']:.2f}" if fit["se"] is not None else ""
                        label += f": slope {fit['slope']:.2f}{se_txt}"
                ax.errorbar(d, mean, yerr=[lower, se], color=colors[panel], marker=markers[panel],
                            ms=4, lw=1.2, capsize=2, label=label)
            if row == 0:  # reference slope -1 in m n (= d^-2), through (a)'s widest (laziest) point
                qa = [q for q in result["points"] if q["panel"] == "a"]
                if qa and qa[-1][key][j] > 0:
                    d = np.array([q["d"] for q in qa], dtype=float)
                    ax.plot(d, qa[-1][key][j] * (d / d[-1]) ** -2.0, "k:", lw=1, label="∝ 1/(mn) (theorem)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(all_d, [str(v) for v in all_d], fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(True, which="both", alpha=0.25)
            if row == 0:
                ax.set_title(f"after {t} step{'s' if t != 1 else ''}", fontsize=10)
                ax.legend(fontsize=6.5, loc="lower left")
            else:
                ax.set_xlabel("d")
            if j == 0:
                ax.set_ylabel("|K_t - K_0|" if row == 0 else "|K_t - K_0| / |K_0|")
    cfg = result["config"]
    fig.suptitle(
        f"NTK movement, depth-{cfg['depth']} {cfg['activation']} CE (NTK param.) on {cfg['n_images']} "
        f"{cfg['dataset']} images, lr {cfg['lr']}, {cfg['seeds']} seeds (mean ± s.e.); "
        f"slopes in log(mn)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_outputs(result: dict[str, Any], out: str | Path) -> list[str]:
    """Write ``ntk_dynamics.json`` and ``ntk_dynamics.png`` into the folder ``out`` (created if
    needed; the command checks it first and refuses to overwrite); return their paths."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    write_json_atomic(d / "ntk_dynamics.json", result)
    plot_ntk_dynamics(result, d / "ntk_dynamics.png")
    return [str(d / name) for name in OUTPUT_FILES]


def _fmt_fit(fit: dict[str, Any]) -> str:
    if fit["slope"] is None:
        return "-"
    return f"{fit['slope']:.2f} ± {fit['se']:.2f}" if fit["se"] is not None else f"{fit['slope']:.2f}"


def report_markdown(result: dict[str, Any]) -> str:
    """The slopes at every recorded time, (c) against (a), and the widest nets' movement."""
    cfg = result["config"]
    times = result["times"]  # every per-time list is in this order
    lines = [
        f"NTK dynamics (Theorem 1, appendix Figure 3): depth {cfg['depth']}, {cfg['activation']}, NTK "
        f"parameterization, {cfg['n_images']} {cfg['dataset']} images, lr {cfg['lr']}, "
        f"{'full batch' if cfg['batch_size'] is None else 'batch ' + str(cfg['batch_size'])}, "
        f"d = {', '.join(map(str, cfg['d']))}, {cfg['seeds']} seeds; {result['elapsed_s']} s wall, "
        f"{result['cpu_s']} s CPU",
        "",
        f"Slope of log|K_t - K_0| against log(m n) (theorem: -1 for (a) and (b)); "
        f"'wide' fits use d >= {result['slopes_wide']['min_d']}:",
        "",
        "| step | (a) | (b) | (c) | (a) wide | (b) wide | rel. change, widest (a) / (b) / (c) | (c) below (a) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    wide = result["lazy"]["widest"]
    cba = result["c_below_a"]
    for i, t in enumerate(times):
        s, sw = result["slopes"][i], result["slopes_wide"]["by_time"][i]
        rel = " / ".join(f"{100 * wide[p]['rel_dK_mean'][i]:.2g}%" if p in wide else "-" for p in PANELS)
        below = "-"
        if cba is not None:
            ct = cba["by_time"][i]
            below = ("yes" if ct["below"] else "no") + (
                f" ({ct['ratio_c_over_a']:.2f}x)" if ct["ratio_c_over_a"] is not None else "")
        lines.append(f"| {t} | {_fmt_fit(s['a'])} | {_fmt_fit(s['b'])} | {_fmt_fit(s['c'])} | "
                     f"{_fmt_fit(sw['a'])} | {_fmt_fit(sw['b'])} | {rel} | {below} |")
    lines.append("")
    st = result["stability"]
    lines.append(f"Stability: lr * lambda_max(Theta/N) / 2 at init is at most {st['max_lr_lambda_over_2']:.2f} "
                 f"(({st['worst']['panel']}) d={st['worst']['d']}); "
                 + ("below 1 everywhere: no catapult." if not st["points_over_limit"] else
                    f"WARNING: >= 1 for {', '.join(st['points_over_limit'])}: those nets start in the catapult "
                    "phase, where the kernel moves by O(1) at any width; lower --lr."))
    sa, sb = result["slope_a"], result["slope_b"]
    fa = f"{sa['slope']:.2f} ± {sa['se']:.2f}" if sa["se"] is not None else str(sa["slope"])
    fb = f"{sb['slope']:.2f} ± {sb['se']:.2f}" if sb["se"] is not None else str(sb["slope"])
    low = result["lazy"]["narrowest"]
    loss = result["lazy"]["widest_loss"]
    lines.append(f"At the horizon ({result['horizon']} steps): slope_a = {fa}, slope_b = {fb}. The widest net "
                 f"of each panel moved by at most {100 * result['lazy']['max_rel_dK_widest_at_horizon']:.2g}% of "
                 f"K_0 (worst seed), the narrowest ({low['panel']}, m={low['m']}, n={low['n']}) by "
                 f"{100 * low['rel_dK_mean'][-1]:.2g}% (seed mean); training loss of the widest (a): "
                 f"{loss['init']:.3g} at init, {loss['horizon']:.3g} at the horizon.")
    if cba is not None:
        lines.append(f"(c) at d={cba['d']} ({cba['m_c']}x{cba['n_c']}, {cba['params_c']} params vs (a)'s "
                     f"{cba['params_a']}): |dK| {cba['abs_dK_c']:.3g} vs (a) {cba['abs_dK_a']:.3g}: "
                     f"{'below' if cba['below'] else 'NOT below'} (a)"
                     + (f", z = {cba['z']:.1f}" if cba["z"] is not None else "") + ".")
    return "\n".join(lines)
