"""What Algorithm 1 asks of a probe engine: the :class:`ProbeEngine` protocol.

A probe engine measures ``K(x, x') = <grad f(x), grad f(x')>`` of one probe block on one input
pair (``f = <r, block(x)>``) for a chunk of fresh initializations at once. Algorithm 1
(:mod:`collegial.ntk.alpha`) builds one engine per input pair and uses nothing else of it:

* ``pair``: the index of its input pair (chunk ``c`` of ``(m, n)`` is drawn from
  ``trial_seed(seed, m, n, c, pair)``);
* ``engine``: a short name recorded in ``alpha.json`` (``gram``, ``grouped``, ``vmap``, ...);
* ``input_shape``: the shape of one input, no batch axis (``input_shape[0]`` is recorded as
  the probe's channels);
* ``device``: where it computes (on CUDA its free memory bounds the chunks computed at once);
* ``chunk_size(m, n)``: how many trials to compute at once;
* ``trial_bytes(m, n)``: one trial's working set in bytes, or None when unknown (then no memory
  check and no duration estimate);
* ``k_chunk(m, n, trials, seed)``: ``K`` for ``trials`` initializations drawn from ``seed``,
  a ``(trials,)`` tensor that depends on ``seed`` only. Algorithm 1 calls it from several
  threads at once (:func:`~collegial.ntk.alpha.pair_moments`), so an engine that draws from a
  process-wide RNG holds a lock while it draws.

The built-in engines (:class:`~collegial.ntk.probe.ResNeXtBlockProbe`,
:class:`~collegial.ntk.probe.MLPProbe`, :class:`~collegial.ntk.generic.FactoryProbe`) satisfy
it; so does any object with these members, inheriting from nothing
(``run_algorithm1(engines=...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from collegial.errors import UserError

__all__ = ["ENGINE_MEMBERS", "ProbeEngine", "check_engines"]


@runtime_checkable
class ProbeEngine(Protocol):
    """One probe block on one input pair (see the module docstring)."""

    @property
    def pair(self) -> int: ...

    @property
    def engine(self) -> str: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def device(self) -> torch.device: ...

    def chunk_size(self, m: int, n: int) -> int: ...

    def trial_bytes(self, m: int, n: int) -> int | None: ...

    def k_chunk(self, m: int, n: int, trials: int, seed: int) -> Tensor: ...


#: The members of :class:`ProbeEngine`, in the order the protocol declares them.
ENGINE_MEMBERS: tuple[str, ...] = ("pair", "engine", "input_shape", "device", "chunk_size", "trial_bytes", "k_chunk")
_METHODS = ("chunk_size", "trial_bytes", "k_chunk")


def check_engines(engines: Sequence[object], pairs: int) -> list[ProbeEngine]:
    """``engines`` as a list of :class:`ProbeEngine`, one per input pair in pair order; a
    :class:`~collegial.errors.UserError` naming what an object lacks, or a wrong count, pair
    number or input shape."""
    if isinstance(engines, (str, bytes)) or not isinstance(engines, Sequence):
        raise UserError(f"`engines` must be a sequence of probe engines (one per input pair), got {type(engines).__name__}")
    if len(engines) != pairs:
        raise UserError(f"`engines` holds {len(engines)} probe engines for {pairs} input pairs; give one per pair")
    out: list[ProbeEngine] = []
    for i, e in enumerate(engines):
        missing = [k for k in ENGINE_MEMBERS if not hasattr(e, k)]
        missing += [k for k in _METHODS if k not in missing and not callable(getattr(e, k))]
        if missing:
            raise UserError(f"{type(e).__name__} is not a probe engine: it lacks {', '.join(missing)} "
                            f"(a probe engine has {', '.join(ENGINE_MEMBERS)}; see collegial.ntk.engine)")
        if int(e.pair) != i:
            raise UserError(f"probe engine {i} measures input pair {e.pair}; give the engines in pair order 0..{pairs - 1}")
        shape = tuple(e.input_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise UserError(f"probe engine {i}: input_shape must be positive integers, got {e.input_shape!r}")
        out.append(e)
    return out
