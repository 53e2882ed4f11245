"""How Algorithm 1's curve, alpha and the search's optima depend on the probe's inputs.

For each input choice (independent Gaussian; post-ReLU pairs at several correlations; real
MNIST / Fashion-MNIST images through a random ReLU stem) and several seeds (each a new set of
pairs, readouts and initializations), runs ``run_algorithm1`` at its defaults (T = 2000 per
width, 8 pairs, 22 widths) and reports prop1 alpha, every model's chi^2/dof, V(10)/V(128),
the 1/m ratios, and the ResNeXt-29 / CIFAR-10 (1x128d, parameter budget) primal and dual
optima under the default (auto) model and prop1. Also checks the seed consistency of the
defaults: each seed's v(n) against the mean of the seeds, in units of its own standard error.

    .venv/bin/python bench/probe_inputs.py --out runs/probe_inputs     # ~7 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from collegial.commands.probe_options import load_images
from collegial.ntk.alpha import run_algorithm1
from collegial.ntk.inputs import ProbeInputs
from collegial.search.solve import search
from collegial.search.variance import VarianceCurve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/probe_inputs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--default-seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    choices = [("relu", 0.6, None), ("gaussian", 0.6, None), ("relu", 0.0, None), ("relu", 0.3, None),
               ("relu", 0.9, None), ("data", 0.6, "mnist"), ("data", 0.6, "fashion-mnist")]
    rows = []
    for kind, rho, ds in choices:
        seeds = args.default_seeds if (kind, rho) == ("relu", 0.6) else args.seeds
        imgs = load_images(ds) if ds else None
        for seed in range(seeds):
            inp = ProbeInputs(kind, rho, dataset=ds, images=imgs)
            t = time.perf_counter()
            fit = run_algorithm1(trials=args.trials, seed=seed, inputs=inp)
            sec = time.perf_counter() - t
            w = fit.widths
            i10, i128 = w.index(10), w.index(128)
            r = fit.variance[i10] / fit.variance[i128]
            rse = r * np.hypot(fit.stderr[i10] / fit.variance[i10], fit.stderr[i128] / fit.variance[i128])
            opt = {}
            for model in ("auto", "prop1", "fit2", "smooth", "empirical"):
                res = search("resnext29", "cifar10", "1x128d", VarianceCurve(fit, model, 200, 0))
                opt[model] = {"primal": res.primal.arch, "dual": res.dual.arch, "dual_rho": res.dual.rho,
                              "primal_set": list(res.optimal_set["primal"].widths),
                              "dual_set": list(res.optimal_set["dual"].widths)}
            row = {"inputs": inp.label, "kind": kind, "correlation": rho, "dataset": ds, "seed": seed,
                   "seconds": sec, "alpha": fit.alpha, "alpha_se": fit.alpha_stderr,
                   "chi2_per_dof": {k: fit.model(k).summary()["chi2_per_dof"] for k in ("prop1", "fit2", "smooth")},
                   "auto": fit.auto_model(), "v10_v128": r, "v10_v128_se": rse,
                   "m_law": [(p.m, p.ratio, p.ratio_stderr) for p in fit.m_law],
                   "widths": w, "variance": fit.variance, "stderr": fit.stderr, "optima": opt}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("inputs", "seed", "seconds", "alpha", "v10_v128", "auto")}
                             | {"opt": {k: (v["primal"], v["dual"]) for k, v in opt.items()}}), flush=True)
            fit.save(out / f"{kind}-{rho}-{ds}-seed{seed}", overwrite=True, plot=False)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    # seed consistency of the defaults
    d = [r for r in rows if r["kind"] == "relu" and r["correlation"] == 0.6]
    v = np.array([r["variance"] for r in d])
    se = np.array([r["stderr"] for r in d])
    z = (v - v.mean(0)) / se
    rr = np.array([r["v10_v128"] for r in d])
    rs = np.array([r["v10_v128_se"] for r in d])
    zr = (rr - rr.mean()) / rs
    print(f"seed consistency ({len(d)} seeds, {v.shape[1]} widths): max |z| over v(n) = {np.abs(z).max():.2f}, "
          f"share |z| > 2: {(np.abs(z) > 2).mean():.3f}; V(10)/V(128) = {rr.round(2).tolist()}, max |z| = "
          f"{np.abs(zr).max():.2f}")


if __name__ == "__main__":
    main()
