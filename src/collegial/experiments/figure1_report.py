"""What a Figure 1 sweep concludes: per curve and pooled, how well each predictor orders the
test errors; the optima against the baseline; the pre-registered criteria; ``figure1.json``,
``figure1.md`` and ``figure1.png`` (:mod:`collegial.experiments.figure1` runs the sweep).

Every interval here resamples the training seeds jointly across architectures (seed s of every
run shares its data order and its initialization seed): it covers the seed-to-seed spread of
training, not the predictors' own measurement error, nor the choice of architectures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from collegial.io import save_figure, write_json_atomic, write_text_atomic
from collegial.stats import correlations, mean_se, paired_difference, rank_correlation

#: The predictors set against the test errors, with the getter of each point's value.
PREDICTORS: dict[str, Any] = {
    "block variance V1(n)/m": lambda p: p.variance,
    "whole-model variance": lambda p: p.whole_variance,
    "width n": lambda p: p.n,
    "multiplicity m": lambda p: p.m,
    "parameters": lambda p: p.params,
    "FLOPs": lambda p: p.flops,
    "images/s": lambda p: p.images_per_s,
}
BOOTSTRAP_DRAWS = 2000


def seed_draws(seeds: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` bootstrap resamples of the seed indices, shape (draws, seeds): one resample is
    applied to every architecture (seeds resampled jointly)."""
    return np.random.default_rng(seed).integers(0, seeds, size=(draws, seeds))


def predictor_table(points: list[Any], errors: np.ndarray, draws: np.ndarray) -> list[dict[str, Any]]:
    """For each predictor measured at every point: Spearman's rho and Kendall's tau of its values
    with the mean test error (``errors``: shape (points, seeds)), each with its exact
    permutation p-value, and rho's bootstrap 95% interval over joint seed resamples ``draws``."""
    mean = errors.mean(axis=1)
    boot_means = errors[:, draws].mean(axis=2).T  # (draws, points)
    rows = []
    for name, get in PREDICTORS.items():
        x = [get(p) for p in points]
        if any(v is None or not math.isfinite(float(v)) for v in x) or len(set(x)) < 2 or len(points) < 3:
            continue
        rho, p_rho = rank_correlation(x, mean, "spearman")
        tau, p_tau = rank_correlation(x, mean, "kendall")
        boots = correlations(x, boot_means, "spearman")  # NaN where a draw's means are all equal
        ok = boots[np.isfinite(boots)]
        lo, hi = np.quantile(ok, [0.025, 0.975]) if ok.size else (math.nan, math.nan)
        rows.append({"predictor": name, "spearman": rho, "spearman_p": p_rho, "kendall": tau, "kendall_p": p_tau,
                     "lo": float(lo), "hi": float(hi), "points": len(points), "_boots": boots})
    return rows


