"""Algorithm 1 probes: one NTK entry ``K(x, x') = <grad f(x), grad f(x')>`` for many random
initializations at once.

A probe holds one input pair ``x, x'`` and one random linear readout ``r`` (N(0, 1/numel)
entries; the probed function is ``f(x) = <r, F(x)>``, a scalar), pair number ``pair`` of a
:class:`~collegial.ntk.inputs.ProbeInputs` (post-ReLU correlated Gaussians by default; see
:mod:`collegial.ntk.inputs`), and returns, for a batch of ``B`` independent initializations,
the ``B`` values of ``K``. Algorithm 1 builds one probe per pair. Trials are vectorized exactly:

* :class:`ResNeXtBlockProbe` -- the BatchNorm-free ResNeXt bottleneck of SPEC section 3,
  ``collegial.models.Bottleneck(C, C, cardinality=m, width=n, ref_channels=C, bn=False)``
  (``D = m * n`` inner channels, identity shortcut), Kaiming-normal fan-in weights. Two engines:

  - ``"gram"`` (default without BatchNorm): the ``B`` blocks are one grouped model
    (``B * m`` groups), run forward once and backward once by hand (signals only, no weight
    gradients); ``K`` is assembled from Gram products of each layer's inputs and signals
    (structured derivatives). The two probe inputs sit in one frame of ``2H + 1`` rows, separated
    by a zero row, so every layer is a single large GEMM / grouped convolution.
  - ``"grouped"``: the same grouped model through autograd, two backward passes (one per
    input), then per-trial inner products of the weight gradients. Handles BatchNorm in
    training mode (statistics over the probe batch ``{x, x'}``, per channel, so trials stay
    independent; ``gamma``/``beta`` count as parameters).

* :class:`MLPProbe` -- the fully connected CE (:class:`~collegial.models.CollegialMLP`, depth 4,
  ReLU, one output or a random readout of several): ``B`` trials of multiplicity ``m`` are one
  CollegialMLP with ``B * m`` paths; two backward passes.
* :class:`~collegial.ntk.generic.FactoryProbe` (in :mod:`collegial.ntk.generic`) -- the
  generic engine for any ``(m, n) -> nn.Module`` probe block a family declares.

All three are :class:`~collegial.ntk.engine.ProbeEngine` s, the protocol Algorithm 1 runs.

Each trial chunk is drawn from its own generator, seeded from ``(seed, m, n, chunk index, pair)``
(:func:`trial_seed`), so results do not depend on how chunks are shared between threads or
processes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.models import Bottleneck, CollegialMLP, init_resnet_
from collegial.models.layers import PARAMETERIZATIONS, Parameterization
from collegial.ntk._bn import PROBE_BN_MODES, ProbeBatchNorm, batchnorm_mode
from collegial.ntk.inputs import ProbeInputs

#: How the bottleneck probe computes K: ``gram`` (no BatchNorm), ``grouped``, or ``auto``.
BlockEngine = Literal["auto", "gram", "grouped"]
BLOCK_ENGINES: tuple[BlockEngine, ...] = ("auto", "gram", "grouped")


#: Smallest group width n for which conv_conv's term uses the Gram order (signal Gram x 9-shift
#: sum of the input Gram); below it, per-sample weight gradients from im2col patches are cheaper
#: in practice (measured: equal at n = 48 on the 2-core development machine).
GRAM_MIN_WIDTH = 48

#: Working-set target per trial chunk (bytes); chunks are sized to stay near it.
CHUNK_BYTES = 48 << 20


def chunk_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for one chunk, derived from the run seed and the chunk's coordinates."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(p) for p in parts]])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1)


#: Number of independent streams one chunk's weights are drawn from (fixed, so results do not
#: depend on the thread count).
RNG_STREAMS = 4
_POOL: ThreadPoolExecutor | None = None


def fill_normal(targets: list[tuple[Tensor, float]], seed: int) -> None:
    """Fill each contiguous tensor with N(0, std^2) samples, in place.

    Each tensor is split into :data:`RNG_STREAMS` contiguous parts, each drawn from its own
    ``torch.Generator`` seeded from ``(seed, tensor index, part)``; the parts are filled by a
    small thread pool (``normal_`` releases the GIL), so drawing is not limited to one core.
    """
    global _POOL
    jobs = []
    for i, (t, std) in enumerate(targets):
        flat = t.view(-1)
        step = -(-flat.numel() // RNG_STREAMS)
        for j in range(RNG_STREAMS):
            part = flat[j * step : (j + 1) * step]
            if part.numel():
                jobs.append((part, std, chunk_seed(seed, i, j)))

    def run(job: tuple[Tensor, float, int]) -> None:
        part, std, s = job
        with torch.no_grad():  # grad mode is per thread: a pool thread has it on
            part.normal_(0.0, std, generator=torch.Generator().manual_seed(s))

    workers = max(1, min(torch.get_num_threads(), RNG_STREAMS))
    if workers == 1 or sum(j[0].numel() for j in jobs) < 1 << 16:
        for job in jobs:
            run(job)
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=RNG_STREAMS, thread_name_prefix="collegial-rng")
    list(_POOL.map(run, jobs))


def trial_seed(seed: int, m: int, n: int, chunk: int, pair: int = 0) -> int:
    """Seed of trial chunk ``chunk`` of multiplicity ``m``, width ``n`` on input pair ``pair``
    (pair 0: ``chunk_seed(seed, m, n, chunk)``, as in earlier versions)."""
    return chunk_seed(seed, m, n, chunk) if pair == 0 else chunk_seed(seed, m, n, chunk, pair)


_GAUSSIAN = ProbeInputs("gaussian", pairs=1)


@dataclass
class BlockWeights:
    """Weights of ``B`` bottleneck blocks, module layout with a leading trial axis:
    ``w1 (B, D, C)`` = conv_reduce, ``w2 (B, D, n, 3, 3)`` = conv_conv (m groups),
    ``w3 (B, C, D)`` = conv_expand."""

    w1: Tensor
    w2: Tensor
    w3: Tensor
    m: int

    @property
    def trials(self) -> int:
        return self.w1.shape[0]


class ResNeXtBlockProbe:
    """The Algorithm 1 probe block (see the module docstring).

    ``channels`` = C (input/output channels, also the reference width, so ``D = m * n``),
    ``spatial`` = H = W of the inputs, ``bn`` = ``"none"`` (BatchNorm removed) or ``"train"``
    (BatchNorm after each conv, training-mode statistics over the pair).

    ``parameterization`` sets the metric of ``K``: ``"standard"`` (SPEC section 3) differentiates
    with respect to the weights themselves; ``"ntk"`` with respect to ``W / sigma`` (``sigma`` =
    the Kaiming std, ``sqrt(2 / fan_in)``), i.e. each layer's term is weighted by ``sigma^2``
    (BatchNorm parameters keep weight 1). The forward function is the same.

    ``inputs``, ``pair``: the pair and readout this probe measures (default: pair 0 of
    independent Gaussian inputs; Algorithm 1 passes its own :class:`ProbeInputs`).

    ``final_relu=False`` drops the ReLU after the residual addition (the block's output is
    ``x + F(x)``): a diagnostic of how that ReLU couples the paths (``collegial reproduce
    m-law``); the per-trial loop (:meth:`k_loop`) always has it.
    """

    family = "resnext-block"

    def __init__(
        self,
        channels: int = 256,
        spatial: int = 8,
        *,
        seed: int = 0,
        bn: ProbeBatchNorm = "none",
        dtype: torch.dtype = torch.float32,
        engine: BlockEngine = "auto",
        parameterization: Parameterization = "standard",
        final_relu: bool = True,
        inputs: ProbeInputs = _GAUSSIAN,
        pair: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        check_choice("parameterization", parameterization, PARAMETERIZATIONS, "parameterization")
        self.inputs, self.pair = inputs, int(pair)
        self.device = torch.device(device)
        self.parameterization = parameterization
        self.final_relu = final_relu
        check_choice("bn", bn, PROBE_BN_MODES, "BatchNorm mode")
        check_choice("engine", engine, BLOCK_ENGINES, "engine")
        if engine == "gram" and bn == "train":
            raise ValueError("the gram engine has no BatchNorm; use `engine='grouped'`")
        self.channels, self.spatial, self.seed, self.bn, self.dtype = channels, spatial, seed, bn, dtype
        self.engine = ("gram" if bn == "none" else "grouped") if engine == "auto" else engine
        c, h = channels, spatial
        self.x, self.r = (t.to(self.device) for t in inputs.draw((c, h, h), c * h * h, seed, self.pair, dtype))
        # The joint frame: x on rows [0, H), a zero separator row, x' on rows [H+1, 2H+1).
        hf = 2 * h + 1
        self._p1 = slice(0, h * h)
        self._p2 = slice((h + 1) * h, hf * h)
        xs = torch.zeros(c, hf * h, dtype=dtype, device=self.device)
        xs[:, self._p1] = self.x[0].reshape(c, -1)
        xs[:, self._p2] = self.x[1].reshape(c, -1)
        rr = self.r.reshape(c, h * h)
        rs = torch.zeros(c, hf * h, dtype=dtype, device=self.device)
        rs[:, self._p1] = rr
        rs[:, self._p2] = rr
        self._xs, self._rs, self._neg_xs = xs, rs, -xs
        self._gx = self.x[0].reshape(c, -1).T @ self.x[1].reshape(c, -1)  # (HW, HW)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one input (no batch axis)."""
        return (int(self.channels), int(self.spatial), int(self.spatial))

    # ------------------------------------------------------------------ sampling
    def inner(self, m: int, n: int) -> int:
        """Inner channels ``D`` of the block (as :class:`~collegial.models.Bottleneck`)."""
        return m * int(n * self.channels / self.channels)

    def term_weights(self, m: int, n: int) -> tuple[float, float, float]:
        """Weights of the (conv_reduce, conv_conv, conv_expand) terms of ``K``."""
        if self.parameterization == "standard":
            return 1.0, 1.0, 1.0
        d = self.inner(m, n)
        return 2.0 / self.channels, 2.0 / (9 * (d // m)), 2.0 / d

    def trial_bytes(self, m: int, n: int) -> int:
        """The working set of one trial at ``(m, n)`` (bytes)."""
        c, h = self.channels, self.spatial
        d = self.inner(m, n)
        length = (2 * h + 1) * h
        per_trial = 8 * d * length + 4 * c * length + m * (h + 2) ** 4 + 2 * c * d + 9 * d * n
        return per_trial * (torch.finfo(self.dtype).bits // 8)

    def chunk_size(self, m: int, n: int) -> int:
        return int(max(4, min(512, CHUNK_BYTES // self.trial_bytes(m, n))))

    def sample(self, m: int, n: int, trials: int, seed: int) -> BlockWeights:
        """Kaiming-normal fan-in weights (as :func:`~collegial.models.init_resnet_`) for
        ``trials`` blocks, drawn from ``seed`` (see :func:`fill_normal`) on the CPU, whatever
        the probe's device (the same seed gives the same weights there), then moved to it."""
        c = self.channels
        d = self.inner(m, n)
        if d < m or d % m:
            raise UserError(f"width {n} gives no channels per group")
        w1 = torch.empty(trials, d, c, dtype=self.dtype)
        w2 = torch.empty(trials, d, d // m, 3, 3, dtype=self.dtype)
        w3 = torch.empty(trials, c, d, dtype=self.dtype)
        fill_normal(
            [(w1, math.sqrt(2.0 / c)), (w2, math.sqrt(2.0 / (9 * (d // m)))), (w3, math.sqrt(2.0 / d))],
            seed,
        )
        return BlockWeights(w1.to(self.device), w2.to(self.device), w3.to(self.device), m)

    def k_chunk(self, m: int, n: int, trials: int, seed: int) -> Tensor:
        """``K`` for ``trials`` fresh initializations drawn from ``seed``: ``(trials,)``, on the CPU."""
        return self.k_values(self.sample(m, n, trials, seed)).cpu()

    def k_values(self, w: BlockWeights) -> Tensor:
        return self.k_gram(w) if self.engine == "gram" else self.k_grouped(w)

    # ------------------------------------------------------------------ gram engine
    def k_gram(self, w: BlockWeights) -> Tensor:
        """Structured-derivative evaluation of ``K`` for every trial in ``w``: ``(B,)``, the
        :meth:`gram_terms` weighted by :meth:`term_weights`."""
        weights = torch.tensor(self.term_weights(w.m, w.w1.shape[1] // w.m), dtype=self.dtype, device=self.device)
        return self.gram_terms(w) @ weights

    @torch.no_grad()
    def gram_terms(self, w: BlockWeights) -> Tensor:
        """The three layers' unweighted contributions to ``K`` for every trial in ``w``:
        ``(B, 3)``, columns (conv_reduce, conv_conv, conv_expand).

        Per trial (``S = H*W`` positions per input, ``L = (2H+1) W`` frame positions):
        ``K = sum_{s,t} (g1[s].g1'[t]) (x[s].x'[t])`` (conv_reduce) ``+ <dW2, dW2'>`` (conv_conv,
        from the signal Gram and the 9-shift sum of the input Gram, or from per-sample weight
        gradients when n is small) ``+ <dW3, dW3'>`` (conv_expand, Gram or direct).
        """
        if self.bn != "none":
            raise ValueError("the gram engine has no BatchNorm")
        b, d, c = w.w1.shape
        m = w.m
        n = d // m
        h = self.spatial
        hw = h * h
        hf = 2 * h + 1
        length = hf * h
        groups = b * m
        p1, p2 = self._p1, self._p2
        w2 = w.w2.reshape(b * d, n, 3, 3)
        # forward
        a1 = torch.mm(w.w1.reshape(b * d, c), self._xs).relu_()  # (BD, L)
        z2 = F.conv2d(a1.view(1, b * d, hf, h), w2, padding=1, groups=groups)
        a2 = z2.view(b, d, length).relu_()
        g3 = torch.bmm(w.w3, a2)  # z3 (B, C, L), turned in place into the signal at its output
        if self.final_relu:
            g3.gt_(self._neg_xs).mul_(self._rs)  # relu'(z3 + x) * r
        else:
            g3.copy_(self._rs.expand_as(g3))
        # backward (signals only)
        g2 = torch.bmm(w.w3.transpose(1, 2), g3)  # (B, D, L)
        g2.mul_(a2 > 0)
        # conv_expand
        if hw * hw * (c + d) <= 2 * hw * c * d:
            gg = torch.bmm(g3[:, :, p1].transpose(1, 2), g3[:, :, p2])  # (B, S, S)
            ga = torch.bmm(a2[:, :, p1].transpose(1, 2), a2[:, :, p2])
            k3 = gg.mul_(ga).view(b, -1).sum(1)
        else:
            dwa = torch.bmm(g3[:, :, p1], a2[:, :, p1].transpose(1, 2))  # (B, C, D)
            dwb = torch.bmm(g3[:, :, p2], a2[:, :, p2].transpose(1, 2))
            k3 = dwa.mul_(dwb).view(b, -1).sum(1)
        del g3, a2, z2
        # conv_conv (3x3, m groups of n channels)
        g2v = g2.view(groups, n, length)
        if n >= GRAM_MIN_WIDTH:  # signal Gram x (sum over the 9 shifts of the input Gram)
            a1p = F.pad(a1.view(groups, n, hf, h), (1, 1, 1, 1))  # (G, n, hf+2, h+2)
            wa = a1p[:, :, : h + 2].reshape(groups, n, -1)
            wb = a1p[:, :, h + 1 :].reshape(groups, n, -1)
            gpad = torch.bmm(wa.transpose(1, 2), wb).view(groups, h + 2, h + 2, h + 2, h + 2)
            gg2 = torch.bmm(g2v[:, :, p1].transpose(1, 2), g2v[:, :, p2]).view(groups, h, h, h, h)
            st = gpad.stride()  # view [g, y, x, y', x', dy, dx] = gpad[g, y+dy, x+dx, y'+dy, x'+dx]
            shifts = gpad.as_strided(
                (groups, h, h, h, h, 3, 3), (st[0], st[1], st[2], st[3], st[4], st[1] + st[3], st[2] + st[4])
            )
            acc = gg2.mul_(shifts.sum((5, 6))).view(groups, -1).sum(1)
            del gpad, gg2, shifts
        else:  # per-sample weight gradients from im2col patches
            cols = F.unfold(a1.view(1, b * d, hf, h), 3, padding=1).view(groups, n * 9, length)
            dwa = torch.bmm(g2v[:, :, p1], cols[:, :, p1].transpose(1, 2))  # (G, n, 9n)
            dwb = torch.bmm(g2v[:, :, p2], cols[:, :, p2].transpose(1, 2))
            acc = dwa.mul_(dwb).view(groups, -1).sum(1)
            del cols, dwa, dwb
        k2 = acc.view(b, m).sum(1)
        # conv_reduce: sum_{s,t} (g1[s] . g1'[t]) (x[s] . x'[t])
        g1 = F.conv_transpose2d(g2.view(1, b * d, hf, h), w2, padding=1, groups=groups)
        g1 = g1.view(b * d, length).mul_(a1 > 0)
        y = torch.mm(g1[:, p2], self._gx.T)  # (BD, S)
        k1 = y.mul_(g1[:, p1]).view(b, -1).sum(1)
        return torch.stack([k1, k2, k3], dim=1)

    # ------------------------------------------------------------------ grouped engine
    def k_grouped(self, w: BlockWeights) -> Tensor:
        """``K`` by autograd on one grouped model (two backward passes): ``(B,)``."""
        b, d, c = w.w1.shape
        m = w.m
        n = d // m
        w1 = w.w1.reshape(b * d, c, 1, 1).clone().requires_grad_()
        w2 = w.w2.reshape(b * d, n, 3, 3).clone().requires_grad_()
        w3 = w.w3.reshape(b * c, d, 1, 1).clone().requires_grad_()
        params = [w1, w2, w3]
        bn = self.bn == "train"
        if bn:
            bnp = [
                torch.ones(b * d, dtype=self.dtype, device=self.device),
                torch.zeros(b * d, dtype=self.dtype, device=self.device),
                torch.ones(b * d, dtype=self.dtype, device=self.device),
                torch.zeros(b * d, dtype=self.dtype, device=self.device),
                torch.ones(b * c, dtype=self.dtype, device=self.device),
                torch.zeros(b * c, dtype=self.dtype, device=self.device),
            ]
            for p in bnp:
                p.requires_grad_()
            params += bnp

        def norm(h: Tensor, i: int) -> Tensor:
            if not bn:
                return h
            return F.batch_norm(h, None, None, bnp[2 * i], bnp[2 * i + 1], training=True)

        with torch.enable_grad():
            x = self.x
            h = torch.relu(norm(F.conv2d(x, w1), 0))
            h = torch.relu(norm(F.conv2d(h, w2, padding=1, groups=b * m), 1))
            h = norm(F.conv2d(h, w3, groups=b), 2)
            out = h + x.repeat(1, b, 1, 1)
            if self.final_relu:
                out = torch.relu(out)
            f = (out.view(2, b, -1) * self.r).sum(-1)  # (2, B)
            g0 = torch.autograd.grad(f[0].sum(), params, retain_graph=True)
            g1 = torch.autograd.grad(f[1].sum(), params)
        k = torch.zeros(b, dtype=self.dtype, device=self.device)
        weights = list(self.term_weights(m, n)) + [1.0] * (len(params) - 3)
        for u, v, s_ in zip(g0, g1, weights):
            k += (u * v).reshape(b, -1).sum(1) * s_
        return k.detach()

    # ------------------------------------------------------------------ reference loop
    def block(self, m: int, n: int) -> Bottleneck:
        """One probe block as a :class:`~collegial.models.Bottleneck` (``init_resnet_`` init)."""
        c = self.channels
        blk = Bottleneck(c, c, cardinality=m, width=n, ref_channels=c, bn=self.bn == "train")
        return init_resnet_(blk.to(self.dtype))

    def load(self, blk: Bottleneck, w: BlockWeights, trial: int) -> Bottleneck:
        """Copy trial ``trial`` of ``w`` into ``blk`` (as built by :meth:`block`)."""
        c = self.channels
        with torch.no_grad():
            blk.conv_reduce.weight.copy_(w.w1[trial].reshape(-1, c, 1, 1))
            blk.conv_conv.weight.copy_(w.w2[trial])
            blk.conv_expand.weight.copy_(w.w3[trial].reshape(c, -1, 1, 1))
        return blk

    def k_module(self, blk: Bottleneck) -> float:
        """``K`` of one block module: one forward on the pair, two autograd passes, inner product
        (the reference path: on the CPU, whatever the probe's device)."""
        params = [p for p in blk.parameters() if p.requires_grad]
        weights = [
            2.0 / (p.shape[1] * p.shape[2] * p.shape[3])
            if self.parameterization == "ntk" and p.dim() == 4
            else 1.0
            for p in params
        ]
        with batchnorm_mode(blk, "train"), torch.enable_grad():
            f = (blk(self.x.cpu()).reshape(2, -1) * self.r.cpu()).sum(-1)
            g0 = torch.autograd.grad(f[0], params, retain_graph=True)
            g1 = torch.autograd.grad(f[1], params)
        return float(sum((u * v).sum() * s_ for u, v, s_ in zip(g0, g1, weights)))

    def k_loop(self, m: int, n: int, trials: int, seed: int) -> Tensor:
        """The per-trial loop baseline: re-initialize the block with ``init_resnet_``, two
        autograd passes, inner product; ``(trials,)``. Uses (and restores) the global RNG."""
        if not self.final_relu:
            raise ValueError("the per-trial loop runs the Bottleneck as built (with its final ReLU)")
        blk = self.block(m, n)
        out = torch.empty(trials, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for t in range(trials):
                init_resnet_(blk)
                out[t] = self.k_module(blk)
        return out


class MLPProbe:
    """Fully connected CE probe: :class:`~collegial.models.CollegialMLP` (``in_features`` =
    ``channels`` inputs, ``depth`` weight layers of width n, ReLU, ``out_features`` outputs),
    ``m`` paths per trial. One output is its own fixed-at-init readout; more are read out by the
    pair's random readout ``r ~ N(0, 1/out_features)`` (:meth:`ProbeInputs.draw`), ``f = <r,
    F(x)>``. ``parameterization`` is passed to CollegialMLP (``"ntk"``: N(0, 1) weights with
    explicit ``gain / sqrt(fan_in)``), so the gradients are taken in that parameterization.

    ``reduce`` (default): the first layer is drawn on the pair's Gram coordinates ``u, u'`` (2
    numbers each, ``<u_i, u_j> = <x_i, x_j>``) instead of on ``x, x'``: its weight ``(n, 2)`` with
    the true fan-in's std. For i.i.d. Gaussian weights ``(W x, W x')`` and ``(V u, V u')`` have
    the same law, and the first layer's term of ``K``, ``scale^2 <x, x'> <dh(x), dh(x')>``, is the
    same function of them, so ``K`` has exactly the same distribution while the 784-wide first
    layer costs 2 columns (:meth:`k_model` of a full model on ``x`` equals it on the reduced one
    with ``V = W Q``, ``Q`` an orthonormal basis of ``x, x'``: ``tests/test_probes_faithful.py``)."""

    family = "mlp"
    engine = "grouped"
    #: Where it computes (the CPU only, for now).
    device = torch.device("cpu")

    def __init__(
        self,
        channels: int = 256,
        *,
        out_features: int = 1,
        depth: int = 4,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        parameterization: Parameterization = "standard",
        inputs: ProbeInputs = _GAUSSIAN,
        pair: int = 0,
        reduce: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        check_choice("parameterization", parameterization, PARAMETERIZATIONS, "parameterization")
        self.parameterization = parameterization
        self.channels, self.depth, self.seed, self.dtype = channels, depth, seed, dtype
        self.out_features = int(out_features)
        self.inputs, self.pair = inputs, int(pair)
        self.bn = "none"
        self.device = torch.device(device)
        # one output: no readout (the pair's inputs are drawn first, so they do not depend on it)
        self.x, self.r = inputs.draw((channels,), 0 if out_features == 1 else out_features, seed, self.pair, dtype)
        self.reduce = bool(reduce) and channels > 2
        #: What the built model's first layer reads: ``x`` itself, or its Gram coordinates
        #: (rescaled in the ntk parameterization, whose forward scale follows the fan-in).
        self.model_input = self.x
        if self.reduce:
            u = gram_coordinates(self.x)
            if parameterization == "ntk":
                u = u * math.sqrt(2.0 / channels)
            self.model_input = u.to(dtype)
        self.model_input = self.model_input.to(self.device)
        self.r = self.r.to(self.device)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(channels,)``: one flat input (no batch axis)."""
        return (int(self.channels),)

    @property
    def in_features(self) -> int:
        """The built model's input width: 2 when reduced, else ``channels``."""
        return 2 if self.reduce else self.channels

    def inner(self, m: int, n: int) -> int:
        return m * n

    def trial_bytes(self, m: int, n: int) -> int:
        """The working set of one trial at ``(m, n)`` (bytes)."""
        return (self.in_features * m * n + (self.depth - 2) * m * n * n + m * n * self.out_features) * 4 * 8

    def chunk_size(self, m: int, n: int) -> int:
        return int(max(4, min(1024, CHUNK_BYTES // self.trial_bytes(m, n))))

    def build(self, m: int, n: int, trials: int, seed: int) -> CollegialMLP:
        """``trials`` CEs of multiplicity ``m`` as one CollegialMLP on :attr:`model_input`, its
        weights drawn from ``seed`` by :func:`fill_normal` (CollegialMLP's own init
        distribution with the true fan-in, zero biases), on the CPU, then moved to the probe's
        device. No global RNG: worker threads cannot race on it, so results do not depend on
        threads (nor on the device)."""
        with torch.device("meta"):
            model = CollegialMLP(
                self.in_features, self.out_features, trials * m, n, depth=self.depth,
                parameterization=self.parameterization,
            )
        model = model.to_empty(device="cpu").to(self.dtype)
        targets = []
        with torch.no_grad():
            for i, layer in enumerate(model.layers):
                fan_in = self.channels if i == 0 else layer.in_features
                std = 1.0 if layer.parameterization == "ntk" else layer.gain / math.sqrt(fan_in)
                targets.append((layer.weight, std))
                if layer.bias is not None:
                    layer.bias.zero_()
            fill_normal(targets, seed)
        return model.to(self.device)

    def k_chunk(self, m: int, n: int, trials: int, seed: int) -> Tensor:
        return self.k_model(self.build(m, n, trials, seed), m).cpu()

    def k_model(self, model: CollegialMLP, m: int, x: Tensor | None = None) -> Tensor:
        """``K`` per trial of a CollegialMLP whose ``B * m`` paths form ``B`` trials, on the
        pair ``x`` (default :attr:`model_input`, what :meth:`build` makes models for)."""
        b = model.m // m
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            paths = model.paths(self.model_input if x is None else x)  # (2, B*m, out)
            f = paths.view(2, b, m, self.out_features).sum(2) / math.sqrt(m)  # (2, B, out)
            f = f[..., 0] if self.out_features == 1 else f @ self.r
            g0 = torch.autograd.grad(f[0].sum(), params, retain_graph=True)
            g1 = torch.autograd.grad(f[1].sum(), params)
        k = torch.zeros(b, dtype=self.dtype, device=self.device)
        for u, v in zip(g0, g1):
            k += (u * v).reshape(b, -1).sum(1)
        return k.detach()


def gram_coordinates(x: Tensor) -> Tensor:
    """``(2, 2)`` coordinates ``u`` of a pair ``x`` ``(2, C)`` in an orthonormal basis of its
    span (Gram-Schmidt from ``x[0]``), so ``u @ u.T == x @ x.T``; computed in float64."""
    x64 = x.to(torch.float64)
    a = float(x64[0].norm())
    u = torch.zeros(2, 2, dtype=torch.float64)
    if a == 0.0:
        u[1, 0] = x64[1].norm()
        return u
    c = float(x64[0] @ x64[1]) / a
    u[0, 0], u[1, 0] = a, c
    u[1, 1] = math.sqrt(max(float(x64[1] @ x64[1]) - c * c, 0.0))
    return u
