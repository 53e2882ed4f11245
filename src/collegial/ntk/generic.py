"""The generic Algorithm 1 engine: any ``(m, n) -> nn.Module`` probe block, trials vmapped.

:class:`FactoryProbe` measures ``K(x, x') = <grad f(x), grad f(x')>`` (``f = <r, block(x)>``)
of a block that a family declares (``register_model(..., probe=FACTORY,
probe_input_shape=SHAPE)``) for ``B`` fresh initializations at once:

1. **Draw** ``B`` initializations. Each is the factory's own: ``factory(m, n)`` under the
   global RNG, seeded from the chunk's seed (:func:`~collegial.ntk.probe.trial_seed`). Building
   ``nn.Module`` objects costs ~0.2 ms of Python each, so the factory's initialization is traced
   once per ``(m, n)`` (``make_fx``: the random fills it performs, in order) and replayed; the
   replay is used only after it reproduced the factory's tensors bit for bit from the same
   seed (:attr:`Template.replay`; otherwise every trial builds a module). Drawing holds a lock
   (the global RNG is one per process); computing does not, so worker threads overlap.
2. **Stack** the parameters ``(B, ...)`` and run one ``vmap``-ed forward
   (:func:`torch.func.functional_call`). Without pair statistics (``bn="none"``) each trial's
   parameters are repeated once per input, so one backward pass gives both gradients of every
   trial; with ``bn="train"`` (BatchNorm statistics over the pair) the pair is one batch and
   two backward passes (one per input) do it.
3. ``K_b = sum over trainable parameters of <g_b(x), g_b(x')>``.

The pair and the readout are drawn exactly as the dedicated probes draw them
(:meth:`~collegial.ntk.inputs.ProbeInputs.draw`), so the built-in bottleneck declared through
this route measures the same ``K`` distribution as
:class:`~collegial.ntk.probe.ResNeXtBlockProbe` (``tests/test_generic_probe.py``;
``bench/alg1.py`` times both).
"""

from __future__ import annotations

import contextlib
import copy
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from collegial.choices import check_choice
from collegial.errors import UserError
from collegial.ntk._bn import (
    PROBE_BN_MODES,
    ProbeBatchNorm,
    batchnorm_mode,
    batchnorm_modules,
    probe_batchnorm_mode,
)
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import _GAUSSIAN, CHUNK_BYTES, chunk_seed

#: Held while a chunk's initializations are drawn (they use the process-wide RNG, which each
#: chunk seeds itself); worker threads take turns drawing and compute in parallel.
_DRAW_LOCK = threading.Lock()
#: Largest chunk of trials (the working set is also bounded by ``CHUNK_BYTES``).
MAX_CHUNK = 256


@dataclass
class Template:
    """What one ``(m, n)`` of a probe block looks like: a meta-device copy (``base``), the names
    of its parameters (``trainable`` those with ``requires_grad``) and buffers, the numel of
    one output, the bytes one trial needs, and ``replay``, the traced initialization (None
    when it could not be traced or did not reproduce the factory exactly)."""

    base: nn.Module
    params: list[str]
    trainable: list[str]
    buffers: list[str]
    out_numel: int
    trial_bytes: int
    replay: Callable[..., list[Tensor]] | None
    #: False once ``vmap`` could not run the block (data-dependent control flow, ``.item()``):
    #: every trial is then a module of its own (:meth:`FactoryProbe.k_module`).
    vectorized: bool = True


_TEMPLATES: dict[tuple[object, ...], Template] = {}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Hold the draw lock with torch's, numpy's and Python's global RNGs seeded from ``seed``
    (a factory may draw from any of them); their states are restored on exit."""
    with _DRAW_LOCK, torch.random.fork_rng(devices=[]):
        np_state, py_state = np.random.get_state(), random.getstate()
        torch.manual_seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _tensors(mod: nn.Module) -> list[Tensor]:
    """A module's parameters and buffers, detached, in order."""
    return [t.detach() for t in (*mod.parameters(), *mod.buffers())]


