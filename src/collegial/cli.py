"""The ``collegial`` command line. Each subcommand lives in ``collegial.commands.<name>`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a handler
``(args) -> int``. A :class:`~collegial.errors.UserError` anywhere ends in one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from collegial.errors import UserError

#: Subcommand modules under ``collegial.commands``, in the order ``--help`` lists them.
COMMANDS: list[str] = [
    "count",
    "search",
    "reproduce",
    "ntk_dynamics",
    "fit_alpha",
    "train",
    "demo",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="collegial",
        description="Collegial Ensembles: build, measure (NTK), search and train CE models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"collegial.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"collegial {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("collegial: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `collegial ... | head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
