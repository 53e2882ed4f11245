"""``collegial reproduce table1|table2|table3``: train every row of the paper's training tables
when ``--data-dir`` holds the data, else print the commands (:mod:`collegial.experiments.paper_tables`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from collegial.commands.common import emit, tool_stdout
from collegial.experiments.paper_tables import (
    TABLE1,
    TABLE2,
    TABLE3,
    Table,
    markdown,
    missing_data,
    train_argv,
    train_command,
    train_row,
)
from collegial.provenance import provenance
from collegial.train.data import data_layouts


class _TableTarget:
    """``collegial reproduce tableN``: train every row when the data is there, else print how."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.help = f"{table.title}: train each row with the paper's recipe (needs --data-dir)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=None, metavar="P", help="folder holding the datasets")
        p.add_argument("--runs", default="runs", metavar="DIR", help="where each row's run goes")
        p.add_argument("--dry-run", action="store_true", help="only print the commands")

    def run(self, args: argparse.Namespace) -> int:
        data_dir = args.data_dir or "PATH/TO/DATA"
        text = markdown(self.table, data_dir, args.runs)
        missing = missing_data(self.table, args.data_dir)
        if args.dry_run or missing:
            if missing and not args.dry_run:
                need = ", ".join(f"{d} ({' or '.join(data_layouts(d))})" for d in missing)
                print(f"no training data for {need} under --data-dir; commands to run once it is "
                      "there (they use the paper's recipe; add torchrun for several GPUs):",
                      file=sys.stderr)
            commands = [train_command(self.table, r, data_dir, args.runs) for r in self.table.rows]
            emit({"table": self.table.name, "commands": commands, "provenance": provenance(None)}, text,
                 as_json=args.json)
            return 0
        for row in self.table.rows:
            print(f"$ {shlex.join(train_argv(self.table, row, data_dir, args.runs))}", file=sys.stderr, flush=True)
            rc = train_row(self.table, row, data_dir, args.runs)
            if rc != 0:
                print(f"collegial reproduce {self.table.name}: row {row.label} failed (exit {rc})",
                      file=sys.stderr)
                return rc
        print(text, file=tool_stdout())
        return 0


TABLE1_TARGET = _TableTarget(TABLE1)
TABLE2_TARGET = _TableTarget(TABLE2)
TABLE3_TARGET = _TableTarget(TABLE3)
