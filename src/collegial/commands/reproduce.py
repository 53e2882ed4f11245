"""``collegial reproduce TARGET [--json] [--out DIR] [--overwrite] [target options]``.

One subcommand per reproduction target (a paper figure or table). ``TARGETS`` maps a target name
to ``"module:attribute"`` under :mod:`collegial.commands`; the attribute is any object with

* ``help``: one line for ``--help``;
* ``add_arguments(parser)``: the target's own options (``--json``, ``--out`` and ``--overwrite``
  are added here for every target, :func:`collegial.commands.common.add_output_arguments`);
* ``run(args) -> int``: call the experiment (a plain function of
  :mod:`collegial.experiments` taking a config and returning its result), print markdown (or one
  JSON object with ``--json``), and write into ``--out`` without overwriting existing files
  unless ``--overwrite`` (:func:`collegial.commands.common.prepare_out`).

Add a target by appending one line to ``TARGETS``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from collegial.commands.common import add_output_arguments

#: target name -> "module:attribute" (see the module docstring).
TARGETS: dict[str, str] = {
    "costs": "collegial.commands.reproduce_search:COSTS_TARGET",
    "search": "collegial.commands.reproduce_search:SEARCH_TARGET",
    "ntk-dynamics": "collegial.commands.ntk_dynamics:REPRODUCE_TARGET",
    "m-law": "collegial.commands.reproduce_m_law:REPRODUCE_TARGET",
    "figure1": "collegial.commands.reproduce_figure1:REPRODUCE_TARGET",
    "table1": "collegial.commands.reproduce_tables:TABLE1_TARGET",
    "table2": "collegial.commands.reproduce_tables:TABLE2_TARGET",
    "table3": "collegial.commands.reproduce_tables:TABLE3_TARGET",
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
        add_output_arguments(tp)
        target.add_arguments(tp)
        tp.set_defaults(func=target.run)
