"""Training-step throughput of ResNeXt-29 at CIFAR shapes against the official formulation.

The reference is the official CE training code's model re-created here (the ResNeXt.pytorch
``CifarResNeXt`` it builds on): a plain ``nn.Module``, fp32, NCHW, ``F.relu(inplace=True)``,
``avg_pool2d(8)``. It is timed in the same run, interleaved round by round with every variant of
``collegial.models.create_model("resnext29", ...)``:

* ``ours``: fp32 NCHW (same math as the reference; a sanity check of the port);
* ``cl``: channels_last; ``bf16``: bf16 autocast; ``bf16+cl``; ``cl+compile``; ...

Per variant: median images/s over rounds and the median of the per-round ratios to the
reference. Before timing, every variant's loss and gradients are computed on the same weights
and batch and compared with an fp64 reference (relative error; the fp32 reference's own error is
the floor), so a speed-up that changes the math shows up.

``--grouped`` adds a micro-benchmark of the 3x3 grouped convolution alone (forward + both
backward passes) at 37x10d's shapes under several formulations: native NCHW, native
channels_last, groups padded to a multiple of 8 channels, unfold + batched matmul, 9 shifted
grouped 1x1s as batched matmuls (channels_last), and torch.compile of the native conv.

    .venv/bin/python bench/train_step.py                      # CPU, batch 32, both models
    .venv/bin/python bench/train_step.py --grouped --rounds 2
    .venv/bin/python bench/train_step.py --device cuda --batch 128 --variants \
        bf16+cl+compile,bf16+cl,cl     # on a GPU: also TFLOP/s and MFU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from collegial.models import create_model  # noqa: E402
from collegial.models.costs import train_flops_per_image  # noqa: E402
from collegial.train.flops import peak_flops  # noqa: E402

# ---- the official formulation ---------------------------------------------------------------


class RefBottleneck(nn.Module):
    """ResNeXt.pytorch's ``ResNeXtBottleneck`` (type C), as the official CE code uses it."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, base_width: int,
                 widen_factor: int) -> None:
        super().__init__()
        width_ratio = out_ch / (widen_factor * 64.0)
        d = cardinality * int(base_width * width_ratio)
        self.conv_reduce = nn.Conv2d(in_ch, d, 1, 1, 0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, out_ch, 1, 1, 0, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if in_ch != out_ch:
            conv = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False)
            self.shortcut.add_module("shortcut_conv", conv)
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        b = F.relu(self.bn(self.conv_conv(b)), inplace=True)
        b = self.bn_expand(self.conv_expand(b))
        return F.relu(self.shortcut(x) + b, inplace=True)


class RefCifarResNeXt(nn.Module):
    """ResNeXt.pytorch's ``CifarResNeXt`` (depth 29 = 3 stages x 3 blocks)."""

    def __init__(self, cardinality: int, depth: int, num_classes: int, base_width: int,
                 widen_factor: int = 4) -> None:
        super().__init__()
        self.block_depth = (depth - 2) // 9
        self.stages = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        args = (cardinality, base_width, widen_factor)
        self.stage_1 = self.block("stage_1", self.stages[0], self.stages[1], 1, *args)
        self.stage_2 = self.block("stage_2", self.stages[1], self.stages[2], 2, *args)
        self.stage_3 = self.block("stage_3", self.stages[2], self.stages[3], 2, *args)
        self.classifier = nn.Linear(self.stages[3], num_classes)
        nn.init.kaiming_normal_(self.classifier.weight)
        for key in self.state_dict():
            if key.split(".")[-1] == "weight":
                if "conv" in key:
                    nn.init.kaiming_normal_(self.state_dict()[key], mode="fan_out")
                if "bn" in key:
                    self.state_dict()[key][...] = 1
            elif key.split(".")[-1] == "bias":
                self.state_dict()[key][...] = 0

    def block(self, name: str, in_ch: int, out_ch: int, pool_stride: int,
              *args: int) -> nn.Sequential:
        seq = nn.Sequential()
        for i in range(self.block_depth):
            first = i == 0
            seq.add_module(
                f"{name}_bottleneck_{i}",
                RefBottleneck(in_ch if first else out_ch, out_ch,
                              pool_stride if first else 1, *args),
            )
        return seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        x = F.avg_pool2d(x, 8, 1).view(-1, self.stages[3])
        return self.classifier(x)


