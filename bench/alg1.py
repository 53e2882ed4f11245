"""Benchmark: Algorithm 1 at its defaults against a per-trial loop, in the same run.

1. Times ``run_algorithm1()`` at its defaults (resnext29's block, C = 256, 8x8, post-ReLU pairs
   rho = 0.6, 8 pairs, T = 2000 per width, 22 widths 2..128, 1/m check at n = 8 for m = 2, 4,
   8, 16) -- what ``collegial fit-alpha`` runs.
2. On a subset of widths, estimates the same v(n) with the per-trial loop on the same inputs
   and pairs (T / 8 trials per pair, pooled the same way): re-initialize a
   ``collegial.models.Bottleneck`` with ``init_resnet_``, two autograd passes, inner product.
3. Prints per width: seconds per trial of both, the speed ratio, both estimates with standard
   errors and their z-score; FLOPs per trial of both (``torch.utils.flop_counter``), the achieved
   FLOP rate and a large GEMM's rate as the machine's practical limit.
4. Runs the same defaults with the same bottleneck declared through the generic route
   (``engine="generic"``: the family's ``(m, n) -> nn.Module`` factory, trials stacked and
   vmapped, :mod:`collegial.ntk.generic`) and prints its time against step 1's (target: within
   3x) and the z-scores of its v(n) against step 1's.

    .venv/bin/python bench/alg1.py [--loop-widths 8,32,128] [--loop-trials 2000] [--threads 2]
                                   [--no-generic]
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: on a shared machine, spinning OpenMP threads that lose their core
# stall every parallel region (5-10x slow-downs measured here); passive waiting costs little
# when the machine is idle. Applies equally to both sides of every comparison below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from collegial.ntk.alpha import pair_moments, run_algorithm1
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import ResNeXtBlockProbe, chunk_seed
from collegial.ntk.variance import Moments, normalized_variance, pool_pairs


def gemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop-widths", default="8,32,128")
    ap.add_argument("--loop-trials", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-generic", action="store_true", help="skip step 4 (the generic engine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loop_widths = [int(w) for w in args.loop_widths.split(",")]
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load avg {load:.1f} (before the run)")
    peak = gemm_gflops()
    print(f"GEMM 2048^3 float32: {peak:.0f} GFLOP/s (practical limit)")

    t0 = time.perf_counter()
    fit = run_algorithm1(trials=args.trials)
    total = time.perf_counter() - t0
    print(f"\nAlgorithm 1 at defaults (T={fit.trials}, widths {fit.widths}, 1/m check "
          f"m={[p.m for p in fit.m_law]} at n={fit.m_law[0].n if fit.m_law else '-'}): {total:.1f} s "
          f"(target <= 30 s)")
    print(fit.table())

    inputs = ProbeInputs()  # the defaults of run_algorithm1: the same pairs and readouts
    probes = [ResNeXtBlockProbe(inputs=inputs, pair=p) for p in range(inputs.pairs)]
    probe = probes[0]
    per_pair = args.loop_trials // inputs.pairs
    secs = {(int(j["m"]), int(j["n"])): j["seconds"] for j in fit.job_seconds}
    fast_flops = {}
    for m, n in secs:
        b = probe.chunk_size(m, n)
        w = probe.sample(m, n, b, 0)
        fast_flops[(m, n)] = flops(lambda: probe.k_values(w)) / b
    work = sum(fast_flops[j] * fit.trials for j in secs)
    busy = sum(secs.values())
    print(f"\nvectorized: {work / 1e9:.0f} GFLOP (matmul/conv, FlopCounterMode) in {busy:.1f} s "
          f"= {work / busy / 1e9:.0f} GFLOP/s, {100 * work / busy / 1e9 / peak:.0f}% of the GEMM rate")

    print(f"\nper-trial loop (Bottleneck + init_resnet_, two autograd passes, inner product), on the "
          f"same {inputs.pairs} pairs ({inputs.label}), {per_pair} trials per pair:")
    print(f"(loop ms/trial: {torch.get_num_threads()} threads / 1 thread; the ratio uses the faster)")
    print(f"{'n':>4} {'loop ms/trial':>14} {'vect. ms/trial':>15} {'ratio':>7} "
          f"{'loop MFLOP':>11} {'vect. MFLOP':>12} {'v loop':>17} {'v vectorized':>17} {'z':>6}")
    ratios = []
    rng_ms: dict[int, float] = {}
    for n in loop_widths:
        blk = probe.block(1, n)
        f_loop = flops(lambda: probe.k_module(blk))
        t1 = time.perf_counter()
        ks = [pr.k_loop(1, n, per_pair, seed=chunk_seed(1234, n, p)) for p, pr in enumerate(probes)]
        t_loop2 = (time.perf_counter() - t1) / (per_pair * inputs.pairs)
        # the loop is many small ops: with PASSIVE OpenMP waiting, one thread is often faster;
        # the reference gets the better of the two thread counts
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t1 = time.perf_counter()
        probe.k_loop(1, n, max(50, args.loop_trials // 4), seed=1)
        t_loop1 = (time.perf_counter() - t1) / max(50, args.loop_trials // 4)
        torch.set_num_threads(threads)
        t_loop = min(t_loop1, t_loop2)
        loop = pool_pairs([normalized_variance(Moments.of(k)) for k in ks])
        i = fit.widths.index(n) if n in fit.widths else None
        if (1, n) in secs and i is not None:
            t_fast = secs[(1, n)] / fit.trials
            v, se = fit.variance[i], fit.stderr[i]
        else:
            t2 = time.perf_counter()
            moms = pair_moments(probes, 1, n, args.trials // inputs.pairs, seed=0)
            nv = pool_pairs([normalized_variance(mom) for mom in moms])
            t_fast = (time.perf_counter() - t2) / args.trials
            v, se = nv.v, nv.stderr
            fast_flops[(1, n)] = flops(lambda: probe.k_values(probe.sample(1, n, 8, 0))) / 8
        z = (loop.v - v) / math.hypot(loop.stderr, se)
        cs = probe.chunk_size(1, n)
        t3 = time.perf_counter()
        for c in range(4):
            probe.sample(1, n, cs, c)
        rng_ms[n] = (time.perf_counter() - t3) / (4 * cs) * 1e3
        ratios.append(t_loop / t_fast)
        loop_ms = f"{t_loop2 * 1e3:.2f}/{t_loop1 * 1e3:.2f}"
        print(f"{n:>4} {loop_ms:>14} {t_fast * 1e3:>15.3f} {t_loop / t_fast:>7.1f} "
              f"{f_loop / 1e6:>11.1f} {fast_flops[(1, n)] / 1e6:>12.1f} "
              f"{loop.v:>9.4f} +-{loop.stderr:<6.4f} {v:>9.4f} +-{se:<6.4f} {z:>6.2f}")
    print("drawing the weights alone (torch normal_, 2 streams): "
          + ", ".join(f"n={n}: {ms:.3f} ms/trial" for n, ms in rng_ms.items()))
    print(f"speed ratio (loop / vectorized, per trial): min {min(ratios):.1f}, "
          f"geometric mean {math.exp(sum(map(math.log, ratios)) / len(ratios)):.1f} (target >= 2)")
    if not args.no_generic:
        generic_route(fit, total, args.trials)
    print(f"load avg after the run: {os.getloadavg()[0]:.1f}")


def generic_route(fit, total: float, trials: int) -> None:
    """Step 4: the declared bottleneck on the generic engine, against the dedicated run."""
    t0 = time.perf_counter()
    gen = run_algorithm1(trials=trials, engine="generic")
    t_gen = time.perf_counter() - t0
    z = [(a - b) / math.hypot(sa, sb) for a, b, sa, sb in zip(fit.variance, gen.variance, fit.stderr, gen.stderr)]
    print(f"\ngeneric route (the same bottleneck as a declared (m, n) -> nn.Module factory, engine "
          f"{gen.engine}): {t_gen:.1f} s vs {total:.1f} s dedicated = {t_gen / total:.2f}x (target <= 3x)")
    print(f"  v(n) generic vs dedicated, {len(z)} widths: max |z| = {max(map(abs, z)):.2f}, "
          f"mean z^2 = {sum(x * x for x in z) / len(z):.2f} (independent draws: ~1)")
    zm = [(a.variance - b.variance) / math.hypot(a.stderr, b.stderr) for a, b in zip(gen.m_law, fit.m_law)]
    print("  V(m, n) of the 1/m check, generic vs dedicated: z = " + ", ".join(f"{z:.2f}" for z in zm))
    print(f"  prop1 alpha {gen.alpha:.3f} +- {gen.alpha_stderr:.3f} (dedicated {fit.alpha:.3f} +- "
          f"{fit.alpha_stderr:.3f}); 1/m ratios " + ", ".join(
              f"m={a.m}: {a.ratio:.3f}+-{a.ratio_stderr:.3f} / {b.ratio:.3f}+-{b.ratio_stderr:.3f}"
              for a, b in zip(gen.m_law, fit.m_law)) + " (generic / dedicated)")


if __name__ == "__main__":
    main()
