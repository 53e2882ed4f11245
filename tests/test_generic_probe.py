"""The generic probe engine (collegial.ntk.generic) against a slow reference, the dedicated
bottleneck engine, its own non-replay path, and thread counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from collegial.errors import UserError
from collegial.models import Bottleneck, init_resnet_
from collegial.ntk.alpha import run_algorithm1
from collegial.ntk.generic import FactoryProbe
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import BlockWeights, ResNeXtBlockProbe

C, S = 16, 4


def small_bottleneck(m: int, n: int) -> nn.Module:
    return init_resnet_(Bottleneck(C, C, cardinality=m, width=n, ref_channels=C, bn=False))


class Functional(nn.Module):
    """Another style: weights used functionally, one layer shared twice, a submodule called
    through ``.forward``, a frozen parameter and a buffer."""

    def __init__(self, m: int, n: int) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(m * n, 6) / 6**0.5)
        self.shared = nn.Linear(m * n, m * n)
        self.frozen = nn.Parameter(torch.randn(m * n), requires_grad=False)
        self.register_buffer("scale", torch.full((m * n,), 0.5))
        self.out = nn.Linear(m * n, 3)

    def forward(self, x):
        h = F.relu(F.linear(x, self.w_in) + self.frozen)
        h = F.relu(self.shared.forward(h) * self.scale)
        h = F.relu(self.shared(h))
        return self.out(h)


def with_bn(m: int, n: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, m * n, 3, padding=1), nn.BatchNorm2d(m * n), nn.ReLU(),
                         nn.Conv2d(m * n, 2, 1, groups=1))


@pytest.mark.parametrize("factory, shape, bn", [(small_bottleneck, (C, S, S), "none"), (Functional, (6,), "none"),
                                                (with_bn, (3, 4, 4), "train"), (with_bn, (3, 4, 4), "none")])
def test_generic_k_equals_the_slow_reference(factory, shape, bn):
    """K of every trial equals two autograd passes on the module itself (float64)."""
    g = FactoryProbe(factory, shape, seed=2, bn=bn, dtype=torch.float64, inputs=ProbeInputs(pairs=2), pair=1)
    k = g.k_chunk(2, 3, 5, seed=9)
    ref = [g.k_module(mod) for mod in g.build(2, 3, 5, seed=9)]
    assert torch.allclose(k, torch.tensor(ref, dtype=torch.float64), rtol=1e-10)


def test_the_replayed_initialization_is_the_factorys_own():
    """The traced initialization is used (bottleneck, the worked example's block) and gives
    bit for bit the K values of building every module."""
    import importlib.util
    from pathlib import Path

    from collegial.models import registry as reg

    spec = importlib.util.spec_from_file_location("sepnet_example", Path(__file__).parents[1] / "examples" / "sepnet.py")
    sep = importlib.util.module_from_spec(spec)
    saved = dict(reg._FAMILIES)
    try:
        spec.loader.exec_module(sep)  # registers 'sepnet': forgotten again below
    finally:
        reg._FAMILIES.clear()
        reg._FAMILIES.update(saved)
    for factory, shape in ((small_bottleneck, (C, S, S)), (sep.sepnet_probe, (32, 6, 6))):
        fast = FactoryProbe(factory, shape, seed=1)
        slow = FactoryProbe(factory, shape, seed=1, replay=False)
        assert fast.template(2, 4).replay is not None and slow.template(2, 4).replay is None
        assert torch.equal(fast.k_chunk(2, 4, 6, seed=3), slow.k_chunk(2, 4, 6, seed=3))


def test_a_factory_with_a_random_source_of_its_own_is_refused():
    """Its draws depend on how many calls came before: the numbers would change with the number
    of processes (torchrun) and threads. (An untraceable but seeded factory falls back to
    building modules: the numpy-global test below.)"""
    rng = np.random.default_rng(0)

    def numpy_init(m: int, n: int) -> nn.Module:  # draws outside torch's and numpy's global RNGs
        lin = nn.Linear(4, m * n)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.standard_normal((m * n, 4))))
        return nn.Sequential(lin, nn.ReLU(), nn.Linear(m * n, 1))

    g = FactoryProbe(numpy_init, (4,), seed=0)
    with pytest.raises(UserError, match="probe factory is not reproducible"):
        g.template(1, 16)


def test_generic_matches_the_gram_engine_on_the_same_weights():
    """The bottleneck through the generic route and the dedicated gram engine: same pair, same
    readout, and on the same weights the same K."""
    inputs = ProbeInputs()
    g = FactoryProbe(small_bottleneck, (C, S, S), seed=4, dtype=torch.float64, inputs=inputs, pair=3)
    d = ResNeXtBlockProbe(C, S, seed=4, dtype=torch.float64, inputs=inputs, pair=3)
    assert torch.equal(g.x, d.x) and torch.equal(g.readout(C * S * S), d.r)
    params, _ = g.draw(2, 3, 6, seed=5)
    w = BlockWeights(params["conv_reduce.weight"].flatten(2), params["conv_conv.weight"],
                     params["conv_expand.weight"].flatten(2), m=2)
    k_gram = d.k_gram(w)
    k_gen = g.k_chunk(2, 3, 6, seed=5)
    assert torch.allclose(k_gram, k_gen, rtol=1e-9)


def test_generic_and_dedicated_runs_agree_within_errors():
    kw = dict(widths=(2, 4, 8), trials=480, m_law=(2,), m_law_width=4, seed=3)
    fast = run_algorithm1(channels=C, spatial=S, **kw)
    gen = run_algorithm1(probe=small_bottleneck, input_shape=(C, S, S), **kw)
    assert gen.engine == "vmap" and fast.engine == "gram" and gen.m_law and gen.family == "factory"
    z = (np.array(fast.variance) - gen.variance) / np.hypot(fast.stderr, gen.stderr)
    assert np.abs(z).max() < 3.5, z


def test_generic_engine_is_deterministic_whatever_the_threads():
    from test_probe_inputs import _both_thread_counts

    kw = dict(probe=Functional, input_shape=(6,), widths=(2, 4, 8), trials=96, m_law=(2,), m_law_width=2, seed=1)
    one, two = _both_thread_counts(**kw)
    assert one.variance == two.variance and one.m_law[0].ratio == two.m_law[0].ratio


def test_declared_family_engine_choice():
    """A family's declared block: the built-in bottleneck on the gram engine by default, on
    the generic one when asked; the family name is the probe's name."""
    kw = dict(widths=(2, 3, 4), trials=32, pairs=None, m_law=())
    kw.pop("pairs")
    inp = ProbeInputs(pairs=2)
    a = run_algorithm1(family="resnext50", inputs=inp, channels=C, spatial=S, **kw)
    assert a.family == "resnext50" and a.engine == "gram" and a.input_shape == [C, S, S]
    b = run_algorithm1(family="mlp", inputs=inp, **kw)
    assert b.family == "mlp" and b.engine == "grouped" and b.input_shape == [784]
    with pytest.raises(UserError, match="fixes its own channels"):
        run_algorithm1(family="resnext29", engine="generic", channels=C, inputs=inp, **kw)


@pytest.mark.parametrize(
    "factory, shape, match",
    [
        (lambda m, n: nn.Linear(5, n), (4,), "does not accept inputs of shape"),
        (lambda m, n: "not a module", (4,), "not an nn.Module"),
        (lambda m, n: nn.ReLU(), (4,), "no trainable parameters"),
        (lambda m, n: nn.Sequential(nn.Flatten(0), nn.Linear(8, 1)), (4,), "batch axis"),
    ],
)
def test_bad_probe_blocks_are_one_line_errors(factory, shape, match):
    with pytest.raises(UserError, match=match):
        run_algorithm1(probe=factory, input_shape=shape, widths=(2, 3, 4), trials=16, m_law=())


def test_a_factory_drawing_from_numpys_global_rng_is_deterministic_for_a_seed():
    def numpy_global(m: int, n: int) -> nn.Module:
        lin = nn.Linear(4, m * n)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.random.standard_normal((m * n, 4))))
        return nn.Sequential(lin, nn.ReLU(), nn.Linear(m * n, 1))

    g = FactoryProbe(numpy_global, (4,), seed=0)
    a, b = g.k_chunk(1, 16, 4, seed=7), g.k_chunk(1, 16, 4, seed=7)
    assert torch.equal(a, b) and len(set(a.tolist())) == 4
    assert g.template(1, 16).replay is None  # a trace would freeze numpy's draws: not replayed


def test_bn_train_on_a_block_without_batchnorm_is_refused():
    with pytest.raises(UserError, match="has none"):
        run_algorithm1(probe=Functional, input_shape=(6,), bn="train", widths=(2, 3, 4), trials=16, m_law=())
