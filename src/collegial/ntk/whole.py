"""The whole model's NTK at initialization on real input pairs, split exactly by parameter group.

For a model as built (every trainable parameter), ``P`` pairs of images ``(x_p, x'_p)`` and a
random unit readout ``r_p`` of the logits for each pair, ``f(x) = <r_p, net(x)>`` and

    K_p = <grad f(x_p), grad f(x'_p)> = sum over groups g of K_p^g,
    K_p^g = sum over the parameters theta of group g of <df(x_p)/dtheta, df(x'_p)/dtheta>,

so the group terms sum to ``K_p`` to float precision (:func:`parameter_groups` names the groups).

BatchNorm (``bn``, :data:`WHOLE_BN_MODES`):

* ``"batch"`` (default): every BatchNorm normalizes with the statistics of the *probe batch*,
  the ``2P`` pair images together, as the first training step does; gradients flow through the
  statistics, so each image's gradient depends on the whole batch (running buffers unused).
* ``"running"``: the running statistics (at initialization a fixed per-channel affine map);
  samples are independent.

**Gradient rows.** ``rows[name]`` ``(2P, numel)`` holds ``df_i/dtheta`` for image ``i`` of the
batch (pair ``p`` is rows ``2p`` and ``2p + 1``). Three methods give the same rows
(:class:`WholeMethod`; cross-checked in ``tests/test_whole.py``):

* ``loop``: one ``torch.autograd.grad`` per image (``batch``: one forward of the batch, then
  one backward per image; ``running``: each image alone): the reference, and ``auto``'s choice
  in ``batch`` mode, where every row needs its own backward through the whole batch anyway and
  plain backward passes (channels-last for image models) beat the vmapped ones 1.8-3x
  (``bench/verify.py``);
* ``jacobian``: one ``vjp`` of the batch vmapped over the ``2P`` one-hot cotangents;
* ``taps`` (``auto`` in ``running`` mode): forward hooks on ``nn.Linear``, ``nn.Conv2d``,
  :class:`~collegial.models.BlockDiagonalLinear` and BatchNorm capture each layer's input, the
  signals ``df/d(output)`` come from one backward pass (``running``: of ``sum_i f_i``, the
  samples being independent) or one backward vmapped over the ``2P`` cotangents (``batch``),
  and each layer's rows are the GEMMs ``g^T a`` (im2col for convolutions). Parameters outside
  those layers get ``jacobian`` rows. Coverage is proved on every call by walking the autograd
  graph (:func:`~collegial.ntk.structured.check_coverage`), and in ``running`` mode sample
  independence is checked on each new architecture (image 0 alone must give row 0); either
  failing falls back to ``jacobian``, never to a smaller kernel.

Each initialization is the factory's own (``factory()`` under the global RNGs seeded from
``(seed, t)``, :func:`init_seed`), so trial ``t`` is the same whatever the thread count, the
order trials are computed in, or the torchrun rank that computes it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from collegial.errors import UserError
from collegial.models import BlockDiagonalLinear, CollegialMLP
from collegial.models.resnext import Bottleneck, ResNeXt
from collegial.ntk._bn import batchnorm_mode, batchnorm_modules
from collegial.ntk.generic import _seeded
from collegial.ntk.structured import (
    StructuredUnsupported,
    Tap,
    check_coverage,
    find_taps,
    layer_features,
    order_costs,
    pair_gram,
    traced_forward,
)

#: BatchNorm of the whole model: the probe batch's statistics, or the running statistics.
WHOLE_BN_MODES: tuple[str, ...] = ("batch", "running")
_TAG = 0xB0D1


class WholeMethod(str, enum.Enum):
    """How the gradient rows are computed (values are the strings accepted by ``method=``)."""

    LOOP = "loop"
    JACOBIAN = "jacobian"
    TAPS = "taps"
    AUTO = "auto"


def init_seed(seed: int, trial: int) -> int:
    """The 63-bit seed of initialization ``trial``."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _TAG, int(trial)])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1)


