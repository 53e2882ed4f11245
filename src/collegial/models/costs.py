"""Costs of a built model: trainable parameters, FLOPs (paper convention) and MACs.

The one place costs are counted: the search's budgets (:mod:`collegial.search.solve`) and the
training loop's throughput and MFU (:mod:`collegial.train.loop`) both read them here.

Everything is measured on the model itself (on the ``meta`` device, so no memory is
allocated), never from hand-derived formulas, so any registered family gets its costs for free:

* parameters: ``sum(p.numel() for p in model.parameters() if p.requires_grad)``;
* MACs: multiply-adds of conv and linear layers (also ``bmm`` / ``baddbmm`` of the
  block-diagonal layers) for one image at the dataset's resolution, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (which reports 2 x MACs);
* FLOPs: ``2 * MACs``, plus one FLOP per BatchNorm output element with ``bn_flops=True``;
* a training step: 3 x the forward FLOPs (forward + input and weight gradients), the usual
  convention (:func:`train_flops_per_image`). ``FlopCounterMode`` over-counts the backward of
  grouped convolutions (it reports ~7.9x the forward for ResNeXt-29 37x10d, 3.0x for 1x128d), so
  the backward is not counted directly.

:class:`CostTable` evaluates thousands of ``(m, n)`` candidates quickly. For every collegial
family a model of multiplicity m is its m-independent part plus m identical paths, so a cost is
``A + m * B(n)`` exactly; in the ResNeXt and MLP families every layer width is an integer multiple
of n, so ``B`` is a quadratic polynomial in n. The table measures ``A`` and ``B`` on a few small
models, verifies the decomposition on further built models, and falls back to measuring
``B(n)`` per width (cached) when the check fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from collegial.errors import UserError
from collegial.models.arch import format_arch
from collegial.models.datasets import get_dataset_spec
from collegial.models.registry import create_model, get_family, validate_arch

__all__ = [
    "format_flops",
    "format_params",
    "COST_KINDS",
    "CostKind",
    "CostTable",
    "Costs",
    "count_flops",
    "count_params",
    "forward_flops",
    "model_costs",
    "train_flops_per_image",
]

#: What a budget counts: trainable parameters or forward FLOPs.
CostKind = Literal["params", "flops"]
COST_KINDS: tuple[CostKind, ...] = ("params", "flops")


@dataclass(frozen=True)
class Costs:
    params: int
    flops: int
    macs: int

    def get(self, kind: CostKind) -> int:
        return self.params if kind == "params" else self.flops


def count_params(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(
    model: nn.Module, input_shape: tuple[int, ...], *, bn_flops: bool = False
) -> tuple[int, int]:
    """``(flops, macs)`` of one forward pass on an input of ``input_shape`` (batch included,
    normally 1). Works on meta-device models (nothing is computed)."""
    device = next(model.parameters()).device
    bn_elems = 0
    hooks = []
    if bn_flops:

        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            nonlocal bn_elems
            bn_elems += out.numel()

        hooks = [
            mod.register_forward_hook(hook)
            for mod in model.modules()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        ]
    x = torch.empty(input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    two_macs = int(counter.get_total_flops())
    return two_macs + bn_elems, two_macs // 2


def _image_shape(dataset: str, overrides: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """``(1, C, H, W)`` of one image of ``dataset``, ``in_channels`` / ``resolution`` overridden."""
    spec = get_dataset_spec(dataset)
    res = int(overrides.get("resolution", spec.resolution))
    chans = int(overrides.get("in_channels", spec.in_channels))
    return (1, chans, res, res)


def _measure(family: str, arch: str, dataset: str, bn_flops: bool, overrides: Mapping[str, Any]) -> Costs:
    with torch.device("meta"):
        model = create_model(family, arch=arch, dataset=dataset, **overrides)
    flops, macs = count_flops(model, _image_shape(dataset, overrides), bn_flops=bn_flops)
    return Costs(count_params(model), flops, macs)


@lru_cache(maxsize=4096)
def _cached(family: str, arch: str, dataset: str, bn_flops: bool, overrides: tuple) -> Costs:
    return _measure(family, arch, dataset, bn_flops, dict(overrides))


def model_costs(
    family: str, arch: str, dataset: str, *, bn_flops: bool = False, **overrides: object
) -> Costs:
    """Parameters, FLOPs and MACs of ``family`` ``arch`` built for ``dataset`` (``overrides``
    go to :func:`~collegial.models.create_model`; cached when they are hashable)."""
    validate_arch(family, arch)
    get_dataset_spec(dataset)
    key = tuple(sorted(overrides.items()))
    try:
        hash(key)
    except TypeError:  # e.g. a list-valued override: measured, not cached
        return _measure(family, arch, dataset, bn_flops, overrides)
    return _cached(family, arch, dataset, bn_flops, key)


def forward_flops(family: str, arch: str, dataset: str, **model_kwargs: Any) -> int:
    """Forward FLOPs (2 x MACs) of one image at ``dataset``'s resolution: :func:`model_costs`'s
    ``flops``."""
    return model_costs(family, arch, dataset, **model_kwargs).flops


def train_flops_per_image(family: str, arch: str, dataset: str, **model_kwargs: Any) -> int:
    """FLOPs of one training step per image: 3 x :func:`forward_flops`."""
    return 3 * forward_flops(family, arch, dataset, **model_kwargs)


class CostTable:
    """Fast exact costs of ``family`` on ``dataset`` for any ``(m, n)``: ``A + m * B(n)``.

    ``table(m, n)`` returns :class:`Costs`; ``table.cost(kind, m, n)`` is vectorized over
    numpy arrays of m and n (int64 results).

    The table measures the widths :attr:`FIT_WIDTHS` (the quadratic), :attr:`CHECK_WIDTHS` (its
    check) and :attr:`LINEAR_CHECKS` (``A + m B(n)`` itself). A family that cannot build one of
    them (its function raises for odd widths, say) gets the smallest widths it can build instead,
    up to :attr:`MAX_PROBE_WIDTH`; with fewer than three, ``B(n)`` is measured per width.
    """

    _FIELDS = ("params", "flops", "macs")
    #: Preferred widths: the quadratic fit's three, its check's two, the (m, n) of the m-check.
    FIT_WIDTHS = (1, 2, 3)
    CHECK_WIDTHS = (5, 12)
    LINEAR_CHECKS = ((3, 4), (5, 2))
    #: The widest width tried in place of one the family cannot build.
    MAX_PROBE_WIDTH = 128

    def __init__(
        self, family: str, dataset: str, *, bn_flops: bool = False, **overrides: object
    ) -> None:
        if get_family(family).arch_kind != "ce":
            raise ValueError(f"family {family!r} has no (m, n) architecture")
        self.family, self.dataset, self.bn_flops, self.overrides = family, dataset, bn_flops, overrides
        self._per_n: dict[int, np.ndarray] = {}
        #: Widths the family refused to build, with its error (a one-line UserError).
        self._unbuildable: dict[int, UserError] = {}
        fit = self._probe_widths(self.FIT_WIDTHS, 3)
        if not fit:  # nothing builds: the family's own error for the first width
            raise UserError(str(self._unbuildable[self.FIT_WIDTHS[0]])) from None
        #: The widths of the quadratic fit (FIT_WIDTHS unless the family cannot build them).
        self.fit_widths: tuple[int, ...] = tuple(fit)
        self._a = self._vec(1, fit[0]) - self._b_exact(fit[0])
        self._poly: np.ndarray | None = None
        self.polynomial = False
        if len(fit) == 3:
            # B(n) at three widths determines the quadratic; checked at further widths below.
            b = np.stack([self._b_exact(n) for n in fit])  # (3, fields)
            x = np.array(fit, dtype=np.float64)
            self._poly = np.stack([np.polyfit(x, b[:, i].astype(np.float64), 2) for i in range(3)])
            check = self._probe_widths(self.CHECK_WIDTHS, 2, exclude=fit)
            self.polynomial = bool(check) and all(
                np.array_equal(self._b_poly(np.array([n]))[0], self._b_exact(n)) for n in check
            )
        # m identical paths: the cost must be A + m B(n); a family whose cost is not (a layer
        # that grows with m^2, say) has no per-path cost for the search to trade
        widths = self._probe_widths(tuple(n for _, n in self.LINEAR_CHECKS), len(self.LINEAR_CHECKS))
        for j, (m, _) in enumerate(self.LINEAR_CHECKS):
            n = widths[j % len(widths)]
            if not np.array_equal(self._vec(m, n), self._a + m * self._b_exact(n)):
                raise UserError(
                    f"{family}: the cost of {format_arch(m, n)} is not A + m B(n) (fixed part plus m "
                    "identical paths), so the search cannot price its ensembles"
                )

    def _vec(self, m: int, n: int) -> np.ndarray:
        c = model_costs(self.family, format_arch(m, n), self.dataset, bn_flops=self.bn_flops, **self.overrides)
        return np.array([c.params, c.flops, c.macs], dtype=np.int64)

    def _b_exact(self, n: int) -> np.ndarray:
        """``B(n)`` measured (cached); the family's own UserError when it cannot build width n."""
        if n in self._unbuildable:
            raise UserError(str(self._unbuildable[n])) from None
        if n not in self._per_n:
            try:
                one = self._vec(1, n)
                self._per_n[n] = self._vec(2, n) - one
            except UserError as e:
                self._unbuildable[n] = e
                raise
        return self._per_n[n]

    def _buildable(self, n: int) -> bool:
        try:
            self._b_exact(n)
        except UserError:
            return False
        return True

    def _probe_widths(self, preferred: tuple[int, ...], count: int, exclude: tuple[int, ...] = ()) -> list[int]:
        """Up to ``count`` distinct widths the family builds: ``preferred`` first, then the
        smallest others up to :attr:`MAX_PROBE_WIDTH`, none of ``exclude``."""
        got = [n for n in preferred if n not in exclude and self._buildable(n)][:count]
        for n in range(1, self.MAX_PROBE_WIDTH + 1):
            if len(got) >= count:
                break
            if n not in got and n not in exclude and n not in preferred and self._buildable(n):
                got.append(n)
        return got

    def buildable(self, n: np.ndarray | int) -> np.ndarray:
        """Whether the family builds width ``n`` (vectorized, bool). Measured (one build per
        width, cached) for a family that refused a width the table tried; assumed for one that
        built them all (every built-in family)."""
        n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
        if not self._unbuildable:
            return np.ones(n_arr.shape, dtype=bool)
        return np.array([self._buildable(int(v)) for v in n_arr], dtype=bool)

    def _b_poly(self, n: np.ndarray) -> np.ndarray:
        assert self._poly is not None
        nf = np.asarray(n, dtype=np.float64)
        return np.stack([np.rint(np.polyval(self._poly[i], nf)) for i in range(3)], -1).astype(np.int64)

    def per_path(self, kind: str, n: np.ndarray | int) -> np.ndarray:
        """``B(n)``: the cost of one path of width n (vectorized). From the quadratic when the
        family's cost is one (any n); otherwise measured per width, the family's own
        :class:`UserError` for a width it cannot build."""
        i = self._FIELDS.index(kind)
        n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
        if self.polynomial:
            return self._b_poly(n_arr)[:, i]
        return np.array([self._b_exact(int(v))[i] for v in n_arr], dtype=np.int64)

    def fixed(self, kind: str) -> int:
        """``A``: the cost that does not depend on (m, n) (stem, shortcuts, classifier...)."""
        return int(self._a[self._FIELDS.index(kind)])

    def cost(self, kind: str, m: np.ndarray | int, n: np.ndarray | int) -> np.ndarray:
        """``A + m * B(n)``, broadcast over arrays of m and n."""
        m_arr = np.asarray(m, dtype=np.int64)
        n_arr = np.asarray(n, dtype=np.int64)
        b = self.per_path(kind, n_arr.ravel()).reshape(n_arr.shape)
        return self.fixed(kind) + m_arr * b

    def __call__(self, m: int, n: int) -> Costs:
        return Costs(*(int(self.cost(k, m, n)) for k in self._FIELDS))


def format_params(n: float) -> str:
    """``13.74M`` at a million or more, else ``27.6k`` (or the count itself below a thousand)."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else f"{int(n)}"


def format_flops(f: float) -> str:
    """``4.52 GFLOPs`` at a billion or more, else ``10.4 MFLOPs``."""
    return f"{f / 1e9:.2f} GFLOPs" if f >= 1e9 else f"{f / 1e6:.1f} MFLOPs"
