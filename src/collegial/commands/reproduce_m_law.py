"""``collegial reproduce m-law``: the 1/m law on the probe block, standard NTK against the mean of
the paths' NTKs (:mod:`collegial.experiments.m_law`)."""

from __future__ import annotations

import argparse

from collegial.commands.common import add_progress_option, emit, int_list, prepare_out, progress_from_args, write_json
from collegial.experiments.m_law import MLawConfig, check_config, markdown, plot, result, run_m_law
from collegial.io import write_text_atomic
from collegial.ntk.inputs import DEFAULT_INPUTS
from collegial.provenance import provenance

OUT_FILES = ("m_law.md", "m_law.json", "m_law.png")


class _Target:
    help = "the 1/m law on the probe block: standard NTK vs the mean of the paths' NTKs"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        d = MLawConfig()
        p.add_argument("--trials", type=int, default=d.trials, help=f"initializations per m (default {d.trials})")
        p.add_argument("--width", type=int, default=d.width, help=f"path width n (default {d.width})")
        p.add_argument("--m", default=",".join(map(str, d.multiplicities)),
                       help="multiplicities (default 1,2,4,8,16)")
        p.add_argument("--channels", type=int, default=d.channels, help=f"block channels C (default {d.channels})")
        p.add_argument("--seed", type=int, default=d.seed,
                       help=f"seed of the input pair, readout and every trial's weights (default {d.seed})")
        p.add_argument("--inputs", default=DEFAULT_INPUTS, metavar="relu|gaussian",
                       help=f"the probe's input pair (default {DEFAULT_INPUTS}, as everywhere; gaussian: the "
                       "inputs whose 1/m ratios this experiment explains; see fit-alpha --inputs)")
        p.add_argument("--correlation", type=float, default=d.correlation,
                       help=f"correlation of relu inputs (default {d.correlation})")
        p.add_argument("--final-relu", action=argparse.BooleanOptionalAction, default=True,
                       help="the ReLU after the residual addition (default on; --no-final-relu drops it: it "
                       "couples the paths)")
        add_progress_option(p)

    def run(self, args: argparse.Namespace) -> int:
        cfg = MLawConfig(tuple(int_list(args.m, "--m")), args.width, args.trials, args.channels, args.seed,
                         final_relu=args.final_relu, inputs=args.inputs, correlation=args.correlation)
        check_config(cfg)
        d = prepare_out(args.out, OUT_FILES, overwrite=args.overwrite) if args.out is not None else None
        rows = run_m_law(cfg, progress=progress_from_args(args))
        text = markdown(rows, cfg)
        obj = result(rows, cfg) | {"provenance": provenance(cfg.seed)}
        if d is not None:
            write_text_atomic(d / "m_law.md", text + "\n")
            write_json(d / "m_law.json", obj)
            plot(rows, d / "m_law.png")
            obj["files"] = [str(d / n) for n in OUT_FILES]
        emit(obj, text, as_json=args.json)
        return 0


REPRODUCE_TARGET = _Target()
