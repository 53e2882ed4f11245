import dataclasses
import math

import pytest
import torch
from torch import nn

from collegial.errors import UserError
from collegial.models import (
    BlockDiagonalLinear,
    CollegialMLP,
    SmallConfig,
    create_model,
    get_dataset_spec,
    get_family,
    list_families,
    parse_arch,
    register_model,
    registry,
)


def _separate_mlps(ce: CollegialMLP) -> list[nn.Sequential]:
    """m ordinary MLPs holding exactly the CE's path weights."""
    act = ce.act
    mlps = []
    for j in range(ce.m):
        layers: list[nn.Module] = []
        for i, layer in enumerate(ce.layers):
            if i > 0:
                layers.append(act)
            lin = nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                lin.weight.copy_(layer.weight[j] * layer.scale)
                lin.bias.copy_(layer.bias[j])
            layers.append(lin)
        mlps.append(nn.Sequential(*layers))
    return mlps


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_ce_equals_separate_mlps(parameterization, activation):
    torch.manual_seed(0)
    m, n, depth = 5, 7, 4
    ce = CollegialMLP(12, 3, m, n, depth=depth, activation=activation, parameterization=parameterization).double()
    with torch.no_grad():  # non-zero biases so they are exercised too
        for layer in ce.layers:
            layer.bias.normal_()
    mlps = _separate_mlps(ce)
    x = torch.randn(9, 12, dtype=torch.float64)
    y_ce = ce(x)
    y_sep = sum(f(x) for f in mlps) / math.sqrt(m)
    torch.testing.assert_close(y_ce, y_sep)
    torch.testing.assert_close(ce.paths(x), torch.stack([f(x) for f in mlps], 1))
    # gradients: path j's block of every CE parameter equals MLP j's gradient (scaled back)
    g = torch.randn_like(y_ce)
    (y_ce * g).sum().backward()
    (y_sep * g).sum().backward()
    for i, layer in enumerate(ce.layers):
        for j, f in enumerate(mlps):
            lin = f[2 * i]
            torch.testing.assert_close(layer.weight.grad[j], lin.weight.grad * layer.scale)
            torch.testing.assert_close(layer.bias.grad[j], lin.bias.grad)


def test_block_diagonal_is_one_batched_op_and_matches_loop():
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(4, 6, 3).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(8, 4, 6, dtype=torch.float64)
    y = layer(x)
    ref = torch.stack([x[:, j] @ layer.weight[j].T + layer.bias[j] for j in range(4)], 1)
    torch.testing.assert_close(y, ref)
    assert len(list(layer.children())) == 0  # not m sub-modules


def test_ntk_parameterization_scaling():
    torch.manual_seed(0)
    layer = BlockDiagonalLinear(2, 400, 300, parameterization="ntk", gain=1.0)
    assert abs(layer.weight.std().item() - 1.0) < 0.02
    std = BlockDiagonalLinear(2, 400, 300, parameterization="standard", gain=1.0)
    assert abs(std.weight.std().item() - 1 / 20) < 0.002


def build_small_member_and_step(family: str) -> None:
    """Build ``family``'s declared small member, run a batch of 2 of its dataset's images
    (sizes from the dataset and the member's overrides) and one backward pass."""
    fam = get_family(family)
    assert fam.small is not None, f"{family} declares no small member (register_model(..., small=SmallConfig(...)))"
    kw = fam.small.kwargs()
    spec = get_dataset_spec(fam.small.dataset)
    torch.manual_seed(0)
    model = create_model(family, **kw)
    res, ch = kw.get("resolution", spec.resolution), kw.get("in_channels", spec.in_channels)
    out = model(torch.randn(2, ch, res, res))
    assert out.shape == (2, kw.get("num_classes", spec.num_classes))
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert fam.doc


@pytest.mark.parametrize("family", list_families())
def test_every_family_builds_its_small_member_and_trains_a_step(family):
    build_small_member_and_step(family)


def test_a_newly_registered_family_is_tested_from_its_declaration(family_registry):
    @register_model("tiny_conv_h4", default_dataset="mnist", small=SmallConfig("2x3d", "fashion-mnist", {"num_classes": 4}))
    def tiny_conv_h4(arch, *, num_classes, in_channels, resolution):
        """A toy family."""
        m, n = parse_arch(arch)
        return nn.Sequential(nn.Conv2d(in_channels, m * n, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(m * n, num_classes))

    assert "tiny_conv_h4" in list_families()
    build_small_member_and_step("tiny_conv_h4")


@pytest.mark.parametrize("small, message", [
    (("2x3d", "mnist"), "must be a SmallConfig"),
    (SmallConfig("10-1", "mnist"), "small member"),
    (SmallConfig("2x3d", "svhn"), "unknown dataset 'svhn'"),
    (SmallConfig("2x3d", "mnist", {1: 2}), "overrides must map keyword names"),
])
def test_a_bad_small_member_is_refused_at_registration(small, message, family_registry):
    with pytest.raises(ValueError, match=message):
        register_model("bad_small_h4", small=small)


@pytest.mark.parametrize("family, key", [("resnext29", "widen_factor"), ("resnext11", "blocks_per_stage"),
                                         ("resnext38", "stem_channels"), ("wrn", "num_stages"), ("mlp", "depth"),
                                         ("mlp", "num_classes")])
def test_a_family_keyword_that_must_be_positive_is_refused_in_one_line(family, key, monkeypatch):
    """A family's declared size keyword (or a dataset size) at 0 is refused before the family
    function runs, in one line naming the family, the keyword and the value."""
    fam = get_family(family)

    def never(*args, **kwargs):
        raise AssertionError("the family function ran before the check")

    monkeypatch.setitem(registry._FAMILIES, family, dataclasses.replace(fam, fn=never))
    with pytest.raises(UserError) as e:
        create_model(family, arch=fam.small.arch, dataset=fam.small.dataset, **{key: 0})
    assert str(e.value) == f"cannot build {family}: {key} must be a positive integer, got 0"


def test_a_family_declares_its_own_positive_keywords(family_registry):
    """Only the dataset sizes and the keywords a family declares are checked: a family that
    declares none receives its other keywords as given, one that declares one is refused."""
    seen = {}

    @register_model("free_h6", default_dataset="mnist")
    def free_h6(arch, *, num_classes, in_channels, resolution, widen_factor=1):
        seen["widen_factor"] = widen_factor
        return nn.Linear(in_channels, num_classes)

    create_model("free_h6", arch="2x3d", widen_factor=0)
    assert seen == {"widen_factor": 0}

    register_model("strict_h6", default_dataset="mnist", positive_ints=("widen_factor",))(free_h6)
    with pytest.raises(UserError, match="^cannot build strict_h6: widen_factor must be a positive integer, got 0$"):
        create_model("strict_h6", arch="2x3d", widen_factor=0)
    assert get_family("strict_h6").positive_ints == ("widen_factor",)
    for bad in ("widen_factor", ["not a name"], [1]):
        with pytest.raises(ValueError, match="positive_ints must be a sequence of keyword names"):
            register_model("bad_h6", positive_ints=bad)


def test_resnext_cardinality_is_grouped_conv():
    model = create_model("resnext29", arch="37x10d", dataset="cifar10")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(convs) == 9 and all(c.groups == 37 for c in convs)
    assert [c.in_channels for c in convs[::3]] == [370, 740, 1480]


def test_preset_equals_family_call():
    torch.manual_seed(1)
    a = create_model("cifar10-resnext29-3x64d")
    torch.manual_seed(1)
    b = create_model("resnext29", arch="3x64d", dataset="cifar10")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
