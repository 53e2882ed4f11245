"""Theorem 1 experiment (appendix Figure 3; SPEC section 8): how far the NTK moves in training.

A depth-``L`` fully connected collegial ensemble (:class:`~collegial.models.CollegialMLP`, NTK
parameterization, tanh by default because Theorem 1 assumes an analytic activation; ReLU as an
option) is trained by gradient descent with the L2 loss

    L(theta) = 1/(2 B) * sum_{i in batch} || F(x_i; theta) - y_i ||^2      (y_i one-hot, 10 classes)

on a fixed subset of MNIST (full batch by default). One off-diagonal NTK entry
``K(x_a, x_b) = sum_k <dF_k(x_a)/dtheta, dF_k(x_b)/dtheta>`` (traced over the 10 outputs, all
trainable parameters, :func:`collegial.ntk.empirical_ntk`) is recorded at initialization and at
every time in ``steps``; ``x_a, x_b`` are the training images ``pair`` of the subset.

Panels, for each ``d`` in ``config.d``:

* (a) a single model, ``m = 1``, ``n = d^2``;
* (b) an ensemble with ``m = n = d`` (the same ``m n`` as (a));
* (c) an ensemble of width ``n = width_c`` (100) and ``m = round(params(a) / params(one path))``
  (only where one such path fits (a)'s parameter count, i.e. ``m >= 1``).

Theorem 1: ``K_t - K_0 = O_p(1/(m n))`` at any fixed ``t``, so log|dK| against log(m n) has slope
about -1 for (a) and (b), (b) tracks (a), and (c) (larger ``m n`` at equal parameters) lies below
(a). Narrow nets trained long leave that regime (their kernels move by tens of percent and the
slope flattens), so the report gives the slope at every recorded time and the relative change
``|K_t - K_0| / |K_0|`` of the widest nets.

Efficiency: the ``seeds`` models of one (panel, d) are one :class:`CollegialMLP` with
``seeds * m`` paths; the output is regrouped per model, ``F_s = (1/sqrt(m)) sum_{j in s} path_j``,
and the loss is the sum of the per-model losses. The models' parameters are disjoint, so the
gradient of that sum with respect to model ``s`` is exactly model ``s``'s own gradient: one
batched forward/backward trains every seed independently (``tests/test_ntk_dynamics.py`` checks
this against separate training).

API: :func:`run_ntk_dynamics` (config -> JSON-able dict), :func:`write_outputs`,
:func:`plot_ntk_dynamics`, :func:`fit_loglog`, :data:`PRESETS`. The command line
(``collegial ntk-dynamics`` and ``collegial reproduce ntk-dynamics``) is
:mod:`collegial.commands.ntk_dynamics`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from collegial.errors import UserError
from collegial.models import CollegialMLP
from collegial.ntk import empirical_ntk
from collegial.stats import mean_se

PANELS = ("a", "b", "c")
PANEL_LABELS = {
    "a": "(a) m = 1, n = d^2",
    "b": "(b) m = n = d",
    "c": "(c) n = {w}, params of (a)",
}
OUTPUT_FILES = ("ntk_dynamics.json", "ntk_dynamics.png")
ACTIVATIONS = ("tanh", "relu")
#: Default learning rate per activation: about 0.6 of the gradient-descent stability limit
#: 2 / lambda_max(Theta / N) at initialization (measured on the default 256 MNIST images:
#: 0.82 for tanh, 0.52 for ReLU, whose NTK is larger). Above the limit training enters the
#: catapult phase, where the kernel moves by O(1) whatever the width.
DEFAULT_LR = {"tanh": 0.5, "relu": 0.3}
#: The stability estimate uses at most this many training images.
STABILITY_IMAGES = 1024


@dataclass(frozen=True)
class NtkDynamicsConfig:
    """Settings of one run. ``steps``: the training times (gradient steps, ascending) at which the
    kernel is recorded; the last one is the horizon. ``batch_size=None``: full-batch gradient
    descent; otherwise SGD on batches of a fresh permutation each epoch. ``dataset``: ``mnist``
    (default), ``fashion-mnist`` or ``synthetic`` (random images, for tests). ``lr=None``:
    :data:`DEFAULT_LR` of the activation (filled in by :meth:`validate`)."""

    d: tuple[int, ...] = (4, 6, 8, 12, 16, 24, 32)
    seeds: int = 6
    steps: tuple[int, ...] = (1, 3, 10, 30, 100)
    lr: float | None = None
    n_images: int = 256
    batch_size: int | None = None
    activation: str = "tanh"
    width_c: int = 100
    depth: int = 4
    seed: int = 0
    dataset: str = "mnist"
    data_dir: str | None = None
    pair: tuple[int, int] = (0, 1)
    fit_min_d: int = 12
    device: str = "cpu"
    progress: bool = False

    @property
    def horizon(self) -> int:
        return self.steps[-1]

    def validate(self) -> NtkDynamicsConfig:
        """Raise :class:`UserError` (one line) for settings that cannot run."""
        if not self.d or any(int(v) < 1 for v in self.d):
            raise UserError("--d must list positive integers")
        if len(set(self.d)) != len(self.d) or list(self.d) != sorted(self.d):
            raise UserError("--d must be strictly increasing")
        if not self.steps or any(int(t) < 1 for t in self.steps) or list(self.steps) != sorted(set(self.steps)):
            raise UserError("--steps must be strictly increasing positive integers")
        if self.seeds < 2:
            raise UserError("--seeds must be >= 2 (error bars need two seeds)")
        if self.n_images < 2:
            raise UserError("--n-images must be >= 2")
        if self.batch_size is not None and not 1 <= self.batch_size <= self.n_images:
            raise UserError(f"--batch-size must be in [1, n_images={self.n_images}]")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"--activation must be one of {', '.join(ACTIVATIONS)}")
        if self.lr is None:
            return dataclasses.replace(self, lr=DEFAULT_LR[self.activation]).validate()
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError("--lr must be a positive number")
        if self.width_c < 1:
            raise UserError("--width-c must be >= 1")
        if self.depth < 2:
            raise UserError("--depth must be >= 2")
        a, b = self.pair
        if a == b or not (0 <= a < self.n_images and 0 <= b < self.n_images):
            raise UserError(f"--pair must be two different image indices below n_images={self.n_images}")
        return self

    @property
    def step_size(self) -> float:
        """The learning rate (explicit, or the activation's default)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.activation]

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["d"], out["steps"], out["pair"] = list(self.d), list(self.steps), list(self.pair)
        del out["progress"]
        return out


#: ``cpu``: the default (about 10 minutes on 2 cores); ``paper``: SPEC section 8 taken literally
#: (T = 100 epochs of SGD on the full 60k MNIST training set, batch 128; GPU-sized);
#: ``tiny``: seconds, for tests and smoke runs (synthetic-sized; any dataset).
PRESETS: dict[str, NtkDynamicsConfig] = {
    "cpu": NtkDynamicsConfig(),
    "paper": NtkDynamicsConfig(
        seeds=10,
        n_images=60000,
        batch_size=128,
        steps=(1, 10, 100, 1000, 10000, 46800),  # 100 epochs of 468 full batches of 128
    ),
    "tiny": NtkDynamicsConfig(d=(2, 3, 4), seeds=2, steps=(1, 2, 4), n_images=32, width_c=5),
}


# --------------------------------------------------------------------------------------------
# Points of the figure


@dataclass(frozen=True)
class Point:
    """One model size: panel ``a``/``b``/``c`` at ``d``, ``m`` paths of width ``n``."""

    panel: str
    d: int
    m: int
    n: int
    params: int

    @property
    def mn(self) -> int:
        return self.m * self.n


def path_params(n: int, *, in_features: int, out_features: int, depth: int) -> int:
    """Trainable parameters (weights and biases) of one path of width ``n``."""
    return in_features * n + n + (depth - 2) * (n * n + n) + n * out_features + out_features


def panel_points(cfg: NtkDynamicsConfig, *, in_features: int = 784, out_features: int = 10) -> list[Point]:
    """The (a), (b), (c) points of ``cfg`` in panel order, then ``d`` order."""

    def pp(n: int) -> int:
        return path_params(n, in_features=in_features, out_features=out_features, depth=cfg.depth)

    pts: dict[str, list[Point]] = {p: [] for p in PANELS}
    for d in cfg.d:
        pa = pp(d * d)
        pts["a"].append(Point("a", d, 1, d * d, pa))
        pts["b"].append(Point("b", d, d, d, d * pp(d)))
        one = pp(cfg.width_c)
        if pa >= one:  # at least one path of width_c fits (a)'s budget
            mc = max(1, round(pa / one))
            pts["c"].append(Point("c", d, mc, cfg.width_c, mc * one))
    return pts["a"] + pts["b"] + pts["c"]


# --------------------------------------------------------------------------------------------
# Data


def load_subset(cfg: NtkDynamicsConfig) -> tuple[Tensor, Tensor, list[int]]:
    """The first ``n_images`` training images, normalized and flattened ``(N, C*H*W)`` float32,
    one-hot targets ``(N, classes)`` float32, and their integer labels."""
    from collegial.train.data import load_dataset, synthetic_dataset

    if cfg.dataset == "synthetic":
        data = synthetic_dataset(channels=1, resolution=28, num_train=cfg.n_images, num_test=2, seed=cfg.seed)
    else:
        data = load_dataset(cfg.dataset, cfg.data_dir, train_limit=cfg.n_images, test_limit=1)
    if data.num_train < cfg.n_images:
        raise UserError(f"{cfg.dataset} has only {data.num_train} training images; lower --n-images")
    x = ((data.train_x.float() / 255.0 - data.mean) / data.std).flatten(1)
    y = torch.nn.functional.one_hot(data.train_y, data.num_classes).float()
    return x.contiguous(), y, data.train_y.tolist()


# --------------------------------------------------------------------------------------------
# Models, kernels, training


def _point_seed(cfg: NtkDynamicsConfig, p: Point) -> int:
    return zlib.crc32(f"ntk_dynamics:{cfg.seed}:{p.panel}:{p.d}:{p.m}:{p.n}".encode())


def build_stack(p: Point, seeds: int, cfg: NtkDynamicsConfig, in_features: int, out_features: int,
                *, seed: int) -> CollegialMLP:
    """``seeds`` independent models of point ``p`` as one CollegialMLP of ``seeds * m`` paths
    (model ``s`` owns paths ``s*m .. s*m + m - 1``). The global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CollegialMLP(in_features, out_features, seeds * p.m, p.n, depth=cfg.depth,
                             activation=cfg.activation,  # type: ignore[arg-type]
                             parameterization="ntk")
    return model


def stack_outputs(model: CollegialMLP, x: Tensor, seeds: int) -> Tensor:
    """Per-model outputs ``(B, seeds, out)``: ``F_s = (1/sqrt(m)) * sum of model s's paths``."""
    paths = model.paths(x)  # (B, seeds*m, out)
    b, sm, k = paths.shape
    m = sm // seeds
    return paths.view(b, seeds, m, k).sum(2) / math.sqrt(m)


def stack_loss(model: CollegialMLP, x: Tensor, y: Tensor, seeds: int) -> Tensor:
    """Per-model L2 losses ``(seeds,)``: ``1/(2B) sum_i ||F_s(x_i) - y_i||^2``."""
    f = stack_outputs(model, x, seeds)
    return 0.5 * (f - y.unsqueeze(1)).square().sum(dim=(0, 2)) / x.shape[0]


def extract_model(stack: CollegialMLP, seeds: int, s: int, activation: str, *,
                  dtype: torch.dtype = torch.float64) -> CollegialMLP:
    """Model ``s`` of a stack built with ``activation`` as its own CollegialMLP (a copy, in ``dtype``)."""
    m = stack.m // seeds
    act = activation
    with torch.device("meta"):  # no random init (nor use of the global RNG): every tensor is copied below
        one = CollegialMLP(stack.in_features, stack.out_features, m, stack.n, depth=stack.depth,
                           activation=act,  # type: ignore[arg-type]
                           bias=stack.layers[0].bias is not None,
                           parameterization=stack.layers[0].parameterization)
    one = one.to_empty(device=stack.layers[0].weight.device).to(dtype)
    with torch.no_grad():
        for src, dst in zip(stack.layers, one.layers):
            dst.weight.copy_(src.weight[s * m:(s + 1) * m])
            if dst.bias is not None:
                dst.bias.copy_(src.bias[s * m:(s + 1) * m])
    return one


def stack_kernels(stack: CollegialMLP, seeds: int, xa: Tensor, xb: Tensor, activation: str) -> np.ndarray:
    """``K_s(x_a, x_b)`` for every model of the stack, ``(seeds,)`` float64, traced over outputs.

    Each model is copied to float64 first, so ``K_t - K_0`` is exact up to float64 rounding of the
    (float32) parameters' kernel even when it is 1e-4 of ``K``. ``xa``, ``xb``: ``(1, features)``.
    """
    xa64, xb64 = xa.double(), xb.double()
    out = np.empty(seeds)
    for s in range(seeds):
        model = extract_model(stack, seeds, s, activation)
        out[s] = float(empirical_ntk(model, xa64, xb64, trace=True).reshape(()))
    return out


def ntk_lambda_max(model: CollegialMLP, x: Tensor, outputs: int) -> float:
    """Top eigenvalue of ``Theta / N`` at the model's current parameters, where ``Theta`` is
    the ``(N, N)`` NTK Gram matrix of ``x`` ``(N, features)`` averaged over the ``outputs``
    (the per-output kernel of the linearized dynamics). Full-batch gradient descent on the L2
    loss is stable (no catapult) while ``lr * lambda_max / 2 < 1``."""
    gram = empirical_ntk(model, x, trace=True).double() / outputs
    return float(torch.linalg.eigvalsh(gram / x.shape[0])[-1])


def train_point(p: Point, cfg: NtkDynamicsConfig, x: Tensor, y: Tensor, bar: Any = None) -> dict[str, Any]:
    """Train ``cfg.seeds`` models of point ``p``; record the kernel and the loss at each time.

    Returns ``{"K0": (seeds,), "K": [(seeds,) per time], "loss0": (seeds,), "loss": [(seeds,) per
    time]}`` (lists; the times are ``cfg.steps``, in order; each loss a full-data L2 loss,
    ``loss0`` at initialization), and ``lambda_max0`` (:func:`ntk_lambda_max` of seed 0 at
    initialization, on at most ``STABILITY_IMAGES`` images).
    """
    dev = torch.device(cfg.device)
    x, y = x.to(dev), y.to(dev)
    xa, xb = x[cfg.pair[0]:cfg.pair[0] + 1], x[cfg.pair[1]:cfg.pair[1] + 1]
    stack = build_stack(p, cfg.seeds, cfg, x.shape[1], y.shape[1], seed=_point_seed(cfg, p)).to(dev)
    params = list(stack.parameters())
    gen = torch.Generator().manual_seed(_point_seed(cfg, p) ^ 0x5EED)
    n, bs = x.shape[0], cfg.batch_size

    def full_loss() -> list[float]:
        with torch.no_grad():  # in chunks of rows: the paper preset holds 60k images
            total = torch.zeros(cfg.seeds, dtype=torch.float64, device=dev)
            for i in range(0, n, 4096):
                total += stack_loss(stack, x[i:i + 4096], y[i:i + 4096], cfg.seeds).double() * len(x[i:i + 4096])
            return (total / n).tolist()

    rec: dict[str, Any] = {"K0": stack_kernels(stack, cfg.seeds, xa, xb, cfg.activation).tolist(), "K": [],
                           "loss0": full_loss(), "loss": [],
                           "lambda_max0": ntk_lambda_max(extract_model(stack, cfg.seeds, 0, cfg.activation, dtype=x.dtype),
                                                         x[:STABILITY_IMAGES], y.shape[1])}
    wanted = set(cfg.steps)
    perm, pos = None, n
    for t in range(1, cfg.horizon + 1):
        if bs is None:
            xb_, yb_ = x, y
        else:
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen).to(dev), 0
            idx = perm[pos:pos + bs]  # type: ignore[index]
            pos += bs
            xb_, yb_ = x[idx], y[idx]
        loss = stack_loss(stack, xb_, yb_, cfg.seeds).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain gradient descent: theta <- theta - lr * grad
            for q, g in zip(params, grads):
                q.add_(g, alpha=-cfg.step_size)
        if t in wanted:
            losses = full_loss()
            if not all(math.isfinite(v) for v in losses):
                raise UserError(f"training diverged by step {t} for panel ({p.panel}) d={p.d} "
                                f"(m={p.m}, n={p.n}); lower --lr")
            rec["loss"].append(losses)
            rec["K"].append(stack_kernels(stack, cfg.seeds, xa, xb, cfg.activation).tolist())
        if bar is not None:
            bar.update(1)
    return rec


