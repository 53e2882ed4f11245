"""Empirical neural tangent kernels of any ``nn.Module``, in the style of neural-tangents.

``K(x1, x2) = J(x1) J(x2)^T`` over all trainable parameters, where ``J(x)`` is the Jacobian of
the per-sample output (flattened to ``K`` numbers) with respect to the parameters.

>>> ntk_fn = empirical_ntk_fn(model, method="auto")   # factory, like nt.empirical_ntk_fn
>>> k = ntk_fn(x1, x2)                                 # (N1, N2), trace = SUM over outputs
>>> k_full = empirical_ntk(model, x1, x2, trace=False)  # (N1, N2, K, K)

Output shapes: ``(N1, N2)`` when the per-sample output is a scalar (``K == 1``) or when
``trace=True`` (the SUM over the ``K`` outputs, as ``einsum('NMKK->NM')`` in the torch.func NTK
tutorial; neural-tangents' ``trace_axes`` gives the MEAN, i.e. this divided by ``K``), else
``(N1, N2, K, K)``. ``x2=None`` means ``x2 = x1``.

Methods (:class:`NtkMethod`):

* ``jacobian``: ``vmap(jacrev)`` per-sample Jacobians, contracted. Memory per block:
  ``(c1 + c2) * K * P`` floats (``c`` = rows per chunk, ``P`` = trainable parameters).
* ``ntk_vps``: NTK-vector products: one ``vjp`` over a whole x1 chunk, then ``vmap`` over the
  ``c1 * K`` cotangent basis of ``vjp -> jvp`` through the whole x2 chunk (batched: one lane per
  x1 row and output, not per (x1, x2) pair). Never forms a Jacobian; memory
  ``lanes * (P + activations of c2 samples)``, with ``lanes <= block_elements / P``.
* ``structured``: structured derivatives (see :mod:`collegial.ntk.structured`): Linear,
  Conv1d/2d, BlockDiagonalLinear and eval-mode BatchNorm contribute through Gram products of
  their inputs and backpropagated signals; memory per chunk: each supported layer's inputs
  ``c * S * Fi`` and signals ``K * c * S * Fo`` for both sides, plus intermediates of at most
  ``block_elements`` elements (the backward is vmapped over groups of outputs whose signals
  hold at most ``block_elements`` elements, at least one output per group).
* ``auto``: ``structured`` when at least half of the trainable parameters sit in supported
  layers (and BatchNorm is not in training mode), otherwise ``jacobian`` when its block fits in
  ``block_elements`` elements, otherwise ``ntk_vps``.

Inputs are processed in chunks of at most ``chunk_size`` rows per side, so memory is bounded
by the figures above for ``c = chunk_size`` regardless of N1, N2 (the x1 side of a chunk pair
is recomputed for every x2 chunk).

BatchNorm (explicit, never inferred from ``model.training``): ``batchnorm="eval"`` (default)
uses the running statistics, so BatchNorm is a per-channel affine map with trainable
``gamma``/``beta`` and samples are independent. ``batchnorm="train"`` normalizes with the
statistics of the probe batch ``cat([x1, x2])`` (``x1`` alone when ``x2`` is None), so entries
depend on the whole probe batch; running buffers are neither used nor updated. In train mode
there is no chunking (the batch is one unit) and ``structured`` is unavailable (``auto`` picks
``jacobian`` or ``ntk_vps``). Other modules (Dropout, ...) run in the mode the model is in;
put them in eval mode yourself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from collegial.ntk._bn import BatchNormMode, batchnorm_mode, check_batchnorm_mode
from collegial.ntk.structured import (
    StructuredUnsupported,
    contract_features,
    contract_vec,
    find_taps,
    side_features,
    structured_fraction,
)

NtkFn = Callable[..., Tensor]


class NtkMethod(str, enum.Enum):
    """How to compute the empirical NTK (values are the strings accepted by ``method=``)."""

    JACOBIAN_CONTRACTION = "jacobian"
    NTK_VECTOR_PRODUCTS = "ntk_vps"
    STRUCTURED_DERIVATIVES = "structured"
    AUTO = "auto"


def _as_method(method: NtkMethod | str) -> NtkMethod:
    try:
        return NtkMethod(method)
    except ValueError:
        choices = ", ".join(m.value for m in NtkMethod)
        raise ValueError(f"unknown NTK method {method!r}; choose from {choices}") from None


def _split_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable params, everything else: frozen params and buffers), detached."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update({n: b for n, b in model.named_buffers()})
    return params, fixed


def _chunks(n: int, size: int) -> list[slice]:
    size = max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _finish(k: Tensor, trace: bool) -> Tensor:
    """``(N1, N2, K, K)`` -> requested shape; scalar outputs always give ``(N1, N2)``."""
    if k.dim() == 2:
        return k
    if trace:
        return k.diagonal(dim1=2, dim2=3).sum(-1)
    if k.shape[2] == 1:
        return k[:, :, 0, 0]
    return k


# --------------------------------------------------------------------- Jacobian contraction


def _jacobian_rows(model: nn.Module, params: dict, fixed: dict, x: Tensor) -> Tensor:
    """Per-sample Jacobians ``(N, K, P)`` (samples independent)."""

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, (p, fixed), (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), (None, 0))(params, x)
    n = x.shape[0]
    k = next(iter(jac.values())).shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=2)


def _contract_jac(j1: Tensor, j2: Tensor, trace: bool) -> Tensor:
    """``(N1, K, P) x (N2, K, P)`` -> ``(N1, N2)`` (trace) or ``(N1, N2, K, K)``."""
    return contract_vec(j1, j2, trace)


# ------------------------------------------------------------------- NTK-vector products


def _ntk_vps_block(
    model: nn.Module, params: dict, fixed: dict, x1: Tensor, x2: Tensor, lanes: int
) -> Tensor:
    """``(c1, c2, K, K)`` by vjp over the x1 chunk and vmapped vjp->jvp through the x2 chunk."""
    c1, c2 = x1.shape[0], x2.shape[0]

    def f1(p: dict[str, Tensor]) -> Tensor:
        return functional_call(model, (p, fixed), (x1,)).reshape(-1)

    def f2(p: dict[str, Tensor]) -> Tensor:
        return functional_call(model, (p, fixed), (x2,)).reshape(c2, -1)

    out1, vjp_fn = vjp(f1, params)
    k = out1.numel() // c1

    def lane(v: Tensor) -> Tensor:
        (ct,) = vjp_fn(v)
        return jvp(f2, (params,), (ct,))[1]

    basis = torch.eye(c1 * k, dtype=out1.dtype, device=out1.device)
    res = vmap(lane, chunk_size=max(1, min(lanes, c1 * k)))(basis)  # (c1*K, c2, K)
    return res.view(c1, k, c2, k).permute(0, 2, 1, 3)


# ----------------------------------------------------------- BatchNorm in training mode


def _joint(
    model: nn.Module, x1: Tensor, x2: Tensor | None, method: NtkMethod, lanes: int
) -> Tensor:
    """Training-mode BatchNorm: one probe batch ``cat([x1, x2])``, no chunking."""
    params, fixed = _split_state(model)
    xs = x1 if x2 is None else torch.cat([x1, x2])
    n1, n = x1.shape[0], xs.shape[0]

    def f(p: dict[str, Tensor]) -> Tensor:
        return functional_call(model, (p, fixed), (xs,)).reshape(n, -1)

    if method is NtkMethod.JACOBIAN_CONTRACTION:
        jac = jacrev(f)(params)
        k = next(iter(jac.values())).shape[1]
        j = torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=2)
        j2 = j if x2 is None else j[n1:]
        return _contract_jac(j[:n1], j2, trace=False)
    out, vjp_fn = vjp(f, params)
    k = out.shape[1]

    def lane(v: Tensor) -> Tensor:
        (ct,) = vjp_fn(v.view(n, k))
        return jvp(f, (params,), (ct,))[1]

    basis = torch.eye(n * k, dtype=out.dtype, device=out.device)[: n1 * k]
    res = vmap(lane, chunk_size=max(1, min(lanes, n1 * k)))(basis)  # (n1*K, n, K)
    res = res if x2 is None else res[:, n1:]
    return res.reshape(n1, k, -1, k).permute(0, 2, 1, 3)


# ------------------------------------------------------------------------------- factory


def empirical_ntk_fn(
    model: nn.Module,
    *,
    trace: bool = True,
    method: NtkMethod | str = NtkMethod.AUTO,
    batchnorm: BatchNormMode = "eval",
    chunk_size: int = 256,
    block_elements: int = 1 << 25,
) -> NtkFn:
    """Return ``ntk(x1, x2=None) -> Tensor`` computing the empirical NTK of ``model``.

    ``x1``: ``(N1, *input_shape)``, ``x2``: ``(N2, *input_shape)`` or None (= x1). The model
    must map a batch ``(B, *input_shape)`` to ``(B, ...)``; everything after the batch axis is
    flattened into ``K`` outputs. Parameters are read when the function is called (so it follows
    training). See the module docstring for shapes, methods, BatchNorm and memory bounds.
    """
    meth = _as_method(method)
    bn = check_batchnorm_mode(batchnorm)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")

    def ntk(x1: Tensor, x2: Tensor | None = None) -> Tensor:
        _check_inputs(x1, x2)
        if x1.shape[0] == 0 or (x2 is not None and x2.shape[0] == 0):
            return _empty_kernel(model, x1, x2, trace)
        with batchnorm_mode(model, bn) as has_bn:
            joint = bn == "train" and has_bn
            params, fixed = _split_state(model)
            n_params = sum(p.numel() for p in params.values())
            if n_params == 0:
                raise ValueError("the model has no trainable parameters")
            lanes = max(1, block_elements // n_params)
            chosen = meth
            if chosen is NtkMethod.AUTO:
                if not joint and structured_fraction(model) >= 0.5:
                    chosen = NtkMethod.STRUCTURED_DERIVATIVES
                else:
                    rows = min(chunk_size, x1.shape[0]) if not joint else x1.shape[0]
                    rows += rows if x2 is None else min(chunk_size, x2.shape[0])
                    out_k = _output_size(model, params, fixed, x1[:1], joint)
                    fits = rows * out_k * n_params <= 2 * block_elements
                    chosen = NtkMethod.JACOBIAN_CONTRACTION if fits else NtkMethod.NTK_VECTOR_PRODUCTS
            if joint:
                if chosen is NtkMethod.STRUCTURED_DERIVATIVES:
                    raise ValueError(
                        "structured derivatives need independent samples; with "
                        "batchnorm='train' use method='jacobian' or 'ntk_vps'"
                    )
                return _finish(_joint(model, x1, x2, chosen, lanes), trace)
            if chosen is NtkMethod.STRUCTURED_DERIVATIVES:
                try:
                    return _structured(model, x1, x2, trace, chunk_size, block_elements)
                except StructuredUnsupported:
                    if meth is NtkMethod.STRUCTURED_DERIVATIVES:
                        raise
                    chosen = NtkMethod.JACOBIAN_CONTRACTION
            return _chunked(model, params, fixed, x1, x2, chosen, trace, chunk_size, lanes)

    return ntk


def _check_inputs(x1: Tensor, x2: Tensor | None) -> None:
    """Both sides ``(N, *input_shape)`` with the same input shape."""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and (not isinstance(x, Tensor) or x.dim() < 2):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a batch (N, *input_shape) of at least 2 dimensions, got {shape}")
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 differ in input shape: {tuple(x1.shape[1:])} vs {tuple(x2.shape[1:])}")


def _empty_kernel(model: nn.Module, x1: Tensor, x2: Tensor | None, trace: bool) -> Tensor:
    """The kernel of an empty side: ``(N1, N2)`` or ``(N1, N2, K, K)`` with a zero extent."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    dtype = next((p.dtype for p in model.parameters()), x1.dtype)
    if trace:
        return torch.zeros(n1, n2, dtype=dtype, device=x1.device)
    probe = torch.zeros((1, *x1.shape[1:]), dtype=x1.dtype, device=x1.device)
    with torch.no_grad():
        k = max(1, model(probe)[0].numel())
    return torch.zeros(n1, n2, k, k, dtype=dtype, device=x1.device)


