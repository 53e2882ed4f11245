"""Algorithm 1 (SPEC section 3): Monte Carlo NTK variance of a probe over widths.

>>> fit = run_algorithm1()       # resnext29's block: C=256, 8x8, post-ReLU pairs, T=2000, 22 widths
>>> run_algorithm1(family="mynet")   # a registered family's declared probe block
>>> fit.model().describe()       # the default (auto) model of V1(n); fit.model("prop1"), ...
>>> fit.alpha, fit.fit2          # prop1 alpha; {"beta", "p", "alpha"}
>>> fit.save("runs/alpha")       # alpha.json (+ alpha.png)
>>> AlphaFit.from_json("runs/alpha/alpha.json")

``v(n)`` is averaged over ``pairs`` independent input pairs and readouts
(:class:`~collegial.ntk.inputs.ProbeInputs`), ``trials // pairs`` initializations each; its
standard error includes the spread between pairs
(:func:`~collegial.ntk.variance.pool_estimates`). The table and the ``alpha.json`` schema live
in :mod:`collegial.ntk.curve`, its models (prop1, fit2, smooth, empirical) in
:mod:`collegial.ntk.fits`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from collegial.choices import check_choice
from collegial.distributed import rank_and_world
from collegial.errors import UserError
from collegial.models import get_family
from collegial.models.layers import PARAMETERIZATIONS, Parameterization
from collegial.models.mlp import mlp_probe
from collegial.models.resnext import bottleneck_probe
from collegial.ntk._bn import PROBE_BN_MODES, ProbeBatchNorm
from collegial.ntk.curve import MAX_WIDTH, AlphaFit, MLawPoint
from collegial.ntk.engine import ProbeEngine, check_engines
from collegial.ntk.generic import FactoryProbe
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import CHUNK_BYTES, MLPProbe, ResNeXtBlockProbe, trial_seed
from collegial.ntk.variance import (
    Moments,
    NormalizedVariance,
    merge_distributed,
    normalized_variance,
    pool_estimates,
    pool_pairs,
)

#: Dense where the optima live (every width 2..16), coarser up to 128.
DEFAULT_WIDTHS: tuple[int, ...] = (*range(2, 17), 20, 24, 32, 48, 64, 96, 128)
DEFAULT_TRIALS = 2000
DEFAULT_M_LAW: tuple[int, ...] = (2, 4, 8, 16)
DEFAULT_M_LAW_WIDTH = 8
#: The family whose probe ``run_algorithm1()`` measures by default (the paper's bottleneck).
DEFAULT_FAMILY = "resnext29"

__all__ = ["AlphaFit", "MLawPoint", "run_algorithm1", "monte_carlo", "pair_moments"]


# -------------------------------------------------------------------------- Monte Carlo


def trial_chunks(trials: int, size: int) -> list[tuple[int, int]]:
    """``(c, trials in chunk c)`` for ``trials`` split into chunks of ``size`` (the last one
    shorter); chunk ``c`` of multiplicity m, width n is drawn from ``chunk_seed(seed, m, n, c)``."""
    return [(c, min(size, trials - start)) for c, start in enumerate(range(0, trials, size))]


def m_law_ratio(vm: NormalizedVariance, v1: NormalizedVariance, m: int) -> tuple[float, float]:
    """``V(m, n) / (V(1, n) / m)`` and its standard error, the two estimates independent."""
    if vm.v <= 0 or v1.v <= 0:
        return math.nan, math.nan  # K did not vary (a dead probe at this size): no ratio
    ratio = vm.v * m / v1.v
    return ratio, ratio * math.sqrt((vm.stderr / vm.v) ** 2 + (v1.stderr / v1.v) ** 2)


def pair_moments(
    probes: Sequence[ProbeEngine],
    m: int,
    n: int,
    trials: int,
    *,
    seed: int,
    chunk: int | None = None,
    progress: Any = None,
    workers: int | None = None,
) -> list[Moments]:
    """Stream ``trials`` values of ``K`` per probe (one probe per input pair) for multiplicity
    ``m``, width ``n`` into one :class:`Moments` per probe.

    Chunk ``c`` of probe ``probe.pair`` (of ``chunk`` trials, the last one shorter) is drawn from
    ``trial_seed(seed, m, n, c, pair)``; the chunks of all probes are dealt round-robin to ranks
    and merged. Within a process, ``workers`` threads (default: ``torch.get_num_threads()``) each
    compute whole chunks with single-threaded torch ops, instead of every op being split over the
    intra-op thread pool: no synchronization per op, and drawing weights overlaps computing.
    The intra-op thread count is set to 1 meanwhile and restored afterwards. Moments are merged
    in chunk order, so the result depends on neither ``workers`` nor the world size.
    """
    rank, world = rank_and_world()
    jobs = []
    for i, probe in enumerate(probes):
        size = chunk or probe.chunk_size(m, n)
        jobs += [(i, c, b) for c, b in trial_chunks(trials, size)]
    mine = [j for k, j in enumerate(jobs) if k % world == rank]

    def one(job: tuple[int, int, int]) -> Tensor:
        i, c, b = job
        probe = probes[i]
        k = probe.k_chunk(m, n, b, trial_seed(seed, m, n, c, probe.pair))
        if not torch.isfinite(k).all():
            raise UserError(f"the probe's NTK is not finite at m={m}, n={n} (NaN or Inf in its outputs or "
                            "gradients); check the block's initialization and forward")
        return k

    moms = [Moments() for _ in probes]
    threads = torch.get_num_threads()
    workers = min(len(mine), workers if workers is not None else chunks_in_flight(probes[0], m, n))
    if workers <= 1:
        results: Any = map(one, mine)
        pool = None
    else:
        torch.set_num_threads(1)  # before the pool's threads exist: they inherit it
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="collegial-mc")
        results = pool.map(one, mine)
    try:
        for (i, _, b), k in zip(mine, results):
            moms[i].update(k)
            if progress is not None:
                progress.update(b * world)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)
    return [merge_distributed(mom) for mom in moms]


def monte_carlo(probe: ProbeEngine, m: int, n: int, trials: int, *, seed: int, **kw: Any) -> Moments:
    """:func:`pair_moments` for one probe (its own pair)."""
    return pair_moments([probe], m, n, trials, seed=seed, **kw)[0]


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


#: Which engine measures a probe: the dedicated one of a built-in block, or the generic one.
Engine = Literal["auto", "generic"]
ENGINES: tuple[Engine, ...] = ("auto", "generic")


@dataclass(frozen=True)
class ProbeSpec:
    """What Algorithm 1 measures: ``name`` (a model family, or ``factory``), the block factory
    ``(m, n) -> nn.Module`` and the shape of one input, whether it takes m, and which engine
    runs it (``gram``/``grouped`` for the bottleneck, ``mlp``, else ``generic``)."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    takes_m: bool
    kind: str  # "bottleneck", "mlp" or "generic"


