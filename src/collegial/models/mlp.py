"""The ``mlp`` family: the fully connected collegial ensemble
(:class:`~collegial.models.layers.CollegialMLP`) on flattened images, registered here with its
probe block (the whole model on MNIST; ``docs/probes.md``).
"""

from __future__ import annotations

from torch import nn

from collegial.models.arch import parse_arch
from collegial.models.layers import CollegialMLP
from collegial.models.registry import SmallConfig, register_model

#: The mlp family on its default dataset (MNIST): 28 * 28 inputs, 10 classes, depth 4.
MLP_IN_FEATURES = 784
MLP_OUT_FEATURES = 10
MLP_DEPTH = 4
MLP_SHAPE: tuple[int, ...] = (MLP_IN_FEATURES,)


def mlp_probe(m: int, n: int) -> nn.Module:
    """The whole mlp model on MNIST: 784 inputs, m paths of width n, depth 4, ReLU, 10 outputs
    (Algorithm 1 reads them out through a random unit readout)."""
    return CollegialMLP(MLP_IN_FEATURES, MLP_OUT_FEATURES, m, n, depth=MLP_DEPTH)


@register_model("mlp", default_dataset="mnist", probe=mlp_probe, probe_input_shape=MLP_SHAPE,
                small=SmallConfig("3x8d", "mnist"), positive_ints=("depth",))
def mlp(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    depth: int = MLP_DEPTH,
    activation: str = "relu",
    parameterization: str = "standard",
    bias: bool = True,
) -> nn.Module:
    """Fully connected collegial ensemble: m paths of width n, depth 4, on flattened inputs."""
    m, n = parse_arch(arch)
    return CollegialMLP(
        in_channels * resolution * resolution,
        num_classes,
        m,
        n,
        depth=depth,
        activation=activation,  # type: ignore[arg-type]
        parameterization=parameterization,  # type: ignore[arg-type]
        bias=bias,
    )
