"""The probe's inputs: which pairs ``(x, x')`` and readouts Algorithm 1 measures ``K(x, x')`` on.

A block inside a ReLU network sees post-ReLU (non-negative) activations of two positively
correlated images, not independent Gaussian entries (SPEC section 3). Three kinds:

* ``relu`` (default): ``x = relu(z1)``, ``x' = relu(c z1 + sqrt(1 - c^2) z2)``, ``z1, z2 ~
  N(0, I)``, ``rho`` = ``correlation`` (default 0.6: cosine ~0.68 between ``x`` and ``x'``);
* ``gaussian``: independent N(0, 1) entries (the probe before this module existed);
* ``data``: two distinct random images of a shipped dataset (MNIST or Fashion-MNIST, given as a
  tensor by the caller: ``ntk`` does not load data), standardized, then mapped to the probe's
  input shape by a random ReLU stem: for ``(C, S, S)`` an adaptive average pool to ``S x S`` and a
  3x3 convolution to ``C`` channels (Kaiming fan-in normal, no bias), ReLU; for ``(C,)`` a linear
  layer to ``C`` features, ReLU.

Every pair ``p`` (of ``pairs``) is drawn from its own generator, seeded from ``(seed, p)``: its
inputs, its stem (``data``) and its random linear readout ``r ~ N(0, 1/numel)`` of the probe's
output. Pair 0 of ``gaussian`` is exactly the single pair of earlier versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from collegial.choices import check_choice
from collegial.errors import UserError

InputKind = Literal["relu", "gaussian", "data"]
INPUT_KINDS: tuple[InputKind, ...] = ("relu", "gaussian", "data")
DEFAULT_INPUTS = "relu"
DEFAULT_CORRELATION = 0.6
DEFAULT_PAIRS = 8
DATA_DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")
DEFAULT_INPUT_DATA = "mnist"
_PAIR_TAG = 0x5EED


def pair_seed(seed: int, pair: int, *parts: int) -> int:
    """The 63-bit seed of pair ``pair`` (pair 0 without extra parts: the seed of earlier versions)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _PAIR_TAG, *([pair] if pair else []), *parts])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1)


def inputs_label(kind: str, correlation: float | None, dataset: str | None) -> str:
    """Short name of a probe's inputs: ``relu(corr=0.6)``, ``gaussian``, ``data(mnist)``, or the
    kind itself (e.g. ``synthetic``)."""
    if kind == "relu":
        return f"relu(corr={correlation:g})"
    if kind == "data":
        return f"data({dataset or 'images'})"
    return kind


@dataclass(frozen=True)
class ProbeInputs:
    """How the probe's pairs are drawn (see the module docstring).

    ``images``: for ``kind="data"``, the images to pair up, float ``(N, c, h, w)``, already
    standardized (the caller loads them: see ``collegial.commands.probe_options``); ``dataset``
    names them in results."""

    kind: str = DEFAULT_INPUTS
    correlation: float = DEFAULT_CORRELATION
    pairs: int = DEFAULT_PAIRS
    dataset: str | None = None
    images: Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, INPUT_KINDS, "probe inputs")
        if not (isinstance(self.correlation, (int, float)) and -1.0 <= float(self.correlation) <= 1.0):
            raise UserError(f"input correlation must lie in [-1, 1], got {self.correlation!r}")
        if int(self.pairs) != self.pairs or self.pairs < 1:
            raise UserError(f"need at least 1 input pair, got {self.pairs!r}")
        if self.kind == "data":
            if self.images is None:
                raise UserError("probe inputs 'data' need images (a dataset: mnist or fashion-mnist)")
            if self.images.dim() != 4 or self.images.shape[0] < 2:
                raise ValueError("images must be (N >= 2, c, h, w)")

    @property
    def label(self) -> str:
        """Short name for tables: ``relu(corr=0.6)``, ``gaussian``, ``data(mnist)``."""
        return inputs_label(self.kind, self.correlation, self.dataset)

    def options(self) -> dict[str, object]:
        """What identifies these inputs (for alpha.json and cache keys)."""
        return {
            "inputs": self.kind,
            "correlation": float(self.correlation) if self.kind == "relu" else None,
            "pairs": int(self.pairs),
            "input_data": self.dataset if self.kind == "data" else None,
        }

    def draw(
        self, shape: tuple[int, ...], out_numel: int, seed: int, pair: int, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Pair ``pair``: inputs ``(2, *shape)`` and readout ``(out_numel,)`` (``out_numel`` 0:
        no readout, an empty tensor)."""
        g = torch.Generator().manual_seed(pair_seed(seed, pair))
        f64 = torch.float64
        if self.kind == "gaussian":
            x = torch.randn((2, *shape), generator=g, dtype=f64)
        elif self.kind == "relu":
            z = torch.randn((2, *shape), generator=g, dtype=f64)
            rho = float(self.correlation)
            x = torch.stack([z[0], rho * z[0] + math.sqrt(max(0.0, 1.0 - rho * rho)) * z[1]]).relu_()
        else:
            x = self._stem(shape, g)
        r = torch.randn(out_numel, generator=g, dtype=f64) / math.sqrt(max(out_numel, 1))
        return x.to(dtype), r.to(dtype)

    def _stem(self, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
        assert self.images is not None
        imgs = self.images
        idx = torch.randperm(imgs.shape[0], generator=g)[:2]
        pair = imgs[idx].to(torch.float64)  # (2, c, h, w)
        c0 = pair.shape[1]
        if len(shape) == 3:
            ch, s1, s2 = shape
            pooled = F.adaptive_avg_pool2d(pair, (s1, s2))
            w = torch.randn((ch, c0, 3, 3), generator=g, dtype=torch.float64) * math.sqrt(2.0 / (9 * c0))
            return F.conv2d(pooled, w, padding=1).relu_()
        if len(shape) == 1:
            flat = pair.reshape(2, -1)
            w = torch.randn((shape[0], flat.shape[1]), generator=g, dtype=torch.float64)
            return (flat @ w.T * math.sqrt(2.0 / flat.shape[1])).relu_()
        raise UserError(
            f"probe inputs 'data' need an input shape (C, S, S) or (C,), got {tuple(shape)}; "
            "use `inputs` relu or gaussian"
        )
