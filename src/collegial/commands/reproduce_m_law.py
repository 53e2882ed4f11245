"""``collegial reproduce m-law``: the 1/m law on the probe block, standard NTK against the mean of
the paths' NTKs (:mod:`collegial.experiments.m_law`)."""

from __future__ import annotations

import argparse

from collegial.commands.common import emit, int_list, prepare_out, write_json
from collegial.experiments.m_law import MLawConfig, check_config, markdown, plot, result, run_m_law
from collegial.io import write_text_atomic
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
        p.add_argument("--seed", type=int, default=d.seed)
        p.add_argument("--inputs", default=d.inputs, metavar="relu|gaussian",
                       help=f"the probe's input pair (default {d.inputs}; see fit-alpha --inputs)")
        p.add_argument("--correlation", type=float, default=d.correlation,
                       help=f"correlation of relu inputs (default {d.correlation})")
        p.add_argument("--no-final-relu", action="store_true",
                       help="drop the ReLU after the residual addition (it couples the paths)")

    def run(self, args: argparse.Namespace) -> int:
        cfg = MLawConfig(tuple(int_list(args.m, "--m")), args.width, args.trials, args.channels, args.seed,
                         final_relu=not args.no_final_relu, inputs=args.inputs, correlation=args.correlation)
        check_config(cfg)
        d = prepare_out(args.out, OUT_FILES, overwrite=args.overwrite) if args.out is not None else None
        rows = run_m_law(cfg, progress=not args.json)
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