# ------------------------------------------------------------------------------ groups
@dataclass(frozen=True)
class Groups:
    """``of[name]``: the group of each trainable parameter; ``names``: the groups in order of
    first appearance; ``collegial``: the groups made of per-path (collegial) layers."""

    of: dict[str, str]
    names: list[str]
    collegial: frozenset[str]


_BOTTLENECK_PARTS = {"conv_reduce": "reduce", "conv_conv": "grouped", "conv_expand": "expand"}


def parameter_groups(model: nn.Module) -> Groups:
    """The parameter groups of ``model``.

    Every BatchNorm affine parameter is in ``batchnorm``. A :class:`ResNeXt`: ``stem``;
    ``stageS.reduce`` / ``stageS.grouped`` / ``stageS.expand`` (the collegial layers of stage S:
    the 1x1 reduce, the grouped 3x3 and the 1x1 expand convolutions), ``stageS.shortcut``
    (projections); ``head``. One :class:`Bottleneck` (Algorithm 1's probe block): ``reduce`` /
    ``grouped`` / ``expand`` (collegial) and ``shortcut``. A :class:`CollegialMLP`:
    ``layer1..layerL`` (all collegial). Any other model: its top-level child modules
    (``BlockDiagonalLinear`` ones collegial).
    """
    of: dict[str, str] = {}
    collegial: set[str] = set()
    bn_params = {id(p) for mod in batchnorm_modules(model) for p in mod.parameters(recurse=False)}
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in bn_params:
            of[name] = "batchnorm"
            continue
        parts = name.split(".")
        if isinstance(model, ResNeXt):
            if parts[0] == "stages":
                stage = f"stage{int(parts[1]) + 1}"
                block = modules.get(".".join(parts[:3]))
                part = _BOTTLENECK_PARTS.get(parts[3]) if isinstance(block, Bottleneck) else None
                group = f"{stage}.{part}" if part else f"{stage}.{parts[3] if len(parts) > 3 else 'other'}"
                if part:
                    collegial.add(group)
            else:
                group = {"stem": "stem", "classifier": "head"}.get(parts[0], parts[0])
        elif isinstance(model, Bottleneck):
            group = _BOTTLENECK_PARTS.get(parts[0], parts[0])
            if parts[0] in _BOTTLENECK_PARTS:
                collegial.add(group)
        elif isinstance(model, CollegialMLP) and parts[0] == "layers":
            group = f"layer{int(parts[1]) + 1}"
            collegial.add(group)
        else:
            group = parts[0] if len(parts) > 1 else "(root)"
            owner = modules.get(".".join(parts[:-1]))
            if isinstance(owner, BlockDiagonalLinear):
                collegial.add(group)
        of[name] = group
    names = list(dict.fromkeys(of.values()))
    return Groups(of, names, frozenset(collegial))


def group_shares(terms: Tensor) -> tuple[Tensor, Tensor]:
    """Each group's share of ``E[K]`` and of ``Var[K]`` from group terms ``(T, P, G)`` (``T``
    initializations, ``P`` pairs, ``G`` groups; ``K = terms.sum(2)``), each averaged over the
    pairs: ``(G,)`` and ``(G,)`` float64.

    Share of ``E[K]``: ``E[K_g] / E[K]``; of ``Var[K]``: ``Cov(K_g, K) / Var[K]`` (covariances
    between groups included, so both sum to 1 over the groups). The one split used by
    ``collegial verify`` (whole models) and ``reproduce m-law`` (the probe block)."""
    t = terms.to(torch.float64)
    k = t.sum(2)  # (T, P)
    mean = (t.mean(0) / k.mean(0).unsqueeze(1)).mean(0)
    kc = (k - k.mean(0)).unsqueeze(2)
    cov = ((t - t.mean(0)) * kc).sum(0) / (t.shape[0] - 1)  # (P, G)
    return mean, (cov / k.var(0).unsqueeze(1)).mean(0)


