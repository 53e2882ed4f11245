"""Closed vocabularies of string options, and the one check of a value against its vocabulary.

Each vocabulary is written once, as a ``Literal`` alias for type checkers and a tuple of the
choices for the check (and for the command line's ``choices=``), next to the code that
interprets it: ``COST_KINDS`` (:mod:`collegial.models.costs`), ``PARAMETERIZATIONS``
(:mod:`collegial.models.layers`), ``ROUNDINGS``, ``TIE_RULES`` and ``SOLVERS``
(:mod:`collegial.search.solve`), ``PROBE_BN_MODES`` and ``BATCHNORM_MODES``
(:mod:`collegial.ntk._bn`). A public entry point calls :func:`check_choice` once per option;
the code behind it takes the ``Literal`` type and does not check again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from collegial.errors import UserError

__all__ = ["ChoiceError", "check_choice"]

T = TypeVar("T", bound=str)


class ChoiceError(UserError, ValueError):
    """A string option outside its vocabulary: a :class:`~collegial.errors.UserError` (one line
    on the command line) and a ``ValueError`` (what a Python caller expects of a bad value)."""


def check_choice(name: str, value: object, choices: Sequence[T], what: str = "value") -> T:
    """``value`` when it is one of ``choices``; else :class:`ChoiceError` naming the argument
    ``name`` (in backquotes, see :func:`collegial.errors.flag_message`):
    ``"`bn='frozen'`: unknown BatchNorm mode; choose from none, train"``."""
    if isinstance(value, str) and value in choices:
        return value  # type: ignore[return-value]
    raise ChoiceError(f"`{name}={value!r}`: unknown {what}; choose from {', '.join(choices)}")
