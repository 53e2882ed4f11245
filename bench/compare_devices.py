"""Compare two result files of the same command run on two devices from the same seed
(``bench/gpu_check.sh``): the numbers must agree within float tolerance.

    python bench/compare_devices.py alpha  CPU.json CUDA.json [--rtol 1e-3]   # fit-alpha --json
    python bench/compare_devices.py verify CPU.json CUDA.json [--rtol 1e-3]   # verify --json

Prints, per quantity, the largest relative difference and both run times (the ``seconds`` the
files record); exits 1 when a difference exceeds ``--rtol`` (or the files describe different
runs), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any


def rel_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest ``|a - b| / max(|a|, |b|)`` over the pairs (0 for two zeros; inf when the
    lengths differ or only one side is finite)."""
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            if (x is None) != (y is None) or (x is not None and math.isfinite(x) != math.isfinite(y)):
                return math.inf
            continue
        scale = max(abs(x), abs(y))
        worst = max(worst, abs(x - y) / scale if scale > 0 else 0.0)
    return worst


def alpha_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, float]]:
    """``fit-alpha --json`` of the two devices: the table, the per-pair table and the 1/m check."""
    if a["widths"] != b["widths"] or a["trials"] != b["trials"] or a["seed"] != b["seed"]:
        return [("the same widths, trials and seed", math.inf)]
    flat = [v for row in a["pair_variance"] for v in row], [v for row in b["pair_variance"] for v in row]
    return [
        ("V1(n)", rel_diff(a["variance"], b["variance"])),
        ("stderr", rel_diff(a["stderr"], b["stderr"])),
        ("per-pair v", rel_diff(*flat)),
        ("1/m ratios", rel_diff([p["ratio"] for p in a["m_law"]], [p["ratio"] for p in b["m_law"]])),
    ]


def verify_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, float]]:
    """``verify --json`` of the two devices: each architecture's v and mean K."""
    ma, mb = a["measured"], b["measured"]
    if [r["arch"] for r in ma] != [r["arch"] for r in mb]:
        return [("the same architectures", math.inf)]
    rows = []
    for x, y in zip(ma, mb):
        rows.append((f"{x['arch']} v", rel_diff([x["v"]], [y["v"]])))
        rows.append((f"{x['arch']} E[K]", rel_diff([x["mean_k"]], [y["mean_k"]])))
    return rows


def seconds(kind: str, obj: dict[str, Any]) -> float:
    """The run time the file records (Algorithm 1's, or the sum over the verified architectures)."""
    return float(obj["seconds"]) if kind == "alpha" else float(sum(r["seconds"] for r in obj["measured"]))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("alpha", "verify"))
    p.add_argument("first", help="the result on the first device (e.g. cpu)")
    p.add_argument("second", help="the result on the second device (e.g. cuda)")
    p.add_argument("--rtol", type=float, default=1e-3, help="largest relative difference accepted (default 1e-3)")
    args = p.parse_args(argv)
    with open(args.first) as f1, open(args.second) as f2:
        a, b = json.load(f1), json.load(f2)
    rows = (alpha_rows if args.kind == "alpha" else verify_rows)(a, b)
    bad = [name for name, d in rows if not d <= args.rtol]
    for name, d in rows:
        print(f"{args.kind}: {name}: largest relative difference {d:.2e}{'  > rtol' if name in bad else ''}")
    print(f"{args.kind}: seconds {seconds(args.kind, a):.1f} ({args.first}) vs {seconds(args.kind, b):.1f} ({args.second})")
    print(f"{args.kind}: {'DIFFERENT beyond' if bad else 'the same within'} rtol {args.rtol:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
