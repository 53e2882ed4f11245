"""The models of ``v(n)``, the normalized variance of one NTK entry of one path of width ``n``
(SPEC section 3), fitted to a Monte Carlo table (widths ``n_i``, values ``v_i``, standard errors
``se_i``): evaluated, refitted on bootstrap draws of the table (for standard errors and the
search's near-ties), described and scored by their goodness of fit
``chi^2 = sum_i ((model(n_i) - v_i) / se_i)^2`` on ``W - k`` degrees of freedom:

* ``prop1``: Proposition 1, ``v = exp(alpha / n) - 1``; alpha by least squares on
  ``log(1 + v) = alpha / n`` through the origin (SPEC section 3; unweighted); k = 1.
* ``fit2``: ``v = beta n^-p exp(alpha / n)``; least squares on ``log v = log beta - p log n +
  alpha / n`` weighted by the inverse standard error of ``log v``, ``v / se``, smoothed over the
  widths (``_weights``: a width's own ``se`` is noisy with its ``v``); k = 3.
* ``smooth``: ``log v`` a cubic polynomial in ``log n``, weighted like fit2; k = 4. Smooth
  between measured widths, so it does not pin an optimum to a measured width.
* ``empirical``: the table itself, ``log v`` linear in ``log n`` between measured widths; it
  interpolates (chi^2 = 0 on 0 degrees of freedom).

``auto`` (the default of the search) is ``smooth`` when its fit is acceptable (chi^2 p-value
>= :data:`GOOD_FIT_P`), else ``empirical`` (:meth:`collegial.ntk.curve.AlphaFit.auto_model`).

**One out-of-grid rule** for every model: ``V1`` is defined on the measured widths' range
``[min n_i, max n_i]`` only; a width outside it raises :class:`~collegial.errors.UserError`.

Bootstrap: each draw replaces every ``v_i`` by ``v_i exp(z_i se_i / v_i - se_i^2 / (2 v_i^2))``
(``z_i`` standard normal; log-normal, the delta method on ``log v``) and refits the model with the
same estimator, so draws keep the correlation between widths that a shared fit induces. The
measured table itself and its file, ``alpha.json``, are :mod:`collegial.ntk.curve`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from collegial.choices import check_choice
from collegial.errors import UserError

ModelKind = Literal["prop1", "fit2", "smooth", "empirical"]
MODELS: tuple[ModelKind, ...] = ("prop1", "fit2", "smooth", "empirical")
#: What a caller may ask for: a model, or ``auto`` (:meth:`AlphaFit.auto_model`).
MODEL_CHOICES: tuple[str, ...] = ("auto", *MODELS)
#: chi^2 p-value from which the smooth fit counts as acceptable (``auto``).
GOOD_FIT_P = 0.01
_N_PARAMS = {"prop1": 1, "fit2": 3, "smooth": 4}


def min_widths(kind: str, dof: int = 0) -> int:
    """Measured widths model ``kind`` needs to be fitted with ``dof`` degrees of freedom left
    (the empirical table: 2 widths to interpolate between)."""
    return max(_N_PARAMS.get(kind, 2), 2) + dof


# ----------------------------------------------------------------------------------- models


def _design(kind: str, n: np.ndarray) -> np.ndarray:
    """``(N, k)`` design matrix of a linear model (prop1 on ``log1p v``, others on ``log v``)."""
    n = np.asarray(n, dtype=np.float64)
    if kind == "prop1":
        return (1.0 / n)[:, None]
    if kind == "fit2":
        return np.stack([np.ones_like(n), -np.log(n), 1.0 / n], axis=1)
    if kind == "smooth":
        ln = np.log(n)
        return np.stack([np.ones_like(n), ln, ln * ln, ln**3], axis=1)
    raise ValueError(kind)


def _weights(widths: np.ndarray, v: np.ndarray, se: np.ndarray | None) -> np.ndarray | None:
    """Weights of the ``log v`` fits: the inverse of the *smoothed* relative error (``log(se /
    v)`` fitted linear in ``log n``; the relative errors themselves below 3 widths), or None
    (unweighted) unless every ``v / se`` is finite and positive.

    Smoothed because each width's own ``se / v`` is noisy *with* its ``v``: an input pair with a
    rare large ``K`` raises both ``v`` and, more, its standard error, so weights ``v / se`` give
    high values less weight and bias a fit low where ``K`` is heavy-tailed. Measured on 40
    Algorithm 1 runs of the resnext29 probe (T = 2000, seeds 1-40, against the fit of their mean;
    ``bench/RESULTS.md``): the mean single-table smooth fit was 5.8% low at n = 2, 2.9% at n = 4,
    1.6% at n = 6; with smoothed weights 0.9%, 0.4%, 0.2%."""
    if se is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.asarray(v, dtype=float) / np.asarray(se, dtype=float)
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        return None
    if w.size < 3:
        return w
    a = np.stack([np.ones(w.size), np.log(np.asarray(widths, dtype=float))], axis=1)
    coef, *_ = np.linalg.lstsq(a, -np.log(w), rcond=None)
    return np.exp(-(a @ coef))


def fit_params(
    kind: str, widths: np.ndarray, v: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Parameters of model ``kind`` fitted to tables ``v`` ``(..., W)``: ``(..., k)``
    (empirical: ``log v`` itself). ``weights`` ``(W,)`` (fit2, smooth) or None."""
    v = np.asarray(v, dtype=np.float64)
    if kind == "empirical":
        return np.log(v)
    a = _design(kind, widths)
    if kind == "prop1":
        x = a[:, 0]
        return ((np.log1p(v) @ x) / (x @ x))[..., None]
    w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    return (np.log(v) * w) @ np.linalg.pinv(a * w[:, None]).T


