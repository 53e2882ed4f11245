"""Benchmark: one primal + dual search over n in 2..128 once costs are cached (target < 1 s).

Prints absolute times (cold cost table, warm search with the default 1000 bootstrap draws, warm
search without bootstrap) and the ratio against a reference measured in the same run: the costs
and the variance curve read width by width in plain Python (from the same cached table, one
``table(m, n)`` call per cost, one ``curve(n)`` call per width), then the same integer primal and
dual from the one batched solver (:func:`collegial.search.problems.solve_batch`): the reference
times the per-width reading that the search vectorizes, not another solver. Synthetic alpha data
(a 16-width table exactly prop1 with alpha = 2.5, 3 % standard errors), so no Algorithm 1 run is
timed.

    .venv/bin/python bench/search.py [--family resnext29] [--dataset cifar10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from collegial.models import parse_arch
from collegial.search.problems import solve_batch
from collegial.search.solve import cost_table, search
from collegial.search.variance import VarianceCurve, synthetic_curve


def reference(table, curve: VarianceCurve, m_b: int, n_b: int, kind: str) -> tuple[str, str]:
    """Reference: the integer primal/dual over n in 2..128, its inputs read one width at a time in
    Python and solved by the one batched solver."""
    widths = np.arange(2, 129)
    budget = table(m_b, n_b).get(kind)
    v_base = float(curve(n_b)[0]) / m_b
    v, b, intercepts = [], [], set()
    for n in widths.tolist():
        v.append(float(curve(n)[0]))
        a1 = table(1, n).get(kind)
        b.append(table(2, n).get(kind) - a1)
        intercepts.add(a1 - b[-1])
    (a,) = intercepts  # cost(m, n) = A + m B(n): one A for every width
    primal, dual = solve_batch(a, np.array(b), np.array(v), budget=budget, v_target=v_base)
    return primal.archs(widths)[0], dual.archs(widths)[0]


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

    m_b, n_b = parse_arch(args.baseline)

    t = time.perf_counter()
    table = cost_table(args.family, args.dataset)
    cold = time.perf_counter() - t

    def run(draws: int, model: str = "prop1"):
        return search(args.family, args.dataset, args.baseline, curve(model, draws),
                      budget="params", n_range=(2, 128))

    res = run(1000)
    ref = reference(table, curve("prop1", 2), m_b, n_b, "params")
    assert ref == (res.primal.arch, res.dual.arch), (ref, res.primal.arch, res.dual.arch)

    t_full = timeit(lambda: run(1000), args.repeat)
    t_nob = timeit(lambda: run(2), args.repeat)
    t_emp = timeit(lambda: run(1000, "empirical"), args.repeat)
    t_ref = timeit(lambda: reference(table, curve("prop1", 2), m_b, n_b, "params"), args.repeat)

    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch threads 1")
    print(f"{args.family} {args.dataset} baseline {args.baseline}, n in 2..128: primal {res.primal.arch}, "
          f"dual {res.dual.arch}")
    print(f"cost table (cold, measured on meta-device models): {cold:.2f} s")
    print(f"search, prop1, 1000 bootstrap draws (warm):      {t_full * 1e3:.1f} ms  (target < 1000 ms)")
    print(f"search, empirical, 1000 bootstrap draws (warm):  {t_emp * 1e3:.1f} ms")
    print(f"search, prop1, no bootstrap (2 draws) (warm):    {t_nob * 1e3:.1f} ms")
    print(f"reference: per-width Python reads + solver, no bootstrap: {t_ref * 1e3:.1f} ms")
    print(f"ratio reference / search (both without bootstrap): {t_ref / t_nob:.1f}x")
    print(f"ratio reference / search with 1000 draws:          {t_ref / t_full:.1f}x")


if __name__ == "__main__":
    main()