def _output_size(model: nn.Module, params: dict, fixed: dict, x: Tensor, joint: bool) -> int:
    with torch.no_grad():
        out = functional_call(model, (params, fixed), (torch.cat([x, x]) if joint else x,))
    return max(1, out[0].numel())


def _chunked(
    model: nn.Module,
    params: dict,
    fixed: dict,
    x1: Tensor,
    x2: Tensor | None,
    method: NtkMethod,
    trace: bool,
    chunk_size: int,
    lanes: int,
) -> Tensor:
    xb = x1 if x2 is None else x2
    rows: list[Tensor] = []
    for s1 in _chunks(x1.shape[0], chunk_size):
        cols: list[Tensor] = []
        jac = method is NtkMethod.JACOBIAN_CONTRACTION
        j1 = _jacobian_rows(model, params, fixed, x1[s1]) if jac else None
        for s2 in _chunks(xb.shape[0], chunk_size):
            if method is NtkMethod.JACOBIAN_CONTRACTION:
                same = x2 is None and s1 == s2
                j2 = j1 if same else _jacobian_rows(model, params, fixed, xb[s2])
                cols.append(_finish(_contract_jac(j1, j2, trace=trace), trace))
            else:
                blk = _ntk_vps_block(model, params, fixed, x1[s1], xb[s2], lanes)
                cols.append(_finish(blk, trace))
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def _structured(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None,
    trace: bool,
    chunk_size: int,
    block_elements: int,
) -> Tensor:
    taps, rest = find_taps(model)
    if x2 is not None and x1.shape[0] + x2.shape[0] <= chunk_size:
        # both sides fit in one chunk: one forward and one backward pass over cat([x1, x2])
        both = side_features(model, taps, rest, torch.cat([x1, x2]), block_elements=block_elements)
        n1 = x1.shape[0]
        f1, f2 = both.rows(slice(0, n1)), both.rows(slice(n1, both.n))
        return _finish(contract_features(f1, f2, trace, block_elements=block_elements), trace)
    xb = x1 if x2 is None else x2
    c1 = _chunks(x1.shape[0], chunk_size)
    c2 = _chunks(xb.shape[0], chunk_size)
    cache2 = (
        {0: side_features(model, taps, rest, xb[c2[0]], block_elements=block_elements)}
        if x2 is not None and len(c2) == 1
        else {}
    )
    rows: list[Tensor] = []
    for s1 in c1:
        f1 = side_features(model, taps, rest, x1[s1], block_elements=block_elements)
        cols = []
        for j, s2 in enumerate(c2):
            if x2 is None and s1 == s2:
                f2 = f1
            elif j in cache2:
                f2 = cache2[j]
            else:
                f2 = side_features(model, taps, rest, xb[s2], block_elements=block_elements)
            cols.append(_finish(contract_features(f1, f2, trace, block_elements=block_elements), trace))
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    trace: bool = True,
    method: NtkMethod | str = NtkMethod.AUTO,
    batchnorm: BatchNormMode = "eval",
    chunk_size: int = 256,
    block_elements: int = 1 << 25,
) -> Tensor:
    """The empirical NTK of ``model`` between ``x1`` and ``x2`` (see :func:`empirical_ntk_fn`).

    Returns ``(N1, N2)`` for a scalar output or ``trace=True`` (sum over outputs), else
    ``(N1, N2, K, K)``.
    """
    fn = empirical_ntk_fn(
        model,
        trace=trace,
        method=method,
        batchnorm=batchnorm,
        chunk_size=chunk_size,
        block_elements=block_elements,
    )
    return fn(x1, x2)


