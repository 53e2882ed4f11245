"""The whole-model NTK engine (``collegial.ntk.whole``): its three methods give the same gradient
rows, the group terms sum to K computed by independent code (``ntk_autograd_loop``), models
written in other styles are measured exactly or by the fallback, never by a smaller kernel, and a
seed gives the same numbers whatever the thread count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from collegial.models import create_model
from collegial.ntk.empirical import ntk_autograd_loop
from collegial.ntk.structured import StructuredUnsupported
from collegial.ntk.whole import WholeModelNtk, draw_pairs, parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")


class OtherStyle(nn.Module):
    """Hooks cannot see everything: a submodule called through ``.forward``, a weight used
    functionally, and a layer applied twice (shared)."""

    def __init__(self, through_forward: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10)
        self.through_forward = through_forward

    def forward(self, x):
        h = self.conv.forward(x) if self.through_forward else self.conv(x)
        h = torch.relu(self.bn(h)).mean((2, 3))
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        return F.linear(h, self.head.weight, self.head.bias) if self.through_forward else self.head(h)


class BatchMixing(nn.Module):
    """Subtracts the batch mean: the samples of a batch are not independent."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, x):
        h = x.flatten(1)
        return self.lin(h - h.mean(0, keepdim=True))


FACTORIES = {
    "resnext11-2x4d": lambda: create_model("resnext11", arch="2x4d", dataset="mnist"),
    "mlp-3x8d": lambda: create_model("mlp", arch="3x8d", dataset="mnist"),
    "other-style": lambda: OtherStyle(through_forward=True),
    "shared-hooked": lambda: OtherStyle(through_forward=False),
}


def _pairs(count=3):
    g = torch.Generator().manual_seed(1)
    imgs = torch.randn(40, 1, 28, 28, generator=g, dtype=torch.float64)
    return draw_pairs(imgs, None, count, 10, seed=3)[0]


def _reference(model, pairs, bn):
    """K of every pair from ntk_autograd_loop's full (N, N, K, K) kernel and the readouts."""
    theta = ntk_autograd_loop(model, pairs.x, None, trace=False, batchnorm="train" if bn == "batch" else "eval")
    return torch.stack([pairs.readout[p] @ theta[2 * p, 2 * p + 1] @ pairs.readout[p] for p in range(pairs.count)])


@pytest.mark.parametrize("bn", ["batch", "running"])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_methods_agree_and_groups_sum_to_k(name, bn):
    pairs = _pairs()
    got = {}
    methods = ("loop", "jacobian", "auto") + (("taps",) if name != "other-style" else ())
    for method in methods:
        eng = WholeModelNtk(FACTORIES[name], pairs, bn=bn, method=method, dtype=torch.float64)
        model = eng.model(seed=0, trial=1)
        got[method], groups = eng.terms(model)
        if method == "auto":
            # batch mode: auto is the per-image loop (nothing to fall back from)
            assert (eng.fallback is not None) == (name == "other-style" and bn == "running"), eng.fallback
    ref = _reference(model, pairs, bn)
    for method, terms in got.items():
        assert terms.shape == (pairs.count, len(groups.names))
        torch.testing.assert_close(terms.sum(1), ref, rtol=1e-9, atol=1e-9, msg=method)
        torch.testing.assert_close(terms, got["loop"], rtol=1e-9, atol=1e-9, msg=method)


@pytest.mark.parametrize("name", ["resnext11-2x4d", "mlp-3x8d", "shared-hooked"])
def test_running_taps_pair_terms_in_the_gram_order_are_exact(name):
    """After the first call (rows only: it checks sample independence), running-mode taps give
    the weights of layers cheaper in the Gram order their pair terms directly; those terms must
    equal the first call's and the reference, and both orders must have been used on resnext11."""
    pairs = _pairs()
    eng = WholeModelNtk(FACTORIES[name], pairs, bn="running", method="taps", dtype=torch.float64)
    model = eng.model(seed=0, trial=1)
    first, _ = eng.terms(model)
    assert eng.orders == {"gram": 0, "rows": 0}
    second, _ = eng.terms(model)
    assert eng.orders["gram"] > 0, eng.orders
    if name.startswith("resnext"):
        assert eng.orders["rows"] > 0, eng.orders
    torch.testing.assert_close(second, first, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(second.sum(1), _reference(model, pairs, "running"), rtol=1e-9, atol=1e-9)


def test_taps_refuse_what_they_cannot_see():
    eng = WholeModelNtk(FACTORIES["other-style"], _pairs(), bn="running", method="taps", dtype=torch.float64)
    with pytest.raises(StructuredUnsupported, match="outside its module"):
        eng.terms(eng.model(0, 0))


def test_running_mode_detects_batch_mixing():
    eng = WholeModelNtk(BatchMixing, _pairs(), bn="running", dtype=torch.float64)
    eng.terms(eng.model(0, 0))
    assert eng.fallback is not None and "interact" in eng.fallback


def test_resnext_groups_name_the_collegial_layers():
    groups = parameter_groups(create_model("resnext11", arch="4x4d", dataset="mnist"))
    assert groups.names[0] == "stem" and groups.names[-1] == "head"
    assert {f"stage{s}.{p}" for s in (1, 2, 3) for p in ("reduce", "grouped", "expand")} == set(groups.collegial)
    assert "batchnorm" in groups.names and "stage2.shortcut" in groups.names
    mlp = parameter_groups(create_model("mlp", arch="2x4d", dataset="mnist"))
    assert mlp.names == ["layer1", "layer2", "layer3", "layer4"] and set(mlp.collegial) == set(mlp.names)


@pytest.mark.parametrize("bn", ["batch", "running"])
def test_same_seed_same_terms_whatever_the_thread_count(bn):
    pairs = _pairs(2)
    pairs32 = type(pairs)(pairs.x.float(), pairs.readout.float())
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        eng = WholeModelNtk(lambda: create_model("resnext11", arch="4x4d", dataset="mnist"), pairs32, bn=bn)
        eng.terms(eng.model(seed=5, trial=1))  # running mode: the fast path starts on the second call
        out.append(eng.terms(eng.model(seed=5, trial=2))[0])
    torch.set_num_threads(1)
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=0)
    eng = WholeModelNtk(lambda: create_model("resnext11", arch="4x4d", dataset="mnist"), pairs32, bn=bn)
    assert not torch.equal(eng.terms(eng.model(seed=5, trial=3))[0], out[0])  # another trial, another draw
