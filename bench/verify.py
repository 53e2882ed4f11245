"""Benchmark: the whole-model NTK engine of ``collegial verify`` (``collegial.ntk.whole``).

Whole ``resnext11`` (1x64d, 26x3d, 174x3d) on MNIST shapes, 8 pairs (a probe batch of 16
images), float32, for both BatchNorm modes. One *initialization* gives ``K`` on all 8 pairs;
its arithmetic reference is the issue's: ``3 x forward FLOPs x 2 images`` per pair, i.e.
``3 x forward FLOPs x 16`` per initialization (what one forward and one backward of the batch
would cost). Prints, per architecture and mode, the best-of-R milliseconds per initialization and
per pair, that reference's GFLOP, the fraction of the machine's fp32 GEMM rate (measured in the
same run) it corresponds to, and the fallback (if the fast path did not apply).

A second yardstick, also measured in the same run: ``step ms``, one plain forward and backward
of the same 16-image batch (``model(x).sum().backward()``, BatchNorm in the mode's state), i.e.
the reference arithmetic as this backend actually runs it; ``x step`` is the engine's time over
it. Grouped convolutions with many narrow groups run far below the GEMM rate in the backend
itself, so for them ``x step`` says how close the engine is to what the hardware gives.

``batch`` mode (the default of ``collegial verify``) needs every image's gradient through the
batch statistics: one backward pass per image (16 of them), so it is bound to do about 16x the
reference's backward work; ``running`` mode gets all 16 from one backward pass.

    .venv/bin/python bench/verify.py [--repeats 3] [--threads 2] [--modes batch,running] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from collegial.models import create_model
from collegial.models.costs import forward_flops
from collegial.ntk.whole import WholeModelNtk, draw_pairs
from train_step import matmul_peak, sync  # the same yardstick as the training-step bench (bench/ on sys.path)

ARCHS = ("1x64d", "26x3d", "174x3d")
PAIRS = 8


def _sync(device: str) -> None:
    sync(torch.device(device))


def _step_seconds(model: torch.nn.Module, x: torch.Tensor, mode: str, device: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds of one plain forward + backward of ``x``."""
    model.train(mode == "batch")
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        model(x).sum().backward()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--modes", default="batch,running")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    peak = matmul_peak(torch.device(args.device)) / 1e9
    print(f"GEMM 2048^3 float32: {peak:.0f} GFLOP/s (the yardstick)")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(256, 1, 28, 28, generator=g)
    pairs, _ = draw_pairs(images, None, PAIRS, 10, seed=0)
    print(f"\n{'mode':<8} {'arch':>7} {'ms/init':>9} {'ms/pair':>8} {'ref GFLOP':>10} {'% of GEMM':>10} "
          f"{'step ms':>8} {'x step':>7}  fallback")
    for mode in args.modes.split(","):
        for arch in args.archs.split(","):
            eng = WholeModelNtk(lambda a=arch: create_model("resnext11", arch=a, dataset="mnist"), pairs, bn=mode,
                                device=args.device)
            eng.terms(eng.model(0, 0))  # warm-up (and the independence check of running mode)
            best = float("inf")
            for t in range(args.repeats):
                model = eng.model(0, t + 1)
                _sync(args.device)
                t0 = time.perf_counter()
                eng.terms(model)
                _sync(args.device)
                best = min(best, time.perf_counter() - t0)
            ref = 3 * forward_flops("resnext11", arch, "mnist") * 2 * PAIRS
            frac = ref / best / 1e9 / peak
            step = _step_seconds(eng.model(0, 0), eng.x, mode, args.device, args.repeats)
            print(f"{mode:<8} {arch:>7} {best * 1e3:>9.0f} {best * 1e3 / PAIRS:>8.1f} {ref / 1e9:>10.2f} "
                  f"{100 * frac:>9.1f}% {step * 1e3:>8.0f} {best / step:>7.1f}  {eng.fallback or '-'}", flush=True)


if __name__ == "__main__":
    main()
