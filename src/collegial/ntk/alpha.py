"""Algorithm 1 (SPEC section 3): Monte Carlo NTK variance of a probe over widths, and its fits.

>>> fit = run_algorithm1()                       # resnext-block, C=256, 8x8, T=2000, 9 widths
>>> fit.alpha, fit.fit2                          # prop1 alpha; {"beta", "p", "alpha"}
>>> v1 = fit.variance_model("empirical")         # n -> V1(n), numpy in / numpy out
>>> se = fit.variance_stderr("prop1")            # n -> standard error of V1(n)
>>> fit.save("runs/alpha")                       # alpha.json (+ alpha.png via plot_alpha)
>>> AlphaFit.from_json("runs/alpha/alpha.json")

Fits of ``v(n)``, the normalized variance of one NTK entry at width ``n`` (m = 1):

* ``prop1``: Proposition 1, ``v(n) = exp(alpha / n) - 1``; alpha by (unweighted) least squares
  on ``log(1 + v) = alpha / n`` (no intercept).
* ``fit2``: ``v(n) = beta * n^-p * exp(alpha / n)``; (log beta, p, alpha) by least squares on
  ``log v = log beta - p log n + alpha / n``, weighted by ``v / se`` (inverse s.e. of ``log v``).
* ``empirical``: the Monte Carlo table, linear interpolation of ``log v`` in ``log n``; outside
  the grid it extrapolates the end segment's power law (``outside="extrapolate"``, default),
  holds the end value (``"clamp"``) or raises ``ValueError`` (``"raise"``).

Standard errors along ``n`` propagate the per-width Monte Carlo standard errors (delta method)
through each fit; for ``empirical`` the relative standard error is interpolated like ``v``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from collegial.errors import UserError
from collegial.ntk.probe import FactoryProbe, MLPProbe, ResNeXtBlockProbe, chunk_seed
from collegial.ntk.variance import Moments, NormalizedVariance, merge_distributed, normalized_variance

DEFAULT_WIDTHS: tuple[int, ...] = (2, 4, 8, 10, 16, 32, 64, 96, 128)
DEFAULT_M_LAW: tuple[int, ...] = (2, 4, 8, 16)
DEFAULT_M_LAW_WIDTH = 8
FAMILIES = ("resnext-block", "mlp")
MAX_WIDTH = 4096

FitKind = Literal["prop1", "fit2", "empirical"]
Outside = Literal["extrapolate", "clamp", "raise"]
ArrayFn = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------- fits


def fit_prop1(
    widths: Sequence[float], v: Sequence[float], se: Sequence[float] | None = None
) -> tuple[float, float]:
    """``alpha`` minimizing ``sum (log(1 + v_i) - alpha / n_i)^2`` and its standard error."""
    x = 1.0 / np.asarray(widths, dtype=float)
    alpha = float(prop1_alpha(widths, np.asarray(v, dtype=float)))
    if se is None:
        return alpha, math.nan
    w = x / (x * x).sum()
    var_y = (np.asarray(se, dtype=float) / (1.0 + np.asarray(v, dtype=float))) ** 2
    return alpha, float(math.sqrt((w * w * var_y).sum()))


def prop1_alpha(widths: Sequence[float] | np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares alpha of ``log(1 + v) = alpha / n`` through the origin, vectorized:
    ``v`` ``(..., W)`` -> ``(...)`` (the search refits bootstrap draws with it)."""
    x = 1.0 / np.asarray(widths, dtype=float)
    return (np.log1p(v) @ x) / (x @ x)


def _fit2_design(n: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(n), -np.log(n), 1.0 / n], axis=1)