def probe_spec(
    family: str | None = None,
    *,
    probe: Callable[[int, int], nn.Module] | None = None,
    factory: Callable[[int], nn.Module] | None = None,
    input_shape: Sequence[int] | None = None,
    engine: Engine = "auto",
) -> ProbeSpec:
    """The probe of ``family`` (its declared block), or of an explicit ``probe``
    (``(m, n) -> nn.Module``) or width-only ``factory`` (``n -> nn.Module``, m = 1) with
    ``input_shape``. ``engine="generic"`` runs even the built-in blocks on the generic engine."""
    check_choice("engine", engine, ENGINES, "probe engine")
    if probe is not None and factory is not None:
        raise UserError("give either probe (m, n) -> module or factory n -> module, not both")
    if probe is not None or factory is not None:
        if input_shape is None:
            raise UserError("a probe factory needs input_shape (the shape of one input, no batch axis)")
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise UserError(f"input_shape must be positive integers, got {tuple(input_shape)}")
        fn = probe if probe is not None else factory
        return ProbeSpec(family or "factory", fn, shape, probe is not None, "generic")  # type: ignore[arg-type]
    fam = get_family(family or DEFAULT_FAMILY)
    if fam.probe is None or fam.probe_input_shape is None:
        raise UserError(
            f"model family {fam.name!r} declares no probe; register it with "
            "register_model(..., probe=FACTORY, probe_input_shape=SHAPE)"
        )
    kind = {bottleneck_probe: "bottleneck", mlp_probe: "mlp"}.get(fam.probe, "generic")  # type: ignore[call-overload]
    return ProbeSpec(fam.name, fam.probe, fam.probe_input_shape, True, "generic" if engine == "generic" else kind)


