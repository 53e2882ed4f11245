"""Collegial-ensemble layers: m independent paths computed by one batched op.

* :class:`BlockDiagonalLinear` holds m weight blocks ``(m, out, in)``; input ``(B, m, in)`` ->
  output ``(B, m, out)`` with one ``baddbmm``, never a Python loop over paths.
* :class:`CollegialMLP` is the fully connected CE of SPEC section 1:
  ``F(x) = (1/sqrt(m)) * sum_j F_n(x; theta_j)`` with m paths of width n and depth L.

Parameterizations (per layer with fan-in ``d``, nonlinearity gain ``g``):
* ``"standard"``: ``W ~ N(0, g^2/d)``, ``y = x W^T + b``.
* ``"ntk"``: ``W ~ N(0, 1)``, ``y = (g/sqrt(d)) x W^T + b``.
Biases start at zero in both.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from collegial.choices import check_choice

#: How a layer's weights are scaled (see the module docstring); also Algorithm 1's metric of K.
Parameterization = Literal["standard", "ntk"]
PARAMETERIZATIONS: tuple[Parameterization, ...] = ("standard", "ntk")
Activation = Literal["relu", "tanh", "identity"]
ACTIVATIONS: tuple[Activation, ...] = ("relu", "tanh", "identity")

_GAINS: dict[str, float] = {"relu": math.sqrt(2.0), "tanh": 1.0, "identity": 1.0}


def _activation(name: Activation) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    return nn.Identity()


class BlockDiagonalLinear(nn.Module):
    """m independent linear maps ``in -> out`` applied to m slices of the input.

    Shapes: weight ``(m, out, in)``, bias ``(m, out)``; input ``(B, m, in)`` or, with
    ``shared_input=True``, ``(B, in)`` fed to every path; output ``(B, m, out)``.
    """

    def __init__(
        self,
        m: int,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        parameterization: Parameterization = "standard",
        gain: float = 1.0,
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        check_choice("parameterization", parameterization, PARAMETERIZATIONS, "parameterization")
        self.m, self.in_features, self.out_features = m, in_features, out_features
        self.parameterization = parameterization
        self.gain = gain
        self.shared_input = shared_input
        self.weight = nn.Parameter(torch.empty(m, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(m, out_features)) if bias else None
        self.reset_parameters()

    @property
    def scale(self) -> float:
        """Forward multiplier of the weights (1 in standard parameterization)."""
        return self.gain / math.sqrt(self.in_features) if self.parameterization == "ntk" else 1.0

    def reset_parameters(self) -> None:
        std = 1.0 if self.parameterization == "ntk" else self.gain / math.sqrt(self.in_features)
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.scale if self.scale != 1.0 else self.weight
        if self.shared_input:  # (B, in) @ (in, m*out): one GEMM for all paths
            y = (x @ w.reshape(self.m * self.out_features, self.in_features).T).view(
                x.shape[0], self.m, self.out_features
            )
            return y if self.bias is None else y + self.bias
        xt = x.transpose(0, 1)  # (m, B, in)
        if self.bias is None:
            y = torch.bmm(xt, w.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), xt, w.transpose(1, 2))
        return y.transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"m={self.m}, in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, parameterization={self.parameterization}"
        )


class CollegialMLP(nn.Module):
    """Fully connected collegial ensemble: m paths of width n and depth L (weight layers).

    Path j is ``in -> n -> ... -> n -> out`` (L linear layers, activation between them);
    the model returns ``(1/sqrt(m)) * sum_j path_j(x)``. Input ``(B, *)`` is flattened to
    ``(B, in_features)``; output ``(B, out_features)``. ``paths`` returns ``(B, m, out)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        m: int,
        n: int,
        *,
        depth: int = 4,
        activation: Activation = "relu",
        parameterization: Parameterization = "standard",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be >= 2 (at least one hidden layer)")
        check_choice("activation", activation, ACTIVATIONS, "activation")
        self.m, self.n, self.depth = m, n, depth
        self.in_features, self.out_features = in_features, out_features
        gain = _GAINS[activation]
        dims = [in_features] + [n] * (depth - 1) + [out_features]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(
                BlockDiagonalLinear(
                    m,
                    d_in,
                    d_out,
                    bias=bias,
                    parameterization=parameterization,
                    gain=gain if i > 0 else 1.0,
                    shared_input=(i == 0),
                )
            )
        self.layers = nn.ModuleList(layers)
        self.act = _activation(activation)

    def paths(self, x: Tensor) -> Tensor:
        """Per-path outputs, shape ``(B, m, out_features)``."""
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = self.act(h)
            h = layer(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.paths(x).sum(1) / math.sqrt(self.m)
