"""The paper's training tables (appendix Tables 1-3) as data: which model, on which dataset, with
the paper's reported numbers, and the exact ``collegial train`` command that reproduces each row.

Training these needs the real datasets (CIFAR-10/100, downsampled ImageNet) and, at paper scale,
GPUs; ``collegial reproduce table1|table2|table3`` (:mod:`collegial.commands.reproduce_tables`)
runs them when ``--data-dir`` holds the data and otherwise prints the commands.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path



@dataclass(frozen=True)
class Row:
    family: str
    arch: str
    dataset: str
    label: str
    rho: str
    params: str
    paper: tuple[float, ...]  # the paper's errors in %, in the order of Table.metrics


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    metrics: tuple[str, ...]
    seeds: int
    rows: tuple[Row, ...]


TABLE1 = Table(
    "table1",
    "ImageNet 32x32, ResNeXt-29 (appendix Table 1)",
    ("top-1", "top-5"),
    5,
    (
        Row("wrn", "28-10", "imagenet32", "Wide ResNet 28-10", "-", "37.1M", (40.96, 18.87)),
        Row("resnext29", "1x128d", "imagenet32", "ResNet-29 1x128d", "1", "14.8M", (40.61, 17.82)),
        Row("resnext29", "3x64d", "imagenet32", "ResNeXt-29 3x64d", "1", "14.4M", (39.58, 17.09)),
        Row("resnext29", "37x10d", "imagenet32", "ResNeXt-29 37x10d (primal)", "1", "14.8M", (38.41, 16.13)),
        Row("wrn", "28-5", "imagenet32", "Wide ResNet 28-5", "1.6", "9.5M", (45.36, 21.36)),
        Row("resnext29", "10x10d", "imagenet32", "ResNeXt-29 10x10d (dual)", "2.8", "5.2M", (43.36, 19.65)),
        Row("resnext29", "3x40d", "imagenet32", "ResNeXt-29 3x40d (dual curve)", "1.8", "8.0M", (41.54, 18.58)),
    ),
)

TABLE2 = Table(
    "table2",
    "ImageNet 64x64, ResNeXt-38 (appendix Table 2)",
    ("top-1", "top-5"),
    5,
    (
        Row("wrn", "36-5", "imagenet64", "Wide ResNet 36-5", "-", "37.6M", (32.34, 12.64)),
        Row("resnext38", "1x96d", "imagenet64", "ResNet-38 1x96d", "1", "37.5M", (29.36, 10.10)),
        Row("resnext38", "2x64d", "imagenet64", "ResNeXt-38 2x64d", "1", "39.0M", (28.86, 9.72)),
        Row("resnext38", "22x10d", "imagenet64", "ResNeXt-38 22x10d (primal)", "1", "36.3M", (28.34, 9.38)),
        Row("resnext38", "8x10d", "imagenet64", "ResNeXt-38 8x10d (dual)", "2.3", "16.3M", (30.93, 11.02)),
        Row("resnext38", "1x128d", "imagenet64", "ResNet-38 1x128d", "1", "57.8M", (28.56, 9.67)),
        Row("resnext38", "3x64d", "imagenet64", "ResNeXt-38 3x64d", "1", "56.1M", (28.01, 9.28)),
        Row("resnext38", "37x10d", "imagenet64", "ResNeXt-38 37x10d (primal)", "1", "57.7M", (27.24, 8.74)),
        Row("resnext38", "10x10d", "imagenet64", "ResNeXt-38 10x10d (dual)", "3.0", "19.1M", (30.22, 10.60)),
    ),
)

# Table 3: one row per (model, dataset); the paper reports C10 and C100 top-1 error.
TABLE3 = Table(
    "table3",
    "CIFAR-10/100 at a FLOPs budget, ResNeXt-29 (appendix Table 3)",
    ("top-1",),
    10,
    tuple(
        Row("resnext29", arch, ds, f"ResNeXt-29 {arch} ({ds})", "-", params, (err,))
        for arch, params, c10, c100 in (
            ("1x128d", "13.8M", 4.08, 19.39),
            ("3x64d", "13.3M", 3.96, 18.57),
            ("44x8d", "12.7M", 3.66, 17.86),
            ("60x6d", "12.6M", 3.73, 18.04),
        )
        for ds, err in (("cifar10", c10), ("cifar100", c100))
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (TABLE1, TABLE2, TABLE3)}

#: Which files under --data-dir each dataset needs (checked before running anything).
DATA_MARKERS: dict[str, str] = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "imagenet32": "Imagenet32_train_npz",
    "imagenet64": "Imagenet64_train_npz",
}


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
    """True when ``data_dir`` holds ``dataset`` in its standard layout (SPEC section 9)."""
    if data_dir is None:
        return False
    root = Path(data_dir)
    marker = DATA_MARKERS[dataset]
    return (root / marker).is_dir() or root.name == marker


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


def train_row(table: Table, row: Row, data_dir: str, out_root: str) -> int:
    """Train ``row`` (``collegial train`` in a child process, its output passed through); its
    exit code."""
    argv = train_argv(table, row, data_dir, out_root)
    return subprocess.call([sys.executable, "-m", "collegial.cli", *argv[1:]])
