"""Streaming moments and the normalized variance ``v = Var[K] / E[K]^2`` with a standard error.

:class:`Moments` is a Welford-style accumulator of the first four moments (count, mean and the
central sums M2, M3, M4) in float64, updated batch-wise and merged pairwise with the formulas
of Chan et al. / Pebay (2008), so ``T`` trials can be streamed in chunks and sharded over ranks.

The estimate of ``v`` is the ratio ``s^2 / mean^2`` (``s^2`` the unbiased sample variance) with
its first-order bias removed by the jackknife over the trials, ``T v - (T - 1) mean_i v_(-i)``
(``v_(-i)`` the ratio without trial ``i``): a ratio of two moments of the same heavy-tailed
sample is biased low (a trial with a large ``K`` raises the mean with the variance). Measured on
the resnext29 probe (``bench/ratio_bias.py``: 8 pairs of relu(rho=0.6) inputs, 2,000
initializations per pair behind the reference), the plain ratio from 25 initializations per pair
(Algorithm 1 at T = 200) averages 0.75 of the reference at n = 2, 0.90 at n = 4 and 0.96 at
n = 8; the jackknife 0.89, 0.98 and 0.99; from 250 per pair (T = 2000, the default): plain 0.97
at n = 2, jackknife 1.02 +- 0.06. The
accumulator keeps the sample for it (one float64 per trial).

The standard error is the delta method on ``(mean, s^2)`` with ``Var(mean) = m2/T``,
``Var(s^2) = (m4 - m2^2)/T`` and ``Cov(mean, s^2) = m3/T`` (``m_k`` the central moments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from collegial.errors import UserError


@dataclass
class Moments:
    """Count, mean and central sums ``M2 = sum (x - mean)^2``, ``M3``, ``M4`` (float64), and the
    sample itself, which the jackknife of :func:`normalized_variance` needs: ``parts``, the
    batches as added (float64, on the CPU; joined only when :attr:`sample` is read, so that
    streaming many chunks copies each value once), ``None`` once it has passed through
    :meth:`to_tensor`."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0
    parts: tuple[Tensor, ...] | None = field(default=(), repr=False, compare=False)

    @property
    def sample(self) -> Tensor | None:
        """Every value added, in order (float64), or ``None`` when the sample was not kept."""
        if self.parts is None:
            return None
        return torch.cat(self.parts) if self.parts else torch.zeros(0, dtype=torch.float64)

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
        return cls(n, float(mu), float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum()), (x.cpu(),))

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of the two samples (exact up to rounding)."""
        na, nb = self.count, other.count
        if na == 0:
            return Moments(**vars(other))
        if nb == 0:
            return Moments(**vars(self))
        both = self.parts is not None and other.parts is not None
        parts = self.parts + other.parts if both else None  # type: ignore[operator]
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
        return Moments(n, mean, m2, m3, m4, parts)

    def update(self, values: Tensor | np.ndarray) -> Moments:
        """Add a batch in place; returns ``self``."""
        merged = self.merge(Moments.of(values))
        self.count, self.mean, self.m2, self.m3, self.m4, self.parts = (
            merged.count,
            merged.mean,
            merged.m2,
            merged.m3,
            merged.m4,
            merged.parts,
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
        return cls(int(round(c)), mu, m2, m3, m4, None)  # the sample does not travel in the tensor


@dataclass(frozen=True)
class NormalizedVariance:
    """``v = Var[K] / E[K]^2`` over ``trials`` samples (jackknife bias-corrected when the sample
    was kept), with its delta-method standard error; ``uncorrected``: the plain ratio
    ``s^2 / mean^2`` (``nan`` where not recorded)."""

    v: float
    stderr: float
    mean: float
    var: float
    trials: int
    uncorrected: float = math.nan


def jackknife_ratio(x: Tensor) -> float | None:
    """The jackknife bias-corrected ``s^2 / mean^2`` of the sample ``x`` (1-D, at least 3
    values): ``T v - (T - 1) mean_i v_(-i)``, computed on centred values in float64. ``None``
    where it is undefined (a leave-one-out mean <= 0) or not positive."""
    x = x.to(torch.float64)
    t = x.numel()
    if t < 3:
        return None
    mu = x.mean()
    y = x - mu
    ss = (y * y).sum()
    shift = -y / (t - 1)  # leave-one-out mean minus mu (the y sum to 0)
    means = mu + shift
    if bool((means <= 0).any()):
        return None
    var_i = (ss - y * y - (t - 1) * shift * shift) / (t - 2)
    v = (ss / (t - 1)) / (mu * mu)
    out = float(t * v - (t - 1) * (var_i / (means * means)).mean())
    return out if out > 0 and math.isfinite(out) else None


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
    corrected = jackknife_ratio(mom.sample) if mom.sample is not None else None
    c2, c3, c4 = mom.m2 / t, mom.m3 / t, mom.m4 / t
    d_mu = -2.0 * s2 / mu**3
    d_s2 = 1.0 / (mu * mu)
    var_v = (d_mu * d_mu * c2 + d_s2 * d_s2 * (c4 - c2 * c2) + 2.0 * d_mu * d_s2 * c3) / t
    return NormalizedVariance(v if corrected is None else corrected, math.sqrt(max(var_v, 0.0)), mu, s2, t, v)


def merge_distributed(mom: Moments) -> Moments:
    """Merge the accumulators of all ranks (``torch.distributed``, any backend); identity when
    not running distributed. Every rank gets the same result, merged in rank order, samples
    included (the jackknife needs every trial)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mom
    local = mom.to_tensor()
    if dist.get_backend() == "nccl":
        local = local.cuda()
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    samples: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(samples, None if mom.sample is None else mom.sample.cpu())
    out = Moments()
    for t, sample in zip(gathered, samples):
        part = Moments.from_tensor(t.cpu())
        part.parts = None if sample is None else (sample,)
        out = out.merge(part)
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
