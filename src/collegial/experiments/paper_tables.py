"""The paper's training tables (appendix Tables 1-3, the data in :mod:`collegial.paper`): the
exact ``collegial train`` command that reproduces each row, and whether the data is there.

Training these needs the real datasets (CIFAR-10/100, downsampled ImageNet) and, at paper scale,
GPUs; ``collegial reproduce table1|table2|table3`` (:mod:`collegial.commands.reproduce_tables`)
runs them (each seed a job of ``--launcher``) when ``--data-dir`` holds the data and otherwise
prints the commands.
"""

from __future__ import annotations

import shlex

from collegial.paper import TABLE1, TABLE2, TABLE3, TABLES, Row, Table
from collegial.train.data import has_training_data

__all__ = ["TABLE1", "TABLE2", "TABLE3", "TABLES", "Row", "Table", "has_data", "markdown", "missing_data",
           "train_argv", "train_command"]


def train_argv(table: Table, row: Row, data_dir: str, out_root: str) -> list[str]:
    """The ``collegial train`` arguments that reproduce ``row`` with the paper's recipe."""
    out = f"{out_root}/{table.name}/{row.dataset}-{row.family}-{row.arch}"
    return [
        "collegial", "train", row.family, row.arch,
        "--dataset", row.dataset,
        "--data-dir", data_dir,
        "--seeds", str(table.seeds),
        "--out", out,
    ]


def train_command(table: Table, row: Row, data_dir: str, out_root: str) -> str:
    return shlex.join(train_argv(table, row, data_dir, out_root))


def has_data(dataset: str, data_dir: str | None) -> bool:
    """True when ``data_dir`` holds ``dataset`` in a layout the data readers accept (the data
    layer's own answer: :func:`collegial.train.data.has_training_data`)."""
    return data_dir is not None and has_training_data(dataset, data_dir)


def markdown(table: Table, data_dir: str, out_root: str) -> str:
    """The table with the paper's numbers and the command that reproduces each row."""
    head = " | ".join(f"paper {m} err %" for m in table.metrics)
    lines = [
        f"### {table.title}",
        "",
        f"| model | dataset | rho | params | {head} | command |",
        "|---|---|---|---|" + "---|" * len(table.metrics) + "---|",
    ]
    for row in table.rows:
        errs = " | ".join(f"{e:.2f}" for e in row.paper)
        cmd = train_command(table, row, data_dir, out_root)
        lines.append(f"| {row.label} | {row.dataset} | {row.rho} | {row.params} | {errs} | `{cmd}` |")
    return "\n".join(lines)


def missing_data(table: Table, data_dir: str | None) -> list[str]:
    """The table's datasets that ``data_dir`` does not hold (sorted)."""
    return [d for d in sorted({r.dataset for r in table.rows}) if not has_data(d, data_dir)]
