"""``collegial fit-alpha``: Algorithm 1, the NTK variance curve V1(n) and its fits.

With ``--json`` stdout holds exactly one JSON object (the same as DIR/alpha.json with
``--out DIR``; schema in :mod:`collegial.ntk.curve`): the probe (``family``, ``inputs``,
``correlation``, ``pairs``, ``trials``, ``seed``, ...), the table (``widths``, ``variance``,
``stderr``, ``pair_variance``), ``fits`` (prop1, fit2, smooth, empirical with chi^2), ``alpha``,
``fit2``, ``m_law``, ``versions`` and ``provenance`` (command line, seed, time, git commit). Progress goes to stderr (on a terminal). Under
``torchrun`` the trials are sharded over ranks; rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from collegial.commands.common import (
    add_device_option,
    add_output_arguments,
    add_progress_option,
    device_from_args,
    int_list,
    prepare_out,
    progress_from_args,
    tool_stdout,
)
from collegial.commands.probe_options import add_probe_arguments, probe_inputs
from collegial.distributed import rank_and_world
from collegial.errors import UserError, flag_names
from collegial.io import folder_lock
from collegial.models import get_family, list_families
from collegial.ntk.alpha import DEFAULT_FAMILY, DEFAULT_TRIALS, DEFAULT_WIDTHS, ENGINES


def _probed_families() -> list[str]:
    return [f for f in list_families() if get_family(f).probe is not None]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-alpha",
        help="Algorithm 1: Monte Carlo NTK variance over widths and the alpha fit",
        description=(
            "Estimate v(n) = Var[K]/E[K]^2 of one NTK entry of a probe block over T random "
            "initializations per width, fit prop1 (alpha), fit2 (beta, p, alpha), and check the "
            "1/m law V(m, n) = V(1, n)/m."
        ),
    )
    p.add_argument("--family", default=DEFAULT_FAMILY, metavar="NAME",
                   help=f"model family whose declared probe block is measured (default {DEFAULT_FAMILY}; "
                   f"with a probe: {', '.join(_probed_families())})")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"initializations per width, split between the input pairs (default {DEFAULT_TRIALS})")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                   help="comma-separated widths n (default: every width 2..16, then 20..128)")
    p.add_argument("--channels", type=int, default=None,
                   help="resize the dedicated blocks: the paper's bottleneck (C, default 256) or the MLP's input "
                   "size (784); `search` refuses such a curve unless --allow-probe-mismatch (docs/probes.md)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto (default: dedicated engines for the built-in blocks) or generic (vmap, any block)")
    p.add_argument("--bn", default="none", help="BatchNorm: none (default) or train (probe-batch stats)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the input pairs, readouts and initializations (>= 0; default 0)")
    add_probe_arguments(p)
    p.add_argument(
        "--param",
        default="standard",
        help="gradient metric of K: standard (d/dW, the weights themselves; default) or ntk (d/d(W/sigma))",
    )
    m_law = p.add_mutually_exclusive_group()
    m_law.add_argument("--m-law", default="2,4,8,16", metavar="M,M,...",
                       help="multiplicities m of the 1/m check (default 2,4,8,16)")
    m_law.add_argument("--no-m-law", dest="m_law", action="store_const", const=None, help="skip the 1/m check")
    p.add_argument("--m-law-width", type=int, default=8, help="width n of the 1/m check (default 8)")
    add_output_arguments(p, out_help="write DIR/alpha.json and DIR/alpha.png",
                         overwrite_help="overwrite an existing DIR/alpha.json")
    add_device_option(p, "Algorithm 1's probes")
    add_progress_option(p)
    p.set_defaults(func=run)


#: The library's argument names in its messages -> this command's flags (see flag_names).
FLAGS = {"trials": "--trials", "bn": "--bn", "parameterization": "--param", "engine": "--engine",
         "inputs": "--inputs", "kind": "--inputs", "overwrite": "--overwrite", "out": "--out"}


OUT_FILES = ("alpha.json", "alpha.png")


@flag_names(FLAGS)
def run(args: argparse.Namespace) -> int:
    widths = int_list(args.widths, "--widths")
    m_law = [] if args.m_law is None else int_list(args.m_law, "--m-law")
    if args.m_law is not None and not m_law:
        print("collegial fit-alpha: note: --m-law '' is deprecated; write --no-m-law", file=sys.stderr)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    device = device_from_args(args)  # cuda asked for and absent: one line, before any work
    if args.out is not None:  # every check on --out before the trials
        prepare_out(args.out, OUT_FILES, overwrite=args.overwrite)
    get_family(args.family)  # an unknown family: one line, before loading any data
    inputs = probe_inputs(args)
    # one run per --out at a time: a second one stops here, in one line, instead of replacing
    # the first one's alpha.json when both finish
    locked = args.out is not None and rank_and_world()[0] == 0
    with folder_lock(args.out, "fit-alpha run") if locked else contextlib.nullcontext():
        if locked:  # what the first run wrote while this one waited to start
            prepare_out(args.out, OUT_FILES, overwrite=args.overwrite)
        return _measure_and_write(args, widths, m_law, inputs, device)


def _measure_and_write(args: argparse.Namespace, widths: list[int], m_law: list[int], inputs: Any, device: str) -> int:
    from collegial.ntk.alpha import run_algorithm1

    fit = run_algorithm1(
        family=args.family,
        inputs=inputs,
        widths=widths,
        trials=args.trials,
        channels=args.channels,
        bn=args.bn,
        seed=args.seed,
        m_law=m_law,
        m_law_width=args.m_law_width,
        parameterization=args.param,
        engine=args.engine,
        progress=progress_from_args(args),
        device=device,
    )
    rank, _ = rank_and_world()
    if rank != 0:
        return 0
    if tuple(fit.input_shape) != get_family(args.family).probe_input_shape:
        print(f"collegial fit-alpha: note: --channels {args.channels} measured another block than {args.family} "
              "declares; `collegial search` refuses this curve unless --allow-probe-mismatch", file=sys.stderr)
    if args.out is not None:
        path = fit.save(args.out, overwrite=args.overwrite)
        if not args.json:
            print(f"wrote {path} and {path.with_suffix('.png')}", file=sys.stderr)
    print(fit.to_json() if args.json else fit.table(), file=tool_stdout())
    return 0