# --------------------------------------------------------------------------------------------
# Statistics


def fit_loglog(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Ordinary least squares of ``log y = intercept + slope * log x`` (natural logs), by
    :func:`scipy.stats.linregress`.

    Returns ``slope``, ``se`` (its standard error from the residuals; None with fewer than 3
    points), ``intercept`` and ``points``. Non-positive ``y`` are dropped.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    keep = (xs > 0) & (ys > 0) & np.isfinite(ys)
    lx, ly = np.log(xs[keep]), np.log(ys[keep])
    k = int(lx.size)
    if k < 2 or np.ptp(lx) == 0:
        return {"slope": None, "se": None, "intercept": None, "points": k}
    from scipy.stats import linregress

    fit = linregress(lx, ly)
    se = float(fit.stderr) if k >= 3 else None
    return {"slope": float(fit.slope), "se": se, "intercept": float(fit.intercept), "points": k}


def summarize(points: list[dict[str, Any]], cfg: NtkDynamicsConfig) -> dict[str, Any]:
    """Slopes per time and panel, (c) against (a) and the widest nets' relative change; every
    per-time list is in the order of ``cfg.steps`` (index ``-1``: the horizon)."""
    steps = range(len(cfg.steps))

    def by_panel(panel: str, min_d: int = 0) -> list[dict[str, Any]]:
        return [q for q in points if q["panel"] == panel and q["d"] >= min_d]

    def slopes_at(i: int, min_d: int) -> dict[str, Any]:
        return {panel: fit_loglog([q["mn"] for q in by_panel(panel, min_d)],
                                  [q["abs_dK_mean"][i] for q in by_panel(panel, min_d)]) for panel in PANELS}

    slopes = [slopes_at(i, 0) for i in steps]
    h = -1
    out: dict[str, Any] = {
        "slopes": slopes,
        "slopes_wide": {"min_d": cfg.fit_min_d, "by_time": [slopes_at(i, cfg.fit_min_d) for i in steps]},
        "slope_a": {"time": cfg.horizon, **{k: slopes[h]["a"][k] for k in ("slope", "se", "points")}},
        "slope_b": {"time": cfg.horizon, **{k: slopes[h]["b"][k] for k in ("slope", "se", "points")}},
    }
    # (c) against (a) at the largest d that has a (c) point
    cs = by_panel("c")
    if cs:
        dmax = max(q["d"] for q in cs)
        qa = next(q for q in points if q["panel"] == "a" and q["d"] == dmax)
        qc = next(q for q in cs if q["d"] == dmax)
        per_time = []
        for i in steps:
            a_m, a_se = qa["abs_dK_mean"][i], qa["abs_dK_se"][i]
            c_m, c_se = qc["abs_dK_mean"][i], qc["abs_dK_se"][i]
            z = (a_m - c_m) / math.hypot(a_se, c_se) if math.hypot(a_se, c_se) > 0 else None
            per_time.append({"below": bool(c_m < a_m), "abs_dK_a": a_m, "abs_dK_c": c_m,
                             "ratio_c_over_a": c_m / a_m if a_m > 0 else None, "z": z})
        out["c_below_a"] = {"d": dmax, "m_c": qc["m"], "n_c": qc["n"], "params_a": qa["params"],
                            "params_c": qc["params"], "time": cfg.horizon, **per_time[h], "by_time": per_time}
    else:
        out["c_below_a"] = None
    widest = {}
    for panel in PANELS:
        qs = by_panel(panel)
        if qs:
            q = max(qs, key=lambda r: r["mn"])
            widest[panel] = {"d": q["d"], "m": q["m"], "n": q["n"], "rel_dK_mean": q["rel_dK_mean"],
                             "rel_dK_max": q["rel_dK_max"]}
    narrowest = min((q for q in points), key=lambda r: r["mn"])
    wa = max(by_panel("a"), key=lambda r: r["mn"])
    out["lazy"] = {
        "widest": widest,
        "max_rel_dK_widest_at_horizon": max(w["rel_dK_max"][h] for w in widest.values()),
        "narrowest": {"panel": narrowest["panel"], "d": narrowest["d"], "m": narrowest["m"],
                      "n": narrowest["n"], "rel_dK_mean": narrowest["rel_dK_mean"]},
        "widest_loss": {"panel": "a", "init": float(np.mean(wa["loss0"])),
                        "horizon": float(np.mean(wa["loss"][h]))},
    }
    worst = max(points, key=lambda r: r["lr_lambda_over_2"])
    out["stability"] = {
        "lr": cfg.step_size,
        "max_lr_lambda_over_2": worst["lr_lambda_over_2"],
        "worst": {"panel": worst["panel"], "d": worst["d"], "m": worst["m"], "n": worst["n"],
                  "lambda_max0": worst["lambda_max0"]},
        "points_over_limit": [f"({q['panel']}) d={q['d']}" for q in points if q["lr_lambda_over_2"] >= 1],
        "note": "lr * lambda_max(Theta/N) / 2 at initialization, seed 0 of each point; >= 1 means full-batch "
                "GD is unstable in the top mode (catapult phase: the kernel moves by O(1) at any width)",
    }
    return out


# --------------------------------------------------------------------------------------------
# The experiment


def run_ntk_dynamics(config: NtkDynamicsConfig | None = None) -> dict[str, Any]:
    """Run the experiment; return the JSON-able result (see docs/ntk_dynamics.md for its keys).

    Raises :class:`UserError` for bad settings, missing data or a diverging run.
    """
    cfg = (config or NtkDynamicsConfig()).validate()
    t0, c0 = time.perf_counter(), time.process_time()
    x, y, labels = load_subset(cfg)
    pts = panel_points(cfg, in_features=x.shape[1], out_features=y.shape[1])
    from tqdm import tqdm

    bar = tqdm(total=len(pts) * cfg.horizon, desc="ntk-dynamics", unit="step", file=sys.stderr,
               disable=not (cfg.progress and sys.stderr.isatty()), dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    try:
        for p in pts:
            bar.set_postfix_str(f"({p.panel}) d={p.d} m={p.m} n={p.n}")
            rec = train_point(p, cfg, x, y, bar)
            k0 = np.asarray(rec["K0"])
            dks = [np.asarray(k) - k0 for k in rec["K"]]  # one per recorded time, in cfg.steps order
            rels = [np.abs(dk) / np.abs(k0) for dk in dks]
            abs_stats, rel_stats = [mean_se(np.abs(dk)) for dk in dks], [mean_se(r) for r in rels]
            rows.append({"panel": p.panel, "d": p.d, "m": p.m, "n": p.n, "mn": p.mn, "params": p.params,
                         "K0": rec["K0"], "dK": [dk.tolist() for dk in dks],
                         "abs_dK_mean": [m for m, _ in abs_stats], "abs_dK_se": [se for _, se in abs_stats],
                         "rel_dK_mean": [m for m, _ in rel_stats], "rel_dK_se": [se for _, se in rel_stats],
                         "rel_dK_max": [float(r.max()) for r in rels], "loss0": rec["loss0"], "loss": rec["loss"],
                         "lambda_max0": rec["lambda_max0"], "lr_lambda_over_2": cfg.step_size * rec["lambda_max0"] / 2})
    finally:
        bar.close()
    result: dict[str, Any] = {
        "experiment": "ntk_dynamics",
        "config": cfg.as_dict(),
        "horizon": cfg.horizon,
        "times": list(cfg.steps),
        "pair": {"index_a": cfg.pair[0], "index_b": cfg.pair[1],
                 "label_a": labels[cfg.pair[0]], "label_b": labels[cfg.pair[1]]},
        "loss_definition": "1/(2B) sum_i ||F(x_i) - onehot(y_i)||^2, gradient descent with lr",
        "kernel_definition": "K(x_a, x_b) = sum over the outputs of <dF/dtheta(x_a), dF/dtheta(x_b)>, "
                             "all parameters",
        "points": rows,
    }
    result.update(summarize(rows, cfg))
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result["cpu_s"] = round(time.process_time() - c0, 1)  # all threads of this process
    result["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "cpus": os.cpu_count(), "device": cfg.device, "platform": platform.platform()}
    return result


# --------------------------------------------------------------------------------------------
# Outputs
