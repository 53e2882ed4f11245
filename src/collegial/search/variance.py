"""Variance curves V1(n) for the search, with their Monte Carlo uncertainty.

A *variance curve* is the normalized NTK variance of one path of width n, ``V1(n)``, taken from
an Algorithm 1 result (``collegial fit-alpha --json``'s ``alpha.json``, SPEC section 3) in one
of three models:

* ``prop1``: ``V1(n) = exp(alpha / n) - 1`` (Proposition 1);
* ``fit2``: ``V1(n) = beta * n**-p * exp(alpha / n)``;
* ``empirical``: the Monte Carlo table itself, interpolated linearly in ``(log n, log v)``
  (no extrapolation outside the measured widths).

Uncertainty is propagated by a parametric bootstrap of the Monte Carlo table: each draw replaces
every measured ``v(n_i)`` by ``v(n_i) * exp(z * se_i / v(n_i))`` (z standard normal; the delta
method on ``log v``), refits the model with the same estimator, and shifts the refit so that the
draws are centred on the file's own fit. ``draws(n, k)`` returns ``(k, len(n))`` samples of the
curve; they keep the correlation between widths that a shared fit induces, which is what the
near-tie test in :mod:`collegial.search.solve` needs.

Estimators used for the refits (SPEC section 3): ``prop1`` by least squares of
``log(1 + v) = alpha / n`` through the origin; ``fit2`` by weighted least squares of
``log v = log beta - p log n + alpha / n`` (weights ``v / se``, the inverse standard error of
``log v``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collegial.errors import UserError
from collegial.ntk.alpha import fit2_theta, prop1_alpha

VARIANCE_MODELS: tuple[str, ...] = ("prop1", "fit2", "empirical")

#: Default number of bootstrap draws of the curve (seeded: results are deterministic).
DEFAULT_DRAWS = 1000


@dataclass(frozen=True)
class AlphaData:
    """The contents of an ``alpha.json`` (Algorithm 1's output).

    ``widths``, ``variance``, ``stderr``: the Monte Carlo table, shape ``(W,)`` each (may be empty
    when only ``alpha`` is known, in which case the curve carries no uncertainty).
    """

    alpha: float
    fit2: dict[str, float] | None
    widths: np.ndarray
    variance: np.ndarray
    stderr: np.ndarray
    trials: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "fit2": self.fit2,
            "widths": [int(w) for w in self.widths],
            "variance": [float(v) for v in self.variance],
            "stderr": [float(s) for s in self.stderr],
            "trials": self.trials,
            **self.meta,
        }


def _num(x: Any, what: str, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise UserError(f"{where}: {what} must be a finite number, got {x!r}")
    return float(x)


def parse_alpha(obj: Any, where: str = "alpha data") -> AlphaData:
    """Validate a decoded ``alpha.json`` object; raise :class:`UserError` on anything malformed."""
    if not isinstance(obj, Mapping):
        raise UserError(f"{where}: expected a JSON object with key 'alpha'")
    if "alpha" not in obj:
        raise UserError(f"{where}: missing key 'alpha'")
    alpha = _num(obj["alpha"], "'alpha'", where)
    if alpha <= 0:
        raise UserError(f"{where}: 'alpha' must be positive, got {alpha}")
    fit2 = obj.get("fit2")
    if fit2 is not None:
        if not isinstance(fit2, Mapping) or not {"beta", "p", "alpha"} <= set(fit2):
            raise UserError(f"{where}: 'fit2' must be an object with keys beta, p, alpha")
        fit2 = {k: _num(fit2[k], f"fit2.{k}", where) for k in ("beta", "p", "alpha")}
        if fit2["beta"] <= 0:
            raise UserError(f"{where}: fit2.beta must be positive, got {fit2['beta']}")
    cols = {}
    for key in ("widths", "variance", "stderr"):
        val = obj.get(key, [])
        if not isinstance(val, list):
            raise UserError(f"{where}: '{key}' must be a list")
        cols[key] = [_num(x, f"an entry of '{key}'", where) for x in val]
    lens = {k: len(v) for k, v in cols.items()}
    if len(set(lens.values())) != 1:
        raise UserError(f"{where}: 'widths', 'variance' and 'stderr' differ in length {lens}")
    widths = np.asarray(cols["widths"], dtype=np.float64)
    if widths.size and (np.any(widths != np.round(widths)) or np.any(widths < 1)):
        raise UserError(f"{where}: 'widths' must be positive integers")
    order = np.argsort(widths)
    widths = widths[order].astype(np.int64)
    if np.any(np.diff(widths) == 0):
        raise UserError(f"{where}: 'widths' has repeated entries")
    variance = np.asarray(cols["variance"], dtype=np.float64)[order]
    stderr = np.asarray(cols["stderr"], dtype=np.float64)[order]
    if np.any(variance <= 0):
        raise UserError(f"{where}: every 'variance' entry must be positive")
    if np.any(stderr < 0):
        raise UserError(f"{where}: 'stderr' entries must be non-negative")
    trials = obj.get("trials")
    meta = {k: obj[k] for k in ("family", "channels", "bn", "seed") if k in obj}
    return AlphaData(
        alpha,
        fit2,
        widths,
        variance,
        stderr,
        int(trials) if isinstance(trials, (int, float)) and not isinstance(trials, bool) else None,
        meta,
        where,
    )


def load_alpha_file(path: str | os.PathLike[str]) -> AlphaData:
    """Read and validate ``alpha.json`` (a directory holding one is accepted too)."""
    p = Path(path)
    if p.is_dir():
        p = p / "alpha.json"
    if not p.is_file():
        raise UserError(f"alpha file {str(p)!r} does not exist (make one with 'collegial fit-alpha --json --out DIR')")
    try:
        obj = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read alpha file {str(p)!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"alpha file {str(p)!r} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return parse_alpha(obj, f"alpha file {str(p)!r}")


def alpha_data_from_fit(fit: Any, source: str = "Algorithm 1") -> AlphaData:
    """Convert a :class:`collegial.ntk.alpha.AlphaFit` (or anything with ``to_dict()``/``to_json()``
    or the contract's attributes) into :class:`AlphaData`."""
    for name in ("to_dict", "as_dict", "to_json_dict"):
        if hasattr(fit, name):
            obj = getattr(fit, name)()
            if isinstance(obj, str):
                obj = json.loads(obj)
            return parse_alpha(obj, source)
    keys = ("alpha", "fit2", "widths", "variance", "stderr", "trials", "family", "channels", "bn", "seed")
    obj = {}
    for k in keys:
        if hasattr(fit, k):
            v = getattr(fit, k)
            if hasattr(v, "tolist"):
                v = v.tolist()
            elif hasattr(v, "__dataclass_fields__"):
                v = {f: getattr(v, f) for f in v.__dataclass_fields__}
            obj[k] = v
    return parse_alpha(obj, source)


# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------


@dataclass
class VarianceCurve:
    """``V1(n)`` in one model, with bootstrap draws for its uncertainty.

    ``domain``: the widths the model may be evaluated at (``(lo, hi)`` inclusive; ``None`` =
    any positive width).
    """

    model: str
    data: AlphaData
    draws_count: int = DEFAULT_DRAWS
    seed: int = 0
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.model not in VARIANCE_MODELS:
            raise UserError(
                f"unknown variance model {self.model!r}; choose from {', '.join(VARIANCE_MODELS)}"
            )
        d = self.data
        if self.model == "fit2" and d.fit2 is None:
            raise UserError(f"{d.source}: has no 'fit2' entry, needed by --variance fit2")
        if self.model == "empirical" and d.widths.size < 2:
            raise UserError(f"{d.source}: the empirical model needs a table of at least 2 widths")
        if self.draws_count < 2:
            raise ValueError("draws_count must be >= 2")

    # -- point values --------------------------------------------------------------------

    @property
    def domain(self) -> tuple[int, int] | None:
        if self.model == "empirical":
            return int(self.data.widths[0]), int(self.data.widths[-1])
        return None

    @property
    def has_uncertainty(self) -> bool:
        return bool(self.data.widths.size >= 2 and np.any(self.data.stderr > 0))

    def check_domain(self, n: np.ndarray, what: str = "width") -> None:
        dom = self.domain
        n = np.atleast_1d(n)
        if dom is not None and (n.min() < dom[0] or n.max() > dom[1]):
            bad = int(n[(n < dom[0]) | (n > dom[1])][0])
            raise UserError(
                f"{what} n={bad} lies outside the empirical variance table "
                f"(n in {dom[0]}..{dom[1]}); use --variance prop1 or fit2, or a narrower --n-range"
            )

    def _eval(self, n: np.ndarray, params: np.ndarray | None, table: np.ndarray | None) -> np.ndarray:
        """Evaluate the model at widths ``n`` (``(N,)``) for a batch of parameters / tables.

        prop1: ``params`` ``(K,)`` alphas; fit2: ``(K, 3)``; empirical: ``table`` ``(K, W)``.
        Returns ``(K, N)``."""
        nf = np.asarray(n, dtype=np.float64)[None, :]
        if self.model == "prop1":
            return np.expm1(params[:, None] / nf)
        if self.model == "fit2":
            c, p, a = params[:, 0:1], params[:, 1:2], params[:, 2:3]
            return np.exp(c - p * np.log(nf) + a / nf)
        lw = np.log(self.data.widths.astype(np.float64))
        ln = np.log(nf[0])
        idx = np.clip(np.searchsorted(lw, ln, side="right") - 1, 0, lw.size - 2)
        t = (ln - lw[idx]) / (lw[idx + 1] - lw[idx])
        lt = np.log(table)
        return np.exp(lt[:, idx] * (1 - t) + lt[:, idx + 1] * t)

    def _point_params(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        d = self.data
        if self.model == "prop1":
            return np.array([d.alpha]), None
        if self.model == "fit2":
            assert d.fit2 is not None
            return np.array([[math.log(d.fit2["beta"]), d.fit2["p"], d.fit2["alpha"]]]), None
        return None, d.variance[None, :]

    def __call__(self, n: np.ndarray | int) -> np.ndarray:
        """``V1(n)`` (``(N,)`` float64) for integer widths ``n``."""
        n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
        self.check_domain(n_arr)
        params, table = self._point_params()
        return self._eval(n_arr, params, table)[0]

    # -- uncertainty ---------------------------------------------------------------------

    def _table_draws(self) -> np.ndarray:
        """``(K, W)`` bootstrap replicas of the Monte Carlo table (log-normal, delta method)."""
        if "table" not in self._cache:
            d = self.data
            rng = np.random.default_rng(self.seed)
            rel = d.stderr / d.variance
            z = rng.standard_normal((self.draws_count, d.widths.size))
            self._cache["table"] = d.variance[None, :] * np.exp(z * rel[None, :] - 0.5 * rel**2)
        return self._cache["table"]

    def _param_draws(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        d = self.data
        params, table = self._point_params()
        if not self.has_uncertainty:
            k = self.draws_count
            if params is not None:
                return np.repeat(params, k, axis=0), None
            return None, np.repeat(table, k, axis=0)
        tab = self._table_draws()
        if self.model == "empirical":
            return None, tab
        # bootstrap refits with Algorithm 1's own estimators (central values come from the file)
        if self.model == "prop1":
            refit = prop1_alpha(d.widths, tab)
            return params + (refit - prop1_alpha(d.widths, d.variance)), None
        w = d.variance / d.stderr if np.all(d.stderr > 0) else None
        refit = fit2_theta(d.widths, tab, w)
        return params + (refit - fit2_theta(d.widths, d.variance, w)), None

    def draws(self, n: np.ndarray | int) -> np.ndarray:
        """``(K, N)`` bootstrap samples of ``V1`` at widths ``n`` (K = ``draws_count``)."""
        n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
        self.check_domain(n_arr)
        params, table = self._param_draws()
        return self._eval(n_arr, params, table)

    def stderr(self, n: np.ndarray | int) -> np.ndarray:
        """Bootstrap standard error of ``V1(n)`` (``(N,)``)."""
        return self.draws(n).std(axis=0, ddof=1)

    def describe(self) -> str:
        d = self.data
        if self.model == "prop1":
            return f"prop1: V1(n) = exp({d.alpha:.4g}/n) - 1"
        if self.model == "fit2":
            assert d.fit2 is not None
            f = d.fit2
            return f"fit2: V1(n) = {f['beta']:.4g} * n^-{f['p']:.4g} * exp({f['alpha']:.4g}/n)"
        return f"empirical: log-log interpolation of {d.widths.size} widths {d.widths[0]}..{d.widths[-1]}"


def make_curve(
    model: str, data: AlphaData, *, draws: int = DEFAULT_DRAWS, seed: int = 0
) -> VarianceCurve:
    return VarianceCurve(model, data, draws, seed)


def synthetic_alpha(
    alpha: float,
    *,
    fit2: dict[str, float] | None = None,
    widths: np.ndarray | None = None,
    rel_stderr: float = 0.0,
    model: str = "prop1",
) -> AlphaData:
    """An :class:`AlphaData` whose table follows ``prop1`` (or ``fit2``) exactly, with standard
    errors ``rel_stderr * v``. For scans and tests."""
    w = np.asarray(widths if widths is not None else [], dtype=np.int64)
    if model == "fit2" and fit2 is not None:
        v = fit2["beta"] * w.astype(float) ** -fit2["p"] * np.exp(fit2["alpha"] / w)
    else:
        v = np.expm1(alpha / w.astype(float)) if w.size else np.zeros(0)
    return AlphaData(alpha, fit2, w, v, rel_stderr * v, None, {}, f"synthetic alpha={alpha:g}")


# --------------------------------------------------------------------------------------------
# Algorithm 1 on the fly (through collegial.ntk), cached on disk keyed by its settings.

#: Monte Carlo trials per width when the search runs Algorithm 1 itself (the paper uses 2000).
ON_THE_FLY_TRIALS = 500


def cache_dir() -> Path:
    root = os.environ.get("COLLEGIAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "collegial"
    )
    return Path(root) / "alpha"


def alpha_on_the_fly(
    *, trials: int = ON_THE_FLY_TRIALS, seed: int = 0, progress: bool = False, **settings: Any
) -> AlphaData:
    """Run Algorithm 1 (``collegial.ntk.alpha.run_algorithm1``, its default probe and widths, no
    1/m-law check) or reuse a cached result.

    The cache file is ``cache_dir()/<sha1 of the settings>.json`` in the ``alpha.json`` format."""
    try:
        from collegial.ntk import alpha as ntk_alpha
    except ImportError as e:  # pragma: no cover - only before collegial.ntk exists
        raise UserError(
            f"no --alpha-file given and Algorithm 1 is unavailable ({e}); pass --alpha-file"
        ) from None
    key_obj = {
        "trials": trials,
        "seed": seed,
        "widths": list(getattr(ntk_alpha, "DEFAULT_WIDTHS", ())),
        **{k: settings[k] for k in sorted(settings)},
    }
    key = hashlib.sha1(json.dumps(key_obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"{key}.json"
    source = f"Algorithm 1 (T={trials}, seed={seed}; cached at {path})"
    if path.is_file():
        try:
            return parse_alpha(json.loads(path.read_text()), source)
        except (UserError, json.JSONDecodeError, OSError, UnicodeDecodeError):
            pass  # a corrupt cache entry is recomputed
    kwargs: dict[str, Any] = {"trials": trials, "seed": seed, "m_law": (), "progress": progress, **settings}
    accepted = inspect.signature(ntk_alpha.run_algorithm1).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    fit = ntk_alpha.run_algorithm1(**kwargs)
    data = alpha_data_from_fit(fit, f"Algorithm 1 (T={trials}, seed={seed})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data.to_dict()))
        tmp.replace(path)
    except OSError:
        pass  # caching is best effort
    return AlphaData(
        data.alpha, data.fit2, data.widths, data.variance, data.stderr, data.trials, data.meta, source
    )


#: The variance model used when ``--variance`` is not given (see docs/search.md for why).
DEFAULT_VARIANCE_MODEL = "empirical"


def load_curve(
    alpha_file: str | os.PathLike[str] | None,
    model: str = DEFAULT_VARIANCE_MODEL,
    *,
    trials: int = ON_THE_FLY_TRIALS,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    progress: bool = False,
) -> VarianceCurve:
    """The curve from ``alpha_file``, or from Algorithm 1 run on the fly (cached) when None."""
    if model not in VARIANCE_MODELS:
        raise UserError(f"unknown variance model {model!r}; choose from {', '.join(VARIANCE_MODELS)}")
    if alpha_file is not None:
        data = load_alpha_file(alpha_file)
    else:
        if trials < 2:
            raise UserError(f"--trials must be at least 2, got {trials}")
        data = alpha_on_the_fly(trials=trials, seed=seed, progress=progress)
    return make_curve(model, data, draws=draws, seed=seed)