# ------------------------------------------------------------------------------ pairs
@dataclass(frozen=True)
class Pairs:
    """``x``: the probe batch ``(2P, *image_shape)`` (pair ``p`` = images ``2p, 2p + 1``);
    ``readout``: one unit vector per pair over the model's ``K`` outputs, ``(P, K)``."""

    x: Tensor
    readout: Tensor

    @property
    def count(self) -> int:
        return int(self.readout.shape[0])

    def row_readout(self) -> Tensor:
        """The readout of every image of the batch, ``(2P, K)``."""
        return self.readout.repeat_interleave(2, dim=0)


def draw_pairs(
    images: Tensor, labels: Tensor | None, count: int, outputs: int, *, seed: int, kind: str = "any",
) -> tuple[Pairs, list[tuple[int, int]]]:
    """``count`` pairs of distinct images of ``images`` ``(N, *shape)`` and a unit readout over
    ``outputs`` logits each, from generator seed ``seed``; ``kind``: ``any`` (two random images),
    ``same`` or ``different`` (class, from ``labels``). Returns the pairs and their indices."""
    if kind not in ("any", "same", "different"):
        raise UserError(f"unknown pair kind {kind!r}; choose any, same or different")
    n = images.shape[0]
    if n < 2:
        raise UserError("need at least 2 images to draw pairs")
    if kind != "any" and labels is None:
        raise UserError(f"{kind}-class pairs need labels")
    g = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))
    idx: list[tuple[int, int]] = []
    for _ in range(count):
        for _attempt in range(10_000):
            i, j = (int(v) for v in torch.randperm(n, generator=g)[:2])
            if kind == "any" or (labels is not None and (bool(labels[i] == labels[j]) == (kind == "same"))):
                break
        else:
            raise UserError(f"could not find a {kind}-class pair among {n} images")
        idx.append((i, j))
    flat = [k for ij in idx for k in ij]
    r = torch.randn((count, outputs), generator=g, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True)
    return Pairs(images[flat].clone(), r.to(images.dtype)), idx


