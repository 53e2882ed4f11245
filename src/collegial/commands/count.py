"""``collegial count FAMILY ARCH [--dataset D] [--json] [--bn-flops]`` (or ``collegial count PRESET``,
a preset name as ``collegial train`` takes it): parameters, FLOPs, MACs."""

from __future__ import annotations

import argparse

from collegial.commands.common import emit, preset_model
from collegial.errors import UserError
from collegial.models import DATASETS, PRESETS, get_family, list_families, validate_arch
from collegial.provenance import provenance
from collegial.models.costs import format_flops, format_params, model_costs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count",
        help="parameters, FLOPs and MACs of a model",
        description="Count trainable parameters, FLOPs (2 x multiply-adds of conv and linear "
        "layers, one image at the dataset's resolution) and MACs, measured on the built model.",
    )
    p.add_argument("family", nargs="?",
                   help=f"model family ({', '.join(list_families())}) or a preset name (see --presets)")
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
    """One :func:`count` row per paper preset (the models of the paper's search section)."""
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
            f"{format_params(r['params'])} | {r['flops'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.presets:
        rows = preset_table(bn_flops=args.bn_flops)
        emit({"rows": rows, "provenance": provenance(None)}, _markdown(rows), as_json=args.json)
        return 0
    if args.family is None:
        raise UserError("count needs FAMILY and ARCH, a preset name, or --presets")
    preset = preset_model(args.family, args.arch, args.dataset)
    if preset is None and args.arch is None:
        raise UserError("count needs FAMILY and ARCH (or a preset name, or --presets)")
    family, arch, dataset = preset or (args.family, args.arch, args.dataset)
    row = count(family, arch, dataset, bn_flops=args.bn_flops)
    if preset is not None:
        row["preset"] = args.family
    text = (
        f"{row['family']} {row['arch']} on {row['dataset']}: "
        f"{format_params(row['params'])} params, {format_flops(row['flops'])}, "
        f"{format_flops(row['macs']).replace('FLOPs', 'MACs')}"
    )
    emit({**row, "provenance": provenance(None)}, text, as_json=args.json)
    return 0
