"""The Python API: the command line's jobs as functions that return typed results, and readers
of the files the commands write.

    import collegial

    fit = collegial.fit_alpha("mlp", trials=200, widths=[4, 8, 16, 32])     # AlphaFit (Algorithm 1)
    res = collegial.search("mlp", "1x32d", alpha=fit)                       # SearchResult
    ver = collegial.verify("mlp", ["1x32d", "4x8d"], pairs=2, trials=8)     # VerifyResult
    run = collegial.train("mlp", "4x8d", out="runs/mlp", epochs=1, train_limit=512)  # Run
    same = collegial.load_search(path)      # from a search.json (``search --out``)

Every result has ``to_json()``; ``load_search``, ``load_verify``, ``load_figure1`` and
``load_run`` read what ``search --out``, ``verify --out``, ``reproduce figure1 --out`` and ``train
--out`` wrote back into the same types. The functions take the library's defaults (those of the
commands) and raise :class:`~collegial.errors.UserError` for settings a user can get wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collegial.errors import UserError
from collegial.io import strict_json
from collegial.ntk.curve import AlphaFit
from collegial.search.result import SearchResult
from collegial.search.verify import VerifyResult

PathLike = str | os.PathLike[str]


def _read(path: PathLike, name: str) -> Any:
    p = Path(path)
    if p.is_dir():
        p = p / name
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"no {name} at {p}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{p} is not a readable {name}: {e}") from None


# ------------------------------------------------------------------------------ the jobs
def fit_alpha(family: str = "resnext29", *, trials: int = 2000, widths: Sequence[int] | None = None, seed: int = 0,
              inputs: str = "relu", correlation: float = 0.6, pairs: int = 8, progress: bool = False,
              **options: Any) -> AlphaFit:
    """Algorithm 1 on ``family``'s declared probe (``collegial fit-alpha``): the Monte Carlo
    table of ``v(n)`` and its fits. ``options``: any other keyword of
    :func:`collegial.ntk.alpha.run_algorithm1` (``m_law``, ``bn``, ``parameterization``, ...)."""
    from collegial.ntk.alpha import DEFAULT_WIDTHS, run_algorithm1
    from collegial.ntk.inputs import ProbeInputs

    probe_inputs = ProbeInputs(inputs, correlation, pairs)
    return run_algorithm1(family=family, trials=trials, widths=tuple(widths or DEFAULT_WIDTHS), seed=seed,
                          inputs=probe_inputs, progress=progress, **options)


def search(family: str, baseline: str, *, dataset: str | None = None, alpha: AlphaFit | PathLike | None = None,
           variance: str = "auto", seed: int = 0, **options: Any) -> SearchResult:
    """The primal and dual problems (``collegial search``) on the curve ``alpha`` (an
    :class:`AlphaFit`, an ``alpha.json`` path, or None: Algorithm 1 on the family's probe,
    cached). ``options``: keywords of :func:`collegial.search.solve.search` (``budget``,
    ``rounding``, ``n_range``, ``budget_value``, ``solver``, ``level``, ...)."""
    from collegial.models import get_family
    from collegial.search.solve import search as solve
    from collegial.search.variance import VarianceCurve, load_curve

    dataset = dataset or get_family(family).default_dataset
    if isinstance(alpha, AlphaFit):
        curve = VarianceCurve(alpha, variance, seed=seed, source="<memory>")
    else:
        curve = load_curve(alpha, variance, family=family, seed=seed)
    res = solve(family, dataset, baseline, curve, **options)
    res.notes = list(curve.notes)
    return res


def verify(family: str, archs: Sequence[str], *, dataset: str | None = None, pairs: int = 8, trials: int = 64,
           bn: str = "batch", seed: int = 0, predict: bool = True, device: str = "cpu",
           data_dir: PathLike | None = None, **options: Any) -> VerifyResult:
    """The whole model's NTK variance on real image pairs (``collegial verify``), beside the
    family curve's prediction (``predict``; from its cached Algorithm 1 run). ``options``: other
    fields of :class:`~collegial.search.verify.VerifySettings` (``pair_kind``, ``method``,
    ``model_args``)."""
    from collegial.models import get_family
    from collegial.search.variance import load_curve
    from collegial.search.verify import PAIR_POOL, VerifySettings, curve_prediction, measure
    from collegial.train.data import standardized_train_images

    dataset = dataset or get_family(family).default_dataset
    settings = VerifySettings(dataset, pairs=pairs, trials=trials, bn=bn, seed=seed, **options)
    images, labels = standardized_train_images(dataset, PAIR_POOL, None if data_dir is None else str(data_dir))
    pred = curve_prediction(load_curve(None, family=family, seed=seed)) if predict else None
    return measure(family, list(archs), images, labels, settings, predict=pred, device=device)


@dataclass
class Run:
    """A training run's folder read back: its ``config.json`` (settings and provenance), every
    epoch of ``metrics.jsonl``, and ``result.json`` (None while the run has not finished)."""

    out: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    @property
    def test_top1_err(self) -> float | None:
        return None if self.result is None else self.result.get("test_top1_err")

    def to_json(self, indent: int | None = 1) -> str:
        return strict_json({"out": str(self.out), "config": self.config, "metrics": self.metrics,
                            "result": self.result}, indent=indent)


def train(family: str, arch: str, *, out: PathLike, dataset: str | None = None, epochs: int | None = None,
          train_limit: int | None = None, test_limit: int | None = None, seed: int = 0,
          data_dir: PathLike | None = None, progress: bool = False, **recipe: Any) -> Run:
    """Train ``family`` ``arch`` with the dataset's recipe (``collegial train``; ``epochs`` and
    ``recipe`` keywords override it: ``batch_size``, ``lr``, ...; the milestones follow ``epochs``
    unless ``milestones`` is given) into the new folder ``out``;
    returns the run as :func:`load_run` reads it."""
    from collegial.models import get_family
    from collegial.train.data import load_dataset
    from collegial.train.loop import RunConfig
    from collegial.train.loop import train as run_training
    from collegial.train.recipes import get_recipe

    dataset = dataset or get_family(family).default_dataset
    changes = {**recipe, **({"epochs": epochs} if epochs is not None else {})}
    rec = get_recipe(dataset).with_overrides(changes)  # milestones follow epochs, as in `collegial train`
    data = load_dataset(dataset, None if data_dir is None else str(data_dir), train_limit=train_limit,
                        test_limit=test_limit)
    run_training(RunConfig(family=family, arch=arch, dataset=dataset, out=Path(out), seed=seed, progress=progress,
                           verbose=False), rec, data)
    return load_run(out)


# ------------------------------------------------------------------------------ readers
def load_search(path: PathLike) -> SearchResult:
    """A :class:`SearchResult` from ``search --out``'s ``search.json`` (a file or its folder)."""
    return SearchResult.from_dict(_read(path, "search.json"))


