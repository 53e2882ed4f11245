"""The search's variance curve: a model of ``V1(n)`` with bootstrap draws, for one family.

The models and the bootstrap of the Monte Carlo table live in :mod:`collegial.ntk.fits`, the
``alpha.json`` schema in :mod:`collegial.ntk.curve`; this module adds what the search needs on top:

* :class:`VarianceCurve` -- one model of an :class:`~collegial.ntk.curve.AlphaFit` with a fixed
  set of ``draws`` bootstrap refits (seeded, cached), ``(K, N)`` samples of ``V1`` that keep the
  correlation between widths a shared fit induces (what the near-tie test needs);
* :func:`load_curve` -- the curve from an ``alpha.json``, or from Algorithm 1 run here and
  cached under a key of every probe option; refuses a curve measured by another probe than
  the searched family declares (:attr:`collegial.models.Family.probe`: families that declare
  the same block, e.g. every ResNeXt, share curves) or on other inputs than it declares
  (``--channels``: :func:`probe_mismatch`), unless asked to use it anyway, with a note.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.models import get_family
from collegial.ntk import alpha as ntk_alpha
from collegial.ntk.curve import SCHEMA_VERSION, AlphaFit, synthetic_fit
from collegial.ntk.fits import MODEL_CHOICES, VarianceModel, evaluate
from collegial.ntk.inputs import ProbeInputs

#: The variance models a curve may use (``auto`` included): the vocabulary of :mod:`collegial.ntk.fits`.
VARIANCE_MODELS: tuple[str, ...] = MODEL_CHOICES
#: The variance model used when ``--variance`` is not given: the smooth fit where it fits.
DEFAULT_VARIANCE_MODEL = "auto"
#: Default number of bootstrap draws of the curve (seeded: results are deterministic).
DEFAULT_DRAWS = 1000
#: How the draws behind P(optimal), the optimal sets and the near-ties are made
#: (:meth:`VarianceCurve.draws` with ``for_argmin``): ``normal``: the same log-normal draws as the
#: standard errors (the standard errors taken as exact); ``t``: Student t with the standard
#: errors' own ``pairs - 1`` degrees of freedom (each is estimated from the spread of the probe's
#: input pairs; normal for a one-pair table); ``calibrated`` (default): t, widened by
#: :data:`CALIBRATED_SCALE`, at which ``bench/calibration.py`` measured the reported P(optimal)
#: within 0.05 of how often it is the true optimum on average (the winner's curse of an argmin
#: over bootstrap draws; binned gap 0.020-0.047 on 80 fresh Algorithm 1 runs and 300 synthetic
#: replicates at T = 2000) and the 95% optimal set covering it in 93-96% (dual) and 98-99%
#: (primal, a near-tie) of them (bench/RESULTS.md).
ESTIMATORS: tuple[str, ...] = ("normal", "t", "calibrated")
DEFAULT_ESTIMATOR = "calibrated"
CALIBRATED_SCALE = 2.0
#: Monte Carlo trials per width when the search runs Algorithm 1 itself (the paper's T).
ON_THE_FLY_TRIALS = 2000
#: Initializations per input pair at which ``bench/calibration.py`` measured P(optimal) and the
#: optimal sets calibrated (T = 2000 over 8 pairs); with fewer the answer's first lines say so.
CALIBRATED_PER_PAIR = 250


@dataclass
class VarianceCurve:
    """``V1(n)`` in one model of ``fit``, with ``draws_count`` bootstrap refits (seed ``seed``).

    ``model``: a model name or ``auto`` (resolved on construction: :attr:`model` is the kind).
    ``source``: where the fit came from, for reports."""

    fit: AlphaFit
    model: str = DEFAULT_VARIANCE_MODEL
    draws_count: int = DEFAULT_DRAWS
    seed: int = 0
    source: str = "<memory>"
    #: What the answer's first line must say about this curve (e.g. a probe it was not measured by).
    notes: list[str] = field(default_factory=list)
    #: The alpha file itself: its path, the SHA-256 of its bytes and its own provenance.
    origin: dict[str, Any] = field(default_factory=dict)
    #: How the draws behind P(optimal) are made (:data:`ESTIMATORS`).
    estimator: str = DEFAULT_ESTIMATOR
    #: The widening of the ``calibrated`` draws (:data:`CALIBRATED_SCALE`; ``bench/calibration.py``
    #: measures others).
    widening: float = CALIBRATED_SCALE
    requested: str = field(init=False)
    _params: np.ndarray | None = field(default=None, init=False, repr=False)
    _argmin_params: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_choice("model", self.model, VARIANCE_MODELS, "variance model")
        check_choice("estimator", self.estimator, ESTIMATORS, "bootstrap estimator")
        if self.draws_count < 2:
            raise UserError(f"need at least 2 bootstrap draws, got {self.draws_count}")
        if not self.widening > 0:
            raise UserError(f"`widening` of the calibrated draws must be > 0, got {self.widening}")
        self.requested = self.model
        self.model = self.fit.auto_model() if self.model == "auto" else self.model

    @property
    def fitted(self) -> VarianceModel:
        return self.fit.model(self.model)

    @property
    def domain(self) -> tuple[int, int]:
        return self.fitted.domain

    def check_domain(self, n: np.ndarray, what: str = "width") -> None:
        self.fitted.check_domain(n, what)

    def __call__(self, n: np.ndarray | int) -> np.ndarray:
        """``V1(n)``: ``(N,)`` float64."""
        return self.fitted(n)

    def draws(self, n: np.ndarray | int, *, for_argmin: bool = False) -> np.ndarray:
        """``(K, N)`` bootstrap samples of ``V1`` at widths ``n`` (K = ``draws_count``): log-normal
        redraws of the table with its standard errors (standard errors, intervals), or with
        ``for_argmin`` the :attr:`estimator`'s draws (P(optimal), optimal sets, near-ties)."""
        arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
        self.check_domain(arr)
        if self._params is None:
            self._params = self.fitted.param_draws(self.draws_count, self.seed)
        params = self._params
        if for_argmin and self.estimator != "normal":
            if self._argmin_params is None:
                # one pair: the standard errors come from the T trials themselves (normal draws)
                dof = self.fit.pairs - 1 if self.fit.pairs > 1 else None
                scale = self.widening if self.estimator == "calibrated" else 1.0
                self._argmin_params = self.fitted.param_draws(self.draws_count, self.seed, dof, scale)
            params = self._argmin_params
        return evaluate(self.model, params, self.fitted.widths, arr)

    def stderr(self, n: np.ndarray | int) -> np.ndarray:
        return self.draws(n).std(axis=0, ddof=1)

    def describe(self) -> str:
        auto = " (auto)" if self.requested == "auto" else ""
        return self.fitted.describe().replace(":", f"{auto}:", 1)

    def with_model(self, model: str) -> VarianceCurve:
        """The same fit in another model (same draws count and seed)."""
        return VarianceCurve(self.fit, model, self.draws_count, self.seed, self.source, list(self.notes),
                             dict(self.origin), self.estimator, self.widening)


