"""What every subcommand shares: the output-folder options and their one overwrite rule, comma
lists of integers, the model/preset argument, and JSON-or-table output.

* :func:`add_output_arguments` adds ``--json``, ``--out DIR`` and ``--overwrite`` (with
  ``--force`` as a hidden alias kept for old scripts); :func:`add_overwrite_argument` only the
  last pair. :func:`prepare_out` is the rule: it creates ``--out`` and refuses, before any work,
  when a file the command writes is already there, unless ``--overwrite``.
* :func:`int_list` (one :class:`~collegial.errors.UserError` line naming the flag) and
  :func:`int_list_arg` (an argparse ``type=``) parse ``2,4,8`` through :func:`parse_ints`.
* :func:`emit` prints one strict JSON object with ``--json`` and the human text otherwise;
  :func:`write_json` writes a result file (strict JSON as well).
* :func:`add_device_option` / :func:`device_from_args` (over :func:`pick_device`) and
  :func:`add_progress_option` / :func:`progress_from_args`: the one form of ``--device`` and of
  ``--progress/--no-progress`` in every command.
* :func:`preset_model` turns a preset name (``cifar10-resnext29-37x10d``) into its family,
  architecture and dataset, for every command that takes ``FAMILY ARCH``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from collegial.devices import DEVICES, check_device
from collegial.errors import UserError, flag_message
from collegial.io import strict_json, write_json_atomic

#: The flag that allows replacing existing results; ``--force`` is accepted as a hidden alias.
OVERWRITE_FLAG = "--overwrite"


def add_overwrite_argument(p: argparse.ArgumentParser | Any, help: str = "overwrite existing files in --out") -> None:
    """``--overwrite`` (``args.overwrite``), and ``--force`` as a hidden alias of it."""
    p.add_argument(OVERWRITE_FLAG, dest="overwrite", action="store_true", help=help)
    p.add_argument("--force", dest="overwrite", action="store_true", help=argparse.SUPPRESS)


def add_output_arguments(
    p: argparse.ArgumentParser,
    *,
    out_help: str = "also write the results into DIR",
    overwrite_help: str = "overwrite existing files in --out",
) -> None:
    """``--json``, ``--out DIR`` and ``--overwrite`` (see :func:`add_overwrite_argument`)."""
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--out", default=None, metavar="DIR", help=out_help)
    add_overwrite_argument(p, overwrite_help)


def prepare_out(out: str | Path, names: Iterable[str], *, overwrite: bool) -> Path:
    """Create the folder ``out`` and check it is writable and that none of ``names`` exists in
    it (unless ``overwrite``); :class:`UserError` naming ``--out`` / ``--overwrite`` otherwise."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UserError(f"--out {str(d)!r} exists and is not a directory")
    clash = [n for n in names if (d / n).exists()]
    if clash and not overwrite:
        raise UserError(
            f"{str(d / clash[0])!r} already exists; pass {OVERWRITE_FLAG} to replace it or choose another --out"
        )
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {str(d)!r}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
        raise UserError(f"--out {str(d)!r} is not writable")
    return d


def parse_ints(text: str) -> tuple[int, ...]:
    """``'2,4, 8'`` -> ``(2, 4, 8)``; empty items are skipped (``''`` -> ``()``); ValueError for
    anything else."""
    return tuple(int(t) for t in text.split(",") if t.strip())


def int_list(text: str, flag: str) -> list[int]:
    """:func:`parse_ints` as a list; :class:`UserError` naming ``flag`` when it does not parse."""
    try:
        return list(parse_ints(text))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers, got {text.strip()!r}") from None


