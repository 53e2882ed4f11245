"""ResNeXt (bottleneck type C) for every depth, following the official CE training code.

One :class:`Bottleneck` class serves ResNeXt-29/38 (CIFAR and downsampled ImageNet stems) and
ResNeXt-50/101 (ImageNet stem). With cardinality m and bottleneck width n, a block whose output
has ``out`` channels has ``D = m * int(n * out / ref)`` inner channels, where ``ref`` is the
output width of the first stage (256 in the paper's models).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _norm(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class Bottleneck(nn.Module):
    """conv1x1(in->D) BN ReLU, conv3x3(D->D, groups=m, stride) BN ReLU, conv1x1(D->out) BN,
    plus the shortcut (identity, or conv1x1+BN when ``in != out`` or ``stride != 1``), ReLU.

    ``bn=False`` removes every BatchNorm (the Algorithm 1 probe block). Input ``(B, in, H, W)``,
    output ``(B, out, H/stride, W/stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        cardinality: int = 1,
        width: int = 64,
        ref_channels: int = 256,
        bn: bool = True,
    ) -> None:
        super().__init__()
        d = cardinality * int(width * out_channels / ref_channels)
        if d < cardinality:
            raise ValueError(f"bottleneck width rounds to zero channels per group ({width=})")
        self.inner_channels = d
        self.conv_reduce = nn.Conv2d(in_channels, d, 1, bias=False)
        self.bn_reduce = _norm(d, bn)
        self.conv_conv = nn.Conv2d(d, d, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = _norm(d, bn)
        self.conv_expand = nn.Conv2d(d, out_channels, 1, bias=False)
        self.bn_expand = _norm(out_channels, bn)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _norm(out_channels, bn),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn_reduce(self.conv_reduce(x)))
        h = self.relu(self.bn(self.conv_conv(h)))
        h = self.bn_expand(self.conv_expand(h))
        return self.relu(h + self.shortcut(x))


class ResNeXt(nn.Module):
    """A ResNeXt: stem, stages of :class:`Bottleneck` blocks, global average pool, linear.

    ``stem="cifar"``: conv3x3(in_ch->stem_channels, stride ``stem_stride``) BN ReLU (ResNeXt-29/38);
    ``stem="imagenet"``: conv7x7/2 BN ReLU maxpool3x3/2 (ResNeXt-50/101).
    Stage i has ``blocks[i]`` blocks with ``stage_channels[i]`` output channels; the first block
    of stage i > 0 has stride 2. Input ``(B, in_channels, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        cardinality: int,
        width: int,
        blocks: Sequence[int],
        stage_channels: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        stem_channels: int = 64,
        stem_stride: int = 1,
        bn: bool = True,
    ) -> None:
        super().__init__()
        if len(blocks) != len(stage_channels) or not blocks:
            raise ValueError("blocks and stage_channels must be non-empty and of equal length")
        self.cardinality, self.width = cardinality, width
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 3, stride=stem_stride, padding=1, bias=False),
                _norm(stem_channels, bn),
                nn.ReLU(inplace=True),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False),
                _norm(stem_channels, bn),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            raise ValueError(f"unknown stem {stem!r}")
        ref = stage_channels[0]
        stages = []
        c_in = stem_channels
        for i, (nb, c_out) in enumerate(zip(blocks, stage_channels)):
            stage = []
            for b in range(nb):
                stage.append(
                    Bottleneck(
                        c_in,
                        c_out,
                        stride=2 if (i > 0 and b == 0) else 1,
                        cardinality=cardinality,
                        width=width,
                        ref_channels=ref,
                        bn=bn,
                    )
                )
                c_in = c_out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        init_resnet_(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))
        return self.classifier(self.pool(h).flatten(1))


def init_resnet_(model: nn.Module) -> nn.Module:
    """Official init: Kaiming normal fan-in for convs and the classifier weight, BN (1, 0), bias 0."""
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Linear):
            nn.init.kaiming_normal_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return model
