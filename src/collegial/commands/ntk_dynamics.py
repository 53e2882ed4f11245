"""``collegial ntk-dynamics [--out DIR] [--force] [--json] [--preset P] [--d ...] [...]``.

Theorem 1 / appendix Figure 3 (SPEC section 8): how far one off-diagonal NTK entry moves during
training for (a) single models of width d^2, (b) ensembles m = n = d and (c) ensembles of width
100 at (a)'s parameter count. Prints the slopes of log|dK| against log(m n) at every recorded
time (``--json``: one JSON object); ``--out DIR`` also writes ``ntk_dynamics.json`` and
``ntk_dynamics.png`` (existing files are refused unless ``--force``). The work lives in
:mod:`collegial.experiments.ntk_dynamics`.
"""

from __future__ import annotations

import argparse

from collegial.experiments.ntk_dynamics import add_arguments, run_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ntk-dynamics",
        help="Theorem 1 experiment: NTK movement against m*n on MNIST (appendix Figure 3)",
        description="Train depth-4 fully connected collegial ensembles (NTK parameterization, L2 loss) "
        "on MNIST and record how far one off-diagonal NTK entry moves, for (a) m=1, n=d^2, (b) m=n=d "
        "and (c) n=100 at (a)'s parameter count; report the slope of log|dK| against log(m n) at "
        "every recorded time.",
    )
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write ntk_dynamics.json and ntk_dynamics.png into DIR")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, prog="collegial ntk-dynamics")
