"""Subcommands of the collegial CLI, one module each (see collegial.cli)."""
