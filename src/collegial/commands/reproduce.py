"""``collegial reproduce TARGET [--json] [--out DIR] [--force] [target options]``.

One subcommand per reproduction target (a paper figure or table). ``TARGETS`` maps a target name
to ``"module:attribute"``; the attribute is any object with

* ``help``: one line for ``--help``;
* ``add_arguments(parser)``: the target's own options (``--json``, ``--out`` and ``--force`` are
  added here for every target);
* ``run(args) -> int``: do the work, print markdown (or one JSON object with ``--json``), and
  write into ``--out`` without overwriting existing files unless ``--force``.

Add a target by appending one line to ``TARGETS``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: target name -> "module:attribute" (see the module docstring).
TARGETS: dict[str, str] = {
    "costs": "collegial.experiments.search_repro:COSTS_TARGET",
    "search": "collegial.experiments.search_repro:SEARCH_TARGET",
    "ntk-dynamics": "collegial.experiments.ntk_dynamics:REPRODUCE_TARGET",
    "m-law": "collegial.experiments.m_law:REPRODUCE_TARGET",
    "figure1": "collegial.experiments.figure1:REPRODUCE_TARGET",
    "table1": "collegial.experiments.paper_tables:TABLE1_TARGET",
    "table2": "collegial.experiments.paper_tables:TABLE2_TARGET",
    "table3": "collegial.experiments.paper_tables:TABLE3_TARGET",
}


def load_target(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a result of the paper (one target per figure/table)",
        description="Reproduce a result of the paper and compare it with the paper's figures. "
        f"Targets: {', '.join(TARGETS)}.",
    )
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET", parser_class=type(p))
    for name, ref in TARGETS.items():
        target = load_target(ref)
        tp = targets.add_parser(name, help=target.help, description=target.help)
        tp.add_argument("--json", action="store_true", help="print exactly one JSON object")
        tp.add_argument("--out", default=None, metavar="DIR", help="also write the results into DIR")
        tp.add_argument("--force", action="store_true", help="overwrite existing files in --out")
        target.add_arguments(tp)
        tp.set_defaults(func=target.run)