def ntk_autograd_loop(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    trace: bool = True,
    batchnorm: BatchNormMode = "eval",
) -> Tensor:
    """Reference: a plain loop of per-sample, per-output ``torch.autograd.grad`` calls.

    Slow (``(N1 + N2) * K`` backward passes); for tests and benchmarks. Same shapes and
    BatchNorm semantics as :func:`empirical_ntk`.
    """
    bn = check_batchnorm_mode(batchnorm)
    params = [p for p in model.parameters() if p.requires_grad]

    def flat_grad(y: Tensor) -> Tensor:
        gs = torch.autograd.grad(y, params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for g, p in zip(gs, params)]
        )

    with batchnorm_mode(model, bn) as has_bn, torch.enable_grad():
        if bn == "train" and has_bn:
            xs = x1 if x2 is None else torch.cat([x1, x2])
            out = model(xs).reshape(xs.shape[0], -1)
            jac = torch.stack([torch.stack([flat_grad(o) for o in row]) for row in out])
            n1 = x1.shape[0]
            j1, j2 = jac[:n1], (jac if x2 is None else jac[n1:])
        else:

            def rows(x: Tensor) -> Tensor:
                res = []
                for i in range(x.shape[0]):
                    out = model(x[i : i + 1]).reshape(-1)
                    res.append(torch.stack([flat_grad(o) for o in out]))
                return torch.stack(res)

            j1 = rows(x1)
            j2 = j1 if x2 is None else rows(x2)
    full = torch.einsum("ikp,jlp->ijkl", j1, j2)
    return _finish(full, trace)
