"""Wide ResNets (Zagoruyko & Komodakis 2016) as used by Chrabaszcz et al. 2017 for downsampled
ImageNet: pre-activation basic blocks, stage widths ``16k, 32k, 64k[, 128k]``; the ``wrn``
family, registered here (no probe block: a WRN is no collegial ensemble).

WRN-N-k with S stages has ``(N - 4) / (2 S)`` blocks per stage; S = 3 at 32x32 and below
(WRN-28-10, WRN-28-5) and S = 4 at 64x64 (WRN-36-5: one more stage of stride 2).
"""

from __future__ import annotations

from torch import Tensor, nn

from collegial.models.arch import parse_wrn
from collegial.models.registry import SmallConfig, register_model
from collegial.models.resnext import init_resnet_


class BasicBlock(nn.Module):
    """BN ReLU conv3x3(stride) BN ReLU conv3x3, plus identity or conv1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))
        h = self.conv2(self.relu(self.bn2(self.conv1(o))))
        return h + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-k. Input ``(B, in_channels, H, W)``, output ``(B, num_classes)``."""

    def __init__(
        self,
        depth: int,
        k: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        num_stages: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 4) % (2 * num_stages) != 0 or depth < 4 + 2 * num_stages:
            raise ValueError(
                f"WRN depth {depth} needs (depth - 4) divisible by {2 * num_stages} "
                f"for {num_stages} stages"
            )
        per_stage = (depth - 4) // (2 * num_stages)
        self.depth, self.k = depth, k
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks = []
        c_in = 16
        for s in range(num_stages):
            c_out = 16 * k * 2**s
            for b in range(per_stage):
                blocks.append(BasicBlock(c_in, c_out, stride=2 if (s > 0 and b == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        init_resnet_(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn(self.blocks(self.stem(x))))
        return self.classifier(self.pool(h).flatten(1))


@register_model("wrn", arch_kind="wrn", default_dataset="imagenet32", small=SmallConfig("10-1", "cifar10"),
                positive_ints=("num_stages",))
def wrn(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    num_stages: int | None = None,
) -> nn.Module:
    """Wide ResNet WRN-DEPTH-K of Chrabaszcz et al. 2017 (4 stages at 64x64, else 3)."""
    depth, k = parse_wrn(arch)
    stages = num_stages if num_stages is not None else (4 if resolution >= 64 else 3)
    return WideResNet(depth, k, num_classes=num_classes, in_channels=in_channels, num_stages=stages)
