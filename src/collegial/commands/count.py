"""``collegial count FAMILY ARCH --dataset D [--json] [--bn-flops]``: parameters, FLOPs, MACs."""

from __future__ import annotations

import argparse
import json

from collegial.errors import UserError
from collegial.models import DATASETS, PRESETS, get_family, list_families, validate_arch
from collegial.provenance import provenance
from collegial.search.costs import model_costs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count",
        help="parameters, FLOPs and MACs of a model",
        description="Count trainable parameters, FLOPs (2 x multiply-adds of conv and linear "
        "layers, one image at the dataset's resolution) and MACs, measured on the built model.",
    )
    p.add_argument("family", nargs="?", help=f"model family: {', '.join(list_families())}")
    p.add_argument("arch", nargs="?", help="MxNd (e.g. 37x10d) or DEPTH-K for wrn (e.g. 28-10)")
    p.add_argument("--presets", action="store_true", help="table of the paper's named presets")
    p.add_argument("--dataset", default=None, help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--bn-flops", action="store_true", help="add one FLOP per BatchNorm output element")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=run)


def count(family: str, arch: str, dataset: str | None, *, bn_flops: bool = False) -> dict:
    fam = get_family(family)
    dataset = dataset or fam.default_dataset
    a, b = validate_arch(family, arch)
    c = model_costs(family, arch, dataset, bn_flops=bn_flops)
    m, n = (a, b) if fam.arch_kind == "ce" else (1, b)
    return {
        "family": family,
        "arch": arch,
        "dataset": dataset,
        "m": m,
        "n": n,
        "params": c.params,
        "flops": c.flops,
        "macs": c.macs,
    }


def preset_table(*, bn_flops: bool = False) -> list[dict]:
    """One :func:`count` row per paper preset (SPEC section 6)."""
    rows = [
        count(p.family, p.arch, p.dataset, bn_flops=bn_flops) | {"preset": p.name}
        for p in PRESETS.values()
    ]
    return rows


def _markdown(rows: list[dict]) -> str:
    lines = ["| preset | dataset | model | params | GFLOPs |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['dataset']} | {r['family']} {r['arch']} | "
            f"{r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.presets:
        rows = preset_table(bn_flops=args.bn_flops)
        print(json.dumps({"rows": rows, "provenance": provenance(None)}) if args.json else _markdown(rows))
        return 0
    if args.family is None or args.arch is None:
        raise UserError("count needs FAMILY and ARCH (or --presets)")
    row = count(args.family, args.arch, args.dataset, bn_flops=args.bn_flops)
    if args.json:
        print(json.dumps({**row, "provenance": provenance(None)}))
    else:
        print(
            f"{row['family']} {row['arch']} on {row['dataset']}: "
            f"{row['params'] / 1e6:.2f}M params, {row['flops'] / 1e9:.3f} GFLOPs, "
            f"{row['macs'] / 1e9:.3f} GMACs"
        )
    return 0
