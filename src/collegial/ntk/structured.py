"""Structured derivatives (Novak, Sohl-Dickstein & Schoenholz, ICML 2022) for torch modules.

For a layer ``y = W a`` applied at ``S`` positions (a Linear on ``(N, *, in)``, a convolution's
im2col patches, one path of a :class:`~collegial.models.BlockDiagonalLinear`), the per-sample
weight Jacobian for output ``k`` is ``dW[k, i] = sum_s g[k, i, s] (x) a[i, s]`` where ``a`` are
the layer's inputs and ``g = d f_k / d y`` its backpropagated signals. Its NTK contribution is

    <dW[k, i], dW[l, j]> = sum_{s, t} (g[k, i, s] . g[l, j, t]) * (a[i, s] . a[j, t])

and is computed in whichever order is cheaper (chosen per layer from the shapes):

* ``"gram"``: the Gram matrices of inputs ``(N1, N2, G, S1, S2)`` and of signals, multiplied
  elementwise and summed -- never forms a weight-shaped tensor (best for Linear, S = 1);
* ``"dw"``: per-sample weight gradients ``g^T a`` of shape ``(K, N, G, out, in)`` contracted
  directly (best for convolutions with many positions and few channels).

All signals come from ONE backward pass vmapped (``torch.func.vmap``) over the ``K`` outputs'
cotangents (in groups of outputs when memory requires), not from per-sample Jacobians.
Supported layers: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` (any groups/stride/dilation, zero
padding), :class:`~collegial.models.BlockDiagonalLinear` and
BatchNorm in eval mode (per-channel ``gamma``/``beta``: their per-sample gradients are only
``C`` numbers, so they are formed explicitly). Every other trainable parameter falls back to a
per-sample Jacobian through ``torch.func`` (``vmap(jacrev)``) restricted to those parameters.

Requires samples to be independent (no BatchNorm in training mode) and the batch to be the
leading dimension of every supported layer's input; otherwise :class:`StructuredUnsupported`.

**Coverage is proved, not assumed**: a layer is seen only through its forward hook, so every
call walks the autograd graph of its outputs and checks that every use of each tapped parameter
lies inside one of its module's hooked calls (:func:`check_coverage`); a parameter also used
outside them makes the model :class:`StructuredUnsupported`, never a silently smaller kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from collegial.models import BlockDiagonalLinear


class StructuredUnsupported(RuntimeError):
    """The model cannot be handled by structured derivatives (use Jacobian contraction)."""


_BN = nn.modules.batchnorm._BatchNorm

#: Signals for the K outputs from one backward vmapped over the K cotangents (GEMMs over K*N
#: rows) instead of K plain backward passes: faster on every model measured (``bench/ntk.py``).
#: A graph that cannot be vmapped (e.g. a custom ``autograd.Function`` whose backward leaves
#: torch) falls back to K passes.
BATCHED_BACKWARD = True


@dataclass
class Tap:
    module: nn.Module
    kind: str  # "linear" | "bdlinear" | "conv" | "bn"
    weight: nn.Parameter | None
    bias: nn.Parameter | None
    calls: list[tuple[Tensor, int, Tensor]] = field(default_factory=list)


@dataclass
class SideFeatures:
    """What one side (x1 or x2 chunk) contributes: per-layer (a, g, scale) plus flat vectors.

    ``gl``: list of ``(a, g, scale)``, ``a``: ``(N, Ga, Fi, S)`` with ``Ga`` in ``{1, G}``
    (1 = input shared by all groups), ``g``: ``(N, K, G, Fo, S)`` (positions last).
    ``vec``: per-sample gradients of the remaining parameters, ``(N, K, P)`` (or ``None``).
    """

    def rows(self, sl: slice) -> SideFeatures:
        """The features of samples ``sl`` (views)."""
        gl = [(a[sl], g[sl], scale) for a, g, scale in self.gl]
        vec = None if self.vec is None else self.vec[sl]
        return SideFeatures(len(range(*sl.indices(self.n))), self.k, gl, vec)

    n: int
    k: int
    gl: list[tuple[Tensor, Tensor, float]]
    vec: Tensor | None


def _plain(mod: nn.Module, base: type) -> bool:
    """True when ``mod`` uses ``base.forward`` unchanged and holds its weight directly."""
    return type(mod).forward is base.forward and isinstance(
        mod._parameters.get("weight"), nn.Parameter
    )


def _supported(mod: nn.Module) -> str | None:
    if isinstance(mod, nn.Linear) and _plain(mod, nn.Linear):
        return "linear"
    if isinstance(mod, BlockDiagonalLinear) and _plain(mod, BlockDiagonalLinear):
        return "bdlinear"
    if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        base = nn.Conv1d if isinstance(mod, nn.Conv1d) else nn.Conv2d
        if not _plain(mod, base) or mod.padding_mode != "zeros":
            return None
        if isinstance(mod.padding, str) and mod.padding != "valid":
            return None  # padding="same": left to the per-sample Jacobian fallback
        return "conv"
    if isinstance(mod, _BN) and mod.affine and type(mod).forward is _BN.forward:
        if isinstance(mod._parameters.get("weight"), nn.Parameter):
            return "bn"
    return None


def find_taps(model: nn.Module) -> tuple[list[Tap], dict[str, nn.Parameter]]:
    """Supported layers whose parameters are not shared, and the remaining trainable params."""
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    taps: list[Tap] = []
    covered: set[int] = set()
    for mod in model.modules():
        kind = _supported(mod)
        if kind is None:
            continue
        w = mod._parameters.get("weight")
        b = mod._parameters.get("bias")
        own = [p for p in (w, b) if p is not None]
        if any(counts[id(p)] > 1 for p in own):
            continue
        w = w if (w is not None and w.requires_grad) else None
        b = b if (b is not None and b.requires_grad) else None
        if w is None and b is None:
            continue
        taps.append(Tap(mod, kind, w, b))
        covered.update(id(p) for p in own)
    rest = {
        name: p
        for name, p in model.named_parameters()
        if p.requires_grad and id(p) not in covered
    }
    return taps, rest


def structured_fraction(model: nn.Module) -> float:
    """Fraction of trainable parameters (by count) handled structurally."""
    taps, rest = find_taps(model)
    n_rest = sum(p.numel() for p in rest.values())
    n_tap = sum(p.numel() for t in taps for p in (t.weight, t.bias) if p is not None)
    total = n_rest + n_tap
    return n_tap / total if total else 0.0


Pair = tuple[int, int]


def _conv_geometry(mod: nn.Module) -> tuple[Pair, Pair, Pair, Pair]:
    if isinstance(mod, nn.Conv1d):
        pad = 0 if mod.padding == "valid" else mod.padding[0]
        return (1, mod.kernel_size[0]), (1, mod.dilation[0]), (0, pad), (1, mod.stride[0])
    pad2 = (0, 0) if mod.padding == "valid" else tuple(mod.padding)
    return tuple(mod.kernel_size), tuple(mod.dilation), pad2, tuple(mod.stride)  # type: ignore[return-value]


def layer_features(
    tap: Tap, n: int, k: int, grads: list[Tensor]
) -> tuple[tuple[Tensor, Tensor, float] | None, list[Tensor]]:
    """(a, g, scale) for the weight (calls concatenated along positions; a trainable bias is
    folded in as a constant input feature) and per-sample gradient vectors (BN, lone biases)."""
    mod = tap.module
    a_parts: list[Tensor] = []
    g_parts: list[Tensor] = []
    vecs: list[Tensor] = []
    bias_sum: Tensor | None = None
    gamma_sum: Tensor | None = None
    scale = 1.0
    shared: bool | None = None
    for (x, _, _), go in zip(tap.calls, grads):
        if x.shape[0] != n:
            raise StructuredUnsupported(
                f"{type(mod).__name__} input has leading dimension {x.shape[0]}, not the batch {n}"
            )
        if tap.kind == "linear":
            fi, fo = mod.in_features, mod.out_features
            a = x.reshape(n, -1, fi).transpose(1, 2).unsqueeze(1)  # (N, 1, Fi, S)
            g = go.reshape(n, k, -1, fo).transpose(2, 3).unsqueeze(2)  # (N, K, 1, Fo, S)
            is_shared = False
        elif tap.kind == "bdlinear":
            m, fi, fo = mod.m, mod.in_features, mod.out_features
            scale = mod.scale
            is_shared = mod.shared_input
            a = x.reshape(n, 1, fi, 1) if is_shared else x.reshape(n, m, fi, 1)
            g = go.reshape(n, k, m, fo, 1)
        elif tap.kind == "conv":
            ks, dil, pad, stride = _conv_geometry(mod)
            x4 = x.unsqueeze(2) if isinstance(mod, nn.Conv1d) else x
            cols = F.unfold(x4, ks, dilation=dil, padding=pad, stride=stride)  # (N, C*kk, L)
            grp = mod.groups
            length = cols.shape[-1]
            a = cols.view(n, grp, -1, length)  # (N, G, Cg*kk, L)
            g = go.reshape(n, k, grp, mod.out_channels // grp, length)
            is_shared = False
        else:  # batchnorm, eval mode: y = gamma * xhat + beta
            c = mod.num_features
            shape = (1, c) + (1,) * (x.dim() - 2)
            xhat = (x - mod.running_mean.view(shape)) * torch.rsqrt(
                mod.running_var.view(shape) + mod.eps
            )
            gg = go.reshape(n, k, c, -1)
            if tap.weight is not None:
                gw = (gg * xhat.reshape(n, 1, c, -1)).sum(-1)
                gamma_sum = gw if gamma_sum is None else gamma_sum + gw
            if tap.bias is not None:
                gb = gg.sum(-1)
                bias_sum = gb if bias_sum is None else bias_sum + gb
            continue
        if shared is not None and shared != is_shared:
            raise StructuredUnsupported("inconsistent input sharing across calls")
        shared = is_shared
        if tap.weight is not None:
            if tap.bias is not None and a.shape[3] == 1:  # fold the bias in: one more input, 1/scale
                shp = (a.shape[0], a.shape[1], 1, a.shape[3])
                a = torch.cat([a, torch.full(shp, 1.0 / scale, dtype=a.dtype, device=a.device)], dim=2)
            a_parts.append(a)
            g_parts.append(g)
        if tap.bias is not None and (tap.weight is None or a.shape[3] > 1):
            gb = g.sum(4).reshape(n, k, -1)
            bias_sum = gb if bias_sum is None else bias_sum + gb
    if gamma_sum is not None:
        vecs.append(gamma_sum)
    if bias_sum is not None:
        vecs.append(bias_sum)
    if not a_parts:
        return None, vecs
    a_all = torch.cat(a_parts, dim=3) if len(a_parts) > 1 else a_parts[0]
    g_all = torch.cat(g_parts, dim=4) if len(g_parts) > 1 else g_parts[0]
    return (a_all, g_all, scale), vecs


def traced_forward(taps: list[Tap], forward: Callable[[], Tensor]) -> Tensor:
    """``forward()`` with grad enabled, each tap recording its calls ``(input, input version,
    output)`` in ``tap.calls`` (the output the model continues with is a clone, so a later
    in-place op such as ``ReLU(inplace=True)`` cannot touch the recorded one);
    :class:`StructuredUnsupported` when a recorded input was modified in place afterwards."""
    handles = []
    for tap in taps:
        tap.calls = []

        def hook(mod: nn.Module, args: tuple, out: Tensor, tap: Tap = tap) -> Tensor:
            inp = args[0]
            tap.calls.append((inp, inp._version, out))
            return out.clone()

        handles.append(tap.module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            y = forward()
    finally:
        for h in handles:
            h.remove()
    for tap in taps:
        for inp, version, _ in tap.calls:
            if inp._version != version:
                raise StructuredUnsupported(
                    f"the input of a {type(tap.module).__name__} was modified in place"
                )
    return y


def side_features(
    model: nn.Module,
    taps: list[Tap],
    rest: dict[str, nn.Parameter],
    x: Tensor,
    *,
    block_elements: int = 1 << 25,
) -> SideFeatures:
    """Forward ``x`` (N samples) once, backward once (batched over the K outputs, in groups of
    outputs small enough that one group's signals at the supported layers hold at most about
    ``block_elements`` elements)."""
    n = x.shape[0]
    y = traced_forward(taps, lambda: model(x))
    y = y.reshape(n, -1)
    k = y.shape[1]
    outs = [out for tap in taps for _, _, out in tap.calls]
    grads: list[Tensor] = []
    if CHECK_COVERAGE:  # before the signals: their k == 1 pass frees the graph
        check_coverage(y, taps)
    if outs:
        raw: tuple[Tensor | None, ...] | None
        if k == 1:
            raw = torch.autograd.grad(y, outs, torch.ones_like(y), allow_unused=True)
            raw = tuple(None if r is None else r.unsqueeze(1) for r in raw)
        else:
            per_output = max(1, sum(o.numel() for o in outs))
            group = max(1, min(k, block_elements // per_output))
            raw = _batched_signals(y, outs, group) if BATCHED_BACKWARD else None
        if raw is None:  # one backward per output (keeps every op on its plain, non-vmapped kernel)
            per_k = []
            for j in range(k):
                cot = torch.zeros_like(y)
                cot[:, j] = 1.0
                per_k.append(torch.autograd.grad(y, outs, cot, allow_unused=True, retain_graph=j < k - 1))
            raw = tuple(
                None if parts[0] is None else torch.stack(parts, dim=1) for parts in zip(*per_k)
            )
        grads = [
            torch.zeros((o.shape[0], k) + o.shape[1:], dtype=o.dtype, device=o.device) if r is None else r
            for r, o in zip(raw, outs)
        ]
    gl: list[tuple[Tensor, Tensor, float]] = []
    vecs: list[Tensor] = []
    pos = 0
    for tap in taps:
        nc = len(tap.calls)
        term, v = layer_features(tap, n, k, grads[pos : pos + nc])
        pos += nc
        tap.calls = []
        if term is not None:
            gl.append((term[0].detach(), term[1].detach(), term[2]))
        vecs.extend(t.detach() for t in v)
    if rest:
        vecs.append(_residual_jacobian(model, rest, x, k))
    vec = torch.cat(vecs, dim=2) if vecs else None
    return SideFeatures(n, k, gl, vec)


#: The coverage proof (below) runs on every call; off only to measure its cost (``bench/ntk.py``).
CHECK_COVERAGE = True


def _param_uses(root: object, params: dict[int, str], stop: object = None) -> dict[int, int]:
    """Edges from autograd nodes into each parameter's ``AccumulateGrad`` node, over the graph
    below ``root`` (not descending past ``stop``): ``{id(param): number of uses}``."""
    uses: dict[int, int] = {}
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen or node is stop:
            continue
        seen.add(id(node))
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            var = getattr(nxt, "variable", None)
            if var is not None and id(var) in params:
                uses[id(var)] = uses.get(id(var), 0) + 1
            elif nxt is not stop:
                todo.append(nxt)
    return uses


def check_coverage(y: Tensor, taps: list[Tap]) -> None:
    """Prove that the taps see every use of their parameters: in the autograd graph of ``y``,
    every edge into a tapped parameter must come from inside one of its module's hooked calls
    (the subgraph between the call's output and its input). A weight also used elsewhere
    (``.forward()`` called directly, ``F.linear(x, mod.weight)``, a tied decoder) makes the model
    :class:`StructuredUnsupported` (``method="auto"`` then falls back to an exact method)."""
    owner = {id(p): (tap, name) for tap in taps for name, p in (("weight", tap.weight), ("bias", tap.bias))
             if p is not None}
    if not owner:
        return
    total = _param_uses(y.grad_fn, owner)
    seen: dict[int, int] = {}
    for tap in taps:
        for inp, _, out in tap.calls:
            for key, n in _param_uses(out.grad_fn, owner, stop=inp.grad_fn).items():
                seen[key] = seen.get(key, 0) + n
    for key, n in total.items():
        if n > seen.get(key, 0):
            tap, name = owner[key]
            raise StructuredUnsupported(
                f"the {name} of a {type(tap.module).__name__} is used outside its module's calls "
                f"(e.g. .forward() called directly or the tensor used functionally): {n - seen.get(key, 0)} "
                f"of its {n} uses are not seen by the structured taps"
            )


def _batched_signals(y: Tensor, outs: list[Tensor], group: int) -> tuple[Tensor, ...] | None:
    """``d y[:, k] / d out`` for every k from one backward vmapped over ``group`` outputs at a
    time, each ``(N, K, *out)``; ``None`` when the graph does not support vmap (the graph is
    kept for the fallback)."""
    n, k = y.shape
    cot = torch.eye(k, dtype=y.dtype, device=y.device).unsqueeze(1).expand(k, n, k)

    def vjp(v: Tensor) -> tuple[Tensor, ...]:
        return torch.autograd.grad(y, outs, v, allow_unused=True, materialize_grads=True, retain_graph=True)

    # torch.func.vmap rather than autograd.grad(is_grads_batched=True): the legacy vmap behind
    # the latter has no batching rule for e.g. tanh_backward (30-40% slower on the MLP bench)
    try:
        raw = vmap(vjp, chunk_size=group if group < k else None)(cot)
    except (RuntimeError, ValueError):  # not vmappable (or out of memory): K plain passes
        return None
    return tuple(r.transpose(0, 1) for r in raw)


def _residual_jacobian(model: nn.Module, rest: dict[str, nn.Parameter], x: Tensor, k: int) -> Tensor:
    """Per-sample Jacobian of the parameters not handled structurally, ``(N, K, P_rest)``."""
    params = {name: p.detach() for name, p in rest.items()}

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),), strict=False).reshape(-1)

    jac = vmap(jacrev(f), (None, 0))(params, x)
    n = x.shape[0]
    flat = torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=2)
    return flat.detach()


# --------------------------------------------------------------------------- contractions


def gl_costs(a1: Tensor, g1: Tensor, a2: Tensor, g2: Tensor, trace: bool) -> dict[str, float]:
    """Multiply-adds of the two contraction orders for one grouped-linear term."""
    n1, ga, fi, s1 = a1.shape
    _, k, grp, fo, _ = g1.shape
    return order_costs(n1, a2.shape[0], k, ga, grp, fi, fo, s1, a2.shape[3], trace)


def order_costs(
    n1: int, n2: int, k: int, ga: int, grp: int, fi: int, fo: int, s1: int, s2: int, trace: bool
) -> dict[str, float]:
    """:func:`gl_costs` from the shapes alone (``n1``, ``n2`` samples, ``k`` outputs, ``ga``
    input groups, ``grp`` groups of ``fi`` inputs and ``fo`` outputs at ``s1``, ``s2``
    positions)."""
    kc = k if trace else k * k
    gram = n1 * n2 * ga * s1 * s2 * fi + k * n1 * n2 * grp * s1 * s2 * fo
    if not trace:
        gram += kc * n1 * n2 * grp * s2 * fo
    dw = k * grp * fo * fi * (n1 * s1 + n2 * s2) + kc * n1 * n2 * grp * fo * fi
    return {"gram": float(gram), "dw": float(dw)}


def _gram_block(a1: Tensor, g1: Tensor, a2: Tensor, g2: Tensor, trace: bool) -> Tensor:
    """Gram order for one block of rows. Shapes as in :class:`SideFeatures`."""
    n1, k, grp, fo, s1 = g1.shape
    n2, ga, fi, s2 = a2.shape
    if ga == 1:  # input shared by every group: contract the groups into the signal Gram
        if trace:  # two plain GEMMs, (N1 S1, Fi) x (Fi, N2 S2) and (N1 S1, K G Fo) x (...)
            if s1 == 1 and s2 == 1:
                gam = a1.reshape(n1, fi) @ a2.reshape(n2, fi).T
                return gam.mul_(g1.reshape(n1, -1) @ g2.reshape(n2, -1).T)
            gam = a1.permute(0, 3, 1, 2).reshape(n1 * s1, fi) @ a2.permute(0, 3, 1, 2).reshape(n2 * s2, fi).T
            r1 = g1.permute(0, 4, 1, 2, 3).reshape(n1 * s1, k * grp * fo)
            r2 = g2.permute(0, 4, 1, 2, 3).reshape(n2 * s2, k * grp * fo)
            return gam.mul_(r1 @ r2.T).view(n1, s1, n2, s2).sum((1, 3))
        gam = torch.einsum("ifs,jft->ijst", a1[:, 0], a2[:, 0])
        h = torch.einsum("ikgfs,ijst->kijgft", g1, gam)
        return torch.einsum("kijgft,jlgft->ijkl", h, g2)
    if trace:  # per-group batched GEMMs
        gam = torch.bmm(
            a1.permute(1, 0, 3, 2).reshape(grp, n1 * s1, fi),
            a2.permute(1, 0, 3, 2).reshape(grp, n2 * s2, fi).transpose(1, 2),
        )
        r1 = g1.permute(2, 0, 4, 1, 3).reshape(grp, n1 * s1, k * fo)
        r2 = g2.permute(2, 0, 4, 1, 3).reshape(grp, n2 * s2, k * fo)
        prod = gam.mul_(torch.bmm(r1, r2.transpose(1, 2)))
        return prod.view(grp, n1, s1, n2, s2).sum((0, 2, 4))
    gam = torch.einsum("igfs,jgft->ijgst", a1, a2)
    h = torch.einsum("ikgfs,ijgst->kijgft", g1, gam)
    return torch.einsum("kijgft,jlgft->ijkl", h, g2)


def pair_gram(a: Tensor, g: Tensor, scale: float = 1.0) -> Tensor:
    """One grouped-linear term's NTK contribution between rows ``2p`` and ``2p + 1`` of its
    features, for every pair ``p``, in the Gram order: ``(P,)``. ``a`` ``(2P, Ga, Fi, S)``,
    ``g`` ``(2P, 1, G, Fo, S)`` (one output), as in :class:`SideFeatures`."""
    a1, a2, g1, g2 = a[0::2], a[1::2], g[0::2, 0], g[1::2, 0]
    gam = a1.transpose(-1, -2) @ a2  # (P, Ga, S, S)
    if a.shape[1] == 1:  # input shared by every group: the groups fold into the signal Gram
        sig = g1.flatten(1, 2).transpose(-1, -2) @ g2.flatten(1, 2)  # (P, S, S)
        out = (gam[:, 0] * sig).sum((1, 2))
    else:
        out = (gam * (g1.transpose(-1, -2) @ g2)).sum((1, 2, 3))
    return out * (scale * scale) if scale != 1.0 else out


def _dw(a: Tensor, g: Tensor, trace: bool) -> Tensor:
    """Per-sample weight gradients: ``(N, K, G*Fo*Fi)``, or ``(N, 1, K*G*Fo*Fi)`` in any
    consistent order when only the trace is needed."""
    n, k, grp, fo, s = g.shape
    ga, fi = a.shape[1], a.shape[2]
    if grp == 1 or (ga == 1 and s == 1):
        if ga == 1:  # one matrix product per sample: (K G Fo, S) x (S, Fi)
            dw = torch.bmm(g.reshape(n, k * grp * fo, s), a.reshape(n, fi, s).transpose(1, 2))
            return dw.reshape(n, 1, -1) if trace else dw.reshape(n, k, -1)
    gp = g.permute(0, 2, 1, 3, 4).reshape(n * grp, k * fo, s)  # (N G, K Fo, S)
    a = a.expand(n, grp, fi, s)
    dw = torch.bmm(gp, a.reshape(n * grp, fi, s).transpose(1, 2)).view(n, grp, k, fo, fi)
    return dw.reshape(n, 1, -1) if trace else dw.transpose(1, 2).reshape(n, k, -1)


def contract_vec(v1: Tensor, v2: Tensor, trace: bool) -> Tensor:
    """``(N1, K, P) x (N2, K, P)`` -> ``(N1, N2)`` (sum over k) or ``(N1, N2, K, K)``."""
    n1, k, p = v1.shape
    n2 = v2.shape[0]
    if trace:
        return v1.reshape(n1, k * p) @ v2.reshape(n2, k * p).T
    out = v1.reshape(n1 * k, p) @ v2.reshape(n2 * k, p).T  # (n1, k, n2, l)
    return out.view(n1, k, n2, k).permute(0, 2, 1, 3)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    size = max(1, size)
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def contract_features(
    f1: SideFeatures, f2: SideFeatures, trace: bool, *, block_elements: int = 1 << 25
) -> Tensor:
    """NTK between two sides: ``(N1, N2)`` if ``trace`` else ``(N1, N2, K, K)``.

    Per layer the cheaper order (Gram or per-sample weight gradients) is used; Gram-order
    intermediates are computed over row blocks so that none exceeds ``block_elements`` elements.
    """
    n1, n2, k = f1.n, f2.n, f1.k
    ref = f1.vec if f1.vec is not None else (f1.gl[0][0] if f1.gl else None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    out: Tensor | None = None
    if f1.vec is not None:
        out = contract_vec(f1.vec, f2.vec, trace)
    for (a1, g1, scale), (a2, g2, _) in zip(f1.gl, f2.gl):
        costs = gl_costs(a1, g1, a2, g2, trace)
        _, kk, grp, fo, s1 = g1.shape
        s2 = a2.shape[3]
        dw_mem = kk * (n1 + n2) * grp * fo * a1.shape[2]
        if costs["dw"] < costs["gram"] and dw_mem <= 2 * block_elements:
            part = contract_vec(_dw(a1, g1, trace), _dw(a2, g2, trace), trace)
        else:
            per_pair = grp * s1 * s2 if trace else max(grp * s1 * s2, kk * grp * s2 * fo)
            bj = min(n2, max(1, block_elements // per_pair))
            bi = min(n1, max(1, block_elements // (per_pair * bj)))
            if bi >= n1 and bj >= n2:
                part = _gram_block(a1, g1, a2, g2, trace)
            else:
                part = torch.cat(
                    [
                        torch.cat(
                            [
                                _gram_block(a1[i0:i1], g1[i0:i1], a2[j0:j1], g2[j0:j1], trace)
                                for j0, j1 in _blocks(n2, bj)
                            ],
                            dim=1,
                        )
                        for i0, i1 in _blocks(n1, bi)
                    ]
                )
        if scale != 1.0:
            part = part * (scale * scale)
        out = part if out is None else out.add_(part)
    if out is None:
        shape = (n1, n2) if trace else (n1, n2, k, k)
        out = torch.zeros(shape, dtype=dtype, device=device)
    return out