def synthetic_curve(v_of_n: Any, widths: Any, *, model: str = "prop1", rel_stderr: float = 0.0,
                    draws: int = DEFAULT_DRAWS, family: str = "resnext29") -> VarianceCurve:
    """A curve whose table is ``v_of_n(widths)`` exactly (for scans, benchmarks and tests)."""
    fit = synthetic_fit(v_of_n, widths, rel_stderr=rel_stderr, family=family)
    return VarianceCurve(fit, model, draws, 0, "synthetic")


# --------------------------------------------------------------------------------------------
# Algorithm 1 on the fly (through collegial.ntk), cached on disk keyed by every probe option.


def cache_dir() -> Path:
    root = os.environ.get("COLLEGIAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "collegial"
    )
    return Path(root) / "alpha"


def probe_key(family: str) -> dict[str, Any]:
    """What identifies a family's declared probe in cache keys: the canonical family that
    declares it (``resnext29`` for every ResNeXt), its input shape, and the factory's module,
    name and a hash of its source (so editing a block invalidates its cached curves)."""
    fam = get_family(family)
    fn = fam.probe
    try:
        src = inspect.getsource(fn)  # type: ignore[arg-type]
    except (OSError, TypeError):
        src = repr(fn)
    return {"family": fam.probe_owner, "input_shape": list(fam.probe_input_shape or ()),
            "probe": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}",
            "probe_source": hashlib.sha1(src.encode()).hexdigest()[:12]}


