"""Verify the search's prediction on the network as built: whole-model NTK variance on real pairs.

The search predicts each candidate's NTK variance from one probe block, ``V1(n) / m``. This
module measures the thing the prediction is about: the normalized variance ``Var[K] / E[K]^2``
of the *whole model* (:mod:`collegial.ntk.whole`: every trainable parameter, a random unit
readout of the logits, real image pairs, BatchNorm on the probe batch's statistics by default)
over ``T`` initializations per pair, and splits ``K`` by parameter group.

Estimates (per architecture, pairs shared by every architecture so comparisons are paired):

* ``v``: the mean over the ``P`` pairs of each pair's ``Var[K] / E[K]^2`` over the ``T``
  initializations; ``stderr``: its standard error over pairs *and* initializations
  (:func:`~collegial.ntk.variance.pool_estimates`: the pairs' spread, never below the Monte
  Carlo part); ``mc_stderr``: the Monte Carlo part alone, i.e. conditional on these pairs.
* group shares, averaged over pairs: of ``E[K]`` (``E[K_g] / E[K]``) and of ``Var[K]``
  (``Cov(K_g, K) / Var[K]``, covariances between groups included, so the shares sum to 1).
* ``predicted``: ``V1(n) / m`` of the family's probe curve with its bootstrap standard error,
  and ``ratio = v / predicted``.

:func:`verify_search` measures the baseline, both answers, the members of their optimal sets and
points spread along each curve, then re-solves the primal and the dual on the measured values
among those candidates.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from collegial.errors import UserError
from collegial.io import write_json_atomic
from collegial.models import create_model, format_arch, get_family, validate_arch
from collegial.models.costs import model_costs
from collegial.ntk.variance import Moments, normalized_variance, pool_estimates
from collegial.ntk.whole import WHOLE_BN_MODES, Pairs, WholeMethod, WholeModelNtk, draw_pairs, group_shares
from collegial.stats import rank_correlation

#: Default initializations (each measured on every pair): with 8 pairs, 7-12% relative Monte
#: Carlo standard error of ``v`` on the resnext11 MNIST architectures of docs/verify.md (10% at
#: 1x64d); ~5% would take T = 256, 4x the time. The pairs' own spread comes on top.
DEFAULT_TRIALS = 64
DEFAULT_PAIRS = 8
PAIR_KINDS = ("any", "same", "different")
#: The pairs are drawn from the dataset's first this many training images (the cache key holds
#: their indices, so every caller must draw from the same pool).
PAIR_POOL = 10_000


@dataclass(frozen=True)
class VerifySettings:
    """What a verification measures: ``pairs`` pairs of ``pair_kind`` (any, same- or
    different-class) training images of ``dataset``, ``trials`` initializations, BatchNorm
    ``bn`` (``batch``: the probe batch's statistics; ``running``), seed ``seed``."""

    dataset: str
    pairs: int = DEFAULT_PAIRS
    trials: int = DEFAULT_TRIALS
    bn: str = "batch"
    pair_kind: str = "any"
    seed: int = 0
    method: str = "auto"
    #: Keyword arguments for the family function (e.g. ``{"parameterization": "ntk"}`` for mlp).
    model_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise UserError(f"need at least 1 pair, got {self.pairs}")
        if self.trials < 4:
            raise UserError(f"need at least 4 initializations per pair, got {self.trials}")
        if self.bn not in WHOLE_BN_MODES:
            raise UserError(f"unknown BatchNorm mode {self.bn!r}; choose {', '.join(WHOLE_BN_MODES)}")
        if self.pair_kind not in PAIR_KINDS:
            raise UserError(f"unknown pair kind {self.pair_kind!r}; choose {', '.join(PAIR_KINDS)}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        WholeMethod(self.method)


@dataclass
class Measured:
    """One architecture's whole-model measurement (see the module docstring)."""

    arch: str
    m: int
    n: int
    params: int
    v: float
    stderr: float
    mc_stderr: float
    mean_k: float
    per_pair: list[float]
    per_pair_se: list[float]
    share_mean: dict[str, float]
    share_var: dict[str, float]
    collegial: list[str]
    seconds: float
    trials: int
    predicted: float | None = None
    predicted_se: float | None = None
    role: str = ""
    note: str = ""

    @property
    def ratio(self) -> tuple[float, float] | None:
        """``v / predicted`` and its delta-method standard error (None without a prediction)."""
        if self.predicted is None or not self.predicted > 0:
            return None
        r = self.v / self.predicted
        rel = math.hypot(self.stderr / self.v if self.v else 0.0, (self.predicted_se or 0.0) / self.predicted)
        return r, abs(r) * rel

    def collegial_share(self) -> tuple[float, float]:
        """The collegial layers' summed shares of ``E[K]`` and of ``Var[K]``."""
        return (sum(self.share_mean[g] for g in self.collegial), sum(self.share_var[g] for g in self.collegial))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        r = self.ratio
        d["ratio"], d["ratio_se"] = (r if r is not None else (None, None))
        d["collegial_share_mean"], d["collegial_share_var"] = self.collegial_share()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measured:
        """The measurement :meth:`to_dict` describes (its derived fields recomputed)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def load_pairs(images: Tensor, labels: Tensor | None, dataset: str, settings: VerifySettings,
               ) -> tuple[Pairs, list[tuple[int, int]]]:
    """The settings' pairs of ``images`` ``(N, C, H, W)`` (standardized training images) with a
    unit readout over the model's outputs each."""
    from collegial.models import get_dataset_spec

    outputs = get_dataset_spec(dataset).num_classes
    return draw_pairs(images, labels, settings.pairs, outputs, seed=settings.seed, kind=settings.pair_kind)


def _gather(terms: dict[int, Tensor]) -> dict[int, Tensor]:
    """Every rank's ``{trial: (P, G)}`` terms, merged (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return terms
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {t: v.numpy() for t, v in terms.items()})
    return {t: torch.as_tensor(v) for part in parts for t, v in part.items()}


def measure_terms(family: str, arch: str, dataset: str, pairs: Pairs, settings: VerifySettings,
                  *, progress: Callable[[int], None] | None = None, device: str = "cpu") -> tuple[Tensor, list[str], list[str], str | None]:
    """``(T, P, G)`` group terms of ``T`` initializations of ``family`` ``arch`` (trial ``t`` seeded
    from ``(seed, t)``; under torchrun each rank computes every world-size-th trial), the group
    names, the collegial groups, and why the fast path fell back (None if it did not)."""
    validate_arch(family, arch)
    engine = WholeModelNtk(lambda: create_model(family, arch=arch, dataset=dataset, **settings.model_args), pairs,
                           bn=settings.bn, method=settings.method, device=device)
    from collegial.distributed import rank_and_world

    rank, world = rank_and_world()
    mine: dict[int, Tensor] = {}
    names: list[str] = []
    collegial: list[str] = []
    for t in range(rank, settings.trials, world):
        terms, groups = engine.terms(engine.model(settings.seed, t))
        names, collegial = groups.names, sorted(groups.collegial)
        mine[t] = terms
        if progress is not None:
            progress(1)
    every = _gather(mine)
    if not names:  # a rank without trials: the groups of trial 0's model
        groups = engine.groups(engine.model(settings.seed, 0))
        names, collegial = groups.names, sorted(groups.collegial)
    stacked = torch.stack([every[t] for t in range(settings.trials)])
    return stacked, names, collegial, engine.fallback


def summarize(arch: str, terms: Tensor, names: list[str], collegial: list[str], params: int, seconds: float,
              ) -> Measured:
    """:class:`Measured` from ``(T, P, G)`` group terms (see the module docstring)."""
    m, n = _mn(arch)
    k = terms.sum(2)  # (T, P)
    if not bool(torch.isfinite(k).all()):
        raise UserError(f"{arch}: the NTK is not finite at initialization (overflow in the model's forward?)")
    keep = [p for p in range(k.shape[1]) if float(k[:, p].mean()) > 0]
    if not keep:
        raise UserError(f"{arch}: E[K] <= 0 on every pair; the normalized variance is undefined")
    per = {p: normalized_variance(Moments.of(k[:, p])) for p in keep}
    v, se = pool_estimates([e.v for e in per.values()], [e.stderr for e in per.values()])
    mc = math.sqrt(sum(e.stderr**2 for e in per.values())) / len(per)
    kk = k[:, keep]
    mean_sh, var_sh = group_shares(terms[:, keep])
    share_mean = {g: float(x) for g, x in zip(names, mean_sh)}
    share_var = {g: float(x) for g, x in zip(names, var_sh)}
    dropped = [p for p in range(k.shape[1]) if p not in per]
    note = (f"{arch}: pair(s) {', '.join(map(str, dropped))} left out: E[K] <= 0 over the {k.shape[0]} "
            "initializations (Var[K]/E[K]^2 undefined)") if dropped else ""
    nan = float("nan")
    row = Measured(arch, m, n, params, v, se, mc, float(kk.mean()),
                   [per[p].v if p in per else nan for p in range(k.shape[1])],
                   [per[p].stderr if p in per else nan for p in range(k.shape[1])],
                   share_mean, share_var, list(collegial), seconds, int(k.shape[0]), note=note)
    return row


def _mn(arch: str) -> tuple[int, int]:
    from collegial.models.arch import parse_arch

    return parse_arch(arch)


def measure(family: str, archs: Sequence[str], images: Tensor, labels: Tensor | None, settings: VerifySettings,
            *, predict: Callable[[int, int], tuple[float | None, float | None]] | None = None, roles: dict[str, str] | None = None,
            progress: bool = False, device: str = "cpu") -> VerifyResult:
    """Measure every architecture of ``archs`` (``MxNd`` of ``family``) on the same pairs;
    ``predict(m, n)`` gives the block's prediction and its s.e.; ``roles`` labels archs;
    ``device``: where the models run (the same initializations on every device; the numbers
    agree within float tolerance, so cached measurements are shared between devices)."""
    fam = get_family(family)
    if fam.arch_kind != "ce":
        raise UserError(f"family {family!r} has no (m, n) architectures to verify")
    for a in archs:
        validate_arch(family, a)
    pairs, idx = load_pairs(images, labels, settings.dataset, settings)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(archs) * settings.trials, unit="init", desc="verify", leave=False,
                   dynamic_ncols=True, disable=not sys.stderr.isatty())
    rows: list[Measured] = []
    notes: list[str] = []
    try:
        for a in archs:
            if bar is not None:
                bar.set_postfix_str(a)
            key = _cache_key(family, a, settings, idx)
            row = _cached(key)
            if row is None:
                t0 = time.perf_counter()
                terms, names, coll, fallback = measure_terms(family, a, settings.dataset, pairs, settings,
                                                             progress=None if bar is None else bar.update,
                                                             device=device)
                params = sum(p.numel() for p in create_model(family, arch=a, dataset=settings.dataset,
                                                             **settings.model_args).parameters())
                row = summarize(a, terms, names, coll, params, time.perf_counter() - t0)
                if fallback:
                    row.note = "; ".join(filter(None, [row.note, f"{a}: the fast path did not apply ({fallback}); "
                                                               "measured with the Jacobian method"]))
                _store(key, row)
            elif bar is not None:
                bar.update(settings.trials)
            if row.note:
                notes.append(row.note)
            if predict is not None:
                row.predicted, row.predicted_se = predict(row.m, row.n)
            row.role = (roles or {}).get(a, "")
            rows.append(row)
    finally:
        if bar is not None:
            bar.close()
    return VerifyResult(family, settings, rows, [list(p) for p in idx], notes)


# ------------------------------------------------------------------------------ cache
def verify_cache_dir() -> Path:
    """Where whole-model measurements are cached (beside Algorithm 1's curves)."""
    from collegial.search.variance import cache_dir

    return cache_dir().parent / "verify"


def _cache_key(family: str, arch: str, settings: VerifySettings, idx: list[tuple[int, int]]) -> str:
    """Everything a measurement depends on: the family function's source, the architecture,
    the settings (not the method: every method gives the same rows), the pairs' image indices
    and torch's version."""
    obj = {"v": 2, "family": family, "source": _model_source(family), "arch": arch,  # 2: jackknife v
           **{k: v for k, v in asdict(settings).items() if k != "method"}, "pairs_idx": [list(p) for p in idx],
           "torch": torch.__version__}
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def _model_source(family: str) -> str:
    """A hash of the family function's code without its decorators (a changed probe
    declaration does not change the model), and of the model classes' modules it uses."""
    import ast
    import textwrap

    fn = get_family(family).fn
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []
        text = ast.dump(tree)
    except (OSError, TypeError, SyntaxError):
        text = repr(fn)
    for mod in ("collegial.models.resnext", "collegial.models.layers"):
        try:
            text += inspect.getsource(sys.modules[mod])
        except (KeyError, OSError, TypeError):
            pass
    return hashlib.sha1(text.encode()).hexdigest()


def _cached(key: str) -> Measured | None:
    path = verify_cache_dir() / f"{key}.json"
    try:
        d = json.loads(path.read_text())
        return Measured(**{k: d[k] for k in Measured.__dataclass_fields__ if k in d})
    except (OSError, ValueError, TypeError, KeyError):
        return None  # absent, unreadable or outdated: measured again


def _store(key: str, row: Measured) -> None:
    """Best effort, atomic (:func:`collegial.io.write_json_atomic`)."""
    d = verify_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fields = {k: v for k, v in asdict(row).items() if k not in ("predicted", "predicted_se", "role")}
        write_json_atomic(d / f"{key}.json", fields, indent=None)
    except (OSError, ValueError, UserError):  # a full disk, or a non-finite value: measured again next time
        pass


@dataclass
class VerifyResult:
    family: str
    settings: VerifySettings
    rows: list[Measured]
    pair_indices: list[list[int]]
    notes: list[str] = field(default_factory=list)
    probe: str = ""
    resolved: dict[str, Any] = field(default_factory=dict)

    def row(self, arch: str) -> Measured:
        return next(r for r in self.rows if r.arch == arch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "settings": asdict(self.settings),
            "measured": [r.to_dict() for r in self.rows],
            "pair_indices": self.pair_indices,
            "probe": self.probe,
            "resolved": self.resolved,
            "predictors": predictor_table(self),
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 1) -> str:
        from collegial.io import strict_json

        return strict_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerifyResult:
        """The result :meth:`to_dict` (or a ``verify.json``) describes."""
        return cls(d["family"], VerifySettings(**d["settings"]), [Measured.from_dict(r) for r in d["measured"]],
                   d["pair_indices"], list(d.get("notes", [])), d.get("probe", ""), d.get("resolved", {}))


# ------------------------------------------------------------------------------ with the search
def candidates_to_verify(res: Any, spread: int = 3) -> dict[str, str]:
    """``{arch: role}``: the baseline, the primal and dual answers, their optimal sets' members
    and ``spread`` points evenly spaced in width along each curve (feasible points only)."""
    roles: dict[str, str] = {}

    def add(arch: str, role: str) -> None:
        roles.setdefault(arch, role)

    add(res.baseline.arch, "baseline")
    add(res.primal.arch, "primal")
    add(res.dual.arch, "dual")
    for which, oset in res.optimal_set.items():
        for a in oset.members[:5]:
            add(a, f"{which} set")
    for which, curve in (("primal", res.primal_curve), ("dual", res.dual_curve)):
        ok = np.flatnonzero(curve.feasible)
        if ok.size == 0:
            continue
        picks = np.unique(np.round(np.linspace(0, ok.size - 1, spread)).astype(int))
        for i in ok[picks]:
            add(format_arch(int(curve.m[i]), int(curve.n[i])), f"{which} curve")
    return roles


def resolve_measured(res: Any, result: VerifyResult) -> dict[str, Any]:
    """The primal and dual re-solved on the measured variances among the verified candidates:
    primal = least measured ``v`` within the search's budget; dual = least cost whose measured
    ``v`` is at most the baseline's. Point estimates; each with its s.e."""
    base = result.row(res.baseline.arch)
    cost = "params" if res.budget_kind == "params" else "flops"

    def c(r: Measured) -> int:
        return r.params if cost == "params" else model_costs(res.family, r.arch, res.dataset).flops

    within = [r for r in result.rows if c(r) <= res.budget]
    primal = min(within, key=lambda r: r.v) if within else None
    fit = [r for r in result.rows if r.v <= base.v]
    dual = min(fit, key=lambda r: (c(r), r.v)) if fit else None
    return {
        "primal": None if primal is None else {"arch": primal.arch, "v": primal.v, "stderr": primal.stderr},
        "dual": None if dual is None else {"arch": dual.arch, "v": dual.v, "stderr": dual.stderr,
                                          "compression": c(base) / c(dual)},
        "baseline": {"arch": base.arch, "v": base.v, "stderr": base.stderr},
        "candidates": len(result.rows),
    }


def curve_prediction(curve: Any) -> Callable[[int, int], tuple[float | None, float | None]]:
    """``predict(m, n) -> (V1(n)/m, its bootstrap s.e.)`` of a
    :class:`~collegial.search.variance.VarianceCurve`; ``(None, None)`` outside its widths."""

    def predict(m: int, n: int) -> tuple[float | None, float | None]:
        lo, hi = curve.domain
        if not lo <= n <= hi:
            return None, None
        return float(curve(n)[0]) / m, float(curve.stderr(n)[0]) / m

    return predict


# ------------------------------------------------------------------------------ predictors
#: Exact permutation p-values up to this many architectures (8! = 40320 orderings), else 20000
#: random permutations (seeded).
def rank_agreement(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho of ``x`` and ``y`` and its two-sided permutation p-value
    (:func:`collegial.stats.rank_correlation`: exact up to 9 points)."""
    return rank_correlation(x, y, "spearman")


def predictor_table(result: VerifyResult) -> list[dict[str, Any]]:
    """How well each predictor orders the measured whole-model variances: the block's
    prediction (agreement: rho > 0) and the naive ones, width n, multiplicity m and parameters
    (the CE story expects rho < 0 for each), as Spearman's rho with measured ``v`` and its exact
    permutation p-value (>= 4 architectures)."""
    rows = [r for r in result.rows]
    if len(rows) < 4:
        return []
    v = [r.v for r in rows]
    preds: dict[str, list[float]] = {}
    if all(r.predicted is not None for r in rows):
        preds["block prediction V1(n)/m"] = [float(r.predicted) for r in rows]  # type: ignore[arg-type]
    preds["width n"] = [float(r.n) for r in rows]
    preds["multiplicity m"] = [float(r.m) for r in rows]
    preds["parameters"] = [float(r.params) for r in rows]
    out = []
    for name, x in preds.items():
        rho, p = rank_agreement(x, v)
        out.append({"predictor": name, "spearman": rho, "p_value": p, "n": len(rows)})
    return out