def beyond_width(rows: list[dict[str, Any]], name: str = "block variance V1(n)/m") -> dict[str, Any] | None:
    """|rho(variance)| - |rho(width n)| and its joint-bootstrap 95% interval: whether the
    variance orders the errors better than the width alone (None without both)."""
    by = {r["predictor"]: r for r in rows}
    if name not in by or "width n" not in by or by[name]["_boots"].size != by["width n"]["_boots"].size:
        return None
    d = np.abs(by[name]["_boots"]) - np.abs(by["width n"]["_boots"])
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    lo, hi = np.quantile(d, [0.025, 0.975])
    return {"predictor": name, "difference": abs(by[name]["spearman"]) - abs(by["width n"]["spearman"]),
            "lo": float(lo), "hi": float(hi)}


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def _view(cfg: Any, curves: dict[str, list[Any]], base: Any, errs: dict[str, list[float]]) -> dict[str, Any]:
    """Tables, predictors and optima for one set of errors (``errs[arch]``, one per seed)."""
    draws = seed_draws(cfg.seeds, BOOTSTRAP_DRAWS, cfg.seed)
    out: dict[str, Any] = {"curves": {}}
    pooled: dict[str, Any] = {}
    for prob, pts in list(curves.items()) + [("all", None)]:
        pts = pts or sorted({p.arch: p for q in curves.values() for p in q}.values(), key=lambda p: (p.n, p.m))
        e = np.array([errs[p.arch] for p in pts], dtype=float)
        rows = predictor_table(pts, e, draws)
        cur: dict[str, Any] = {"predictors": _public(rows), "beyond_width": beyond_width(rows)}
        if prob == "all":
            pooled = cur
            continue
        opt = next(p for p in pts if "optimum" in p.role)
        cur["points"] = [{**p.to_dict(), "errors": errs[p.arch],
                          **dict(zip(("error_mean", "error_se"), mean_se(errs[p.arch]))),
                          "minus_baseline": paired_difference(errs[p.arch], errs[base.arch])} for p in pts]
        cur["optimum"] = opt.arch
        sp = next((r for r in rows if r["predictor"] == "block variance V1(n)/m"), None)
        cur["spearman"] = ({"rho": sp["spearman"], "lo": sp["lo"], "hi": sp["hi"], "p": sp["spearman_p"],
                            "points": len(pts)} if sp else {"rho": math.nan, "lo": math.nan, "hi": math.nan,
                                                           "p": math.nan, "points": len(pts)})
        out["curves"][prob] = cur
        out[f"{prob}_minus_baseline"] = {"arch": opt.arch, "is_baseline": opt.arch == base.arch,
                                         **paired_difference(errs[opt.arch], errs[base.arch])}
    out["pooled"] = pooled
    best = max(pooled["predictors"], key=lambda r: abs(r["spearman"]), default=None)
    out["best_predictor"] = best and {k: best[k] for k in ("predictor", "spearman", "spearman_p", "lo", "hi")}
    return out


