"""Explicit BatchNorm handling for NTK computations, and the two BatchNorm vocabularies.

``BATCHNORM_MODES`` (``batchnorm=`` of the empirical NTK, :mod:`collegial.ntk.empirical`) says
how every BatchNorm of a model runs; ``PROBE_BN_MODES`` (``bn=`` of Algorithm 1's probes) says
whether a probe block has BatchNorm over the probe pair: ``"none"`` (the bottleneck probe drops
its BatchNorm; a declared block's BatchNorm, if any, runs in ``"eval"``) or ``"train"``
(:func:`probe_batchnorm_mode` maps it to the mode below).

Two modes, chosen by the caller and never inferred from ``model.training``:

* ``"eval"``: every BatchNorm uses its running statistics, i.e. it is a fixed per-channel
  affine map ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``; samples are
  independent and ``gamma``/``beta`` are ordinary trainable parameters.
* ``"train"``: every BatchNorm normalizes with the statistics of the probe batch it is given
  (the NTK functions pass ``cat([x1, x2])``); samples are coupled through those statistics and
  the running buffers are neither used nor updated.

Only BatchNorm modules are touched, and their state is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from torch import nn

from collegial.choices import check_choice

#: How every BatchNorm of a model runs (``batchnorm=`` of the empirical NTK).
BatchNormMode = Literal["eval", "train"]
BATCHNORM_MODES: tuple[BatchNormMode, ...] = ("eval", "train")
#: BatchNorm of a probe block over the probe pair (``bn=`` of Algorithm 1's probes).
ProbeBatchNorm = Literal["none", "train"]
PROBE_BN_MODES: tuple[ProbeBatchNorm, ...] = ("none", "train")


def batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_batchnorm_mode(mode: str) -> BatchNormMode:
    """``mode`` if it is one of :data:`BATCHNORM_MODES`; else a ``ValueError``
    (:class:`~collegial.choices.ChoiceError`) naming the argument ``batchnorm``."""
    return check_choice("batchnorm", mode, BATCHNORM_MODES, "BatchNorm mode")


def probe_batchnorm_mode(bn: ProbeBatchNorm) -> BatchNormMode:
    """The :data:`BATCHNORM_MODES` entry a probe's ``bn`` runs its BatchNorm in: ``"train"``
    (statistics of the probe pair) for ``"train"``, ``"eval"`` (running statistics) for ``"none"``."""
    return "train" if bn == "train" else "eval"


@contextmanager
def batchnorm_mode(model: nn.Module, mode: BatchNormMode) -> Iterator[bool]:
    """Put every BatchNorm of ``model`` in ``mode`` for the duration; yields whether any exist.

    ``"eval"`` on a BatchNorm without running statistics (``track_running_stats=False``) raises
    ``ValueError``: such a layer always normalizes over the batch, so use ``"train"``.
    """
    bns = batchnorm_modules(model)
    saved = [
        (m, m.training, m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked)
        for m in bns
    ]
    try:
        for m in bns:
            if mode == "eval":
                if m.running_mean is None or m.running_var is None:
                    raise ValueError(
                        f"{type(m).__name__} has no running statistics; use `batchnorm='train'`"
                    )
                m.training = False
            else:
                m.training = True
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
                m.num_batches_tracked = None
        yield bool(bns)
    finally:
        for m, training, track, rm, rv, nbt in saved:
            m.training = training
            m.track_running_stats = track
            m.running_mean = rm
            m.running_var = rv
            m.num_batches_tracked = nbt