def reference_model(arch: str) -> nn.Module:
    m, n = (int(v) for v in arch.rstrip("d").split("x"))
    return RefCifarResNeXt(cardinality=m, depth=29, num_classes=10, base_width=n)


def load_into(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``src``'s weights and buffers into ``dst`` by position (same layer order)."""
    a, b = list(dst.state_dict().items()), list(src.state_dict().values())
    assert len(a) == len(b), (len(a), len(b))
    for (k, t), v in zip(a, b, strict=True):
        assert t.shape == v.shape, (k, t.shape, v.shape)
    dst.load_state_dict({k: v.clone() for (k, _), v in zip(a, b, strict=True)})


# ---- variants --------------------------------------------------------------------------------


def build(variant: str, arch: str, device: torch.device,
          ref: nn.Module) -> tuple[nn.Module, Callable]:
    """(model, step closure) of a variant; all variants start from ``ref``'s weights."""
    flags = set(variant.split("+"))
    if variant == "reference":
        model = reference_model(arch)
    else:
        model = create_model("resnext29", arch=arch, dataset="cifar10")
    load_into(model, ref)
    fmt = torch.channels_last if "cl" in flags else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt).train()
    net = torch.compile(model) if "compile" in flags else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    amp = "bf16" in flags

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if "cl" in flags:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return model, step


def grads_of(variant: str, arch: str, device: torch.device, ref: nn.Module, x: torch.Tensor,
             y: torch.Tensor,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient (all parameters as one vector) of one forward/backward of ``variant``
    on ``ref``'s weights and the batch ``(x, y)``."""
    flags = set(variant.split("+"))
    model = reference_model(arch) if variant == "reference" else create_model(
        "resnext29", arch=arch, dataset="cifar10")
    load_into(model, ref)
    fmt = torch.channels_last if "cl" in flags else torch.contiguous_format
    model = model.to(device=device, dtype=dtype, memory_format=fmt)
    net = torch.compile(model) if "compile" in flags else model
    xi = x.to(dtype).contiguous(memory_format=fmt)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in flags):
        loss = F.cross_entropy(net(xi), y)
    loss.backward()
    g = torch.cat([p.grad.double().flatten() for p in model.parameters()])
    return loss.detach().double(), g


