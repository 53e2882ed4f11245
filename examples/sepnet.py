"""A family of your own: SepNet, a small CNN whose blocks are collegial ensembles of
depthwise-separable paths (the worked example of docs/own-architecture.md).

One path of width n, on C channels: 1x1 conv C -> n, ReLU, depthwise 3x3 on the n channels,
1x1 conv n -> n, ReLU, 1x1 conv n -> C; the block adds the m paths to its input (residual) and
applies a ReLU. As one grouped layer (what ``SepBlock`` builds): the first 1x1 conv is dense
C -> m*n, the depthwise conv has m*n groups, the mixing 1x1 conv has m groups (block-diagonal:
each path mixes its own n channels) and the last 1x1 conv is dense m*n -> C (the sum over
paths). Parameters per path: 2 C n + 9 n + n^2.

Use it from the command line with ``collegial --import examples/sepnet.py ...`` (or, installed
in a package, through the ``collegial.families`` entry point).
"""

from __future__ import annotations

from torch import Tensor, nn

from collegial.models import parse_arch, register_model

CHANNELS = 32  # the blocks' channel count C
BLOCKS = 3


class SepBlock(nn.Module):
    """m depthwise-separable paths of width n on C channels, summed into a residual; with
    ``bn`` a BatchNorm after the mixing conv and after the projection (as in the network)."""

    def __init__(self, channels: int, m: int, n: int, bn: bool = True) -> None:
        super().__init__()
        d = m * n
        self.expand = nn.Conv2d(channels, d, 1, bias=False)
        self.depthwise = nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False)
        self.mix = nn.Conv2d(d, d, 1, groups=m, bias=False)
        self.project = nn.Conv2d(d, channels, 1, bias=False)
        self.bn_mix = nn.BatchNorm2d(d) if bn else nn.Identity()
        self.bn_project = nn.BatchNorm2d(channels) if bn else nn.Identity()
        self.relu = nn.ReLU()
        for conv in (self.expand, self.depthwise, self.mix, self.project):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.expand(x))
        h = self.relu(self.bn_mix(self.mix(self.depthwise(h))))
        return self.relu(x + self.bn_project(self.project(h)))


def sepnet_probe(m: int, n: int) -> nn.Module:
    """The probe: one SepBlock at the network's channel count (it sees 14 x 14 maps), without
    its BatchNorms, as Algorithm 1 measures the paper's bottleneck."""
    return SepBlock(CHANNELS, m, n, bn=False)


@register_model("sepnet", default_dataset="mnist", probe=sepnet_probe, probe_input_shape=(CHANNELS, 14, 14))
def sepnet(arch: str, *, num_classes: int, in_channels: int, resolution: int) -> nn.Module:
    """SepNet: 3x3 stem to 32 channels (stride 2) + BN, three collegial SepBlocks, pool, linear."""
    m, n = parse_arch(arch)
    del resolution  # global average pooling: any resolution works
    stem = nn.Conv2d(in_channels, CHANNELS, 3, stride=2, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_in", nonlinearity="relu")
    head = nn.Linear(CHANNELS, num_classes)
    return nn.Sequential(stem, nn.BatchNorm2d(CHANNELS), nn.ReLU(), *[SepBlock(CHANNELS, m, n) for _ in range(BLOCKS)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
