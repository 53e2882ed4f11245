"""Families from outside the package: ``collegial --import MODULE`` and the entry point group
``collegial.families``.

A plugin is a module that registers families with :func:`collegial.models.register_model` when
it is imported. Two ways in:

* ``collegial --import MODULE`` (repeatable) imports ``MODULE`` before the subcommand runs:
  a dotted module name (looked up on ``sys.path``, then in the current directory, which is
  appended to ``sys.path`` while importing it, never put ahead of installed packages) or the
  path of a ``.py`` file. :func:`import_plugin` does the same from
  Python.
* an installed package declares, in its ``pyproject.toml``::

      [project.entry-points."collegial.families"]
      mynet = "mypackage.families"          # a module, imported
      other = "mypackage.more:register"     # or a function, called with no arguments

  Every entry point of the group is loaded once, the first time the registry is asked for a
  family (:func:`load_entry_points`).

An ``--import`` that fails raises :class:`~collegial.errors.UserError` naming it, the exception
and where it was raised (one line; the CLI exits with code 2). An installed entry point that
fails is reported as one warning line and its families are unavailable; everything else works.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from collegial.errors import UserError

ENTRY_POINT_GROUP = "collegial.families"
_loaded_entry_points = False
#: module name -> the --import argument that loaded it (for commands suggested in messages)
_IMPORTED: dict[str, str] = {}
_entry_point_errors: list[str] = []


def _failure(what: str, e: BaseException) -> UserError:
    """One line: what failed, the exception, and the innermost frame outside importlib."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "importlib" not in f.filename and f.filename != __file__]
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    msg = str(e).splitlines()[0] if str(e) else ""
    return UserError(f"{what} failed: {type(e).__name__}: {msg}{where}".rstrip(": "))


def import_plugin(spec: str) -> ModuleType:
    """Import ``spec`` (a module name or a ``.py`` path) so that its families register."""
    spec = spec.strip()
    if not spec:
        raise UserError("--import needs a module name or a .py file")
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise UserError(f"--import {spec}: no such file")
            name = path.stem
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
                return sys.modules[name]
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise UserError(f"--import {spec}: not a Python module")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            _IMPORTED[name] = spec
            return module
        module = _import_beside_the_user(spec)
        _IMPORTED[module.__name__] = spec
        return module
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001 - SystemExit, a plugin's own BaseException: one line
        raise _failure(f"--import {spec}", e) from None


def _import_beside_the_user(name: str) -> ModuleType:
    """Import the module ``name``, also looking in the working folder, but after the installed
    packages (a ``scipy.py`` there must not replace scipy), and only while importing it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_hint(module: str) -> str:
    """``"--import SPEC "`` for a family registered by an ``--import``-ed module, ``""`` for the
    built-ins and installed plugins (which load by themselves)."""
    if module in _IMPORTED:
        return f"--import {_IMPORTED[module]} "
    return ""


def load_entry_points() -> list[str]:
    """Load every ``collegial.families`` entry point (once per process). A broken one does not
    stop the others or the families already there: its failure is kept (one line each,
    returned here and named by :func:`~collegial.models.get_family` when its family is asked for)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return list(_entry_point_errors)
    _loaded_entry_points = True  # before loading: a plugin's own registry calls must not recurse
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if not isinstance(obj, ModuleType) and callable(obj):
                obj()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a broken plugin never stops the others
            _entry_point_errors.append(str(_failure(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})", e)))
    return list(_entry_point_errors)


def entry_point_errors() -> list[str]:
    """The failures of :func:`load_entry_points` so far (one line each)."""
    return list(_entry_point_errors)
