"""The ``collegial`` command line. Each subcommand lives in ``collegial.commands.<name>`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a handler
``(args) -> int``. A :class:`~collegial.errors.UserError` anywhere ends in one line on stderr and
exit code 2.

``collegial --import MODULE [--import MODULE ...] SUBCOMMAND ...`` imports plugin modules (and
the ``collegial.families`` entry points are loaded) before the subcommands' parsers are built,
so every subcommand, its ``--help`` included, sees their families
(:mod:`collegial.models.plugins`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from collegial import __version__
from collegial.errors import UserError, flag_message

#: Subcommand modules under ``collegial.commands``, in the order ``--help`` lists them.
COMMANDS: list[str] = [
    "count",
    "search",
    "verify",
    "reproduce",
    "ntk_dynamics",
    "fit_alpha",
    "train",
    "plot",
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
    parser.add_argument("--version", action="version", version=f"collegial {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name or a .py file) that registers model "
                        "families with collegial.models.register_model; repeatable")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"collegial.commands.{name}").register(sub)
    return parser


def load_plugins(argv: Sequence[str]) -> None:
    """Import the ``--import`` modules given before the subcommand, then the entry points."""
    from collegial.models.plugins import import_plugin, load_entry_points

    pre = _Parser(prog="collegial", add_help=False, allow_abbrev=False)
    pre.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")
    head: list[str] = []  # the options before the subcommand
    for a in argv:
        if not a.startswith("-") and (not head or head[-1] != "--import"):
            break
        head.append(a)
    known, _ = pre.parse_known_args(head)
    late = [a for a in argv[len(head):] if a == "--import" or a.startswith("--import=")]
    if late:
        raise UserError("--import goes before the subcommand: collegial --import MODULE SUBCOMMAND ...")
    for spec in known.imports:
        import_plugin(spec)
    for line in load_entry_points():
        print(f"collegial: warning: {line}; its families are unavailable", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from collegial.commands.common import stdout_for_the_tool_only

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with stdout_for_the_tool_only():  # a plugin's prints never reach stdout
            load_plugins(argv)
            parser = build_parser()
    except UserError as e:
        print(f"collegial: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("collegial: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    try:
        # with --json stdout holds exactly the command's one JSON object, whatever a plugin prints
        with stdout_for_the_tool_only() if getattr(args, "json", False) else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except UserError as e:
        # a library argument still in backquotes that is also one of this command's options
        # (``n_range`` -> ``--n-range``); commands map the others themselves (flag_names)
        flags = {k: "--" + k.replace("_", "-") for k in vars(args) if k not in ("func", "command")}
        print(f"collegial {args.command}: error: {flag_message(str(e), flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("collegial: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `collegial ... | head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except OSError as e:  # a path, permission or disk problem no check foresaw: still one line
        print(f"collegial {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"collegial {args.command}: error: out of memory; use smaller settings", file=sys.stderr)
        return 2


def _os_error(e: OSError) -> str:
    """``PATH: reason`` of an OS error, a very long path shortened."""
    name = "" if e.filename is None else str(e.filename)
    if len(name) > 100:
        name = name[:48] + "..." + name[-48:]
    reason = e.strerror or str(e) or type(e).__name__
    return f"{name}: {reason}" if name else reason


if __name__ == "__main__":
    sys.exit(main())
