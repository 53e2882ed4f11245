"""``collegial reproduce search`` and ``collegial reproduce costs``: the paper's search results and
cost figures against ours (:mod:`collegial.experiments.search_repro`)."""

from __future__ import annotations

from collegial.io import write_text_atomic

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collegial.commands.common import emit, prepare_out, strict_json
from collegial.commands.probe_options import probe_inputs
from collegial.commands.search import add_curve_arguments, check_curve_arguments
from collegial.experiments.search_repro import (
    REPRO_TRIALS,
    SETTINGS,
    costs_markdown,
    costs_rows,
    reproduce_search,
)
from collegial.provenance import provenance
from collegial.search.solve import SOLVERS
from collegial.search.result import SearchResult
from collegial.search.variance import DEFAULT_VARIANCE_MODEL, load_curve

SEARCH_FILES = ("search.md", "search.json")
COSTS_FILES = ("costs.md", "costs.json")


def _plots(results: list[SearchResult]) -> list[tuple[str, SearchResult, str]]:
    """``(file name, result, "primal" | "dual")`` of every setting's two curves."""
    plots = []
    for s, res in zip(SETTINGS, results):
        slug = f"{s.dataset}-{s.family}-{s.baseline}-{s.budget}"
        plots += [(f"{slug}-primal.png", res, "primal"), (f"{slug}-dual.png", res, "dual")]
    return plots


def write_files(
    out: str | Path, overwrite: bool, files: dict[str, str], plots: Sequence[tuple[str, SearchResult, str]] = ()
) -> list[str]:
    """Write ``files`` (name -> text) and ``plots`` into ``out``; return the paths written."""
    d = prepare_out(out, [*files, *(name for name, *_ in plots)], overwrite=overwrite)
    written = []
    for name, text in files.items():
        write_text_atomic(d / name, text)
        written.append(str(d / name))
    if plots:
        from collegial.search.plots import plot_dual, plot_primal

        for name, res, which in plots:
            (plot_primal if which == "primal" else plot_dual)(res, d / name)
            written.append(str(d / name))
    return written


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the report's main table."""
    return ("collegial reproduce search" + (f" --alpha-file {args.alpha_file}" if args.alpha_file else "")
            + (f" --variance {args.variance}" if args.variance != DEFAULT_VARIANCE_MODEL else "")
            + (f" --solver {args.solver}" if args.solver != "integer" else ""))


class _SearchTarget:
    help = "the paper's primal/dual optima against ours, with near-ties"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_curve_arguments(p, default_trials=REPRO_TRIALS)
        p.add_argument("--solver", choices=SOLVERS, default="integer",
                       help="solver of the main table (both are compared below it)")

    def run(self, args: argparse.Namespace) -> int:
        check_curve_arguments(args)
        inputs = probe_inputs(args) if args.alpha_file is None else None
        if args.alpha_file is None:
            print(f"collegial reproduce search: no --alpha-file; running Algorithm 1 with T={args.trials} "
                  f"trials per width, inputs {inputs.label} (cached)", file=sys.stderr)
        if args.out is not None:  # fail before the work when --out would clash
            prepare_out(args.out, SEARCH_FILES, overwrite=args.overwrite)
        curve = load_curve(args.alpha_file, args.variance, family="resnext29", trials=args.trials, seed=args.seed,
                           inputs=inputs, draws=args.draws, progress=not args.json)
        text, summary, results = reproduce_search(curve.fit, model=args.variance, solver=args.solver,
                                                  ties=args.ties, level=args.level, draws=args.draws,
                                                  seed=args.seed, command=_command(args), source=curve.source)
        summary["provenance"] = provenance(args.seed)
        if args.out is not None:
            files = {"search.md": text + "\n", "search.json": strict_json(summary, indent=1) + "\n"}
            summary["files"] = write_files(args.out, args.overwrite, files, _plots(results))
        emit(summary, text, as_json=args.json)
        return 0


class _CostsTarget:
    help = "every parameter count, GFLOPs figure and rho of the paper's search section against ours"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        if args.out is not None:
            prepare_out(args.out, COSTS_FILES, overwrite=args.overwrite)
        rows = costs_rows()
        text = costs_markdown(rows)
        out: dict[str, Any] = {"rows": rows, "matches": sum(r["match"] for r in rows), "total": len(rows),
                               "provenance": provenance(None)}
        if args.out is not None:
            files = {"costs.md": text + "\n", "costs.json": strict_json(out, indent=1) + "\n"}
            out["files"] = write_files(args.out, args.overwrite, files)
        emit(out, text, as_json=args.json)
        return 0


SEARCH_TARGET = _SearchTarget()
COSTS_TARGET = _CostsTarget()