def alpha_on_the_fly(
    *, family: str, trials: int = ON_THE_FLY_TRIALS, seed: int = 0, inputs: Any = None,
    progress: bool = False, widths: Sequence[int] | None = None, device: str = "cpu",
) -> tuple[AlphaFit, str]:
    """Run Algorithm 1 on ``family``'s declared probe (``widths``, default
    :data:`~collegial.ntk.alpha.DEFAULT_WIDTHS`; no 1/m check) or reuse a
    cached result; returns the fit and where it came from. The cache file is
    ``cache_dir()/<sha1 of the probe options>.json`` in the ``alpha.json`` schema
    (:func:`probe_key` identifies the probe; not ``device``, where Algorithm 1 runs: the same
    seed gives the same curve on every device, up to float rounding)."""
    inputs = ProbeInputs() if inputs is None else inputs
    widths = sorted(set(widths or ntk_alpha.DEFAULT_WIDTHS))
    key_obj = {"schema": SCHEMA_VERSION, **probe_key(family), "trials": trials, "seed": seed,
               "widths": widths, **inputs.options()}
    key = hashlib.sha1(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{key}.json"
    source = f"Algorithm 1 (cached at {path})"
    if path.is_file():
        try:
            return AlphaFit.from_json(path), source
        except UserError:
            pass  # a corrupt or outdated cache entry is recomputed
    fit = ntk_alpha.run_algorithm1(family=get_family(family).probe_owner, trials=trials, seed=seed, inputs=inputs, m_law=(),
                                   progress=progress, widths=widths, device=device)
    try:
        fit.to_json(path, overwrite=True)  # atomic
    except (OSError, UserError):
        pass  # caching is best effort
    return fit, source


def fit_alpha_command(family: str) -> str:
    """The command that measures ``family``'s curve (with the ``--import`` a plugin needs)."""
    from collegial.models.plugins import import_hint

    return f"collegial {import_hint(get_family(family).module)}fit-alpha --family {family} --json --out DIR"


def measured_shape(fit: AlphaFit) -> tuple[int, ...] | None:
    """The shape of one input the fit's probe was measured on: its ``input_shape``, or, in a
    file that does not record it (schema 2), ``(C, S, S)`` from ``channels`` and ``spatial``;
    None for a synthetic table that names none (:func:`collegial.ntk.curve.synthetic_fit`)."""
    if fit.input_shape:
        return tuple(fit.input_shape)
    if fit.engine == "synthetic":
        return None
    return (fit.channels, fit.spatial, fit.spatial) if fit.spatial else (fit.channels,)


def probe_mismatch(fit: AlphaFit, family: str) -> str | None:
    """Why ``fit`` was not measured on the block ``family`` declares at its declared size (a
    resized block: ``fit-alpha --channels``), or None when it was (or ``family`` declares none)."""
    declared = get_family(family).probe_input_shape
    got = measured_shape(fit)
    if declared is None or got is None or got == tuple(declared):
        return None
    fmt = "x".join
    return (f"measured on inputs of shape {fmt(map(str, got))}, not on the "
            f"{fmt(map(str, declared))} that {family}'s probe block declares")


def check_probe(fit: AlphaFit, family: str, where: str, *, allow_mismatch: bool = False) -> str | None:
    """:class:`UserError` unless ``fit`` was measured by the probe block ``family`` declares
    (the fit's family itself, or one that declares the very same block) at its declared input
    size and channels (:func:`probe_mismatch`). With ``allow_mismatch`` a fit on another size
    is accepted: the returned note says so (None when nothing needs saying)."""
    fam = get_family(family)
    own = (f"measure its own: '{fit_alpha_command(family)}'" if fam.probe is not None else
           f"{family} declares no probe block, so only a curve measured for {family} itself fits it")
    if fit.family != family:
        other = fit.family
        try:
            same = fam.shares_probe(get_family(other))
        except UserError:
            raise UserError(
                f"{where} was measured by the {other!r} probe, which is not a registered family here; "
                f"{own}, or import the module that registers {other!r} ('collegial --import MODULE')"
            ) from None
        if not same:
            raise UserError(f"{where} was measured by the {other!r} probe, not by {family}'s; {own}")
    why = probe_mismatch(fit, family)
    if why is None:
        return None
    if not allow_mismatch:
        raise UserError(f"{where} was {why}; {own}, or pass `allow_probe_mismatch=True` to use it anyway")
    return f"note: {where} was {why}; used anyway, as asked"


def load_curve(
    alpha_file: str | os.PathLike[str] | None,
    model: str = DEFAULT_VARIANCE_MODEL,
    *,
    family: str = "resnext29",
    trials: int = ON_THE_FLY_TRIALS,
    seed: int = 0,
    inputs: Any = None,
    draws: int = DEFAULT_DRAWS,
    progress: bool = False,
    allow_probe_mismatch: bool = False,
    widths: Sequence[int] | None = None,
    device: str = "cpu",
) -> VarianceCurve:
    """The curve of model family ``family``: from ``alpha_file``, which must have been measured
    by the probe ``family`` declares, at its declared size (:func:`check_probe`; with
    ``allow_probe_mismatch`` another size is used, and :attr:`VarianceCurve.notes` says so), or,
    when None, from Algorithm 1 run here on that probe at ``widths`` (cached: :func:`alpha_on_the_fly`)."""
    check_choice("model", model, VARIANCE_MODELS, "variance model")  # before any work
    notes: list[str] = []
    if alpha_file is not None:
        fit = AlphaFit.from_json(alpha_file)
        source = str(alpha_file)
        origin = file_origin(alpha_file, fit)
        note = check_probe(fit, family, f"alpha file {source!r}", allow_mismatch=allow_probe_mismatch)
        notes += [note] if note else []
        if fit.estimator == "plain":
            notes.append(f"alpha file {source!r} holds the uncorrected ratio Var[K]/E[K]^2 of an older collegial, "
                         f"biased low at small widths ({fit.trials // max(fit.pairs, 1)} initializations per pair); "
                         "fit-alpha measures it again with the jackknife correction")
    else:
        if get_family(family).probe is None:
            raise UserError(f"model family {family!r} declares no probe; pass an alpha file measured for it")
        if trials < 2:
            raise UserError(f"need at least 2 Monte Carlo trials per width, got {trials}")
        fit, source = alpha_on_the_fly(family=family, trials=trials, seed=seed, inputs=inputs,
                                       progress=progress, widths=widths, device=device)
        origin = {"path": None, "sha256": None, "provenance": fit.provenance}
    notes += [note] if (note := few_trials_note(fit)) else []
    return VarianceCurve(fit, model, draws, seed, source, notes, origin)


def few_trials_note(fit: AlphaFit) -> str | None:
    """The answer's note when ``fit`` has fewer initializations per input pair than P(optimal)
    was calibrated at (:data:`CALIBRATED_PER_PAIR`); ``None`` otherwise (or for a synthetic fit)."""
    per_pair = fit.trials // max(fit.pairs, 1)
    if fit.trials <= 0 or per_pair >= CALIBRATED_PER_PAIR:
        return None
    return (f"note: {per_pair} initializations per input pair (T={fit.trials}): P(optimal) and the optimal sets were "
            f"calibrated at {CALIBRATED_PER_PAIR} (T={ON_THE_FLY_TRIALS} over 8 pairs) and are overconfident with "
            "fewer (at 25 the 95% sets covered the optimum in 82-93% of runs, bench/RESULTS.md)")


def file_origin(alpha_file: str | os.PathLike[str], fit: AlphaFit) -> dict[str, Any]:
    """Which alpha file a result used: its path, the SHA-256 of its bytes (None for JSON text)
    and the provenance it records (the command, commit and time that made it)."""
    p = Path(alpha_file)
    if str(alpha_file).lstrip().startswith("{"):
        return {"path": None, "sha256": hashlib.sha256(str(alpha_file).encode()).hexdigest(), "provenance": fit.provenance}
    p = p / "alpha.json" if p.is_dir() else p
    try:
        digest: str | None = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:  # pragma: no cover - it was just read
        digest = None
    return {"path": str(p), "sha256": digest, "provenance": fit.provenance}
