"""Benchmark: the bias of the normalized-variance estimate at few initializations per pair.

Algorithm 1 estimates ``v = Var[K] / E[K]^2`` per input pair from T/P initializations (T = 2000
trials over P = 8 pairs by default: 250 each; ``bench/calibration.py --fresh`` uses T = 200, 25
each). A ratio of two moments of the same heavy-tailed sample is biased low. This script draws
``--reference`` values of K per pair at a few widths of a family's probe (m = 1), takes the
jackknife estimate over all of them as the reference (its own bias is ~1/8 of that at 250), cuts the same values into blocks of 25 and 250,
and prints each estimator's mean over the blocks (and pairs) divided by the reference:

* ``plain``: ``s^2 / mean^2`` (what Algorithm 1 reported before the jackknife);
* ``jackknife``: :func:`collegial.ntk.variance.normalized_variance` on the block's sample, the
  estimate Algorithm 1 reports now.

A ratio below 1 is a bias no error bar covers (the mean over ~8-80 blocks per pair and width has
a relative error of a few percent; printed as ``+-``).

    .venv/bin/python bench/ratio_bias.py [--family resnext29] [--widths 2,4,8,16] [--reference 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from collegial.ntk.alpha import make_probe
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import trial_seed
from collegial.ntk.variance import Moments, normalized_variance


def draw(family: str, n: int, per_pair: int, pairs: int, seed: int) -> np.ndarray:
    """``(pairs, per_pair)`` values of K at m = 1, width ``n`` (chunks of 250 initializations)."""
    inputs = ProbeInputs(pairs=pairs)
    out = []
    for p in range(pairs):
        probe = make_probe(family, inputs=inputs, pair=p, seed=seed)
        chunks = [probe.k_chunk(1, n, min(250, per_pair - s), trial_seed(seed, 1, n, c, p))
                  for c, s in enumerate(range(0, per_pair, 250))]
        out.append(torch.cat(chunks).to(torch.float64).numpy())
    return np.stack(out)


def block_means(k: np.ndarray, size: int) -> dict[str, tuple[float, float]]:
    """Mean and s.e. over blocks of ``size`` of each estimator (pairs x blocks estimates)."""
    est: dict[str, list[float]] = {"plain": [], "jackknife": []}
    for row in k:
        for b in range(len(row) // size):
            nv = normalized_variance(Moments.of(row[b * size:(b + 1) * size]))
            est["plain"].append(nv.uncorrected)
            est["jackknife"].append(nv.v)
    return {name: (float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x)))) for name, x in est.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="resnext29")
    ap.add_argument("--widths", default="2,4,8,16")
    ap.add_argument("--reference", type=int, default=2000, help="initializations per pair behind the reference")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{args.family}, inputs relu(corr=0.6), {args.pairs} pairs, reference: the jackknife over all "
          f"{args.reference} initializations per pair; mean estimate / reference (+- s.e.)")
    print(f"{'n':>4} {'reference v':>12} | {'25/pair plain':>14} {'jackknife':>14} | {'250/pair plain':>15} {'jackknife':>14}")
    t0 = time.perf_counter()
    for n in (int(w) for w in args.widths.split(",")):
        k = draw(args.family, n, args.reference, args.pairs, args.seed)
        ref = float(np.mean([normalized_variance(Moments.of(r)).v for r in k]))
        cells = []
        for size in (25, 250):
            means = block_means(k, size)
            cells += [f"{means[e][0] / ref:.3f} +- {means[e][1] / ref:.3f}" for e in ("plain", "jackknife")]
        print(f"{n:>4} {ref:>12.4f} | {cells[0]:>14} {cells[1]:>14} | {cells[2]:>15} {cells[3]:>14}")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