def int_list_arg(text: str) -> tuple[int, ...]:
    """argparse ``type=`` of a non-empty comma list of integers (a usage error otherwise)."""
    try:
        values = parse_ints(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


#: The process's stdout while :func:`stdout_for_the_tool_only` sends everything else to stderr.
_TOOL_STDOUT: list[TextIO] = []


def tool_stdout() -> TextIO:
    """Where the tool's own output goes: the real stdout, also while
    :func:`stdout_for_the_tool_only` holds ``sys.stdout``."""
    return _TOOL_STDOUT[-1] if _TOOL_STDOUT else sys.stdout


@contextlib.contextmanager
def stdout_for_the_tool_only() -> Iterator[None]:
    """While it runs, whatever prints to ``sys.stdout`` (a plugin, a model factory, a library)
    goes to stderr; the tool prints its own output through :func:`tool_stdout` (:func:`emit`),
    so ``--json`` keeps exactly one JSON object on stdout."""
    _TOOL_STDOUT.append(tool_stdout())
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _TOOL_STDOUT.pop()


def emit(obj: Any, text: str, *, as_json: bool) -> None:
    """Print ``obj`` as one JSON object (``--json``) or ``text`` (the human table) on stdout."""
    print(strict_json(obj) if as_json else text, file=tool_stdout())


def write_json(path: Path, obj: Any, *, indent: int = 1) -> None:
    """Write ``obj`` to ``path`` as indented strict JSON and a final newline, atomically."""
    write_json_atomic(path, obj, indent)


def preset_model(name: str, arch: str | None, dataset: str | None) -> tuple[str, str, str] | None:
    """``(family, arch, dataset)`` of the preset ``name``, or ``None`` when ``name`` is no
    preset; :class:`UserError` when ``arch`` or ``dataset`` contradicts the preset."""
    from collegial.models import PRESETS

    p = PRESETS.get(name)
    if p is None:
        return None
    if arch is not None and arch != p.arch:
        raise UserError(f"preset {name} is {p.family} {p.arch}; drop ARCH {arch!r}")
    if dataset is not None and dataset != p.dataset:
        raise UserError(f"preset {name} is for {p.dataset}, not --dataset {dataset}")
    return p.family, p.arch, p.dataset


#: The help text of ``--device``, the same in every command (a command may put what runs there first).
DEVICE_HELP = "cpu or cuda (default: cuda when available, else cpu; pick a GPU with CUDA_VISIBLE_DEVICES)"

#: The help text of ``--progress/--no-progress``, the same in every command.
PROGRESS_HELP = "progress bar on stderr (default: on when stderr is a terminal)"


def add_device_option(p: argparse.ArgumentParser | Any, what: str | None = None) -> None:
    """``--device {cpu,cuda}`` (``args.device``, None when not given), the one form of every
    command; ``what`` (e.g. ``"Algorithm 1's probes"``) opens the help text. Resolve it with
    :func:`device_from_args` before any long work."""
    p.add_argument("--device", choices=DEVICES, default=None,
                   help=f"device of {what}: {DEVICE_HELP}" if what else DEVICE_HELP)


def add_progress_option(p: argparse.ArgumentParser | Any) -> None:
    """``--progress/--no-progress`` (``args.progress``: True, False or None when not given), the
    one form of every command; resolve it with :func:`progress_from_args`."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=PROGRESS_HELP)


def pick_device(name: str | None) -> str:
    """``--device``: the given one, by default cuda when available, else cpu; one line when cuda
    is asked for and absent, or the name is not one of :data:`DEVICES`
    (:func:`collegial.devices.check_device`, the one device rule, in the command's words)."""
    try:
        return check_device(name)
    except UserError as e:
        raise UserError(flag_message(str(e), {"device": "--device"})) from None


def device_from_args(args: argparse.Namespace) -> str:
    """:func:`pick_device` of ``args.device`` (from :func:`add_device_option`)."""
    return pick_device(getattr(args, "device", None))


def progress_from_args(args: argparse.Namespace) -> bool:
    """``--progress/--no-progress`` as given, else on exactly when stderr is a terminal."""
    given = getattr(args, "progress", None)
    return sys.stderr.isatty() if given is None else bool(given)