def _fit2_weights(v: np.ndarray, se: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """``1 / sd(log v) = v / se`` per width, or None (unweighted) unless every one is finite and
    positive."""
    if se is None:
        return None
    sig = np.asarray(se, dtype=float) / np.asarray(v, dtype=float)
    return None if not np.all(np.isfinite(sig)) or np.any(sig <= 0) else 1.0 / sig


def fit2_theta(
    widths: Sequence[float] | np.ndarray, v: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """``(log beta, p, alpha)`` by (weighted) least squares on ``log v = log beta - p log n +
    alpha / n``, vectorized: ``v`` ``(..., W)`` -> ``(..., 3)``; ``weights`` ``(W,)`` or None."""
    a = _fit2_design(np.asarray(widths, dtype=float))
    w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    return (np.log(v) * w) @ np.linalg.pinv(a * w[:, None]).T


def fit_fit2(
    widths: Sequence[float], v: Sequence[float], se: Sequence[float] | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """``{"beta", "p", "alpha"}`` of ``v = beta n^-p exp(alpha/n)`` and the covariance of
    ``(log beta, p, alpha)``.

    Least squares on ``log v = log beta - p log n + alpha / n``, weighted by ``v / se`` (the
    inverse standard error of ``log v``) when standard errors are given and positive, else
    unweighted (covariance NaN)."""
    n = np.asarray(widths, dtype=float)
    vv = np.asarray(v, dtype=float)
    if len(n) < 3:
        raise UserError("fit2 needs at least 3 widths")
    if np.any(vv <= 0):
        raise UserError("fit2 needs positive variances at every width")
    w = _fit2_weights(vv, se)
    theta = fit2_theta(n, vv, w)
    if w is None:
        cov = np.full((3, 3), math.nan)
    else:
        wa = _fit2_design(n) * w[:, None]
        cov = np.linalg.pinv(wa.T @ wa)
    return {"beta": float(math.exp(theta[0])), "p": float(theta[1]), "alpha": float(theta[2])}, cov


def _interp_loglog(xn: np.ndarray, xs: np.ndarray, ys: np.ndarray, outside: Outside) -> np.ndarray:
    """Piecewise-linear interpolation of ``ys`` (already in log) over ``log xs``."""
    lx = np.log(xn)
    lxs = np.log(xs)
    if outside == "raise" and (np.any(xn < xs[0]) or np.any(xn > xs[-1])):
        raise ValueError(f"width outside the measured grid [{xs[0]:g}, {xs[-1]:g}]")
    out = np.interp(lx, lxs, ys)
    if outside == "extrapolate" and len(xs) >= 2:
        lo = lx < lxs[0]
        hi = lx > lxs[-1]
        s_lo = (ys[1] - ys[0]) / (lxs[1] - lxs[0])
        s_hi = (ys[-1] - ys[-2]) / (lxs[-1] - lxs[-2])
        out = np.where(lo, ys[0] + s_lo * (lx - lxs[0]), out)
        out = np.where(hi, ys[-1] + s_hi * (lx - lxs[-1]), out)
    return out


# ------------------------------------------------------------------------------ results


@dataclass
class MLawPoint:
    """``V(m, n)`` against the ensemble law ``V(1, n) / m``; ``ratio = V(m, n) m / V(1, n)``."""

    m: int
    n: int
    variance: float
    stderr: float
    ratio: float
    ratio_stderr: float


@dataclass
class AlphaFit:
    """The outcome of Algorithm 1; :meth:`to_json` is the contract the search reads."""

    family: str
    channels: int
    bn: str
    seed: int
    trials: int
    widths: list[int]
    variance: list[float]
    stderr: list[float]
    mean_k: list[float]
    alpha: float
    alpha_stderr: float
    fit2: dict[str, float]
    fit2_cov: list[list[float]]
    m_law: list[MLawPoint] = field(default_factory=list)
    spatial: int = 8
    parameterization: str = "standard"
    engine: str = ""
    seconds: float = 0.0
    world_size: int = 1
    job_seconds: list[dict[str, float]] = field(default_factory=list)

    # ---- serialization
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["m_law"] = [asdict(p) for p in self.m_law]
        return d

    def to_json(self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> str:
        """The JSON text; also written to ``path`` when given (never overwriting silently:
        an existing file raises :class:`UserError` unless ``overwrite``)."""
        text = json.dumps(_finite(self.to_dict()), indent=2, sort_keys=False)
        if path is not None:
            p = Path(path)
            if p.exists() and not overwrite:
                raise UserError(f"{p} exists; refusing to overwrite (use --force)")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlphaFit:
        d = dict(d)
        try:
            d["m_law"] = [MLawPoint(**p) for p in d.get("m_law", [])]
            d["fit2"] = {k: float(d["fit2"][k]) for k in ("beta", "p", "alpha")}
            d.setdefault("fit2_cov", [[math.nan] * 3] * 3)
            d.setdefault("mean_k", [math.nan] * len(d["widths"]))
            d.setdefault("alpha_stderr", math.nan)
            d["fit2_cov"] = [[math.nan if x is None else float(x) for x in row] for row in d["fit2_cov"]]
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"not an alpha fit: {e}") from None

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> AlphaFit:
        """Load from a file path (or from JSON text starting with ``{``)."""
        s = str(path_or_text)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s))
        p = Path(s)
        if p.is_dir():
            p = p / "alpha.json"
        if not p.exists():
            raise UserError(f"no alpha fit at {p}")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"{p} is not valid JSON: {e}") from None

    # ---- models of V1(n)
    def variance_model(self, kind: FitKind = "prop1", *, outside: Outside = "extrapolate") -> ArrayFn:
        """``n -> V1(n)`` (array in, float array out) for ``kind`` in prop1, fit2, empirical."""
        if kind == "prop1":
            alpha = self.alpha
            return lambda n: np.expm1(alpha / np.asarray(n, dtype=float))
        if kind == "fit2":
            b, p, a = self.fit2["beta"], self.fit2["p"], self.fit2["alpha"]
            return lambda n: b * np.asarray(n, dtype=float) ** (-p) * np.exp(a / np.asarray(n, dtype=float))
        if kind == "empirical":
            xs = np.asarray(self.widths, dtype=float)
            ys = np.log(np.asarray(self.variance, dtype=float))
            return lambda n: np.exp(_interp_loglog(np.asarray(n, dtype=float), xs, ys, outside))
        raise UserError(f"unknown variance model {kind!r}; choose prop1, fit2 or empirical")

    def variance_stderr(self, kind: FitKind = "prop1", *, outside: Outside = "extrapolate") -> ArrayFn:
        """``n -> standard error of V1(n)`` under ``kind`` (for the search's near-ties)."""
        if kind == "prop1":
            alpha, sa = self.alpha, self.alpha_stderr
            return lambda n: np.exp(alpha / np.asarray(n, dtype=float)) / np.asarray(n, dtype=float) * sa
        if kind == "fit2":
            cov = np.asarray(self.fit2_cov, dtype=float)
            model = self.variance_model("fit2")

            def se2(n: np.ndarray) -> np.ndarray:
                nn_ = np.atleast_1d(np.asarray(n, dtype=float))
                g = _fit2_design(nn_)
                var_log = np.einsum("ij,jk,ik->i", g, cov, g)
                out = model(nn_) * np.sqrt(np.maximum(var_log, 0.0))
                return out.reshape(np.shape(n))

            return se2
        if kind == "empirical":
            xs = np.asarray(self.widths, dtype=float)
            rel = np.log(np.asarray(self.stderr, dtype=float) / np.asarray(self.variance, dtype=float))
            model = self.variance_model("empirical", outside=outside)
            return lambda n: model(n) * np.exp(_interp_loglog(np.asarray(n, dtype=float), xs, rel, "clamp"))
        raise UserError(f"unknown variance model {kind!r}; choose prop1, fit2 or empirical")

    # ---- output
    def table(self) -> str:
        """Plain-text table: n, v, s.e., prop1 and fit2 values, then fits and the 1/m check."""
        n = np.asarray(self.widths, dtype=float)
        p1 = self.variance_model("prop1")(n)
        f2 = self.variance_model("fit2")(n)
        lines = [f"{'n':>5}  {'v (MC)':>11}  {'s.e.':>10}  {'prop1':>11}  {'fit2':>11}"]
        for i, w in enumerate(self.widths):
            lines.append(
                f"{w:>5}  {self.variance[i]:>11.5g}  {self.stderr[i]:>10.3g}  {p1[i]:>11.5g}  {f2[i]:>11.5g}"
            )
        f = self.fit2
        lines.append(f"prop1: alpha = {self.alpha:.5g} +- {self.alpha_stderr:.2g}   (v = exp(alpha/n) - 1)")
        lines.append(
            f"fit2:  beta = {f['beta']:.5g}, p = {f['p']:.5g}, alpha = {f['alpha']:.5g}   "
            "(v = beta n^-p exp(alpha/n))"
        )
        if self.m_law:
            lines.append("1/m law: ratio = V(m, n) / (V(1, n) / m)")
            for pt in self.m_law:
                lines.append(
                    f"  m={pt.m:<3} n={pt.n:<4} V={pt.variance:.5g} +- {pt.stderr:.2g}   "
                    f"ratio = {pt.ratio:.3f} +- {pt.ratio_stderr:.3f}"
                )
        lines.append(
            f"{self.family}, C={self.channels}, bn={self.bn}, {self.parameterization} parameterization, "
            f"T={self.trials}, seed={self.seed}, "
            f"engine={self.engine}, {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def save(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False, plot: bool = True) -> Path:
        """Write ``alpha.json`` (and ``alpha.png``) into ``out_dir``; returns the JSON path."""
        d = Path(out_dir)
        targets = [d / "alpha.json"] + ([d / "alpha.png"] if plot else [])
        if not overwrite:
            for t in targets:
                if t.exists():
                    raise UserError(f"{t} exists; refusing to overwrite (use --force)")
        d.mkdir(parents=True, exist_ok=True)
        self.to_json(d / "alpha.json", overwrite=True)
        if plot:
            plot_alpha(self, d / "alpha.png")
        return d / "alpha.json"


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def plot_alpha(fit: AlphaFit, path: str | os.PathLike[str]) -> None:
    """Appendix Figure 2: Monte Carlo ``v(n)`` with error bars and the fitted curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.asarray(fit.widths, dtype=float)
    grid = np.geomspace(n.min(), n.max(), 200)
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ax.errorbar(n, fit.variance, yerr=fit.stderr, fmt="o", color="k", ms=4, capsize=3,
                label=f"Monte Carlo (T={fit.trials})")
    ax.plot(grid, fit.variance_model("prop1")(grid), "-", label=f"prop1: exp({fit.alpha:.3g}/n) - 1")
    f = fit.fit2
    ax.plot(grid, fit.variance_model("fit2")(grid), "--",
            label=f"fit2: {f['beta']:.3g} n^-{f['p']:.3g} exp({f['alpha']:.3g}/n)")
    ax.plot(grid, fit.variance_model("empirical")(grid), ":", color="gray", label="log-log interpolation")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("Var[K] / E[K]^2")
    ax.set_title(f"NTK variance, {fit.family} (C={fit.channels}, bn={fit.bn})")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -------------------------------------------------------------------------- Monte Carlo


def _dist() -> tuple[int, int]:
    """(rank, world size); initializes a gloo process group when launched by torchrun."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
            return 0, 1
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def trial_chunks(trials: int, size: int) -> list[tuple[int, int]]:
    """``(c, trials in chunk c)`` for ``trials`` split into chunks of ``size`` (the last one
    shorter); chunk ``c`` of multiplicity m, width n is drawn from ``chunk_seed(seed, m, n, c)``."""
    return [(c, min(size, trials - start)) for c, start in enumerate(range(0, trials, size))]


def m_law_ratio(vm: NormalizedVariance, v1: NormalizedVariance, m: int) -> tuple[float, float]:
    """``V(m, n) / (V(1, n) / m)`` and its standard error, the two estimates independent."""
    ratio = vm.v * m / v1.v
    return ratio, ratio * math.sqrt((vm.stderr / vm.v) ** 2 + (v1.stderr / v1.v) ** 2)


def monte_carlo(
    probe: Any,
    m: int,
    n: int,
    trials: int,
    *,
    seed: int,
    chunk: int | None = None,
    progress: Any = None,
    workers: int | None = None,
) -> Moments:
    """Stream ``trials`` values of ``K`` for multiplicity ``m``, width ``n`` into moments.

    Chunk ``c`` (of ``chunk`` trials, the last one shorter) is drawn from
    ``chunk_seed(seed, m, n, c)`` and computed by rank ``c % world``; ranks' moments are merged.
    Within a process, ``workers`` threads (default: ``torch.get_num_threads()``) each compute
    whole chunks with single-threaded torch ops, instead of every op being split over the
    intra-op thread pool: no synchronization per op, and drawing weights overlaps computing.
    The intra-op thread count is set to 1 meanwhile and restored afterwards. Moments are merged
    in chunk order, so the result does not depend on ``workers``.
    """
    rank, world = _dist()
    size = chunk or probe.chunk_size(m, n)
    mine = [(c, b) for c, b in trial_chunks(trials, size) if c % world == rank]

    def one(job: tuple[int, int]) -> Tensor:
        c, b = job
        k = probe.k_chunk(m, n, b, chunk_seed(seed, m, n, c))
        if not torch.isfinite(k).all():
            raise FloatingPointError(f"non-finite NTK values at m={m}, n={n}")
        return k

    mom = Moments()
    threads = torch.get_num_threads()
    workers = min(len(mine), workers if workers is not None else threads)
    if workers <= 1:
        results: Any = map(one, mine)
        pool = None
    else:
        torch.set_num_threads(1)  # before the pool's threads exist: they inherit it
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collegial-mc")
        results = pool.map(one, mine)
    try:
        for (_, b), k in zip(mine, results):
            mom.update(k)
            if progress is not None:
                progress.update(b * world)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
    return merge_distributed(mom)


def _check_widths(widths: Sequence[int]) -> list[int]:
    try:
        ws = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise UserError(f"widths must be integers, got {widths!r}") from None
    if any(float(w) != float(o) for w, o in zip(ws, widths)):
        raise UserError(f"widths must be integers, got {list(widths)!r}")
    if len(ws) < 3:
        raise UserError("need at least 3 widths to fit (e.g. 2,4,8,16)")
    if len(set(ws)) != len(ws):
        raise UserError(f"duplicate widths in {ws}")
    if min(ws) < 1 or max(ws) > MAX_WIDTH:
        raise UserError(f"widths must lie in [1, {MAX_WIDTH}], got {ws}")
    return sorted(ws)


def make_probe(
    family: str = "resnext-block",
    *,
    channels: int = 256,
    spatial: int = 8,
    bn: str = "none",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    factory: Callable[[int], nn.Module] | None = None,
    input_shape: Sequence[int] | None = None,
    parameterization: str = "standard",
) -> ResNeXtBlockProbe | MLPProbe | FactoryProbe:
    """The probe for a family (``resnext-block``, ``mlp``) or a ``width -> nn.Module`` factory."""
    if bn not in ("none", "train"):
        raise UserError(f"unknown BatchNorm mode {bn!r}; choose none or train")
    if channels < 1 or spatial < 1:
        raise UserError("channels and spatial size must be positive")
    if parameterization not in ("standard", "ntk"):
        raise UserError(f"unknown parameterization {parameterization!r}; choose standard or ntk")
    if factory is not None:
        if parameterization != "standard":
            raise UserError("a width factory defines its own parameterization; leave it 'standard'")
        if input_shape is None:
            raise UserError("a factory needs input_shape (the shape of one input, no batch axis)")
        shape = tuple(input_shape)
        return FactoryProbe(factory, shape, seed=seed, bn=bn, dtype=dtype)  # type: ignore[arg-type]
    if family == "resnext-block":
        return ResNeXtBlockProbe(
            channels, spatial, seed=seed, bn=bn, dtype=dtype,  # type: ignore[arg-type]
            parameterization=parameterization,  # type: ignore[arg-type]
        )
    if family == "mlp":
        if bn != "none":
            raise UserError("--bn train applies to the resnext-block family only (no BatchNorm in the MLP)")
        param = parameterization
        return MLPProbe(channels, seed=seed, dtype=dtype, parameterization=param)  # type: ignore[arg-type]
    raise UserError(f"unknown family {family!r}; choose {' or '.join(FAMILIES)}")


def run_algorithm1(
    *,
    family: str = "resnext-block",
    widths: Sequence[int] = DEFAULT_WIDTHS,
    trials: int = 2000,
    channels: int = 256,
    spatial: int = 8,
    bn: str = "none",
    seed: int = 0,
    m_law: Sequence[int] = DEFAULT_M_LAW,
    m_law_width: int = DEFAULT_M_LAW_WIDTH,
    factory: Callable[[int], nn.Module] | None = None,
    input_shape: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    parameterization: str = "standard",
    progress: bool = False,
) -> AlphaFit:
    """Algorithm 1: ``v(n)`` by Monte Carlo over ``trials`` initializations per width (m = 1),
    the prop1 / fit2 fits, and ``V(m, m_law_width)`` for each ``m`` in ``m_law`` against
    ``V(1, n) / m``. Under ``torchrun`` the trial chunks are sharded over ranks.

    ``parameterization="ntk"`` measures ``K`` with respect to ``W / sigma`` (see
    :class:`~collegial.ntk.probe.ResNeXtBlockProbe`); the default ``"standard"`` is SPEC section 3.
    """
    ws = _check_widths(widths)
    if int(trials) != trials or trials < 2:
        raise UserError(f"need at least 2 trials, got {trials}")
    trials = int(trials)
    probe = make_probe(
        family, channels=channels, spatial=spatial, bn=bn, seed=seed, dtype=dtype,
        factory=factory, input_shape=input_shape, parameterization=parameterization,
    )
    ms = sorted({int(m) for m in m_law}) if factory is None else []
    if any(m < 2 for m in ms):
        raise UserError("m_law multiplicities must be >= 2")
    if ms and m_law_width < 1:
        raise UserError("m_law_width must be >= 1")
    rank, world = _dist()
    jobs = [(1, n) for n in ws] + [(m, m_law_width) for m in ms]
    if ms and m_law_width not in ws:
        jobs.append((1, m_law_width))
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=trials * len(jobs), unit="trial", desc="fit-alpha", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    stats = {}
    job_seconds = []
    try:
        for m, n in jobs:
            if bar is not None:
                bar.set_postfix_str(f"m={m} n={n}")
            tj = time.perf_counter()
            stats[(m, n)] = normalized_variance(monte_carlo(probe, m, n, trials, seed=seed, progress=bar))
            job_seconds.append({"m": m, "n": n, "seconds": time.perf_counter() - tj})
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    v = [stats[(1, n)].v for n in ws]
    se = [stats[(1, n)].stderr for n in ws]
    alpha, alpha_se = fit_prop1(ws, v, se)
    fit2, cov = fit_fit2(ws, v, se)
    points = []
    if ms:
        base = stats[(1, m_law_width)]
        for m in ms:
            s = stats[(m, m_law_width)]
            ratio, rse = m_law_ratio(s, base, m)
            points.append(MLawPoint(m, m_law_width, s.v, s.stderr, ratio, rse))
    return AlphaFit(
        family="factory" if factory is not None else family,
        channels=int(probe.channels),
        bn=bn,
        seed=int(seed),
        trials=trials,
        widths=ws,
        variance=v,
        stderr=se,
        mean_k=[stats[(1, n)].mean for n in ws],
        alpha=alpha,
        alpha_stderr=alpha_se,
        fit2=fit2,
        fit2_cov=cov.tolist(),
        m_law=points,
        spatial=spatial if family == "resnext-block" and factory is None else 0,
        parameterization=parameterization,
        engine=str(probe.engine),
        seconds=seconds,
        world_size=world,
        job_seconds=job_seconds,
    )


def variance_model(
    fit: AlphaFit | str | os.PathLike[str], kind: FitKind = "prop1", *, outside: Outside = "extrapolate"
) -> ArrayFn:
    """``V1(n)`` from an :class:`AlphaFit` or a path to its ``alpha.json``."""
    f = fit if isinstance(fit, AlphaFit) else AlphaFit.from_json(fit)
    return f.variance_model(kind, outside=outside)


def variance_stderr(
    fit: AlphaFit | str | os.PathLike[str], kind: FitKind = "prop1", *, outside: Outside = "extrapolate"
) -> ArrayFn:
    """Standard error of ``V1(n)`` from an :class:`AlphaFit` or a path to its ``alpha.json``."""
    f = fit if isinstance(fit, AlphaFit) else AlphaFit.from_json(fit)
    return f.variance_stderr(kind, outside=outside)
