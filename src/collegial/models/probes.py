"""The probe blocks the built-in families declare (``register_model(..., probe=...)``).

A probe factory is ``(m, n) -> nn.Module``: one collegial block of its family, ``m`` paths of
width ``n``, at the family's real channel count, freshly initialized the way the family is.
Algorithm 1 measures the NTK variance of that block on inputs of ``probe_input_shape`` (one
input, no batch axis). ``collegial.ntk`` runs two of them with dedicated engines (the gram
engine of the paper's bottleneck, the grouped MLP); any other declared factory runs on the
generic engine. ``docs/probes.md`` lists every family's block and why.
"""

from __future__ import annotations

from torch import nn

from collegial.models.layers import CollegialMLP
from collegial.models.resnext import Bottleneck, init_resnet_

#: Channels C and spatial size of the paper's bottleneck probe (SPEC section 3: C = 256 on
#: 8x8), declared by the ResNeXt families that reproduce the paper (resnext29/38/50/101).
BOTTLENECK_CHANNELS = 256
BOTTLENECK_SPATIAL = 8
BOTTLENECK_SHAPE: tuple[int, ...] = (BOTTLENECK_CHANNELS, BOTTLENECK_SPATIAL, BOTTLENECK_SPATIAL)

#: resnext11's first-stage block: the stem's 16 channels in, stage 1's 32 out (also the
#: reference width, so D = m * n), on the stem's output map: 28x28 MNIST through a 3x3 stride-2
#: convolution (padding 1) is 14x14.
RESNEXT11_IN_CHANNELS = 16
RESNEXT11_OUT_CHANNELS = 32
RESNEXT11_SPATIAL = 14
RESNEXT11_SHAPE: tuple[int, ...] = (RESNEXT11_IN_CHANNELS, RESNEXT11_SPATIAL, RESNEXT11_SPATIAL)

#: The mlp family on its default dataset (MNIST): 28 * 28 inputs, 10 classes, depth 4.
MLP_IN_FEATURES = 784
MLP_OUT_FEATURES = 10
MLP_DEPTH = 4
MLP_SHAPE: tuple[int, ...] = (MLP_IN_FEATURES,)


def bottleneck_probe(m: int, n: int) -> nn.Module:
    """The paper's BatchNorm-free ResNeXt bottleneck: C = 256 in and out, ``D = m * n`` inner
    channels (3x3 conv in m groups), identity shortcut, Kaiming fan-in normal init."""
    c = BOTTLENECK_CHANNELS
    return init_resnet_(Bottleneck(c, c, cardinality=m, width=n, ref_channels=c, bn=False))


def resnext11_probe(m: int, n: int) -> nn.Module:
    """resnext11's first-stage block without BatchNorm: 16 channels in, 32 out, ``D = m * n``
    inner channels (3x3 conv in m groups), 1x1 projection shortcut, initialized like the family."""
    c_out = RESNEXT11_OUT_CHANNELS
    block = Bottleneck(RESNEXT11_IN_CHANNELS, c_out, cardinality=m, width=n, ref_channels=c_out, bn=False)
    return init_resnet_(block)


def mlp_probe(m: int, n: int) -> nn.Module:
    """The whole mlp model on MNIST: 784 inputs, m paths of width n, depth 4, ReLU, 10 outputs
    (Algorithm 1 reads them out through a random unit readout)."""
    return CollegialMLP(MLP_IN_FEATURES, MLP_OUT_FEATURES, m, n, depth=MLP_DEPTH)
