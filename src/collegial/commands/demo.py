"""``collegial demo``: the end-to-end demo of :mod:`collegial.experiments.demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from collegial.commands.common import add_device_option, add_progress_option, device_from_args, progress_from_args
from collegial.experiments.demo import DemoConfig, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: Algorithm 1, the search, the whole-model check and a training comparison (CPU, ~6 min)",
        description="Algorithm 1 at its defaults, the primal/dual search for ResNeXt-29 on CIFAR-10 "
        "against the paper's optima, and, for a small ResNeXt on MNIST, its own curve, the search's "
        "baseline, primal and dual checked on the whole network (collegial verify) and trained. Writes OUT/report.md with every table and figure.",
    )
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out}; an existing one is moved aside)")
    p.add_argument("--trials", type=int, default=d.trials, help=f"Algorithm 1 trials per width (default {d.trials})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of Algorithm 1, the whole-model check and the training (default {d.seed})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs per model (default {d.epochs})")
    p.add_argument("--train-limit", type=int, default=d.train_limit, help="training images used")
    p.add_argument("--baseline", default=d.baseline, help=f"{d.family} baseline (default {d.baseline})")
    p.add_argument("--family-trials", type=int, default=d.family_trials,
                   help=f"Algorithm 1 trials per width on {d.family}'s own block (default {d.family_trials})")
    p.add_argument("--verify-trials", type=int, default=d.verify_trials,
                   help=f"whole-model initializations per architecture in the check (default {d.verify_trials})")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=d.train,
                   help="the training comparison (default on; --no-train skips it)")
    p.add_argument("--train-primal", action="store_true",
                   help="also train the primal (resnext11 297x2d: over 10 min on 2 cores; skipped by default)")
    add_device_option(p, "Algorithm 1, the whole-model check and the training")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = device_from_args(args)  # cuda asked for and absent: one line, before any work
    cfg = DemoConfig(
        out=args.out,
        trials=args.trials,
        seed=args.seed,
        epochs=args.epochs,
        train_limit=args.train_limit,
        baseline=args.baseline,
        family_trials=args.family_trials,
        verify_trials=args.verify_trials,
        train=args.train,
        train_primal=args.train_primal,
        device=device,
        progress=progress_from_args(args),
    )
    run_demo(cfg)
    print(f"demo report: {Path(cfg.out) / 'report.md'}")
    return 0
