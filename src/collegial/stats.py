"""Small statistics shared by every layer: the mean and its standard error, rank correlations
with exact permutation p-values, and paired differences over seeds."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

__all__ = ["mean_se", "rank_correlation", "correlations", "paired_difference", "seeds_to_resolve",
           "EXACT_PERMUTATIONS", "RankKind"]

RankKind = Literal["spearman", "kendall"]

#: Up to this many points a permutation p-value enumerates every ordering (9! = 362880); above it
#: 20000 seeded random permutations are drawn.
EXACT_PERMUTATIONS = 9


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean of ``values`` and its standard error, ``s / sqrt(K)`` with ``s`` the sample standard
    deviation (``ddof=1``) of the ``K`` values.

    One value has a mean but no standard error: ``(value, nan)`` (a spread cannot be estimated
    from one value; ``0`` would claim certainty). No values: ``(nan, nan)``.
    """
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2:
        return mean, math.nan
    return mean, float(a.std(ddof=1) / math.sqrt(a.size))


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(a, axis=-1), dtype=np.float64)


def _spearman_rows(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of the ranks ``rx`` (shape (N,)) with each row of ``ry`` (shape (P, N))."""
    a = rx - rx.mean()
    b = ry - ry.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum()) * np.sqrt((b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (b @ a) / den


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x`` (shape (N,)) with each row of ``y`` (shape (P, N))."""
    i, j = np.triu_indices(x.size, 1)
    sx = np.sign(x[j] - x[i])
    sy = np.sign(y[:, j] - y[:, i])
    n0 = sx.size
    tx = n0 - np.count_nonzero(sx == 0)
    ty = n0 - np.count_nonzero(sy == 0, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sy @ sx) / np.sqrt(tx * ty)


def correlations(x: Sequence[float], ys: np.ndarray, kind: RankKind = "spearman") -> np.ndarray:
    """The rank correlation (``kind``) of ``x`` (shape (N,)) with every row of ``ys`` (shape
    (P, N)); NaN where a row (or ``x``) is constant."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.atleast_2d(np.asarray(ys, dtype=np.float64))
    if kind == "spearman":
        return _spearman_rows(_ranks(xa), _ranks(ya))
    if kind == "kendall":
        return _kendall_rows(xa, ya)
    raise ValueError(f"unknown rank correlation {kind!r}; choose spearman or kendall")


def rank_correlation(x: Sequence[float], y: Sequence[float], kind: RankKind = "spearman",
                     seed: int = 0) -> tuple[float, float]:
    """``kind``'s rank correlation of ``x`` and ``y`` and its two-sided permutation p-value: the
    share of orderings of ``y`` whose ``|correlation|`` is at least the observed one (exact, every
    ordering, up to :data:`EXACT_PERMUTATIONS` points; else 20000 permutations drawn with ``seed``).
    ``(nan, nan)`` when ``x`` or ``y`` is constant or there are fewer than 3 points."""
    ya = np.asarray(y, dtype=np.float64)
    if ya.size != len(x):
        raise ValueError(f"x has {len(x)} points, y {ya.size}")
    obs = float(correlations(x, ya[None, :], kind)[0]) if ya.size >= 3 else math.nan
    if not math.isfinite(obs):
        return math.nan, math.nan
    if ya.size <= EXACT_PERMUTATIONS:
        perms = ya[np.array(list(itertools.permutations(range(ya.size))))]
    else:
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(ya) for _ in range(20000)])
    null = correlations(x, perms, kind)
    return obs, float(np.mean(np.abs(null) >= abs(obs) - 1e-12))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of ``a - b`` over seeds (paired by seed) and its 95% t-interval; ``sd``: the sample
    standard deviation of the differences (NaN with one seed)."""
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    if d.size < 2 or np.all(d == d[0]):
        return {"mean": mean, "lo": mean, "hi": mean, "seeds": int(d.size), "sd": sd}
    half = float(student_t.ppf(0.975, d.size - 1) * sd / math.sqrt(d.size))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "seeds": int(d.size), "sd": sd}


def seeds_to_resolve(sd: float, difference: float, most: int = 100) -> int | None:
    """The fewest seeds ``S >= 2`` whose paired 95% t-interval half-width, ``t(S-1) sd / sqrt(S)``,
    is below ``difference`` (None when even ``most`` seeds do not reach it)."""
    from scipy.stats import t as student_t

    if not (sd >= 0 and difference > 0):
        raise ValueError(f"need sd >= 0 and difference > 0, got {sd}, {difference}")
    for s in range(2, most + 1):
        if student_t.ppf(0.975, s - 1) * sd / math.sqrt(s) < difference:
            return s
    return None