def _same_tensors(a: list[list[Tensor]], b: list[list[Tensor]]) -> bool:
    """Whether two lists of tensor lists hold bit-identical tensors."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(u.shape == v.shape and torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


class FactoryProbe:
    """The generic engine (see the module docstring) for ``factory`` ``(m, n) -> nn.Module``
    on inputs of ``input_shape`` (no batch axis), pair ``pair`` of ``inputs``.

    ``bn``: ``"none"`` runs BatchNorm (if any) on its running statistics, ``"train"`` on the
    pair's statistics. ``takes_m=False``: a width-only factory ``n -> nn.Module`` (m = 1).
    ``replay=False`` builds every trial's module (the reference the replay is checked against).
    """

    family = "factory"
    engine = "vmap"
    #: Where it computes (the CPU only, for now).
    device = torch.device("cpu")

    def __init__(
        self,
        factory: Callable[..., nn.Module],
        input_shape: tuple[int, ...],
        *,
        seed: int = 0,
        bn: ProbeBatchNorm = "none",
        dtype: torch.dtype = torch.float32,
        inputs: ProbeInputs = _GAUSSIAN,
        pair: int = 0,
        takes_m: bool = True,
        replay: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        check_choice("bn", bn, PROBE_BN_MODES, "BatchNorm mode")
        self.device = torch.device(device)
        self.factory, self.input_shape, self.seed, self.bn, self.dtype = factory, tuple(input_shape), seed, bn, dtype
        self.inputs, self.pair, self.takes_m, self.use_replay = inputs, int(pair), takes_m, replay
        self.channels = int(self.input_shape[0])
        # the factory builds on the CPU (the global RNGs, seeded); the pair on the probe's device too
        self.x_cpu, _ = inputs.draw(self.input_shape, 0, seed, self.pair, dtype)
        self.x = self.x_cpu.to(self.device)
        self._readouts: dict[int, Tensor] = {}

    def inner(self, m: int, n: int) -> int:
        return m * n

    # ------------------------------------------------------------------ building
    def make(self, m: int, n: int) -> nn.Module:
        """One block from the factory (global RNG as it stands), in this probe's dtype."""
        if m != 1 and not self.takes_m:
            raise UserError("a width factory builds single models; multiplicity m must be 1")
        try:
            mod = self.factory(m, n) if self.takes_m else self.factory(n)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a user's factory failing: one line naming it
            msg = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"the probe factory failed at m={m}, n={n}: {type(e).__name__}"
                            f"{': ' + msg if msg else ''}") from None
        if not isinstance(mod, nn.Module):
            raise UserError(f"the probe factory returned {type(mod).__name__} at m={m}, n={n}, not an nn.Module")
        if any(t.is_floating_point() and t.dtype != self.dtype for t in mod.parameters()):
            mod = mod.to(self.dtype)
        return mod

    def build(self, m: int, n: int, trials: int, seed: int) -> list[nn.Module]:
        """``trials`` blocks from the factory, the global RNGs seeded from ``seed`` (restored)."""
        with _seeded(seed):
            return [self.make(m, n) for _ in range(trials)]

    def template(self, m: int, n: int) -> Template:
        """The :class:`Template` of ``(m, n)`` (built, traced and checked once per process)."""
        key = (self.factory, self.takes_m, self.input_shape, self.dtype, self.bn, m, n, self.use_replay)
        if key not in _TEMPLATES:
            _TEMPLATES[key] = self._new_template(m, n)
        return _TEMPLATES[key]

    def _new_template(self, m: int, n: int) -> Template:
        seed = chunk_seed(self.seed, m, n, 1 << 30)
        mod, again = self.build(m, n, 1, seed)[0], self.build(m, n, 1, seed)[0]
        if not _same_tensors([_tensors(mod)], [_tensors(again)]):
            raise UserError(
                f"the probe factory is not reproducible: two calls at m={m}, n={n} from the same seed built "
                "different weights (it draws from a random source of its own: a torch.Generator, numpy's "
                "default_rng, a counter); Algorithm 1's numbers would depend on the number of processes and "
                "threads; draw from torch's, numpy's or Python's global RNG, which collegial seeds"
            )
        params = [k for k, _ in mod.named_parameters()]
        trainable = [k for k, p in mod.named_parameters() if p.requires_grad]
        buffers = [k for k, _ in mod.named_buffers()]
        if not trainable:
            raise UserError(f"the probe block at m={m}, n={n} has no trainable parameters")
        if self.bn == "train" and not batchnorm_modules(mod):
            raise UserError(f"`bn='train'` normalizes the probe block's BatchNorm layers over the pair, but the "
                            f"block at m={m}, n={n} has none (measure it with bn='none')")
        out_numel, saved = self._forward_size(mod, m, n)
        pbytes = sum(p.numel() * p.element_size() for p in mod.parameters())
        tpl = Template(copy.deepcopy(mod).to("meta"), params, trainable, buffers, out_numel,
                       saved + 6 * pbytes + 4 * out_numel * 8, None)
        if self.use_replay:
            tpl.replay = self._trace(m, n, tpl, seed)
        return tpl

    def _forward_size(self, mod: nn.Module, m: int, n: int) -> tuple[int, int]:
        """(numel of one output, bytes autograd saves in one forward on the pair)."""
        saved = [0]

        def pack(t: Tensor) -> Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with batchnorm_mode(mod, probe_batchnorm_mode(self.bn)):
                    out = mod(self.x_cpu)
        except Exception as e:  # noqa: BLE001 - a user's block failing: one line
            raise UserError(
                f"the probe block at m={m}, n={n} does not accept inputs of shape "
                f"(2, {', '.join(map(str, self.input_shape))}): {type(e).__name__}: {(str(e) or '-').splitlines()[0]}"
            ) from None
        if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != 2 or out[0].numel() < 1:
            raise UserError(f"the probe block must map a batch of 2 inputs to a tensor with a batch "
                            f"axis of 2, got {getattr(out, 'shape', type(out).__name__)}")
        return int(out[0].numel()), saved[0]

    def _trace(self, m: int, n: int, tpl: Template, seed: int) -> Callable[..., list[Tensor]] | None:
        """The factory's initialization as a replayable graph, or None unless two replays give
        exactly the tensors two factory builds give from the same seed."""
        from torch.fx.experimental.proxy_tensor import make_fx

        def draw(_: Tensor) -> list[Tensor]:
            mod = self.make(m, n)
            named = dict(mod.named_parameters())
            bufs = dict(mod.named_buffers())
            return [named[k] for k in tpl.params] + [bufs[k] for k in tpl.buffers]

        try:
            with _seeded(seed), torch.no_grad():
                graph = make_fx(draw, tracing_mode="real")(torch.zeros(()))

            def replay() -> list[Tensor]:
                return [t.clone() for t in graph(torch.zeros(()))]

            with _seeded(seed), torch.no_grad():
                fast = [replay() for _ in range(2)]
            same = _same_tensors(fast, [_tensors(m_) for m_ in self.build(m, n, 2, seed)])
        except Exception:  # noqa: BLE001 - any trace failure: build modules instead
            return None
        return replay if same else None

    def draw(self, m: int, n: int, trials: int, seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stacked ``(trials, ...)`` trainable parameters and the rest (buffers, frozen
        parameters) of ``trials`` initializations from ``seed``; the same tensors with or
        without the replay, drawn on the CPU and moved to the probe's device."""
        tpl = self.template(m, n)
        if tpl.replay is not None:
            with _seeded(seed), torch.no_grad():
                rows = [tpl.replay() for _ in range(trials)]
        else:
            rows = [[t.detach() for t in (*mod.parameters(), *mod.buffers())] for mod in self.build(m, n, trials, seed)]
        names = tpl.params + tpl.buffers
        try:
            cols = {k: torch.stack([row[i] for row in rows]).to(self.device) for i, k in enumerate(names)}
        except (RuntimeError, IndexError):
            raise UserError(f"the probe factory built blocks of different parameter shapes at m={m}, n={n}; "
                            "every call with the same (m, n) must build the same architecture") from None
        params = {k: cols[k] for k in tpl.trainable}
        fixed = {k: v for k, v in cols.items() if k not in params}  # buffers and frozen parameters
        return params, fixed

    # ------------------------------------------------------------------ K
    def chunk_size(self, m: int, n: int) -> int:
        return int(max(2, min(MAX_CHUNK, CHUNK_BYTES // max(1, self.template(m, n).trial_bytes))))

    def trial_bytes(self, m: int, n: int) -> int | None:
        """A lower bound of one trial's working set at ``(m, n)`` (bytes), from the block built on
        the meta device (no memory): its parameters, their gradients and copies; None when the
        factory cannot build on the meta device."""
        key = (self.factory, self.takes_m, self.input_shape, self.dtype, self.bn, m, n, self.use_replay)
        if key in _TEMPLATES:
            return _TEMPLATES[key].trial_bytes
        try:
            with torch.device("meta"), _seeded(0):
                mod = self.factory(m, n) if self.takes_m else self.factory(n)
            numel = sum(p.numel() for p in mod.parameters())
        except Exception:  # noqa: BLE001 - e.g. an initialization that reads values
            return None
        return 6 * numel * torch.finfo(self.dtype).bits // 8

    def readout(self, numel: int) -> Tensor:
        """The pair's readout for an output of ``numel`` entries (drawn with the pair)."""
        if numel not in self._readouts:
            r = self.inputs.draw(self.input_shape, numel, self.seed, self.pair, self.dtype)[1]
            self._readouts[numel] = r.to(self.device)
        return self._readouts[numel]

    def k_chunk(self, m: int, n: int, trials: int, seed: int) -> Tensor:
        """``K`` for ``trials`` fresh initializations drawn from ``seed``: ``(trials,)``, on the CPU."""
        tpl = self.template(m, n)
        if tpl.vectorized:
            params, buffers = self.draw(m, n, trials, seed)
            try:  # functional_call swaps tensors into the module it is given: one copy per chunk (threads)
                return self.k_stacked(copy.deepcopy(tpl.base), params, buffers, self.readout(tpl.out_numel)).cpu()
            except RuntimeError as e:
                if not str(e).startswith("vmap"):
                    raise
                if "random" in str(e):
                    raise UserError(
                        f"the probe block at m={m}, n={n} draws random numbers in its forward (Dropout?): its NTK "
                        "is no function of its weights; leave such layers out of the probe block") from None
                tpl.vectorized = False  # data-dependent control flow, .item(): the exact per-trial path
        # the same weights as draw() (the replay reproduces the factory bit for bit), one module each
        return torch.tensor([self.k_module(mod) for mod in self.build(m, n, trials, seed)], dtype=self.dtype)

    def k_stacked(self, base: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], r: Tensor) -> Tensor:
        """``K`` per trial of stacked ``(B, ...)`` trainable ``params`` and ``buffers`` (every
        other tensor of the module) of ``base``: ``(B,)``."""
        b = next(iter(params.values())).shape[0]
        train = self.bn == "train"
        with batchnorm_mode(base, probe_batchnorm_mode(self.bn)), torch.enable_grad():
            if train:  # batch statistics over the pair; the running buffers are not used
                bufs = {k: v for k, v in buffers.items()
                        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
                leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
                x = self.x

                def pair_forward(p: dict[str, Tensor], bb: dict[str, Tensor]) -> Tensor:
                    return functional_call(base, (p, bb), (x,)).reshape(2, -1) @ r

                f = vmap(pair_forward)(leaves, bufs)  # (B, 2)
                g0 = torch.autograd.grad(f[:, 0].sum(), list(leaves.values()), retain_graph=True, allow_unused=True)
                g1 = torch.autograd.grad(f[:, 1].sum(), list(leaves.values()), allow_unused=True)
                pairs = [(u, v) for u, v in zip(g0, g1) if u is not None and v is not None]
            else:  # every trial's parameters twice, each copy on one input: one backward pass
                p2 = {k: v.detach().repeat_interleave(2, 0).requires_grad_() for k, v in params.items()}
                b2 = {k: v.repeat_interleave(2, 0) for k, v in buffers.items()}
                xs = self.x.unsqueeze(1).repeat(b, *([1] * self.x.dim()))  # (2B, 1, *input_shape)

                def one_forward(p: dict[str, Tensor], bb: dict[str, Tensor], xi: Tensor) -> Tensor:
                    return functional_call(base, (p, bb), (xi,)).reshape(-1) @ r

                f = vmap(one_forward)(p2, b2, xs)  # (2B,): f_b(x), f_b(x') interleaved
                grads = torch.autograd.grad(f.sum(), list(p2.values()), allow_unused=True)
                pairs = [(g.reshape(b, 2, -1)[:, 0], g.reshape(b, 2, -1)[:, 1]) for g in grads if g is not None]
        k = torch.zeros(b, dtype=self.dtype, device=self.device)
        for u, v in pairs:
            k += (u * v).reshape(b, -1).sum(1)
        return k.detach()

    def k_module(self, mod: nn.Module) -> float:
        """The slow reference: ``K`` of one module by two autograd passes (same pair, readout),
        on the probe's device."""
        mod = mod.to(self.device)
        params = [q for q in mod.parameters() if q.requires_grad]
        with batchnorm_mode(mod, probe_batchnorm_mode(self.bn)), torch.enable_grad():
            out = mod(self.x).reshape(2, -1)
            f = out @ self.readout(out.shape[1])
            g0 = torch.autograd.grad(f[0], params, retain_graph=True, allow_unused=True)
            g1 = torch.autograd.grad(f[1], params, allow_unused=True)
        return float(sum((u * v).sum() for u, v in zip(g0, g1) if u is not None and v is not None))
