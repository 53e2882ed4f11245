"""``collegial reproduce table1|table2|table3``: train every row of the paper's training tables
when ``--data-dir`` holds the data, else print the commands (:mod:`collegial.experiments.paper_tables`).

Each seed of each row is one run, ``RUNS/TABLE/DATASET-FAMILY-ARCH/seedS`` (the folders
``collegial train --seeds K`` makes), executed by ``--launcher``: one after another here (the
default), ``--jobs K`` at once here, or as one job each of a submitit job array
(:mod:`collegial.launch`). A run with a ``result.json`` is finished and skipped, one with a
checkpoint continues from it, whichever launcher ran it before; a job that reaches its time
limit is requeued and continues from its checkpoint. The results go to ``RUNS/TABLE/results.json``
(each row's error, mean and standard error over its seeds, beside the paper's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from collegial.commands.common import add_device_option, emit, write_json
from collegial.commands.launch_options import add_launcher_arguments, jobs_device, launcher_from_args
from collegial.experiments.paper_tables import TABLE1, TABLE2, TABLE3, Row, Table, markdown, missing_data, train_command
from collegial.launch import run_jobs
from collegial.provenance import provenance
from collegial.stats import mean_se
from collegial.train.data import data_layouts

#: Exit codes of a sweep one of whose runs was stopped by SIGINT / SIGTERM (as ``collegial train``).
EXIT_STOPPED = {"SIGINT": 130, "SIGTERM": 143}


class _TableTarget:
    """``collegial reproduce tableN``: train every row when the data is there, else print how."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.help = f"{table.title}: train each row with the paper's recipe (needs --data-dir)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=None, metavar="P", help="folder holding the datasets")
        p.add_argument("--runs", default="runs", metavar="DIR", help="where each row's runs go (default runs)")
        p.add_argument("--dry-run", action="store_true", help="only print the commands")
        add_device_option(p, "the training")
        add_launcher_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        launcher = launcher_from_args(args)  # the launcher's options: one line, before any work
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
        device = jobs_device(args, launcher)  # jobs given GPUs train on cuda wherever this runs
        calls = seed_calls(self.table, args.data_dir, args.runs, device)
        root = Path(args.runs) / self.table.name
        root.mkdir(parents=True, exist_ok=True)
        print(f"collegial reproduce {self.table.name}: {len(calls)} runs ({len(self.table.rows)} rows x "
              f"{self.table.seeds} seeds) into {root}", file=sys.stderr, flush=True)
        results = run_jobs(train_seed, calls, launcher, root / "submitit")
        stopped = next((r["stopped"] for r in results if r.get("stopped")), None)
        if stopped:
            print(f"collegial reproduce {self.table.name}: stopped ({stopped}); run it again to continue",
                  file=sys.stderr)
            return EXIT_STOPPED.get(stopped, 1)
        obj = gather(self.table, results)
        write_json(root / "results.json", obj)
        emit(obj, f"{text}\n\n{results_markdown(self.table, obj)}\n\nwrote {root / 'results.json'}", as_json=args.json)
        return 0


def run_dir(table: Table, row: Row, out_root: str, seed: int) -> Path:
    """The folder of seed ``seed`` of ``row`` (as ``collegial train --seeds K`` names it)."""
    return Path(out_root) / table.name / f"{row.dataset}-{row.family}-{row.arch}" / f"seed{seed}"


def seed_calls(table: Table, data_dir: str, out_root: str, device: str) -> list[tuple[Any, ...]]:
    """The :func:`train_seed` arguments of every run of ``table``, row by row, seed by seed."""
    return [(r.family, r.arch, r.dataset, data_dir, s, str(run_dir(table, r, out_root, s)), device)
            for r in table.rows for s in range(table.seeds)]


def train_seed(family: str, arch: str, dataset: str, data_dir: str, seed: int, out: str, device: str) -> dict[str, Any]:
    """One run as a job of its own, with the dataset's recipe: skipped when ``out`` holds a
    finished run, continued from its checkpoint when it holds one, else new (a run that died
    before its first checkpoint starts over); its
    ``result.json`` (or ``{"stopped": signal}`` when SIGINT / SIGTERM stopped it at a checkpoint)."""
    folder = Path(out)
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    from collegial.train.data import load_dataset
    from collegial.train.loop import RunConfig, train
    from collegial.train.recipes import get_recipe

    data = load_dataset(dataset, data_dir)
    resume = (folder / "last.pt").is_file()  # else nothing to continue: a run that died before it starts over
    res = train(RunConfig(family=family, arch=arch, dataset=dataset, out=folder, seed=seed, device=device,
                          resume=resume, overwrite=not resume), get_recipe(dataset), data)
    if res.stopped:
        return {"stopped": res.stopped}
    return json.loads((folder / "result.json").read_text())


def gather(table: Table, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each row's errors over its seeds (mean, standard error) beside the paper's, from the runs'
    results in :func:`seed_calls` order."""
    rows = []
    for i, row in enumerate(table.rows):
        runs = results[i * table.seeds:(i + 1) * table.seeds]
        measured = {}
        for metric, key in (("top-1", "test_top1_err"), ("top-5", "test_top5_err")):
            if metric in table.metrics:
                values = [float(r[key]) for r in runs]
                mean, se = mean_se(values)
                measured[metric] = {"mean": mean, "se": se, "per_seed": values}
        rows.append({"label": row.label, "family": row.family, "arch": row.arch, "dataset": row.dataset,
                     "seeds": table.seeds, "paper": dict(zip(table.metrics, row.paper)), "measured": measured})
    return {"table": table.name, "title": table.title, "rows": rows, "provenance": provenance(None)}


def results_markdown(table: Table, obj: dict[str, Any]) -> str:
    """The measured errors (mean ± standard error over the seeds) beside the paper's."""
    head = " | ".join(f"{m} err % (paper) | {m} err % (here)" for m in table.metrics)
    lines = [f"### {table.title}: measured", "", f"| model | dataset | {head} |",
             "|---|---|" + "---|---|" * len(table.metrics)]
    for r in obj["rows"]:
        cells = " | ".join(f"{r['paper'][m]:.2f} | {r['measured'][m]['mean']:.2f} ± {r['measured'][m]['se']:.2f}"
                           for m in table.metrics)
        lines.append(f"| {r['label']} | {r['dataset']} | {cells} |")
    return "\n".join(lines)


TABLE1_TARGET = _TableTarget(TABLE1)
TABLE2_TARGET = _TableTarget(TABLE2)
TABLE3_TARGET = _TableTarget(TABLE3)
