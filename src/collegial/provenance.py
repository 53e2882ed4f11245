"""Where a result came from: the ``"provenance"`` object in every JSON the tool writes.

:func:`provenance` returns a plain, JSON-ready dict with these fields:

* ``collegial``: the package version (``collegial.__version__``);
* ``torch``: the torch version without a ``+local`` suffix (``"2.3.1"``, not ``"2.3.1+cpu"``);
  ``None`` if torch cannot be imported;
* ``python``: the interpreter version, ``"3.x.y"``;
* ``command``: the command line, ``shlex.join(sys.argv)`` with ``argv[0]`` reduced to its
  basename (``"collegial fit-alpha --json"``);
* ``seed``: the seed the run used, or ``None`` where the command has none;
* ``timestamp``: when the object was made, UTC ISO-8601 to the second (``"2024-05-01T12:00:00Z"``);
* ``git_commit``: the 40-hex commit of the git checkout that holds collegial's own source, or
  ``None`` when collegial is not run from a checkout (e.g. installed from a wheel);
* ``git_dirty``: whether tracked files differ from that commit (``git status --porcelain
  --untracked-files=no``); ``None`` when unknown (not a checkout, or no ``git`` executable).

The git lookup runs once per process (cached); later calls cost microseconds. This module
imports only the standard library (torch lazily), so every layer can use it.
"""

from __future__ import annotations

import functools
import numbers
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["git_state", "provenance"]

#: Where collegial's source lives; the git lookup walks up from here (tests repoint it).
_SOURCE_DIR = Path(__file__).resolve().parent

_HEX40 = re.compile(r"[0-9a-f]{40}")
_GIT_TIMEOUT_S = 2.0


def _checkout_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding a ``.git`` (dir or file), or None."""
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def _git_dir(root: Path) -> Path | None:
    """``root/.git``, following a ``gitdir: ...`` file (worktrees, submodules)."""
    g = root / ".git"
    if g.is_dir():
        return g
    try:
        text = g.read_text().strip()
    except OSError:
        return None
    if text.startswith("gitdir:"):
        p = Path(text[len("gitdir:"):].strip())
        return p if p.is_absolute() else (root / p).resolve()
    return None


def _read_head(root: Path) -> str | None:
    """The HEAD commit read from the files under ``.git``, for when ``git`` is unavailable."""
    gd = _git_dir(root)
    if gd is None:
        return None
    try:
        head = (gd / "HEAD").read_text().strip()
    except OSError:
        return None
    if _HEX40.fullmatch(head):
        return head
    if not head.startswith("ref:"):
        return None
    ref = head[len("ref:"):].strip()
    # A linked worktree keeps its HEAD in its own dir but the refs in the common dir.
    dirs = [gd]
    try:
        common = (gd / "commondir").read_text().strip()
        dirs.append((gd / common).resolve())
    except OSError:
        pass
    for d in dirs:
        try:
            sha = (d / ref).read_text().strip()
            if _HEX40.fullmatch(sha):
                return sha
        except OSError:
            pass
        try:
            for line in (d / "packed-refs").read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _HEX40.fullmatch(parts[0]):
                    return parts[0]
        except OSError:
            pass
    return None


def _run_git(root: Path, *args: str) -> str | None:
    """stdout of ``git -C root ARGS``, or None if git is missing, fails or takes too long."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False,
                           timeout=_GIT_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


@functools.cache
def git_state(start: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout holding ``start`` (default: collegial's source).

    ``(None, None)`` when it is not in a checkout; ``dirty`` is None when ``git`` cannot run.
    Cached per ``start``.
    """
    root = _checkout_root(Path(start) if start is not None else _SOURCE_DIR)
    if root is None:
        return None, None
    out = _run_git(root, "rev-parse", "HEAD")
    commit = out.strip() if out is not None else None
    if commit is None or not _HEX40.fullmatch(commit):
        return _read_head(root), None
    status = _run_git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status.strip()))


def _command() -> str:
    argv = list(sys.argv) or [""]
    argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__).split("+", 1)[0]


def provenance(seed: int | None = None) -> dict[str, Any]:
    """The provenance object (fields in the module docstring) for a run that used ``seed``."""
    from collegial import __version__

    commit, dirty = git_state(_SOURCE_DIR)
    return {
        "collegial": __version__,
        "torch": _torch_version(),
        "python": platform.python_version(),
        "command": _command(),
        "seed": int(seed) if isinstance(seed, numbers.Integral) else seed,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": commit,
        "git_dirty": dirty,
    }
