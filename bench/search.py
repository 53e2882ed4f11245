"""Benchmark: one primal + dual search over n in 2..128 once costs are cached (target < 1 s).

Prints absolute times (cold cost table, warm search with the default 1000 bootstrap draws, warm
search without bootstrap) and the ratio against a reference measured in the same run: the same
integer primal and dual solved candidate by candidate in plain Python (costs from the same cached
table, one ``table(m, n)`` call per candidate). Synthetic alpha data (a 16-width table exactly
prop1 with alpha = 2.5, 3 % standard errors), so no Algorithm 1 run is timed.

    .venv/bin/python bench/search.py [--family resnext29] [--dataset cifar10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import numpy as np
import torch

from collegial.search.solve import cost_table, search
from collegial.search.variance import VarianceCurve, synthetic_curve


def naive(table, curve: VarianceCurve, m_b: int, n_b: int, kind: str) -> tuple[str, str]:
    """Reference: the integer primal/dual, one width at a time in Python."""
    budget = table(m_b, n_b).get(kind)
    v_base = float(curve(n_b)[0]) / m_b
    best_p = best_d = None
    for n in range(2, 129):
        v = float(curve(n)[0])
        a1 = table(1, n).get(kind)
        b = table(2, n).get(kind) - a1
        m = (budget - (a1 - b)) // b
        if m >= 1:
            obj = v / m
            if best_p is None or obj < best_p[0]:
                best_p = (obj, f"{m}x{n}d")
        md = max(1, math.ceil(v / v_base))
        while v / md > v_base:
            md += 1
        cost = table(md, n).get(kind)
        if best_d is None or cost < best_d[0]:
            best_d = (cost, f"{md}x{n}d")
    return best_p[1], best_d[1]


def timeit(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="resnext29")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--baseline", default="1x128d")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    widths = np.array([2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128])
    def curve(model: str, draws: int) -> VarianceCurve:
        return synthetic_curve(lambda n: np.expm1(2.5 / n), widths, model=model, rel_stderr=0.03, draws=draws)

    m_b, n_b = (int(x) for x in args.baseline[:-1].split("x"))

    t = time.perf_counter()
    table = cost_table(args.family, args.dataset)
    cold = time.perf_counter() - t

    def run(draws: int, model: str = "prop1"):
        return search(args.family, args.dataset, args.baseline, curve(model, draws),
                      budget="params", n_range=(2, 128))

    res = run(1000)
    ref = naive(table, curve("prop1", 2), m_b, n_b, "params")
    assert ref == (res.primal.arch, res.dual.arch), (ref, res.primal.arch, res.dual.arch)

    t_full = timeit(lambda: run(1000), args.repeat)
    t_nob = timeit(lambda: run(2), args.repeat)
    t_emp = timeit(lambda: run(1000, "empirical"), args.repeat)
    t_ref = timeit(lambda: naive(table, curve("prop1", 2), m_b, n_b, "params"), args.repeat)

    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch threads 1")
    print(f"{args.family} {args.dataset} baseline {args.baseline}, n in 2..128: primal {res.primal.arch}, "
          f"dual {res.dual.arch}")
    print(f"cost table (cold, measured on meta-device models): {cold:.2f} s")
    print(f"search, prop1, 1000 bootstrap draws (warm):      {t_full * 1e3:.1f} ms  (target < 1000 ms)")
    print(f"search, empirical, 1000 bootstrap draws (warm):  {t_emp * 1e3:.1f} ms")
    print(f"search, prop1, no bootstrap (2 draws) (warm):    {t_nob * 1e3:.1f} ms")
    print(f"reference: per-candidate Python loop, no bootstrap: {t_ref * 1e3:.1f} ms")
    print(f"ratio reference / search (both without bootstrap): {t_ref / t_nob:.1f}x")
    print(f"ratio reference / search with 1000 draws:          {t_ref / t_full:.1f}x")


if __name__ == "__main__":
    main()
