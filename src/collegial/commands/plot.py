"""``collegial plot RUN_DIR [RUN_DIR ...] --out FILE``: the training curves (loss, top-1 error,
train and test) of one or several ``train --out`` folders on one figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from collegial.commands.common import add_overwrite_argument, emit
from collegial.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="training curves of one or several runs on one figure",
                       description="Loss and top-1 error against the epoch (train dashed, test solid) of every "
                       "RUN_DIR written by 'collegial train --out' (its metrics.jsonl), on one figure.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by 'collegial train --out'")
    p.add_argument("--out", default="curves.png", metavar="FILE", help="the figure (.png, .pdf or .svg; default curves.png)")
    p.add_argument("--label", action="append", default=None, metavar="TEXT",
                   help="a label per run, in order (default: the folder's name and its architecture)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    add_overwrite_argument(p, "replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from collegial.api import load_run
    from collegial.train.plots import plot_runs

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--out {str(out)!r}: give a .png, .pdf or .svg file")
    if out.exists() and not args.overwrite:
        raise UserError(f"{str(out)!r} already exists; pass --overwrite to replace it or choose another --out")
    if args.label is not None and len(args.label) != len(args.runs):
        raise UserError(f"{len(args.label)} --label for {len(args.runs)} runs; give one per run or none")
    runs = [load_run(d) for d in args.runs]
    for d, r in zip(args.runs, runs):
        if not r.metrics:
            raise UserError(f"{d}: no finished epoch in metrics.jsonl yet")
    labels = args.label or [f"{Path(d).name} ({r.config.get('arch', '?')})" for d, r in zip(args.runs, runs)]
    plot_runs([(lab, r.metrics) for lab, r in zip(labels, runs)], out)
    last = {lab: r.metrics[-1].get("test_top1_err") for lab, r in zip(labels, runs)}
    text = f"wrote {out}: " + "; ".join(f"{lab} test error {e:.2f}%" if e is not None else lab for lab, e in last.items())
    emit({"figure": str(out), "runs": [str(d) for d in args.runs], "last_test_top1_err": last}, text, as_json=args.json)
    return 0
