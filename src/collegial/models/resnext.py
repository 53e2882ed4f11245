"""ResNeXt (bottleneck type C) for every depth, following the official CE training code, and
the ResNeXt families (``resnext29``, ``resnext38``, ``resnext50``, ``resnext101``,
``resnext11``), registered here with their probe blocks.

One :class:`Bottleneck` class serves ResNeXt-29/38 (CIFAR and downsampled ImageNet stems) and
ResNeXt-50/101 (ImageNet stem). With cardinality m and bottleneck width n, a block whose output
has ``out`` channels has ``D = m * int(n * out / ref)`` inner channels, where ``ref`` is the
output width of the first stage (256 in the paper's models).

A probe block (``register_model(..., probe=...)``) is ``(m, n) -> nn.Module``: one collegial
block of its family, ``m`` paths of width ``n``, at the family's real channel count, freshly
initialized the way the family is; Algorithm 1 measures its NTK variance on inputs of
``probe_input_shape`` (one input, no batch axis). ``docs/probes.md`` lists every family's block.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from collegial.models.arch import parse_arch
from collegial.models.registry import SmallConfig, register_model


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


# ------------------------------------------------------------------------------ probe blocks

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


# ------------------------------------------------------------------------------ families


def _resnext(
    arch: str,
    *,
    blocks: tuple[int, ...],
    stem: str,
    num_classes: int,
    in_channels: int,
    resolution: int,
    widen_factor: int = 4,
    base_channels: int = 64,
    stem_channels: int = 64,
    stem_stride: int = 1,
    blocks_per_stage: int | None = None,
    bn: bool = True,
) -> nn.Module:
    m, n = parse_arch(arch)
    if blocks_per_stage is not None:
        blocks = (blocks_per_stage,) * len(blocks)
    channels = tuple(base_channels * widen_factor * 2**i for i in range(len(blocks)))
    del resolution  # global average pooling: any resolution works
    return ResNeXt(
        cardinality=m,
        width=n,
        blocks=blocks,
        stage_channels=channels,
        num_classes=num_classes,
        in_channels=in_channels,
        stem=stem,
        stem_channels=stem_channels,
        stem_stride=stem_stride,
        bn=bn,
    )


#: The ResNeXt keywords that must be positive integers (``blocks_per_stage``: one for every stage).
_SIZES = ("widen_factor", "base_channels", "stem_channels", "blocks_per_stage")
#: What the small members of the large ResNeXts shrink: one block per stage, narrow stages.
_SMALL_RESNEXT = {"widen_factor": 1, "blocks_per_stage": 1, "stem_channels": 8}
#: The ImageNet ones also on 64x64 inputs with 7 classes.
_SMALL_IMAGENET = {**_SMALL_RESNEXT, "num_classes": 7, "resolution": 64}


@register_model("resnext29", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE,
                positive_ints=_SIZES, small=SmallConfig("2x4d", "cifar10", _SMALL_RESNEXT))
def resnext29(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-29 (CIFAR, ImageNet32): 3 stages x 3 blocks, out 256/512/1024, 3x3 stem."""
    return _resnext(arch, blocks=(3, 3, 3), stem="cifar", **kw)  # type: ignore[arg-type]


@register_model("resnext38", default_dataset="imagenet64", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE,
                positive_ints=_SIZES, small=SmallConfig("2x4d", "imagenet64", {**_SMALL_RESNEXT, "num_classes": 7}))
def resnext38(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-38 (ImageNet64): ResNeXt-29 plus a 4th stage of 3 blocks, out 2048, stride 2."""
    return _resnext(arch, blocks=(3, 3, 3, 3), stem="cifar", **kw)  # type: ignore[arg-type]


@register_model("resnext50", default_dataset="imagenet", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE,
                positive_ints=_SIZES, small=SmallConfig("2x4d", "imagenet", _SMALL_IMAGENET))
def resnext50(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-50 (ImageNet 224): 7x7/2 stem + max pool, stages [3, 4, 6, 3]."""
    return _resnext(arch, blocks=(3, 4, 6, 3), stem="imagenet", **kw)  # type: ignore[arg-type]


@register_model("resnext101", default_dataset="imagenet", probe=bottleneck_probe, probe_input_shape=BOTTLENECK_SHAPE,
                positive_ints=_SIZES, small=SmallConfig("2x4d", "imagenet", _SMALL_IMAGENET))
def resnext101(arch: str, **kw: object) -> nn.Module:
    """ResNeXt-101 (ImageNet 224): 7x7/2 stem + max pool, stages [3, 4, 23, 3]."""
    return _resnext(arch, blocks=(3, 4, 23, 3), stem="imagenet", **kw)  # type: ignore[arg-type]


@register_model("resnext11", default_dataset="mnist", probe=resnext11_probe, probe_input_shape=RESNEXT11_SHAPE,
                positive_ints=_SIZES, small=SmallConfig("2x4d", "mnist"))
def resnext11(arch: str, **kw: object) -> nn.Module:
    """Small CPU member: ResNeXt-29's layout, 1 block per stage, out 32/64/128, stem 16 stride 2."""
    kw.setdefault("widen_factor", 1)
    kw.setdefault("base_channels", 32)
    kw.setdefault("stem_channels", 16)
    kw.setdefault("stem_stride", 2)
    return _resnext(arch, blocks=(1, 1, 1), stem="cifar", **kw)  # type: ignore[arg-type]
