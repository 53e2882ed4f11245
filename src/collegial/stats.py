"""Small statistics shared by every layer: the mean and its standard error."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["mean_se"]


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