# ------------------------------------------------------------------------------ the engine
class WholeModelNtk:
    """Gradient rows and group terms of whole models built by ``factory()`` (see the module
    docstring) on ``pairs``, BatchNorm in ``bn`` mode, computed by ``method``."""

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        pairs: Pairs,
        *,
        bn: str = "batch",
        method: WholeMethod | str = WholeMethod.AUTO,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        if bn not in WHOLE_BN_MODES:
            raise UserError(f"unknown BatchNorm mode {bn!r}; choose {', '.join(WHOLE_BN_MODES)}")
        try:
            self.method = WholeMethod(method)
        except ValueError:
            raise UserError(f"unknown method {method!r}; choose {', '.join(m.value for m in WholeMethod)}") from None
        self.factory, self.bn, self.dtype, self.device = factory, bn, dtype, torch.device(device)
        self.x = pairs.x.to(self.device, dtype)
        self.r = pairs.row_readout().to(self.device, dtype)
        self.pairs = pairs.count
        self._checked = False  # running mode: sample independence checked on the first model
        self.fallback: str | None = None  # why taps fell back to jacobian (None: they did not)
        #: running-mode taps: how many layer weights got their pair terms in the Gram order and
        #: how many as rows (summed over calls of :meth:`terms`)
        self.orders = {"gram": 0, "rows": 0}

    # -------------------------------------------------------------- models
    def model(self, seed: int, trial: int) -> nn.Module:
        """Initialization ``trial`` of the factory's model (global RNGs seeded, then restored),
        drawn on the CPU (the same weights for every device), then moved to the device."""
        with _seeded(init_seed(seed, trial)):
            mod = self.factory()
        return mod.to(self.device, self.dtype)

    def groups(self, model: nn.Module) -> Groups:
        return parameter_groups(model)

    # -------------------------------------------------------------- K
    def terms(self, model: nn.Module) -> tuple[Tensor, Groups]:
        """``(P, G)`` float64: the term of every group of :func:`parameter_groups` in every
        pair's ``K`` (their row sums are the pairs' ``K``), and the groups."""
        groups = self.groups(model)
        dots: dict[str, Tensor] = {}
        rows = self._rows(model, dots)
        col = {g: i for i, g in enumerate(groups.names)}
        out = torch.zeros((self.pairs, len(groups.names)), dtype=torch.float64, device=self.device)
        for name, r in rows.items():
            flat = r.reshape(r.shape[0], -1)
            out[:, col[groups.of[name]]] += torch.linalg.vecdot(flat[0::2], flat[1::2]).to(torch.float64)
        for name, d in dots.items():
            out[:, col[groups.of[name]]] += d.to(torch.float64)
        return out.cpu(), groups

    def rows(self, model: nn.Module) -> dict[str, Tensor]:
        """``{name: (2P, *shape)}``: ``df_i/dtheta`` of every trainable parameter."""
        return self._rows(model, None)

    def _rows(self, model: nn.Module, dots: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """:meth:`rows`; with ``dots`` (``running`` mode, taps, once independence is checked),
        the weights of layers whose pair terms are cheaper in the Gram order get their pair terms
        ``(P,)`` in ``dots`` instead of rows (:data:`orders` counts the choices)."""
        method = self.method
        if method == WholeMethod.AUTO and self.bn == "batch":
            method = WholeMethod.LOOP
        if method in (WholeMethod.AUTO, WholeMethod.TAPS):
            if self.fallback is None:
                try:
                    rows = self._rows_taps(model, dots if self._checked else None)
                    if self.bn == "running" and not self._checked:
                        self._check_independent(model, rows)
                    return rows
                except StructuredUnsupported as e:
                    if method == WholeMethod.TAPS:
                        raise
                    self.fallback = str(e)
            method = WholeMethod.JACOBIAN
        if method == WholeMethod.LOOP:
            return self._rows_loop(model)
        return self._rows_jacobian(model)

    def _f(self, model: nn.Module, x: Tensor, r: Tensor) -> Tensor:
        out = model(x).reshape(x.shape[0], -1)
        if out.shape[1] != r.shape[1]:
            raise UserError(f"the model has {out.shape[1]} outputs, the readout {r.shape[1]}")
        return (out * r).sum(1)

    def _mode(self) -> str:
        return "train" if self.bn == "batch" else "eval"

    def _rows_loop(self, model: nn.Module) -> dict[str, Tensor]:
        """One ``autograd.grad`` per image: ``batch`` mode from one forward of the whole batch
        (image models in channels-last layout, the backend's faster one for grouped
        convolutions; ``model`` is converted in place), ``running`` mode each image alone."""
        named = {k: p for k, p in model.named_parameters() if p.requires_grad}
        x, n = self.x, self.x.shape[0]
        if self.bn == "batch" and x.dim() == 4:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        rows = {k: torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device) for k, p in named.items()}
        with batchnorm_mode(model, self._mode()), torch.enable_grad():
            y = self._f(model, x, self.r) if self.bn == "batch" else None
            for i in range(n):
                f = y[i] if y is not None else self._f(model, x[i : i + 1], self.r[i : i + 1])[0]
                keep = y is not None and i < n - 1
                gs = torch.autograd.grad(f, list(named.values()), allow_unused=True, retain_graph=keep)
                for row, g in zip(rows.values(), gs):
                    if g is not None:
                        row[i] = g
        return rows

    def _rows_jacobian(self, model: nn.Module, only: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Rows of ``only`` (default: every trainable parameter) by one vmapped vjp."""
        params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        if only is not None:
            params = {k: params[k] for k in only}
        skip = ("running_mean", "running_var", "num_batches_tracked") if self.bn == "batch" else ()
        fixed = {k: v.detach() for k, v in model.named_buffers() if not k.endswith(skip)}
        fixed.update({k: p.detach() for k, p in model.named_parameters() if k not in params})
        x, r = self.x, self.r

        def f(p: dict[str, Tensor]) -> Tensor:
            return (functional_call(model, (p, fixed), (x,)).reshape(x.shape[0], -1) * r).sum(1)

        with batchnorm_mode(model, self._mode()):
            _, pullback = vjp(f, params)
            eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
            (jac,) = vmap(pullback)(eye)
        return {k: v.detach() for k, v in jac.items()}

    def _rows_taps(self, model: nn.Module, dots: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The ``taps`` rows (module docstring; image models run channels-last, ``model`` converted
        in place); with ``dots``, Gram-order pair terms instead of rows where cheaper (:meth:`_rows`)."""
        taps, rest = find_taps(model)
        names = {id(p): k for k, p in model.named_parameters()}
        x = self.x
        if x.dim() == 4:  # channels-last: the backend's faster layout for (grouped) convolutions
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with batchnorm_mode(model, self._mode()):
            y = traced_forward(taps, lambda: self._f(model, x, self.r))
        check_coverage(y, taps)
        outs = [out for tap in taps for _, _, out in tap.calls]
        n = y.shape[0]
        if self.bn == "running":  # samples independent: one backward of sum_i f_i
            sig = torch.autograd.grad(y.sum(), outs, allow_unused=True, materialize_grads=True,
                                      retain_graph=bool(rest))
            signals = [s.unsqueeze(0) for s in sig]  # (1, B, ...): "row" axis of size 1
        else:  # every image's f through the whole batch: backward vmapped over the 2P outputs
            eye = torch.eye(n, dtype=y.dtype, device=y.device)

            def pull(v: Tensor) -> tuple[Tensor, ...]:
                return torch.autograd.grad(y, outs, v, allow_unused=True, materialize_grads=True, retain_graph=True)

            signals = list(vmap(pull)(eye))  # each (2P, B, ...)
        rows: dict[str, Tensor] = {}
        pos = 0
        for tap in taps:
            sig_t = signals[pos : pos + len(tap.calls)]
            pos += len(tap.calls)
            if dots is not None and tap.weight is not None and _gram_cheaper(tap, sig_t):
                self.orders["gram"] += 1
                dots[names[id(tap.weight)]] = _weight_pair_terms(tap, sig_t)
                tap = replace(tap, weight=None)  # the bias (if any) as rows
            elif dots is not None:
                self.orders["rows"] += 1
            for p, grad in _tap_rows(tap, sig_t, per_sample=self.bn == "running").items():
                rows[names[id(p)]] = grad
            tap.calls = []
        if rest:
            rows.update(self._rows_jacobian(model, only=rest))
        return {k: rows[k] for k in names.values() if k in rows}

    def _check_independent(self, model: nn.Module, rows: dict[str, Tensor]) -> None:
        """Running mode: the rows of image 0 computed alone must equal row 0 of the batch (they
        do when no operation mixes the samples of a batch); else :class:`StructuredUnsupported`."""
        saved_x, saved_r = self.x, self.r
        try:
            self.x, self.r = saved_x[:1], saved_r[:1]
            alone = self._rows_jacobian(model)
        finally:
            self.x, self.r = saved_x, saved_r
        for k, v in alone.items():
            ref = rows[k][0]
            tol = 1e-4 * float(ref.abs().max()) + 1e-6 if ref.numel() else 0.0
            if not torch.allclose(v[0], ref, rtol=1e-3, atol=tol):
                raise StructuredUnsupported(f"samples of a batch interact (parameter {k}); "
                                            "per-sample signals do not apply")
        self._checked = True


def _conv_weight_rows(mod: nn.Conv2d, x: Tensor, g: Tensor, per_sample: bool) -> Tensor:
    """Weight rows ``(R, *weight.shape)`` of a Conv2d from its input ``x`` ``(B, Cin, H, W)`` and
    signals ``g`` (``(B, Cout, H', W')`` per sample, else ``(R, B, Cout, H', W')``).

    A 1x1 convolution is a GEMM over positions; any other is one weight-gradient convolution
    (the backend's own kernel), the rows folded into its groups: per sample, image ``i``'s
    channels form groups of their own; otherwise row ``k``'s signals are extra output channels
    of every group."""
    grp, cout = mod.groups, mod.out_channels
    fo, fi = cout // grp, mod.in_channels // grp
    bsz = x.shape[0]
    if mod.kernel_size == (1, 1) and mod.padding in ((0, 0), "valid") and mod.dilation == (1, 1):
        xs = x[:, :, :: mod.stride[0], :: mod.stride[1]]
        if per_sample and xs.is_contiguous(memory_format=torch.channels_last):  # no layout copies
            a = xs.permute(0, 2, 3, 1).reshape(bsz, -1, grp, fi)  # (B, L, G, Fi)
            dw = torch.einsum("rlgo,rlgi->rgoi", g.permute(0, 2, 3, 1).reshape(bsz, -1, grp, fo), a)
            return dw.reshape(bsz, *mod.weight.shape)
        a = xs.reshape(bsz, grp, fi, -1)  # (B, G, Fi, L)
        if per_sample:
            dw = torch.einsum("rgol,rgil->rgoi", g.reshape(bsz, grp, fo, -1), a)
        else:
            dw = torch.einsum("rbgol,bgil->rgoi", g.reshape(g.shape[0], bsz, grp, fo, -1), a)
        return dw.reshape(dw.shape[0], *mod.weight.shape)
    kh, kw = mod.kernel_size
    if per_sample:
        rows, xin, gout, groups = bsz, x.reshape(1, -1, *x.shape[2:]), g.reshape(1, -1, *g.shape[2:]), bsz * grp
        wshape = (bsz * cout, fi, kh, kw)
    else:
        rows = g.shape[0]
        gout = g.reshape(rows, bsz, grp, fo, *g.shape[3:]).permute(1, 2, 0, 3, 4, 5).reshape(bsz, grp * rows * fo, *g.shape[3:])
        xin, groups, wshape = x, grp, (grp * rows * fo, fi, kh, kw)
    _, dw, _ = torch.ops.aten.convolution_backward(
        gout.contiguous(), xin.contiguous(), torch.empty(wshape, dtype=x.dtype, device=x.device), None,
        list(mod.stride), list(mod.padding), list(mod.dilation), False, [0, 0], groups, [False, True, False])
    if per_sample:
        return dw.reshape(bsz, *mod.weight.shape)
    return dw.reshape(grp, rows, fo, fi, kh, kw).transpose(0, 1).reshape(rows, *mod.weight.shape)


def _gram_cheaper(tap: Tap, signals: list[Tensor]) -> bool:
    """Whether a tapped Linear, Conv2d or BlockDiagonalLinear weight's pair terms cost fewer
    multiply-adds in the Gram order than as per-sample rows (``running`` mode: ``signals``
    ``(1, B, *out)``), by :func:`~collegial.ntk.structured.order_costs` for one pair."""
    mod = tap.module
    if tap.kind == "conv" and isinstance(mod, nn.Conv2d):
        grp = mod.groups
        ga, fi, fo = grp, mod.in_channels // grp * mod.kernel_size[0] * mod.kernel_size[1], mod.out_channels // grp
        s = sum(sig[0, 0, 0].numel() for sig in signals)  # output positions over the calls
    elif tap.kind == "linear":
        ga, grp, fi, fo = 1, 1, mod.in_features, mod.out_features
        s = sum(sig[0, 0].numel() // fo for sig in signals)
    elif tap.kind == "bdlinear":
        ga, grp, fi, fo = (1 if mod.shared_input else mod.m), mod.m, mod.in_features, mod.out_features
        s = len(signals)
    else:
        return False
    costs = order_costs(1, 1, 1, ga, grp, fi, fo, s, s, True)
    return costs["gram"] < costs["dw"]


def _weight_pair_terms(tap: Tap, signals: list[Tensor]) -> Tensor:
    """``(P,)``: ``<d f_2p / dW, d f_2p+1 / dW>`` of a tapped layer's weight in the Gram order
    (running mode: ``signals`` ``(1, B, *out)``), from the features of
    :func:`~collegial.ntk.structured.layer_features`."""
    n = tap.calls[0][0].shape[0]
    term, _ = layer_features(replace(tap, bias=None), n, 1, [s[0].unsqueeze(1) for s in signals])
    if term is None:
        raise StructuredUnsupported(f"no weight features for a {type(tap.module).__name__}")
    a, g, scale = term
    return pair_gram(a, g, scale)


def _tap_rows(tap: object, signals: list[Tensor], *, per_sample: bool) -> dict[nn.Parameter, Tensor]:
    """Rows ``(R, *shape)`` of one tapped layer's parameters from its calls' inputs ``x``
    ``(B, *in)`` and signals ``(R, B, *out)`` (``per_sample``: ``(1, B, *out)``).

    ``per_sample`` (``running`` mode: BatchNorm on its running statistics): samples are
    independent, so image ``i``'s row is its own ``g_i^T a_i`` (R = B). Otherwise (``batch``
    mode: BatchNorm on the batch's statistics) row ``k`` is output ``k``'s gradient, summed
    over the batch."""
    mod = tap.module  # type: ignore[attr-defined]
    kind = tap.kind  # type: ignore[attr-defined]
    w, b = tap.weight, tap.bias  # type: ignore[attr-defined]
    acc: dict[nn.Parameter, Tensor] = {}

    def add(p: nn.Parameter | None, v: Tensor) -> None:
        if p is not None:
            acc[p] = v if p not in acc else acc[p] + v

    for (x, _, _), sig in zip(tap.calls, signals):  # type: ignore[attr-defined]
        g = sig[0] if per_sample else sig  # (R, *out) or (R, B, *out)
        r = g.shape[0]
        bsz = x.shape[0]
        if kind == "conv":
            if not isinstance(mod, nn.Conv2d):
                raise StructuredUnsupported(f"{type(mod).__name__} rows are not implemented here")
            if w is not None:
                add(w, _conv_weight_rows(mod, x, g, per_sample))
            add(b, g.sum((2, 3)) if per_sample else g.sum((1, 3, 4)))
        elif kind == "linear":
            fi, fo = mod.in_features, mod.out_features
            if per_sample:
                gg = g.reshape(r, -1, fo)
                dw = torch.einsum("rso,rsi->roi", gg, x.reshape(r, -1, fi))
            else:
                gg = g.reshape(r, -1, fo)
                dw = torch.einsum("rso,si->roi", gg, x.reshape(-1, fi))
            add(w, dw)
            add(b, gg.sum(1))
        elif kind == "bdlinear":
            m, fi, fo = mod.m, mod.in_features, mod.out_features
            a = x.reshape(bsz, 1 if mod.shared_input else m, fi).expand(bsz, m, fi)
            if per_sample:
                gg = g.reshape(r, m, fo)
                dw, db = torch.einsum("rmo,rmi->rmoi", gg, a), gg
            else:
                gg = g.reshape(r, bsz, m, fo)
                dw, db = torch.einsum("rbmo,bmi->rmoi", gg, a), gg.sum(1)
            add(w, dw * mod.scale)
            add(b, db)
        else:  # BatchNorm: y = gamma * xhat + beta
            c = mod.num_features
            if not per_sample:  # batch mode: statistics of the probe batch (biased variance, as torch)
                xs = x.reshape(bsz, c, -1)
                mean = xs.mean((0, 2), keepdim=True)
                var = xs.var((0, 2), unbiased=False, keepdim=True)
                xhat = (xs - mean) * torch.rsqrt(var + mod.eps)
                gg = g.reshape(r, bsz, c, -1)
                dg, db = torch.einsum("rbcs,bcs->rc", gg, xhat), gg.sum((1, 3))
            else:  # per channel, in the tensors' own layout (no copies): sum over every axis after C
                # sum g * xhat = (sum g * x - mean * sum g) / sqrt(var + eps): one pass fewer
                axes = tuple(range(2, x.dim()))
                db = g.sum(axes)
                dg = ((g * x).sum(axes) - mod.running_mean * db) * torch.rsqrt(mod.running_var + mod.eps)
            add(w, dg)
            add(b, db)
    return {p: v.detach() for p, v in acc.items()}