def load_verify(path: PathLike) -> VerifyResult:
    """A :class:`VerifyResult` from ``verify --out``'s ``verify.json`` (a file or its folder)."""
    return VerifyResult.from_dict(_read(path, "verify.json"))


@dataclass
class Figure1:
    """``reproduce figure1 --out``'s ``figure1.json``: its settings (``config``, ``recipe``),
    the baseline, each curve's points (``curves[problem]["points"]``: arch, variance, per-seed
    errors, paired difference to the baseline) and rank correlation, and the optima against the
    baseline."""

    config: dict[str, Any]
    curves: dict[str, dict[str, Any]]
    baseline: dict[str, Any]
    data: dict[str, Any]

    def optimum_minus_baseline(self, problem: str) -> dict[str, Any]:
        return self.data[f"{problem}_minus_baseline"]

    def verdict(self) -> dict[str, Any]:
        """The pre-registered criteria, each with its status (pass, fail, not testable, smoke test)."""
        return self.data.get("verdict", {})

    def predictors(self, curve: str = "all") -> list[dict[str, Any]]:
        """Each predictor's rank correlation with the test error on ``curve`` (primal, dual, or
        all: both pooled)."""
        cur = self.data.get("pooled", {}) if curve == "all" else self.curves[curve]
        return cur.get("predictors", [])

    def to_json(self, indent: int | None = 1) -> str:
        return strict_json(self.data, indent=indent)


def load_figure1(path: PathLike) -> Figure1:
    """A finished sweep's ``figure1.json`` (a file or its folder); one line for a sweep that has
    only pre-registered its criteria so far."""
    d = _read(path, "figure1.json")
    if isinstance(d, dict) and str(d.get("status", "")).startswith("registered"):
        raise UserError(f"{path}: the sweep has not finished (figure1.json holds its pre-registered criteria only)")
    try:
        return Figure1(d["config"], d["curves"], d["baseline"], d)
    except (KeyError, TypeError):
        raise UserError(f"{path} is not a figure1.json (no config, curves or baseline)") from None


def load_run(path: PathLike) -> Run:
    """A training run folder (``train --out``) read back as a :class:`Run`."""
    out = Path(path)
    config = _read(out, "config.json")
    metrics_file = out / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.is_file() else []
    result = _read(out, "result.json") if (out / "result.json").is_file() else None
    return Run(out, config, metrics, result)
