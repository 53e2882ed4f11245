"""Models written in other styles: every method matches the per-sample autograd loop (float64),
or ``structured`` refuses; ``auto`` always matches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from collegial.ntk import empirical_ntk, ntk_autograd_loop
from collegial.ntk.structured import StructuredUnsupported

pytestmark = pytest.mark.usefixtures("one_thread")


class DirectForward(nn.Module):
    """A submodule called through ``.forward`` (its hook never fires)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a.forward(x)))


class FunctionalWeights(nn.Module):
    """A module's weights used functionally, the module itself called too."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        h = torch.tanh(F.linear(h, self.a.weight, self.a.bias))  # a second, unhooked use
        return self.b(h)


class TiedDecoder(nn.Module):
    """An autoencoder whose decoder is the encoder's transposed weight."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 4)

    def forward(self, x):
        return F.linear(torch.tanh(self.enc(x)), self.enc.weight.t())


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


class LooseParameter(nn.Module):
    """A parameter outside any module, next to supported and unsupported layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.LayerNorm(3 * 16)
        self.scale = nn.Parameter(torch.randn(3 * 16))
        self.head = nn.Linear(3 * 16, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.head(self.norm(h) * self.scale)


CASES = {
    "direct_forward": (DirectForward, (5,)),
    "functional_weights": (FunctionalWeights, (5,)),
    "tied_decoder": (TiedDecoder, (6,)),
    "called_twice": (CalledTwice, (5,)),
    "loose_parameter": (LooseParameter, (2, 4, 4)),
}
#: Styles the structured taps cannot see whole: they must be refused, never answered short.
REFUSED = {"direct_forward", "functional_weights", "tied_decoder"}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("trace", [True, False])
def test_every_method_matches_the_loop_or_refuses(name: str, trace: bool) -> None:
    torch.manual_seed(0)
    cls, shape = CASES[name]
    model = cls().double()
    x1, x2 = torch.randn(4, *shape, dtype=torch.float64), torch.randn(3, *shape, dtype=torch.float64)
    ref = ntk_autograd_loop(model, x1, x2, trace=trace)
    for method in ("auto", "jacobian", "ntk_vps"):
        got = empirical_ntk(model, x1, x2, trace=trace, method=method)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10, msg=f"{name} {method}")
    if name in REFUSED:
        with pytest.raises(StructuredUnsupported, match="used outside its module's calls"):
            empirical_ntk(model, x1, x2, trace=trace, method="structured")
    else:
        got = empirical_ntk(model, x1, x2, trace=trace, method="structured")
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10, msg=f"{name} structured")


def test_a_third_party_resnext_calling_forward_throughout() -> None:
    """A ResNeXt-style block written elsewhere: submodules called through ``.forward``."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.reduce = nn.Conv2d(8, 8, 1, bias=False)
            self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
            self.expand = nn.Conv2d(8, 8, 1, bias=False)
            self.fc = nn.Linear(8 * 16, 3)

        def forward(self, x):
            h = F.relu(self.reduce.forward(x))
            h = F.relu(self.conv.forward(h))
            h = F.relu(x + self.expand.forward(h))
            return self.fc.forward(h.flatten(1))

    torch.manual_seed(1)
    model = Block().double()
    x1 = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    ref = ntk_autograd_loop(model, x1, None, trace=True)
    torch.testing.assert_close(empirical_ntk(model, x1, None, method="auto"), ref, rtol=1e-9, atol=1e-10)
    with pytest.raises(StructuredUnsupported):
        empirical_ntk(model, x1, None, method="structured")
