"""Streaming moments and the normalized variance ``v = Var[K] / E[K]^2`` with a standard error.

:class:`Moments` is a Welford-style accumulator of the first four moments (count, mean and the
central sums M2, M3, M4) in float64, updated batch-wise and merged pairwise with the formulas
of Chan et al. / Pebay (2008), so ``T`` trials can be streamed in chunks and sharded over ranks.

The standard error of ``v_hat = s^2 / mean^2`` (``s^2`` the unbiased sample variance) is the
delta method on ``(mean, s^2)`` with ``Var(mean) = m2/T``, ``Var(s^2) = (m4 - m2^2)/T`` and
``Cov(mean, s^2) = m3/T`` (``m_k`` the central moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from collegial.errors import UserError


@dataclass
class Moments:
    """Count, mean and central sums ``M2 = sum (x - mean)^2``, ``M3``, ``M4`` (float64)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0

    @classmethod
    def of(cls, values: Tensor | np.ndarray) -> Moments:
        """Moments of one batch (computed two-pass in float64)."""
        x = torch.as_tensor(values).detach().reshape(-1).to(torch.float64)
        n = x.numel()
        if n == 0:
            return cls()
        mu = x.mean()
        d = x - mu
        d2 = d * d
        return cls(n, float(mu), float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum()))

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of the two samples (exact up to rounding)."""
        na, nb = self.count, other.count
        if na == 0:
            return Moments(**vars(other))
        if nb == 0:
            return Moments(**vars(self))
        n = na + nb
        delta = other.mean - self.mean
        d_n = delta / n
        mean = self.mean + d_n * nb
        m2 = self.m2 + other.m2 + delta * d_n * na * nb
        m3 = (
            self.m3
            + other.m3
            + delta * d_n * d_n * na * nb * (na - nb)
            + 3.0 * d_n * (na * other.m2 - nb * self.m2)
        )
        m4 = (
            self.m4
            + other.m4
            + delta * d_n**3 * na * nb * (na * na - na * nb + nb * nb)
            + 6.0 * d_n * d_n * (na * na * other.m2 + nb * nb * self.m2)
            + 4.0 * d_n * (na * other.m3 - nb * self.m3)
        )
        return Moments(n, mean, m2, m3, m4)

    def update(self, values: Tensor | np.ndarray) -> Moments:
        """Add a batch in place; returns ``self``."""
        merged = self.merge(Moments.of(values))
        self.count, self.mean, self.m2, self.m3, self.m4 = (
            merged.count,
            merged.mean,
            merged.m2,
            merged.m3,
            merged.m4,
        )
        return self

    @property
    def variance(self) -> float:
        """Unbiased sample variance."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    def to_tensor(self) -> Tensor:
        return torch.tensor([self.count, self.mean, self.m2, self.m3, self.m4], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: Tensor) -> Moments:
        c, mu, m2, m3, m4 = (float(v) for v in t.tolist())
        return cls(int(round(c)), mu, m2, m3, m4)


@dataclass(frozen=True)
class NormalizedVariance:
    """``v = Var[K] / E[K]^2`` over ``trials`` samples, with its delta-method standard error."""

    v: float
    stderr: float
    mean: float
    var: float
    trials: int


def normalized_variance(mom: Moments) -> NormalizedVariance:
    """Estimate ``v`` and its delta-method standard error from accumulated moments."""
    t = mom.count
    if t < 2:
        raise ValueError("need at least 2 trials for a variance")
    mu = mom.mean
    s2 = mom.variance
    if mu == 0:
        raise UserError("the NTK K is 0 on average (e.g. at every trial): the probe's output does not depend "
                        "on its weights, or every unit is inactive; v = Var[K] / E[K]^2 is undefined")
    v = s2 / (mu * mu)
    c2, c3, c4 = mom.m2 / t, mom.m3 / t, mom.m4 / t
    d_mu = -2.0 * s2 / mu**3
    d_s2 = 1.0 / (mu * mu)
    var_v = (d_mu * d_mu * c2 + d_s2 * d_s2 * (c4 - c2 * c2) + 2.0 * d_mu * d_s2 * c3) / t
    return NormalizedVariance(v, math.sqrt(max(var_v, 0.0)), mu, s2, t)


def merge_distributed(mom: Moments) -> Moments:
    """Merge the accumulators of all ranks (``torch.distributed``, any backend); identity when
    not running distributed. Every rank gets the same result, merged in rank order."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mom
    local = mom.to_tensor()
    if dist.get_backend() == "nccl":
        local = local.cuda()
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    out = Moments()
    for t in gathered:
        out = out.merge(Moments.from_tensor(t.cpu()))
    return out


def pool_estimates(values: list[float], stderrs: list[float]) -> tuple[float, float]:
    """Mean of independent estimates (one per input pair) and its standard error.

    The estimates differ by their own Monte Carlo noise *and* by what they measure (each pair
    has its own inputs and readout), so the error comes from their observed spread,
    ``sd(values) / sqrt(P)``, never taken below the Monte Carlo part alone,
    ``sqrt(mean(stderr^2) / P)`` (with few pairs the observed spread can be small by chance).
    ``P = 1`` returns the one estimate and its own standard error."""
    x = np.asarray(values, dtype=np.float64)
    s = np.asarray(stderrs, dtype=np.float64)
    p = x.size
    if p == 0:
        raise ValueError("no estimates to pool")
    if p == 1:
        return float(x[0]), float(s[0])
    within = float(np.mean(s * s))
    between = float(x.var(ddof=1))
    return float(x.mean()), math.sqrt(max(between, within) / p)


def pool_pairs(per_pair: list[NormalizedVariance]) -> NormalizedVariance:
    """:func:`pool_estimates` of ``v`` over input pairs (``mean``/``var``: averages over pairs;
    ``trials``: the total)."""
    v, se = pool_estimates([e.v for e in per_pair], [e.stderr for e in per_pair])
    return NormalizedVariance(
        v,
        se,
        float(np.mean([e.mean for e in per_pair])),
        float(np.mean([e.var for e in per_pair])),
        int(sum(e.trials for e in per_pair)),
    )
