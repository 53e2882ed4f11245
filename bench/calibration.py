"""Benchmark: is the search's P(optimal) calibrated, and does its optimal set cover the optimum?

Replicates of the Monte Carlo table are drawn around a known truth and each is solved exactly as
``collegial search`` solves (default variance model ``auto``, 1000 bootstrap draws, level 0.95);
the truth's own optimum (the search on the noise-free truth) is then compared with what each
replicate reported:

* **calibration**: each of the (at most five) most probable members of a replicate's optimal set is
  one (reported P, was it the true optimum) pair; binned by reported P, the mean
  reported P against the observed frequency, and the headline's mean P against how often the
  headline is the true optimum (a calibrated estimator has them equal: within 0.05 is the
  target);
* **coverage**: how often the 95% optimal set holds the true optimum (target 93-97%).

Truth: the ``smooth`` fit of the family's default curve (resnext29's on CIFAR-10 at the
defaults: ``fit-alpha --family resnext29``, from the cache). Each replicate's table is the truth
at the measured widths times log-normal noise with the table's own relative standard errors, and
its standard errors are themselves redrawn as estimated from ``pairs`` input pairs
(``se * sqrt(chi2(pairs - 1) / (pairs - 1))``): the error model of the Monte Carlo estimate,
including the uncertainty of the errors that the search's draws use.

``--fresh K`` adds K replicates that are real: Algorithm 1 run again with seeds 1..K at a
reduced ``--fresh-trials`` (default 200, so their errors are ~3x the T=2000 truth's), each
solved as above against the same truth; it also prints the mean fresh table over the base
table per width, which shows a bias of the reduced-T estimate that no error bar covers.

``--truth pooled`` compares each fresh run with the mean of the *other* fresh runs instead of
the base curve: every seed draws its own input pairs, so a base curve measured with many trials
still carries the error of its own 8 pairs (more trials per pair do not average over pairs), while
the mean of R - 1 runs averages over 8 (R - 1) pairs; the synthetic replicates are then drawn
around the mean of all R runs. The truth is in the search's own model rule (``auto``). ``--pool R
--pool-trials T``: the truth from R runs at T trials (seeds 1..R; the scored run's seed left out),
e.g. T = 2000 runs as the truth of T = 200 ones; ``--no-score-fresh``: score only the synthetic
replicates. The measurement of record (bench/RESULTS.md, calibration, third pass):

    .venv/bin/python bench/calibration.py --replicates 0 --fresh 80 --fresh-trials 2000 --truth pooled
    .venv/bin/python bench/calibration.py --replicates 300 --fresh 80 --fresh-trials 2000 --truth pooled --no-score-fresh

``--estimator`` picks the draws behind P(optimal) (:data:`collegial.search.variance.ESTIMATORS`:
``normal`` was the search's before, ``calibrated`` is its default), to measure before and after.

    .venv/bin/python bench/calibration.py [--replicates 300] [--estimator normal|t|calibrated]
                                          [--fresh 0] [--fresh-trials 200] [--truth-trials 2000]
                                          [--widening 2.0] [--truth base|pooled] [--no-score-fresh]
                                          [--pool R] [--pool-trials T]
                                          [--family resnext29 --dataset cifar10 --baseline 1x128d]
"""

from __future__ import annotations

import argparse
import time

from collegial.search.calibration import TRUTHS, calibration
from collegial.search.variance import CALIBRATED_SCALE, DEFAULT_ESTIMATOR, ESTIMATORS

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=300)
    ap.add_argument("--estimator", default=DEFAULT_ESTIMATOR, choices=ESTIMATORS)
    ap.add_argument("--fresh", type=int, default=0)
    ap.add_argument("--fresh-trials", type=int, default=200)
    ap.add_argument("--widening", type=float, default=CALIBRATED_SCALE,
                    help="the widening of the calibrated draws (default: the search's, CALIBRATED_SCALE)")
    ap.add_argument("--truth-trials", type=int, default=None,
                    help="trials behind the truth's curve (default: the search's, 2000)")
    ap.add_argument("--truth", default="base", choices=TRUTHS,
                    help="base: the smooth fit of the base curve (seed 0's input pairs); pooled: for each fresh "
                         "run the mean of the other fresh runs (other input pairs), the synthetic replicates "
                         "around the mean of all (needs --fresh >= 3)")
    ap.add_argument("--score-fresh", default=True, action=argparse.BooleanOptionalAction,
                    help="score the fresh runs too (--no-score-fresh: they only make the pooled truth)")
    ap.add_argument("--pool", type=int, default=0,
                    help="with --truth pooled: the runs (seeds 1..POOL, default --fresh) that make the truth")
    ap.add_argument("--pool-trials", type=int, default=None,
                    help="with --truth pooled: their trials (default --fresh-trials)")
    ap.add_argument("--family", default="resnext29")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--baseline", default="1x128d")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = calibration(args.replicates, args.estimator, args.family, args.dataset, args.baseline,
              fresh=args.fresh, fresh_trials=args.fresh_trials, truth_trials=args.truth_trials,
              widening=args.widening, truth=args.truth, score_fresh=args.score_fresh, pool=args.pool,
              pool_trials=args.pool_trials)
    fresh = f" + {args.fresh} fresh Algorithm 1 runs at T={args.fresh_trials}" if args.fresh else ""
    if args.fresh and not args.score_fresh:
        fresh = f" (scored; {args.fresh} fresh Algorithm 1 runs at T={args.fresh_trials} make the truth only)"
    pool = args.pool or args.fresh
    truth = (f"; truth: smooth fit at T={args.truth_trials or 2000}" if args.truth == "base" else
             f"; truth: the mean of {pool} runs at T={args.pool_trials or args.fresh_trials} without the scored "
             f"run's seed (synthetic: of all {pool})")
    truth += f"; widening {args.widening:g}"
    print(f"{args.family} {args.dataset} baseline {args.baseline}{truth}; {args.replicates} synthetic replicates{fresh}; "
          f"bootstrap draws: {args.estimator}; {time.perf_counter() - t0:.0f} s")
    bias = res.pop("fresh_bias", None)
    if bias is not None:
        print("mean of the fresh tables / the base table, per width (± s.e.): " + ", ".join(
            f"n={w} {r:.2f}±{e:.2f}" for w, r, e in zip(bias["widths"], bias["ratio"], bias["rel_se"])))
    for prob, d in res.items():
        print(f"\n{prob}: true optimum {d['truth']}; headline: mean reported P {d['head_p']:.2f}, "
              f"true optimum in {d['head_hit']:.2f} of replicates; 95% optimal set (mean mass "
              f"{d['set_mass']:.1%} of the draws) covers it in {d['coverage']:.1%}; "
              f"mean |reported - observed| over bins {d['gap']:.3f}")
        print(f"  {'reported P':>12} {'count':>6} {'mean P':>7} {'observed':>9}")
        for lo, hi, c, rp, f in d["bins"]:  # type: ignore[union-attr]
            print(f"  {lo:>5.1f}-{hi:<5.1f} {c:>7} {rp:>7.2f} {f:>9.2f}")


if __name__ == "__main__":
    main()