def make_probe(
    family: str | None = None,
    *,
    channels: int | None = None,
    spatial: int | None = None,
    bn: ProbeBatchNorm = "none",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    factory: Callable[[int], nn.Module] | None = None,
    probe: Callable[[int, int], nn.Module] | None = None,
    input_shape: Sequence[int] | None = None,
    parameterization: Parameterization = "standard",
    inputs: ProbeInputs | None = None,
    pair: int = 0,
    engine: Engine = "auto",
) -> ProbeEngine:
    """The probe of input pair ``pair`` (see :func:`probe_spec` for ``family``, ``probe``,
    ``factory``, ``input_shape`` and ``engine``); ``inputs`` default :class:`ProbeInputs` ``()``
    (post-ReLU). ``channels`` / ``spatial`` resize the built-in blocks (C and H = W of the
    bottleneck, the MLP's input size); a declared block fixes its own."""
    spec = probe_spec(family, probe=probe, factory=factory, input_shape=input_shape, engine=engine)
    return _build_probe(spec, channels=channels, spatial=spatial, bn=bn, seed=seed, dtype=dtype,
                        parameterization=parameterization, inputs=ProbeInputs() if inputs is None else inputs,
                        pair=pair)


def _build_probe(
    spec: ProbeSpec, *, channels: int | None, spatial: int | None, bn: ProbeBatchNorm, seed: int,
    dtype: torch.dtype, parameterization: Parameterization, inputs: ProbeInputs, pair: int,
    device: str | torch.device = "cpu",
) -> ProbeEngine:
    """The probe of input pair ``pair`` for a resolved :class:`ProbeSpec` (see :func:`make_probe`)."""
    check_choice("bn", bn, PROBE_BN_MODES, "BatchNorm mode")
    if (channels is not None and channels < 1) or (spatial is not None and spatial < 1):
        raise UserError("channels and spatial size must be positive")
    check_choice("parameterization", parameterization, PARAMETERIZATIONS, "parameterization")
    common: dict[str, Any] = {"seed": seed, "dtype": dtype, "inputs": inputs, "pair": pair,
                              "device": probe_device(device)}
    if spec.kind == "generic":
        if parameterization != "standard":
            raise UserError("a declared probe block defines its own parameterization; leave `parameterization='standard'`")
        if channels is not None or spatial is not None:
            raise UserError(f"the {spec.name} probe block fixes its own channels and input size "
                            f"{spec.input_shape}; `channels` resizes only the paper's bottleneck and the MLP")
        return FactoryProbe(spec.factory, spec.input_shape, bn=bn, takes_m=spec.takes_m, **common)  # type: ignore[arg-type]
    if spec.kind == "bottleneck":
        return ResNeXtBlockProbe(
            channels or spec.input_shape[0], spatial or spec.input_shape[1], bn=bn,  # type: ignore[arg-type]
            parameterization=parameterization, **common,
        )
    if bn != "none":
        raise UserError(f"`bn='train'` does not apply to the {spec.name} probe (no BatchNorm in the MLP)")
    if spatial is not None:
        raise UserError(f"the {spec.name} probe takes flat inputs; spatial does not apply")
    with torch.device("meta"):
        block = spec.factory(1, 1)  # the declared MLP's output count and depth
    return MLPProbe(channels or spec.input_shape[0], out_features=block.out_features, depth=block.depth,  # type: ignore[arg-type]
                    parameterization=parameterization, **common)