def evaluate(kind: str, params: np.ndarray, widths: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``V1`` at widths ``n`` ``(N,)`` for parameter rows ``params`` ``(K, k)``: ``(K, N)``.
    No domain check (see :meth:`VarianceModel.check_domain`)."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    n = np.asarray(n, dtype=np.float64)
    if kind == "empirical":
        lw = np.log(np.asarray(widths, dtype=np.float64))
        ln = np.log(n)
        idx = np.clip(np.searchsorted(lw, ln, side="right") - 1, 0, lw.size - 2)
        t = (ln - lw[idx]) / (lw[idx + 1] - lw[idx])
        return np.exp(params[:, idx] * (1 - t) + params[:, idx + 1] * t)
    out = params @ _design(kind, n).T
    return np.expm1(out) if kind == "prop1" else np.exp(out)


def table_draws(v: np.ndarray, se: np.ndarray, k: int, seed: int, dof: int | None = None,
                scale: float = 1.0) -> np.ndarray:
    """``(k, W)`` log-normal bootstrap replicas of the Monte Carlo table (seeded): ``log v`` moves
    by ``z * scale * se / v`` with ``z`` standard normal, or Student t with ``dof`` degrees of
    freedom."""
    rng = np.random.default_rng(seed)
    rel = scale * np.asarray(se, dtype=float) / np.asarray(v, dtype=float)
    z = rng.standard_normal((k, len(v))) if dof is None else rng.standard_t(dof, (k, len(v)))
    return np.asarray(v)[None, :] * np.exp(z * rel[None, :] - 0.5 * rel**2)


@dataclass(frozen=True, eq=False)
class VarianceModel:
    """One model of ``V1(n)`` fitted to a Monte Carlo table (arrays ``(W,)``, widths sorted)."""

    kind: str
    widths: np.ndarray
    v: np.ndarray
    se: np.ndarray

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, MODELS, "variance model")
        need = min_widths(self.kind)
        if self.widths.size < need:
            raise UserError(f"the {self.kind} model needs at least {need} measured widths")

    @cached_property
    def weights(self) -> np.ndarray | None:
        return _weights(self.widths, self.v, self.se)

    @cached_property
    def params(self) -> np.ndarray:
        """``(k,)`` fitted parameters (:class:`UserError` when the table cannot be fitted)."""
        try:
            with np.errstate(all="ignore"):
                p = fit_params(self.kind, self.widths, self.v, self.weights)
                ok = np.all(np.isfinite(p)) and np.all(np.isfinite(evaluate(self.kind, p[None, :], self.widths, self.widths)))
        except np.linalg.LinAlgError:
            ok = False
        if not ok:
            raise UserError(f"the {self.kind} model cannot be fitted to this variance table (non-finite values)")
        return p

    @property
    def domain(self) -> tuple[int, int]:
        return int(self.widths[0]), int(self.widths[-1])

    def check_domain(self, n: np.ndarray | int, what: str = "width") -> None:
        lo, hi = self.domain
        arr = np.atleast_1d(np.asarray(n))
        bad = arr[(arr < lo) | (arr > hi)]
        if bad.size:
            raise UserError(
                f"{what} n={int(bad[0])} lies outside the measured widths {lo}..{hi} of the variance "
                "curve; measure it (`run_algorithm1(widths=...)`) or search a narrower `n_range`"
            )

    def __call__(self, n: np.ndarray | int) -> np.ndarray:
        """``V1(n)``: ``(N,)`` float64."""
        arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
        self.check_domain(arr)
        return evaluate(self.kind, self.params[None, :], self.widths, arr)[0]

    def param_draws(self, k: int, seed: int, dof: int | None = None, scale: float = 1.0) -> np.ndarray:
        """``(k, len(params))`` refits on ``k`` bootstrap tables (:func:`table_draws`; the point
        fit repeated when the table carries no uncertainty)."""
        if not np.any(self.se > 0):
            return np.repeat(self.params[None, :], k, axis=0)
        tables = table_draws(self.v, self.se, k, seed, dof, scale)
        with np.errstate(all="ignore"):  # very wide errors can underflow a draw; it stays non-finite
            return fit_params(self.kind, self.widths, tables, self.weights)

    def draws(self, n: np.ndarray | int, k: int = 1000, seed: int = 0) -> np.ndarray:
        """``(k, N)`` bootstrap samples of ``V1`` at widths ``n``."""
        arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
        self.check_domain(arr)
        return evaluate(self.kind, self.param_draws(k, seed), self.widths, arr)

    def stderr(self, n: np.ndarray | int, k: int = 1000, seed: int = 0) -> np.ndarray:
        """Bootstrap standard error of ``V1(n)``: ``(N,)``."""
        return self.draws(n, k, seed).std(axis=0, ddof=1)

    @cached_property
    def chi2(self) -> tuple[float, int]:
        """``(chi^2, degrees of freedom)`` of the fit to the table (NaN without standard errors)."""
        dof = self.widths.size - _N_PARAMS.get(self.kind, self.widths.size)
        if not np.all(self.se > 0):
            return math.nan, dof
        resid = (evaluate(self.kind, self.params[None, :], self.widths, self.widths)[0] - self.v) / self.se
        return float(resid @ resid), dof

    @property
    def p_value(self) -> float:
        """Probability of a chi^2 at least this large if the model were right (NaN at 0 dof)."""
        from scipy.stats import chi2 as chi2_dist

        c, dof = self.chi2
        return float(chi2_dist.sf(c, dof)) if dof > 0 and math.isfinite(c) else math.nan

    def gof(self) -> str:
        """``chi2/dof = 1.23 (p = 0.25)``, or that the model interpolates."""
        c, dof = self.chi2
        if dof <= 0:
            return "interpolates (0 dof)"
        if not math.isfinite(c):
            return "chi2 n/a (no standard errors)"
        return f"chi2/dof = {c / dof:.2f} (p = {self.p_value:.2g})"

    def formula(self) -> str:
        p = self.params
        if self.kind == "prop1":
            return f"exp({p[0]:.4g}/n) - 1"
        if self.kind == "fit2":
            return f"{math.exp(p[0]):.4g} * n^-{p[1]:.4g} * exp({p[2]:.4g}/n)"
        if self.kind == "smooth":
            return f"exp({p[0]:.4g} {p[1]:+.4g} L {p[2]:+.4g} L^2 {p[3]:+.4g} L^3), L = log n"
        return f"log-log interpolation of {self.widths.size} widths {self.domain[0]}..{self.domain[1]}"

    def describe(self) -> str:
        return f"{self.kind}: V1(n) = {self.formula()}; {self.gof()}"

    def summary(self) -> dict[str, Any]:
        c, dof = self.chi2
        return {
            "params": [float(x) for x in self.params] if self.kind != "empirical" else None,
            "chi2": c if math.isfinite(c) else None,
            "dof": int(dof),
            "chi2_per_dof": c / dof if dof > 0 and math.isfinite(c) else None,
            "p_value": self.p_value if math.isfinite(self.p_value) else None,
            "formula": self.formula(),
        }


def prop1_stderr(widths: np.ndarray, v: np.ndarray, se: np.ndarray) -> float:
    """Delta-method standard error of prop1's alpha (unweighted least squares)."""
    x = 1.0 / np.asarray(widths, dtype=float)
    w = x / (x * x).sum()
    var_y = (np.asarray(se, dtype=float) / (1.0 + np.asarray(v, dtype=float))) ** 2
    return float(math.sqrt((w * w * var_y).sum()))


# ----------------------------------------------------------------------------- alpha.json
