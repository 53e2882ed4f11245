"""The probe blocks the built-in families declare (``register_model(..., probe=...)``).

A probe factory is ``(m, n) -> nn.Module``: one collegial block of its family, ``m`` paths of
width ``n``, at the family's real channel count, freshly initialized the way the family is.
Algorithm 1 measures the NTK variance of that block on inputs of ``probe_input_shape`` (one
input, no batch axis). ``collegial.ntk`` runs these two with dedicated engines (the gram engine
of the bottleneck, the grouped MLP); any other declared factory runs on the generic engine.
"""

from __future__ import annotations

from torch import nn

from collegial.models.layers import CollegialMLP
from collegial.models.resnext import Bottleneck, init_resnet_

#: Channels C and spatial size of the bottleneck probe (SPEC section 3: C = 256 on 8x8).
BOTTLENECK_CHANNELS = 256
BOTTLENECK_SPATIAL = 8
BOTTLENECK_SHAPE: tuple[int, ...] = (BOTTLENECK_CHANNELS, BOTTLENECK_SPATIAL, BOTTLENECK_SPATIAL)
#: Input size of the MLP probe.
MLP_IN_FEATURES = 256
MLP_SHAPE: tuple[int, ...] = (MLP_IN_FEATURES,)


def bottleneck_probe(m: int, n: int) -> nn.Module:
    """The BatchNorm-free ResNeXt bottleneck: C = 256 in and out, ``D = m * n`` inner channels
    (3x3 conv in m groups), identity shortcut, Kaiming fan-in normal init."""
    c = BOTTLENECK_CHANNELS
    return init_resnet_(Bottleneck(c, c, cardinality=m, width=n, ref_channels=c, bn=False))


def mlp_probe(m: int, n: int) -> nn.Module:
    """The block-diagonal MLP: 256 inputs, m paths of width n, depth 4, ReLU, one output."""
    return CollegialMLP(MLP_IN_FEATURES, 1, m, n, depth=4)
