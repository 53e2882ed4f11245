"""The recipe-override options of ``collegial train``: one ``--FLAG`` per overridable field of
:class:`~collegial.train.recipes.Recipe` (the table :func:`~collegial.train.recipes.recipe_fields`),
each left as text for :meth:`Recipe.override <collegial.train.recipes.Recipe.override>` to parse;
the booleans (``nesterov``, ``flip``) are ``--x/--no-x`` switches, as every yes/no option of the CLI."""

from __future__ import annotations

import argparse
from typing import Any

from collegial.train.recipes import recipe_fields


def add_recipe_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--epochs``, ``--batch-size``, ... (one per :func:`recipe_fields` entry) to an
    argparse parser or group; each defaults to ``None`` = the recipe's value. A boolean field
    is a ``--x/--no-x`` switch (its value True or False when given)."""
    for f in recipe_fields():
        if f.kind == "bool":
            parser.add_argument(f"--{f.flag}", dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{f.help} (default: the dataset's recipe)")
            continue
        parser.add_argument(
            f"--{f.flag}",
            dest=f.name,
            default=None,
            metavar=f.kind.upper(),
            help=f"{f.help} (default: the dataset's recipe)",
        )


def recipe_overrides(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """The recipe fields set in ``args`` (from :func:`add_recipe_arguments`), for
    :meth:`Recipe.override <collegial.train.recipes.Recipe.override>`."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {f.name: values[f.name] for f in recipe_fields() if values.get(f.name) is not None}