def rel_errs(truth: tuple[torch.Tensor, torch.Tensor],
             got: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Relative error of the loss and of the gradient vector against ``truth``."""
    return ((got[0] - truth[0]).abs() / truth[0].abs()).item(), (
        (got[1] - truth[1]).norm() / truth[1].norm()).item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable, x: torch.Tensor, y: torch.Tensor, iters: int,
               device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(x, y)
    sync(device)
    return x.shape[0] * iters / (time.perf_counter() - t0)


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best fp32 GEMM FLOP/s (n x n x n) on ``device``: the practical roofline of a step."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = math.inf
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def bench_model(args: argparse.Namespace, arch: str, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    ref = reference_model(arch)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    variants = ["reference", *[v for v in args.variants.split(",") if v and v != "reference"]]
    flops = train_flops_per_image("resnext29", arch, "cifar10")
    rows: dict[str, dict] = {}
    steps: dict[str, Callable] = {}
    # Math check: every variant's loss and gradient against the fp64 reference on 8 images;
    # the fp32 reference's own error is the floor (this init is ill-conditioned: ~4e-3).
    truth = None
    if not args.no_check and device.type == "cpu":
        truth = grads_of("reference", arch, device, ref, x[:8], y[:8], torch.float64)
    for v in variants:
        err = (math.nan, math.nan) if truth is None else rel_errs(
            truth, grads_of(v, arch, device, ref, x[:8], y[:8]))
        _, step = build(v, arch, device, ref)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step(x, y)
        sync(device)
        rows[v] = {"arch": arch, "variant": v, "loss_rel_err": err[0], "grad_rel_err": err[1],
                   "warmup_s": time.perf_counter() - t0, "img_s": []}
        steps[v] = step
        print(f"  {arch} {v}: warm-up {rows[v]['warmup_s']:.1f}s, "
              f"vs fp64: loss rel err {err[0]:.1e}, grad rel err {err[1]:.1e}", flush=True)
    for r in range(args.rounds):
        for v in variants:
            rows[v]["img_s"].append(time_steps(steps[v], x, y, args.iters, device))
        print(f"  round {r + 1}: " + ", ".join(f"{v} {rows[v]['img_s'][-1]:.2f}" for v in variants),
              flush=True)
    ref_ips = rows["reference"]["img_s"]
    peak = peak_flops(device, amp=True)
    out = []
    for v in variants:
        ips = rows[v]["img_s"]
        ratios = [a / b for a, b in zip(ips, ref_ips, strict=True)]
        row = dict(rows[v], img_s_median=statistics.median(ips), img_s_best=max(ips),
                   ratio_median=statistics.median(ratios), train_gflop_per_img=flops / 1e9,
                   tflops=statistics.median(ips) * flops / 1e12)
        if peak and device.type == "cuda":
            row["mfu_bf16_peak"] = row["tflops"] * 1e12 / peak
        row["frac_of_fp32_gemm"] = row["tflops"] * 1e12 / args.gemm_flops
        out.append(row)
    return out


# ---- grouped-convolution formulations --------------------------------------------------------


def gconv_native(x: torch.Tensor, w: torch.Tensor, g: int, s: int) -> torch.Tensor:
    return F.conv2d(x, w, stride=s, padding=1, groups=g)


def gconv_padded(x: torch.Tensor, w: torch.Tensor, g: int, s: int, mult: int = 8) -> torch.Tensor:
    """Each group's channels zero-padded to a multiple of ``mult`` (same result, more FLOPs)."""
    b, c, h, wd = x.shape
    ci, co = c // g, w.shape[0] // g
    cp, op = -(-ci // mult) * mult, -(-co // mult) * mult
    xp = F.pad(x.view(b, g, ci, h, wd), (0, 0, 0, 0, 0, cp - ci)).view(b, g * cp, h, wd)
    wp = F.pad(w.view(g, co, ci, 3, 3), (0, 0, 0, 0, 0, cp - ci, 0, op - co)).view(g * op, cp, 3, 3)
    cl = x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    y = F.conv2d(xp.contiguous(memory_format=fmt), wp.contiguous(memory_format=fmt), stride=s,
                 padding=1, groups=g)
    return y.view(b, g, op, *y.shape[2:])[:, :, :co].reshape(b, g * co, *y.shape[2:])


def gconv_unfold_bmm(x: torch.Tensor, w: torch.Tensor, g: int, s: int) -> torch.Tensor:
    b, c, h, _ = x.shape
    ci, co = c // g, w.shape[0] // g
    cols = F.unfold(x, 3, padding=1, stride=s)  # (b, c*9, L)
    ho = (h - 1) // s + 1
    cols = cols.view(b, g, ci * 9, ho * ho)
    y = torch.einsum("bgkl,gok->bgol", cols, w.view(g, co, ci * 9))
    return y.reshape(b, g * co, ho, ho)


def gconv_shift_bmm(x: torch.Tensor, w: torch.Tensor, g: int, s: int) -> torch.Tensor:
    """channels_last: 9 shifted views, each a grouped 1x1 conv = one bmm over groups."""
    b, c, h, _ = x.shape
    ci, co = c // g, w.shape[0] // g
    xp = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (b, h+2, w+2, c)
    ho = (h - 1) // s + 1
    wt = w.view(g, co, ci, 9)
    y = None
    for k in range(9):
        i, j = divmod(k, 3)
        xs = xp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (ho - 1) + 1 : s, :]
        t = torch.bmm(xs.reshape(-1, g, ci).transpose(0, 1), wt[..., k].transpose(1, 2))
        y = t if y is None else y + t
    return y.transpose(0, 1).reshape(b, ho, ho, g * co).permute(0, 3, 1, 2)


def bench_grouped(args: argparse.Namespace, device: torch.device) -> list[dict]:
    b = args.batch
    compiled = torch.compile(gconv_native, dynamic=False)
    forms: dict[str, tuple[Callable, bool]] = {
        "native NCHW (reference)": (gconv_native, False),
        "native channels_last": (gconv_native, True),
        "padded groups x8, channels_last": (gconv_padded, True),
        "unfold + bmm": (gconv_unfold_bmm, False),
        "9 shifts x bmm, channels_last": (gconv_shift_bmm, True),
        "torch.compile native, channels_last": (compiled, True),
    }
    shapes = [(370, 32, 1), (740, 32, 2), (740, 16, 1), (1480, 16, 2), (1480, 8, 1)]  # 37x10d
    counts = {(370, 32, 1): 3, (740, 32, 2): 1, (740, 16, 1): 2, (1480, 16, 2): 1, (1480, 8, 1): 2}
    g = 37
    rows = []
    totals = {name: 0.0 for name in forms}
    for d, hw, s in shapes:
        torch.manual_seed(0)
        x0 = torch.randn(b, d, hw, hw, device=device)
        w0 = torch.randn(d, d // g, 3, 3, device=device) * 0.1
        y_ref = gy_ref = None
        for name, (fn, cl) in forms.items():
            fmt = torch.channels_last if cl else torch.contiguous_format
            x = x0.clone(memory_format=fmt).requires_grad_()
            w = w0.clone(memory_format=fmt).requires_grad_()
            y = fn(x, w, g, s)
            gy = torch.ones_like(y)
            y.backward(gy)
            if y_ref is None:
                y_ref, gy_ref = y.detach(), (x.grad.clone(), w.grad.clone())
            err = max(((y.detach() - y_ref).norm() / y_ref.norm()).item(),
                      ((x.grad - gy_ref[0]).norm() / gy_ref[0].norm()).item(),
                      ((w.grad - gy_ref[1]).norm() / gy_ref[1].norm()).item())
            ts = []
            for _ in range(args.rounds):
                sync(device)
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    x.grad = w.grad = None
                    fn(x, w, g, s).backward(gy)
                sync(device)
                ts.append((time.perf_counter() - t0) / args.iters * 1e3)
            ms = statistics.median(ts)
            totals[name] += ms * counts[(d, hw, s)]
            rows.append({"shape": f"{d}ch {hw}x{hw}/{s}", "form": name, "ms": ms, "rel_err": err})
            print(f"  grouped {d}ch {hw}x{hw} stride {s}: {name}: {ms:.1f} ms (rel err {err:.0e})",
                  flush=True)
    for name, t in totals.items():
        rows.append({"shape": "all 9 grouped convs of 37x10d", "form": name, "ms": t,
                     "rel_err": None})
    return rows


# ---- main -------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="37x10d,1x128d")
    p.add_argument("--variants", default="ours,cl,cl+compile,bf16+cl")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=2, help="steps per timing")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--grouped", action="store_true", help="also the grouped-conv micro-benchmark")
    p.add_argument("--only-grouped", action="store_true")
    p.add_argument("--no-check", action="store_true", help="skip the loss/gradient comparison")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    load0 = os.getloadavg()
    print(f"# torch {torch.__version__}, {machine}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, load average {load0[0]:.1f}", flush=True)
    results: dict = {"machine": machine, "threads": torch.get_num_threads(), "batch": args.batch,
                     "torch": torch.__version__, "load_start": load0[0]}
    args.gemm_flops = matmul_peak(device)
    results["fp32_gemm_tflops"] = args.gemm_flops / 1e12
    print(f"# fp32 GEMM 2048^3: {args.gemm_flops / 1e9:.0f} GFLOP/s", flush=True)
    if not args.only_grouped:
        rows = []
        for arch in args.archs.split(","):
            rows += bench_model(args, arch, device)
        results["steps"] = rows
        print("\n| model | variant | img/s (median) | best | x reference | TFLOP/s | "
              "of fp32 GEMM | loss / grad rel err vs fp64 |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            mfu = f", MFU {100 * r['mfu_bf16_peak']:.1f}%" if "mfu_bf16_peak" in r else ""
            print(f"| {r['arch']} | {r['variant']} | {r['img_s_median']:.2f} | "
                  f"{r['img_s_best']:.2f} | "
                  f"{r['ratio_median']:.2f} | {r['tflops']:.3f}{mfu} | "
                  f"{100 * r['frac_of_fp32_gemm']:.0f}% | "
                  + ("not checked |" if math.isnan(r["loss_rel_err"]) else
                     f"{r['loss_rel_err']:.0e} / {r['grad_rel_err']:.0e} |"))
    if args.grouped or args.only_grouped:
        rows = bench_grouped(args, device)
        results["grouped"] = rows
        print("\n| 3x3 grouped conv of 37x10d, fwd+bwd | formulation | ms | rel err |")
        print("|---|---|---|---|")
        for r in rows:
            err = "" if r["rel_err"] is None else f"{r['rel_err']:.0e}"
            print(f"| {r['shape']} | {r['form']} | {r['ms']:.1f} | {err} |")
    results["load_end"] = os.getloadavg()[0]
    print(f"# load average at the end: {results['load_end']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
