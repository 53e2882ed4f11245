"""The measured variance curve: Algorithm 1's Monte Carlo table of ``v(n)`` and how it was
measured (:class:`AlphaFit`), and its file ``alpha.json`` (one schema, validated on reading).

This module is the one place that writes and reads ``alpha.json``. The models of ``v(n)``
fitted to the table (prop1, fit2, smooth, empirical; ``auto``) are :mod:`collegial.ntk.fits`'s;
:meth:`AlphaFit.model` fits them on demand, never storing them as inputs. Its figure (appendix
Figure 2) is :func:`collegial.ntk.plots.plot_alpha`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.io import strict_json, write_text_atomic
from collegial.models.layers import PARAMETERIZATIONS
from collegial.ntk._bn import PROBE_BN_MODES
from collegial.ntk.fits import GOOD_FIT_P, MODEL_CHOICES, MODELS, VarianceModel, min_widths, prop1_stderr
from collegial.ntk.inputs import INPUT_KINDS, inputs_label
from collegial.provenance import provenance as _provenance

#: 3: ``family`` names the model family whose declared probe was measured (``resnext29``, not
#: the ``resnext-block`` of version 2, which is still read) and ``input_shape`` is recorded.
#: 4: ``estimator`` is recorded: ``jackknife`` (the bias-corrected ratio of
#: :func:`collegial.ntk.variance.normalized_variance`); files of versions 2 and 3 are read as
#: ``plain`` (the uncorrected ratio, biased low at few trials per pair).
SCHEMA_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
#: How each version's per-pair estimates were made (``estimator`` of :class:`AlphaFit`).
ESTIMATORS = ("jackknife", "plain")
MAX_WIDTH = 4096
#: Largest variance or standard error an alpha file may hold (a normalized variance of 1e12 is
#: already far outside anything a probe produces).
MAX_VALUE = 1e12
MAX_REL_STDERR = 100.0
#: More Monte Carlo trials than any run could make (a guard against absurd files).
MAX_TRIALS = 10**9
REGENERATE = "regenerate it with 'collegial fit-alpha --json --out DIR'"


@dataclass
class MLawPoint:
    """``V(m, n)`` against the ensemble law ``V(1, n) / m``; ``ratio = V(m, n) m / V(1, n)``
    (averaged over input pairs, each pair's ratio from that pair's own V(1, n))."""

    m: int
    n: int
    variance: float
    stderr: float
    ratio: float
    ratio_stderr: float


@dataclass
class AlphaFit:
    """Algorithm 1's outcome: the Monte Carlo table of ``v(n)`` and how it was measured.

    ``widths``, ``variance``, ``stderr``, ``mean_k``: ``(W,)`` each, widths sorted;
    ``pair_variance``: ``(W, P)`` the per-pair estimates pooled into ``variance`` (standard
    error from their spread; :func:`collegial.ntk.variance.pool_estimates`). The fits are
    derived from the table (:meth:`model`), never stored as inputs."""

    family: str
    channels: int
    bn: str
    seed: int
    trials: int
    widths: list[int]
    variance: list[float]
    stderr: list[float]
    mean_k: list[float] = field(default_factory=list)
    inputs: str = "relu"
    correlation: float | None = 0.6
    pairs: int = 1
    input_data: str | None = None
    pair_variance: list[list[float]] = field(default_factory=list)
    m_law: list[MLawPoint] = field(default_factory=list)
    spatial: int = 8
    #: Shape of one probe input (no batch axis): ``[C, H, W]`` for the bottleneck, ``[C]`` for the MLP.
    input_shape: list[int] = field(default_factory=list)
    parameterization: str = "standard"
    engine: str = ""
    seconds: float = 0.0
    world_size: int = 1
    job_seconds: list[dict[str, float]] = field(default_factory=list)
    #: :func:`collegial.provenance.provenance` (versions of collegial and torch, command, seed, time,
    #: commit); set by :meth:`to_dict` for a fit made here, kept from the file for a loaded one.
    provenance: dict[str, Any] = field(default_factory=dict)
    #: ``jackknife`` (bias-corrected, version 4) or ``plain`` (the uncorrected ratio of older files).
    estimator: str = "jackknife"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _validate_table(self.widths, self.variance, self.stderr, "alpha fit")
        for name in ("trials", "seed", "pairs", "channels", "spatial"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, int) or x < 0 or (name == "pairs" and x < 1):
                raise UserError(f"alpha fit: '{name}' must be a {'positive' if name == 'pairs' else 'non-negative'} "
                                f"integer, got {x!r}")
        if not isinstance(self.input_shape, list) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.input_shape
        ):
            raise UserError(f"alpha fit: 'input_shape' must be a list of positive integers, got {self.input_shape!r}")
        if not isinstance(self.provenance, dict):
            raise UserError(f"alpha fit: 'provenance' must be a JSON object, got {self.provenance!r}")
        self._check_probe_fields()

    def _check_probe_fields(self) -> None:
        """The probe's description is one a probe could have: known inputs, BatchNorm mode and
        parameterization, a correlation in [-1, 1], a plausible trial count, and channels and
        spatial size that agree with ``input_shape``."""
        if self.trials > MAX_TRIALS:
            raise UserError(f"alpha fit: 'trials' {self.trials} exceeds {MAX_TRIALS:g}")
        kinds = (*INPUT_KINDS, "synthetic") if self.engine == "synthetic" else INPUT_KINDS  # synthetic_fit's table
        for name, choices in (("inputs", kinds), ("bn", PROBE_BN_MODES), ("parameterization", PARAMETERIZATIONS),
                              ("estimator", ESTIMATORS)):
            if getattr(self, name) not in choices:
                raise UserError(f"alpha fit: '{name}' must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        c = self.correlation
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not -1 <= c <= 1):
            raise UserError(f"alpha fit: 'correlation' must be a number in [-1, 1] or null, got {c!r}")
        if self.inputs == "relu" and c is None:
            raise UserError("alpha fit: relu inputs need a 'correlation'")
        shape = self.input_shape
        if shape and (shape[0] != self.channels or (self.spatial and shape[1:] != [self.spatial] * 2)):
            raise UserError(f"alpha fit: 'channels' {self.channels} and 'spatial' {self.spatial} disagree with "
                            f"'input_shape' {shape}")

    # ---- models
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.widths, dtype=np.int64),
            np.asarray(self.variance, dtype=np.float64),
            np.asarray(self.stderr, dtype=np.float64),
        )

    def model(self, kind: str = "auto") -> VarianceModel:
        """The fitted model ``kind`` (``auto``: see :func:`auto_model`)."""
        check_choice("kind", kind, MODEL_CHOICES, "variance model")
        if kind == "auto":
            kind = self.auto_model()
        if kind not in self._models:
            self._models[kind] = VarianceModel(kind, *self._arrays())
        return self._models[kind]

    @cached_property
    def _models(self) -> dict[str, VarianceModel]:
        return {}

    def auto_model(self) -> str:
        """``smooth`` where it fits (chi^2 p >= :data:`GOOD_FIT_P`), else ``empirical``."""
        if len(self.widths) < 5:
            return "empirical"
        p = self.model("smooth").p_value
        return "smooth" if not math.isfinite(p) or p >= GOOD_FIT_P else "empirical"

    @property
    def alpha(self) -> float:
        return float(self.model("prop1").params[0])

    @property
    def alpha_stderr(self) -> float:
        return prop1_stderr(*self._arrays())

    @property
    def fit2(self) -> dict[str, float]:
        p = self.model("fit2").params
        return {"beta": float(math.exp(p[0])), "p": float(p[1]), "alpha": float(p[2])}

    def m_law_failures(self, z: float = 3.0) -> list[int]:
        """The m of the 1/m check whose ratio lies more than ``z`` standard errors from 1 (the
        ensemble law V(m, n) = V(1, n) / m, which the search assumes, fails there)."""
        return [p.m for p in self.m_law
                if math.isfinite(p.ratio) and p.ratio_stderr > 0 and abs(p.ratio - 1) > z * p.ratio_stderr]

    def probe_options(self) -> dict[str, Any]:
        """What identifies the probe (the search checks it; cache keys use it)."""
        return {
            "family": self.family,
            "inputs": self.inputs,
            "correlation": self.correlation if self.inputs == "relu" else None,
            "pairs": self.pairs,
            "input_data": self.input_data if self.inputs == "data" else None,
            "channels": self.channels,
            "spatial": self.spatial,
            "input_shape": list(self.input_shape),
            "bn": self.bn,
            "parameterization": self.parameterization,
            "trials": self.trials,
            "seed": self.seed,
        }

    def probe_label(self) -> str:
        """One line naming the probe: ``resnext29, inputs relu(corr=0.6), 8 pairs, T=2000, seed 0``."""
        inp = inputs_label(self.inputs, self.correlation, self.input_data)
        return f"{self.family}, inputs {inp}, {self.pairs} pairs, T={self.trials}, seed {self.seed}"

    # ---- serialization
    def to_dict(self) -> dict[str, Any]:
        if not self.provenance:  # a fit made here (a loaded one keeps where it came from)
            self.provenance = _provenance(self.seed)
        d = asdict(self)
        d.pop("_models", None)
        d["m_law"] = [asdict(p) for p in self.m_law]
        d["alpha"] = self.alpha
        d["alpha_stderr"] = self.alpha_stderr
        d["fit2"] = self.fit2
        d["fits"] = {k: self.model(k).summary() for k in MODELS if len(self.widths) >= min_widths(k)}
        d["auto_model"] = self.auto_model()
        return d

    def to_json(self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> str:
        """The JSON text (strict: NaN/inf as null); also written to the file ``path`` when
        given (an existing file raises :class:`UserError` unless ``overwrite``)."""
        text = strict_json(self.to_dict(), indent=2)
        if path is not None:
            p = Path(path)
            if p.is_dir():
                raise UserError(f"{p} is a directory; give a file path (or use save(DIR))")
            if p.exists() and not overwrite:
                raise UserError(f"{p} exists; refusing to overwrite (pass `overwrite=True`)")
            p.parent.mkdir(parents=True, exist_ok=True)
            # atomic; without `overwrite` also exclusive: of two runs racing for one file, the
            # second fails instead of silently replacing the first's
            write_text_atomic(p, text + "\n", exclusive=not overwrite)
        return text

    @classmethod
    def from_dict(cls, d: Any, where: str = "alpha data") -> AlphaFit:
        """Validate a decoded ``alpha.json``; :class:`UserError` (one line) when it is not one of
        this schema version."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a JSON object")
        version = d.get("schema_version")
        if version is None:
            raise UserError(
                f"{where} comes from an older collegial (no schema_version: one Gaussian input pair); {REGENERATE}"
            )
        if version not in READABLE_VERSIONS:
            raise UserError(f"{where} has schema_version {version!r}, this collegial reads "
                            f"{' and '.join(map(str, READABLE_VERSIONS))}; {REGENERATE}")
        if version == 2:  # the probe was named apart from the families that declare it
            d = {**d, "family": {"resnext-block": "resnext29"}.get(d.get("family"), d.get("family"))}
        if version in (2, 3):  # measured before the jackknife correction
            d = {**d, "estimator": "plain", "schema_version": SCHEMA_VERSION}
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
        missing = {"family", "channels", "bn", "seed", "trials", "widths", "variance", "stderr"} - set(d)
        if missing:
            raise UserError(f"{where}: missing {', '.join(sorted(missing))}; {REGENERATE}")
        _check_measured_stderr(d, where)
        try:
            kw = {k: v for k, v in d.items() if k in known}
            kw["m_law"] = [MLawPoint(**p) for p in d.get("m_law") or []]
            # a file from before provenance was recorded keeps saying so (never today's), with
            # the versions it recorded apart then (``versions``, no longer written)
            kw.setdefault("provenance", {"recorded": False, **(d.get("versions") or {})})
            return cls(**kw)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: malformed ({e}); {REGENERATE}") from None

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> AlphaFit:
        """Load from a file path, a directory holding ``alpha.json``, or JSON text (``{...``)."""
        s = str(path_or_text)
        if s.lstrip().startswith("{"):
            return cls.from_dict(_loads(s, "alpha JSON"), "alpha JSON")
        p = Path(s)
        if p.is_dir():
            p = p / "alpha.json"
        if not p.is_file():
            raise UserError(f"alpha file {str(p)!r} does not exist (make one with 'collegial fit-alpha --json --out DIR')")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read alpha file {str(p)!r}: {e}") from None
        where = f"alpha file {str(p)!r}"
        return cls.from_dict(_loads(text, where), where)

    # ---- output
    def table(self) -> str:
        """Plain text: per width v, s.e. and every model; then the fits and the 1/m check."""
        n = np.asarray(self.widths, dtype=float)
        kinds = [k for k in ("prop1", "fit2", "smooth") if len(self.widths) >= min_widths(k, dof=1)]
        vals = {k: self.model(k)(n) for k in kinds}
        head = f"{'n':>5}  {'v (MC)':>10}  {'s.e.':>9}" + "".join(f"  {k:>10}" for k in kinds)
        lines = [head]
        for i, w in enumerate(self.widths):
            row = f"{w:>5}  {self.variance[i]:>10.5g}  {self.stderr[i]:>9.3g}"
            lines.append(row + "".join(f"  {vals[k][i]:>10.5g}" for k in kinds))
        lines.append(f"prop1 alpha = {self.alpha:.4g} +- {self.alpha_stderr:.2g}")
        for k in kinds:
            lines.append(f"  {self.model(k).describe()}")
        lines.append(f"default model (auto): {self.auto_model()}")
        if self.m_law:
            lines.append("1/m law: ratio = V(m, n) / (V(1, n) / m)")
            for pt in self.m_law:
                lines.append(
                    f"  m={pt.m:<3} n={pt.n:<4} V={pt.variance:.5g} +- {pt.stderr:.2g}   "
                    f"ratio = {pt.ratio:.3f} +- {pt.ratio_stderr:.3f}"
                )
            bad = self.m_law_failures()
            if bad:
                lines.append(f"  note: the 1/m law fails at m = {', '.join(map(str, bad))} (ratio > 3 s.e. from 1): "
                             "the search's V1(n)/m misstates the variance of such ensembles")
        lines.append(
            f"{self.probe_label()}; C={self.channels}, bn={self.bn}, {self.parameterization} "
            f"parameterization, engine={self.engine}, {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False, plot: bool = True) -> Path:
        """Write ``alpha.json`` (and ``alpha.png``) into the directory ``out``, or, when ``out``
        ends in ``.json``, that file (and the ``.png`` beside it); returns the JSON path.
        Existing files raise :class:`UserError` unless ``overwrite``."""
        path = Path(out)
        if path.suffix.lower() == ".json":
            d, target = path.parent, path
        else:
            d, target = path, path / "alpha.json"
        if d.exists() and not d.is_dir():
            raise UserError(f"{d} exists and is not a directory")
        targets = [target] + ([target.with_suffix(".png")] if plot else [])
        if not overwrite:
            for t in targets:
                if t.exists():
                    raise UserError(f"{t} exists; refusing to overwrite (pass `overwrite=True`)")
        d.mkdir(parents=True, exist_ok=True)
        self.to_json(target, overwrite=overwrite)  # exclusive unless `overwrite`: no silent race
        if plot:
            from collegial.ntk.plots import plot_alpha

            plot_alpha(self, target.with_suffix(".png"))
        return target


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{where} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to be an alpha file") from None


def _check_measured_stderr(d: dict[str, Any], where: str) -> None:
    """A measured table's standard errors are all positive: a 0 would silently turn the
    weighted fits into unweighted ones. Only a synthetic table (``engine`` "synthetic", every
    error 0) is exact."""
    se = d.get("stderr")
    if not isinstance(se, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in se):
        return  # the table's own validation names the problem
    exact = d.get("engine") == "synthetic" and all(x == 0 for x in se)
    if not exact and any(x <= 0 for x in se):
        raise UserError(f"{where}: every 'stderr' entry of a measured table must be positive (a 0 is no estimate)")


def _validate_table(widths: Sequence[Any], variance: Sequence[Any], stderr: Sequence[Any], where: str) -> None:
    cols = {"widths": widths, "variance": variance, "stderr": stderr}
    for key, val in cols.items():
        if not isinstance(val, (list, tuple)):
            raise UserError(f"{where}: '{key}' must be a list")
        for x in val:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
                raise UserError(f"{where}: every entry of '{key}' must be a finite number, got {x!r}")
    if len({len(v) for v in cols.values()}) != 1:
        raise UserError(f"{where}: 'widths', 'variance' and 'stderr' differ in length")
    if len(widths) < 2:
        raise UserError(f"{where}: need at least 2 measured widths")
    w = np.asarray(widths, dtype=np.float64)
    if np.any(w != np.round(w)) or np.any(w < 1) or np.any(w > MAX_WIDTH):
        raise UserError(f"{where}: 'widths' must be integers in 1..{MAX_WIDTH}")
    if np.any(np.diff(w) <= 0):
        raise UserError(f"{where}: 'widths' must be strictly increasing")
    if np.any(np.asarray(variance, dtype=float) <= 0) or np.any(np.asarray(variance, dtype=float) > MAX_VALUE):
        raise UserError(f"{where}: every 'variance' entry must lie in (0, {MAX_VALUE:g}]")
    if np.any(np.asarray(stderr, dtype=float) < 0) or np.any(np.asarray(stderr, dtype=float) > MAX_VALUE):
        raise UserError(f"{where}: 'stderr' entries must lie in [0, {MAX_VALUE:g}]")
    if np.any(np.asarray(stderr, dtype=float) > MAX_REL_STDERR * np.asarray(variance, dtype=float)):
        raise UserError(f"{where}: a standard error above {MAX_REL_STDERR:g} times its variance is no estimate")


def synthetic_fit(
    v_of_n: Any, widths: Sequence[int], *, rel_stderr: float = 0.0, family: str = "resnext29"
) -> AlphaFit:
    """An :class:`AlphaFit` whose table is ``v_of_n(widths)`` exactly, standard errors
    ``rel_stderr * v`` (for scans and tests)."""
    w = np.asarray(sorted(int(x) for x in widths), dtype=np.int64)
    v = np.asarray(v_of_n(w.astype(float)), dtype=np.float64)
    return AlphaFit(
        family=family, channels=256, bn="none", seed=0, trials=0, widths=w.tolist(),
        variance=v.tolist(), stderr=(rel_stderr * v).tolist(), inputs="synthetic", correlation=None,
        engine="synthetic",
    )