def summarize(cfg: Any, res: Any, curves: dict[str, list[Any]], recipe: Any, prereg: dict[str, Any],
              pilot: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ``figure1.json`` object: the chosen-rate view at the top level (``curves``,
    ``*_minus_baseline``, ``pooled``), the shared-rate view under ``shared_lr``, the pilot, and
    the pre-registered criteria with their verdict under each view."""
    base = next(p for p in curves["primal"] if "baseline" in p.role)
    chosen = _view(cfg, curves, base, {p.arch: p.errors for q in curves.values() for p in q})
    shared = _view(cfg, curves, base, {p.arch: p.errors_shared for q in curves.values() for p in q})
    diffs = {prob: chosen[f"{prob}_minus_baseline"] for prob in ("primal", "dual")}
    return {
        "status": "finished", "smoke_test": cfg.quick, "config": cfg.key(), "recipe": recipe.as_dict(),
        "probe": res.probe, "alpha_file": res.alpha_file, "variance_model": res.variance_model,
        "baseline": {**base.to_dict(), "errors": base.errors}, **chosen,
        "shared_lr": {**shared, "verdict": verdict(prereg, {p: shared[f"{p}_minus_baseline"] for p in diffs},
                                                   cfg.quick)},
        "preregistered": prereg, "verdict": verdict(prereg, diffs, cfg.quick), "pilot": pilot, "seconds": seconds,
    }


def verdict(prereg: dict[str, Any], diffs: dict[str, dict[str, Any]], quick: bool) -> dict[str, Any]:
    """Each pre-registered criterion against the measured paired differences: pass, fail or
    not testable (the optimum is the baseline); a smoke test concludes nothing."""
    out = {}
    for prob, c in prereg["criteria"].items():
        d = diffs[prob]
        if quick:
            status = "smoke test: no conclusion"
        elif not c["testable"]:
            status = "not testable (the optimum is the baseline)"
        else:
            status = "pass" if d["hi"] < c["bound"] else "fail"
        out[prob] = {**c, "status": status, "mean": d["mean"], "lo": d["lo"], "hi": d["hi"]}
    return out


# ----------------------------------------------------------------------------------- outputs


def headline(obj: dict[str, Any]) -> list[str]:
    """The answer before the details: the criteria's verdict, the best predictor, the variance
    against the width."""
    if obj.get("smoke_test"):
        return ["**Smoke test (--quick): no conclusion.** A few tiny runs check the pipeline only."]
    lines = []
    for prob, v in obj["verdict"].items():
        lines.append(f"- pre-registered {prob} criterion ({v['optimum']} vs {v['baseline']}: {v['test']}): "
                     f"**{v['status']}** ({v['mean']:+.2f} points [{v['lo']:+.2f}, {v['hi']:+.2f}])")
    b = obj.get("best_predictor")
    if b:
        lines.append(f"- best predictor of the test error over all {obj['pooled']['predictors'][0]['points']} "
                     f"architectures: {b['predictor']} (Spearman {b['spearman']:+.2f}, exact p = "
                     f"{b['spearman_p']:.3g}, 95% joint-seed bootstrap [{b['lo']:+.2f}, {b['hi']:+.2f}])")
    bw = obj["pooled"].get("beyond_width")
    if bw:
        how = ("orders the test errors better than" if bw["lo"] > 0 else
               "orders the test errors less well than" if bw["hi"] < 0 else "does not measurably add to")
        lines.append(f"- the block variance {how} the width n alone: |rho(variance)| - |rho(n)| = "
                     f"{bw['difference']:+.2f} [95% joint-seed bootstrap {bw['lo']:+.2f}, {bw['hi']:+.2f}]")
    return lines


def _predictor_lines(cur: dict[str, Any]) -> list[str]:
    rows = cur["predictors"]
    if not rows:
        return []
    return ["| predictor | Spearman | exact p | 95% joint-seed bootstrap | Kendall | exact p |", "|---|---|---|---|---|---|",
            *(f"| {r['predictor']} | {r['spearman']:+.2f} | {r['spearman_p']:.3g} | [{r['lo']:+.2f}, {r['hi']:+.2f}] "
              f"| {r['kendall']:+.2f} | {r['kendall_p']:.3g} |" for r in rows), ""]


def _point_lines(cur: dict[str, Any], shared: dict[str, Any]) -> list[str]:
    lines = ["| model | role | params | block variance | whole-model variance | lr | test error % (mean ± s.e.) "
             "| minus baseline [95%] | at the shared lr | per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p, q in zip(cur["points"], shared["points"]):
        mb, ms = p["minus_baseline"], q["minus_baseline"]
        base = "baseline" in p["role"]
        diff = "-" if base else f"{mb['mean']:+.2f} [{mb['lo']:+.2f}, {mb['hi']:+.2f}]"
        sh = f"{q['error_mean']:.2f}" + ("" if base else f" ({ms['mean']:+.2f} [{ms['lo']:+.2f}, {ms['hi']:+.2f}])")
        wv = "-" if p["whole_variance"] is None else f"{p['whole_variance']:.3g} ± {p['whole_variance_se']:.2g}"
        lines.append(f"| {p['arch']} | {p['role'] or '-'} | {p['params'] / 1e3:.0f}k | {p['variance']:.4g} ± "
                     f"{p['variance_se']:.2g} | {wv} | {p['lr']:g} | {p['error_mean']:.2f} ± {p['error_se']:.2f} "
                     f"| {diff} | {sh} | {', '.join(f'{e:.2f}' for e in p['errors'])} |")
    return lines + [""]


def markdown(obj: dict[str, Any]) -> str:
    c = obj["config"]
    smoke = " (smoke test: no conclusion)" if obj.get("smoke_test") else ""
    pil = obj["pilot"]
    lines = [f"# Figure 1 at CPU scale: {c['family']} on {c['dataset']}, baseline {c['baseline']}{smoke}", "",
             *headline(obj), "",
             f"{c['seeds']} seeds, {c['epochs']} epochs, batch {c['batch_size']}; learning rate chosen per "
             f"architecture from {c['lrs']} on {c['val_images']} held-out training images ({c['select_seeds']} "
             f"seed(s) each), shared rate {c['lr']:g} reported beside; train images: {c['train_limit'] or 'all'} "
             f"less the held-out, test images: {c['test_limit'] or 'all'}; variance model {obj['variance_model']}; "
             f"probe: {obj['probe']}; {obj['seconds']:.0f} s.", "",
             f"Pilot: paired s.d. of {pil['pair'][0]} - {pil['pair'][1]} over {pil['seeds']} seeds = {pil['sd']:.2f} "
             f"points; resolving {pil['target_difference']:g} points at 95% needs "
             f"{pil['seeds_needed'] or 'more than 100'} seeds; the sweep ran {pil['seeds_run']}.", ""]
    for prob in ("primal", "dual"):
        cur, sh = obj["curves"][prob], obj["shared_lr"]["curves"][prob]
        d = obj[f"{prob}_minus_baseline"]
        lines += [f"## {prob} curve ({'equal parameters' if prob == 'primal' else 'the baseline variance'})", "",
                  *_point_lines(cur, sh), *_predictor_lines(cur),
                  (f"The {prob} optimum is the baseline itself ({d['arch']}): no difference to measure." if d["is_baseline"]
                   else f"The {prob} optimum {d['arch']} minus the baseline: {d['mean']:+.2f} points [95% interval "
                        f"{d['lo']:+.2f}, {d['hi']:+.2f}] (paired by seed; at the shared rate: "
                        f"{obj['shared_lr'][f'{prob}_minus_baseline']['mean']:+.2f})."), ""]
    lines += ["## Both curves pooled", "", *_predictor_lines(obj["pooled"]),
              "Intervals resample the training seeds jointly across architectures; they do not cover the "
              "predictors' own measurement error.", ""]
    return "\n".join(lines)


def plot(obj: dict[str, Any], path: Path) -> None:
    """Test error against n along each curve (error bars: s.e. over seeds; the shared rate
    dotted), the block's predicted and the whole model's measured variance on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4), dpi=120)
    for ax, prob in zip(axes, ("primal", "dual")):
        pts, sh = obj["curves"][prob]["points"], obj["shared_lr"]["curves"][prob]["points"]
        n = [p["n"] for p in pts]
        ax.errorbar(n, [p["error_mean"] for p in pts], [p["error_se"] for p in pts], marker="o", capsize=3,
                    color="C0", label="test error, chosen lr")
        ax.errorbar(n, [p["error_mean"] for p in sh], [p["error_se"] for p in sh], marker=".", ls=":", capsize=2,
                    color="C0", alpha=0.6, label="test error, shared lr")
        for p in pts:
            ax.annotate(p["arch"] + (f" ({p['role']})" if p["role"] else ""), (p["n"], p["error_mean"]),
                        textcoords="offset points", xytext=(-90, 8) if p["n"] == max(n) else (4, 5), fontsize=6.5)
        ax2 = ax.twinx()
        ax2.errorbar(n, [p["variance"] for p in pts], [p["variance_se"] for p in pts], marker="s", ls="--",
                     color="C3", capsize=2, ms=3, label="block variance V1(n)/m")
        if all(p["whole_variance"] is not None for p in pts):
            ax2.errorbar(n, [p["whole_variance"] for p in pts], [p["whole_variance_se"] for p in pts], marker="^",
                         ls="-.", color="C2", capsize=2, ms=3, label="whole-model variance")
        ax2.set_yscale("log")
        ax2.set_ylabel("NTK variance", fontsize=8)
        ax2.tick_params(axis="y", labelsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width n")
        ax.set_ylabel("test top-1 error %", color="C0", fontsize=8)
        sp = obj["curves"][prob]["spearman"]
        ax.set_title(f"{prob} curve: Spearman(block variance, error) {sp['rho']:.2f} (p = {sp['p']:.2g})", fontsize=8)
        ax.grid(True, alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=6.5, loc="best")
    c = obj["config"]
    smoke = "  SMOKE TEST: NO CONCLUSION" if obj.get("smoke_test") else ""
    fig.suptitle(f"{c['family']} on {c['dataset']}, baseline {c['baseline']}, {c['seeds']} seeds{smoke}", fontsize=9,
                 color="C3" if smoke else "black")
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(obj: dict[str, Any], out: Path) -> list[Path]:
    from collegial.experiments.figure1_runs import OUT_FILES

    write_json_atomic(out / "figure1.json", obj)
    write_text_atomic(out / "figure1.md", markdown(obj) + "\n")
    plot(obj, out / "figure1.png")
    return [out / n for n in OUT_FILES]
