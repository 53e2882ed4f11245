"""The one exception type for mistakes a user can make (bad arguments, missing data, ...).

The CLI turns a :class:`UserError` into a single line on stderr and exit code 2.

The library's messages name its own arguments, in backquotes: ```n_range` 64:8 is empty``,
``pass `overwrite=True` to start over``. A command that hands a user's flag values to the
library translates those names into its flags with :func:`flag_names` (``--n-range 64:8 is
empty``, ``pass --overwrite to start over``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["UserError", "flag_message", "flag_names"]

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """An error caused by the user's input; reported as one line, exit code 2."""


#: An argument named in a library message: ```name``` or ```name=VALUE```.
_ARGUMENT = re.compile(r"`([A-Za-z_][\w.()]*)(=[^`]*)?`")


def flag_message(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with the library arguments of ``flags`` (name -> flag) written as flags:
    ```name``` and ```name=True``` -> ``--flag``, ```name=VALUE``` -> ``--flag VALUE``
    (quotes around a string VALUE dropped). A key may also be a whole backquoted text
    (``"run_algorithm1(widths=...)": "fit-alpha --widths"``). Other backquoted names stay."""

    def one(m: re.Match[str]) -> str:
        whole = m.group(0)[1:-1]
        if whole in flags:
            return flags[whole]
        name, value = m.group(1), m.group(2)
        if name not in flags:
            return m.group(0)
        if value is None or value == "=True":
            return flags[name]
        return f"{flags[name]} {value[1:].strip(chr(39))}"

    return _ARGUMENT.sub(one, message)


def flag_names(flags: Mapping[str, str]) -> Callable[[F], F]:
    """Decorator for a command's handler: a :class:`UserError` it raises has the library
    argument names of ``flags`` replaced by the command's flags (:func:`flag_message`); the
    exception itself (its type included) is re-raised."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except UserError as e:
                if e.args and isinstance(e.args[0], str):
                    e.args = (flag_message(e.args[0], flags), *e.args[1:])
                raise

        return run  # type: ignore[return-value]

    return wrap