def run_algorithm1(
    *,
    family: str | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    trials: int = DEFAULT_TRIALS,
    inputs: ProbeInputs | None = None,
    channels: int | None = None,
    spatial: int | None = None,
    bn: ProbeBatchNorm = "none",
    seed: int = 0,
    m_law: Sequence[int] = DEFAULT_M_LAW,
    m_law_width: int = DEFAULT_M_LAW_WIDTH,
    probe: Callable[[int, int], nn.Module] | None = None,
    factory: Callable[[int], nn.Module] | None = None,
    input_shape: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    parameterization: Parameterization = "standard",
    engine: Engine = "auto",
    engines: Sequence[ProbeEngine] | None = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> AlphaFit:
    """Algorithm 1: ``v(n)`` by Monte Carlo at m = 1 for every width, averaged over
    ``inputs.pairs`` input pairs and readouts with ``trials // pairs`` initializations each
    (``trials`` is the total per width), and ``V(m, m_law_width)`` for each ``m`` in ``m_law``
    against ``V(1, n) / m`` (per pair, then averaged). Under ``torchrun`` the trial chunks are
    sharded over ranks; the result does not depend on the thread or process count.

    ``inputs``: the pairs (default :class:`~collegial.ntk.inputs.ProbeInputs` ``()``: post-ReLU
    correlated Gaussians, rho 0.6, 8 pairs). What is measured (:func:`probe_spec`): the block
    ``family`` declares (default ``resnext29``; built-in blocks on dedicated engines, any other
    on :class:`~collegial.ntk.generic.FactoryProbe`), or ``probe`` ``(m, n) -> nn.Module`` with
    ``input_shape``, or a width-only ``factory`` (m = 1: no 1/m check). ``channels``/``spatial``
    resize the built-in blocks; ``engine="generic"`` runs them on the generic engine.
    ``parameterization="ntk"``: ``K`` with respect to ``W / sigma``
    (:class:`~collegial.ntk.probe.ResNeXtBlockProbe`); ``progress``: a tqdm bar on a terminal.
    ``device``: where the built-in engines compute (``"cpu"``, ``"cuda"``: under ``torchrun``
    each rank's own GPU); their weights are drawn on the CPU from the same seeds, so the numbers
    agree across devices up to float rounding (:func:`probe_device`, :func:`chunks_in_flight`).

    ``engines``: instead of a block, one :class:`~collegial.ntk.engine.ProbeEngine` per input
    pair of ``inputs``, in pair order (any object with the protocol's members); ``family`` then
    only names the result (default ``"custom"``), and ``bn``/``parameterization`` are recorded
    as given (the engines define what they measure).
    """
    inputs = ProbeInputs() if inputs is None else inputs
    if not isinstance(inputs, ProbeInputs):
        raise UserError(f"inputs must be a ProbeInputs (e.g. ProbeInputs('relu', 0.6)), got {inputs!r}")
    ws = _check_widths(widths)
    if engines is not None:
        given = {"probe": probe, "factory": factory, "input_shape": input_shape, "channels": channels,
                 "spatial": spatial, "engine": None if engine == "auto" else engine}
        if any(v is not None for v in given.values()):
            raise UserError(f"`engines` measure their own block; leave out `{next(k for k, v in given.items() if v is not None)}`")
        name, probes, per_pair, takes_m = family or "custom", check_engines(engines, inputs.pairs), _per_pair(trials, inputs), True
        size = 0
    else:
        spec = probe_spec(family, probe=probe, factory=factory, input_shape=input_shape, engine=engine)
        probes, per_pair = _pair_probes(spec, inputs, trials, channels=channels, spatial=spatial, bn=bn, seed=seed,
                                        dtype=dtype, parameterization=parameterization, device=device)
        name, takes_m = spec.name, spec.takes_m
        size = probes[0].input_shape[1] if spec.kind == "bottleneck" else 0  # the bottleneck's resizable H = W
    ms = _check_m_law(m_law, m_law_width) if takes_m else []
    rank, world = rank_and_world()
    jobs = [(1, n) for n in ws] + [(m, m_law_width) for m in ms]
    if ms and m_law_width not in ws:
        jobs.append((1, m_law_width))
    stats, job_seconds, seconds = _run_jobs(probes, jobs, per_pair, seed, progress=progress and rank == 0)
    return _alpha_fit(
        name, probes, inputs, stats, ws, per_pair, (ms, m_law_width), spatial=int(size),
        bn=bn, seed=int(seed), parameterization=parameterization, seconds=seconds, world_size=world,
        job_seconds=job_seconds,
    )


def measure_points(
    points: Sequence[tuple[int, int]],
    *,
    family: str | None = None,
    trials: int = DEFAULT_TRIALS,
    inputs: ProbeInputs | None = None,
    channels: int | None = None,
    spatial: int | None = None,
    bn: ProbeBatchNorm = "none",
    seed: int = 0,
    parameterization: Parameterization = "standard",
    engine: Engine = "auto",
    device: str | torch.device = "cpu",
) -> dict[tuple[int, int], list[NormalizedVariance]]:
    """``V(m, n)`` of ``family``'s probe at each ``(m, n)`` of ``points``, one estimate per input
    pair (:func:`~collegial.ntk.variance.pool_pairs` pools them), with Algorithm 1's
    conventions: the same probes, pairs, ``trials // pairs`` initializations per pair and trial
    seeds as :func:`run_algorithm1` with the same arguments (so ``(1, n)`` reproduces its table
    entry at width n exactly)."""
    jobs = list(dict.fromkeys((int(m), int(n)) for m, n in points))
    if any(m < 1 or n < 1 for m, n in jobs):
        raise UserError(f"multiplicities and widths must be >= 1, got {jobs}")
    probes, per_pair = _pair_probes(probe_spec(family, engine=engine), ProbeInputs() if inputs is None else inputs,
                                    trials, channels=channels, spatial=spatial, bn=bn, seed=seed,
                                    dtype=torch.float32, parameterization=parameterization, device=device)
    return _run_jobs(probes, jobs, per_pair, seed, progress=False)[0]


def _pair_probes(spec: ProbeSpec, inputs: ProbeInputs, trials: int, **build: Any) -> tuple[list[ProbeEngine], int]:
    """One probe per input pair of ``inputs`` (``build``: :func:`_build_probe`'s options) and the
    initializations per pair, ``trials // pairs``; :class:`UserError` below 2 per pair."""
    return [_build_probe(spec, inputs=inputs, pair=p, **build) for p in range(inputs.pairs)], _per_pair(trials, inputs)


def _per_pair(trials: int, inputs: ProbeInputs) -> int:
    """Initializations per input pair, ``trials // pairs``; :class:`UserError` below 2 per pair."""
    if int(trials) != trials or trials < 2 * inputs.pairs:
        raise UserError(f"need at least 2 trials per input pair ({2 * inputs.pairs} in all), got {trials}")
    return int(trials) // inputs.pairs


def _alpha_fit(
    name: str, probes: Sequence[ProbeEngine], inputs: ProbeInputs,
    stats: dict[tuple[int, int], list[NormalizedVariance]], ws: list[int], per_pair: int,
    m_law: tuple[Sequence[int], int], **fields: Any,
) -> AlphaFit:
    """The :class:`AlphaFit` of the m = 1 table (pooled over pairs), the 1/m check at
    ``m_law = (multiplicities, width)``, the probe's description and ``fields`` (the run's
    settings and timings). :class:`UserError` when ``K`` did not vary at some width."""
    pooled = {k: pool_pairs(v) for k, v in stats.items()}
    for n in ws:
        if not pooled[(1, n)].v > 0:
            raise UserError(
                f"K did not vary at width {n} ({per_pair} trials per pair gave one value): too few trials "
                "or a probe whose units are all inactive; use more `trials`"
            )
    opts = inputs.options()
    first = probes[0]
    return AlphaFit(
        family=name,
        channels=int(first.input_shape[0]),
        input_shape=[int(d) for d in first.input_shape],
        trials=per_pair * inputs.pairs,
        widths=ws,
        variance=[pooled[(1, n)].v for n in ws],
        stderr=[pooled[(1, n)].stderr for n in ws],
        mean_k=[pooled[(1, n)].mean for n in ws],
        inputs=inputs.kind,
        correlation=opts["correlation"],  # type: ignore[arg-type]
        pairs=inputs.pairs,
        input_data=opts["input_data"],  # type: ignore[arg-type]
        pair_variance=[[e.v for e in stats[(1, n)]] for n in ws],
        m_law=_m_law_points(stats, *m_law),
        engine=str(first.engine),
        **fields,
    )


def _check_m_law(m_law: Sequence[int], width: int) -> list[int]:
    ms = sorted({int(m) for m in m_law})
    if any(m < 2 for m in ms):
        raise UserError("`m_law` multiplicities must be >= 2")
    if ms and width < 1:
        raise UserError("`m_law_width` must be >= 1")
    return ms


#: Monte Carlo trials per width (all pairs together) above which a run would take days; the
#: paper uses 2000.
MAX_TRIALS = 10_000_000
#: The share of the memory available now that one run may plan to use.
MEMORY_SHARE = 0.8


def probe_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`; a plain ``cuda`` under ``torchrun`` with several
    GPUs is the rank's own (``LOCAL_RANK``)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ and torch.cuda.device_count() > 1:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    return dev


def chunks_in_flight(probe: ProbeEngine, m: int, n: int) -> int:
    """How many trial chunks of ``(m, n)`` are computed at once: one per torch thread on the CPU;
    on CUDA as many as fit in :data:`MEMORY_SHARE` of the device's free memory (at least 1, at
    most the threads). The chunk itself (``probe.chunk_size``) is the unit the trial seeds are
    drawn in, so it stays the same on every device: the same seed gives the same numbers."""
    threads = max(1, torch.get_num_threads())
    dev = torch.device(probe.device)
    if dev.type != "cuda":
        return threads
    per_chunk = (probe.trial_bytes(m, n) or 0) * probe.chunk_size(m, n)
    free = available_memory(dev)
    if not per_chunk or free is None:
        return 1
    return max(1, min(threads, int(MEMORY_SHARE * free) // per_chunk))


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes of memory available now: on a CUDA ``device`` its free memory; else the host's
    (Linux ``MemAvailable``; else free pages); None if unknown."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def check_limits(probes: Sequence[ProbeEngine], jobs: Sequence[tuple[int, int]], per_pair: int) -> None:
    """Refuse, before any trial, a run that cannot finish: more than :data:`MAX_TRIALS` trials
    per width, or a working set (one chunk of trials per thread, at the largest job) above
    :data:`MEMORY_SHARE` of the memory available now."""
    total = per_pair * len(probes)
    if total > MAX_TRIALS:
        raise UserError(f"{total} trials per width (`trials`) exceed the limit of {MAX_TRIALS:,} (a run would "
                        "take days; the paper uses 2000)")
    probe = probes[0]
    dev = torch.device(probe.device)
    avail = available_memory(dev)
    if avail is None:
        return
    sizes = [(b, m, n) for m, n in jobs if (b := probe.trial_bytes(m, n))]
    if not sizes:
        return
    per_trial, m, n = max(sizes)
    chunk = max(2, min(per_pair, CHUNK_BYTES // max(1, per_trial)))  # the engines' smallest chunk is 2 to 4
    threads = 1 if dev.type == "cuda" else max(1, torch.get_num_threads())  # chunks in flight, at least
    need = per_trial * chunk * threads
    if need > MEMORY_SHARE * avail:
        gib = 1 << 30
        raise UserError(
            f"the probe at m={m}, n={n} needs about {need / gib:.1f} GiB ({per_trial / gib:.2f} GiB per trial, "
            f"{chunk} trials per chunk, {threads} at once), more than {MEMORY_SHARE:.0%} of the "
            f"{avail / gib:.1f} GiB available on {dev.type}; use smaller `widths`, `m_law` or `channels`"
        )


def estimate_seconds(probes: Sequence[ProbeEngine], jobs: Sequence[tuple[int, int]], per_pair: int) -> float | None:
    """Wall seconds the Monte Carlo of ``jobs`` should take here: one chunk of trials at the
    largest job timed, the others scaled by their working sets (a lower bound where per-trial
    overheads dominate); None when the engine does not report its working set."""
    probe = probes[0]
    sized = [(probe.trial_bytes(m, n) or 0, m, n) for m, n in jobs]
    biggest, m, n = max(sized)
    if biggest <= 0:
        return None
    chunk = max(2, min(per_pair, probe.chunk_size(m, n)))
    t = time.perf_counter()
    probe.k_chunk(m, n, chunk, trial_seed(0, m, n, 0, probe.pair))  # results depend on seeds only
    per_trial = (time.perf_counter() - t) / chunk
    _, world = rank_and_world()
    trials = sum(per_pair * len(probes) * b / biggest for b, _, _ in sized)
    return per_trial * trials / (max(1, torch.get_num_threads()) * world)


def _announce_duration(probes: Sequence[ProbeEngine], jobs: Sequence[tuple[int, int]], per_pair: int) -> None:
    """Say on stderr, before a run of more than 5 minutes, about how long it will take."""
    import sys

    seconds = estimate_seconds(probes, jobs, per_pair)
    if seconds is not None and seconds > 300:
        hours = seconds / 3600
        print(f"collegial: Algorithm 1 will take about {f'{hours:.1f} h' if hours >= 1 else f'{seconds / 60:.0f} min'} "
              "here (one chunk timed at the largest width); Ctrl-C stops it", file=sys.stderr, flush=True)


def _run_jobs(
    probes: Sequence[ProbeEngine], jobs: Sequence[tuple[int, int]], per_pair: int, seed: int, *, progress: bool
) -> tuple[dict[tuple[int, int], list[NormalizedVariance]], list[dict[str, float]], float]:
    """Every ``(m, n)`` job over every pair: per-pair normalized variances, seconds per job and
    in all; ``progress``: a tqdm bar on stderr when it is a terminal."""
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=per_pair * len(probes) * len(jobs), unit="trial", desc="fit-alpha", leave=False,
                   dynamic_ncols=True, disable=not sys.stderr.isatty())
    check_limits(probes, jobs, per_pair)
    if progress:
        _announce_duration(probes, jobs, per_pair)
    t0 = time.perf_counter()
    stats: dict[tuple[int, int], list[NormalizedVariance]] = {}
    job_seconds = []
    try:
        for m, n in jobs:
            if bar is not None:
                bar.set_postfix_str(f"m={m} n={n}")
            tj = time.perf_counter()
            moms = pair_moments(probes, m, n, per_pair, seed=seed, progress=bar)
            stats[(m, n)] = [normalized_variance(mom) for mom in moms]
            job_seconds.append({"m": m, "n": n, "seconds": time.perf_counter() - tj})
    finally:
        if bar is not None:
            bar.close()
    return stats, job_seconds, time.perf_counter() - t0


def _m_law_points(stats: dict[tuple[int, int], list[NormalizedVariance]], ms: Sequence[int], n: int) -> list[MLawPoint]:
    """``V(m, n)`` against ``V(1, n) / m`` for each ``m``: ratios per pair, then pooled."""
    points = []
    for m in ms:
        per = [m_law_ratio(a, b, m) for a, b in zip(stats[(m, n)], stats[(1, n)])]
        per = [(r, e) for r, e in per if math.isfinite(r)] or [(math.nan, math.nan)]
        ratio, rse = pool_estimates([r for r, _ in per], [e for _, e in per])
        s = pool_pairs(stats[(m, n)])
        points.append(MLawPoint(m, n, s.v, s.stderr, ratio, rse))
    return points


def variance_model(fit: AlphaFit | str | os.PathLike[str], kind: str = "auto") -> Callable[[Any], np.ndarray]:
    """``V1(n)`` (model ``kind``) from an :class:`AlphaFit` or a path to its ``alpha.json``."""
    f = fit if isinstance(fit, AlphaFit) else AlphaFit.from_json(fit)
    return f.model(kind)


def variance_stderr(fit: AlphaFit | str | os.PathLike[str], kind: str = "auto") -> Callable[[Any], np.ndarray]:
    """Bootstrap standard error of ``V1(n)`` (model ``kind``) from an :class:`AlphaFit` or a path."""
    f = fit if isinstance(fit, AlphaFit) else AlphaFit.from_json(fit)
    return f.model(kind).stderr
