"""Algorithm 1: probe engines against the module loop, fits, the AlphaFit contract, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from collegial.errors import UserError
from collegial.ntk import empirical_ntk
from collegial.ntk.alpha import monte_carlo, run_algorithm1
from collegial.ntk.plots import plot_alpha
from collegial.ntk.probe import MLPProbe, ResNeXtBlockProbe
from collegial.ntk.variance import normalized_variance


pytestmark = pytest.mark.usefixtures("one_thread")


# (m, n) at C = 16, 4x4: covers both conv_conv branches (direct n < 48, Gram n >= 48) and both
# conv_expand branches (direct D < 16, Gram D >= 16).
SHAPES = [(1, 2), (3, 1), (2, 7), (1, 16), (4, 4), (1, 48)]


@pytest.mark.parametrize("param", ["standard", "ntk"])
def test_gram_and_grouped_engines_equal_the_bottleneck_module(param: str) -> None:
    probe = ResNeXtBlockProbe(16, 4, seed=1, dtype=torch.float64, parameterization=param)
    for m, n in SHAPES:
        w = probe.sample(m, n, 3, seed=m * 100 + n)
        blk = probe.block(m, n)
        loop = torch.tensor([probe.k_module(probe.load(blk, w, t)) for t in range(3)], dtype=torch.float64)
        torch.testing.assert_close(probe.k_gram(w), loop, msg=f"gram m={m} n={n}")
        torch.testing.assert_close(probe.k_grouped(w), loop, msg=f"grouped m={m} n={n}")
    # the module loop itself equals the empirical NTK of block + fixed readout (standard metric)
    if param == "standard":
        readout = nn.Linear(16 * 16, 1, bias=False).double().requires_grad_(False)
        readout.weight.copy_(probe.r[None])
        w = probe.sample(2, 7, 1, 5)
        model = nn.Sequential(probe.load(probe.block(2, 7), w, 0), nn.Flatten(), readout)
        k = empirical_ntk(model, probe.x[:1], probe.x[1:], method="structured")
        assert float(k) == pytest.approx(float(probe.k_gram(w)[0]), rel=1e-10)


def test_batchnorm_train_engine_equals_module_loop() -> None:
    probe = ResNeXtBlockProbe(16, 4, seed=2, dtype=torch.float64, bn="train")
    assert probe.engine == "grouped"
    for m, n in [(1, 3), (2, 2)]:
        w = probe.sample(m, n, 2, seed=7)
        blk = probe.block(m, n)
        loop = torch.tensor([probe.k_module(probe.load(blk, w, t)) for t in range(2)], dtype=torch.float64)
        torch.testing.assert_close(probe.k_grouped(w), loop)
    with pytest.raises(ValueError):
        ResNeXtBlockProbe(16, 4, bn="train", engine="gram")


def test_sampler_is_kaiming_fan_in() -> None:
    probe = ResNeXtBlockProbe(32, 4, dtype=torch.float64)
    w = probe.sample(2, 8, 64, seed=0)
    for t, fan_in in ((w.w1, 32), (w.w2, 8 * 9), (w.w3, 16)):
        assert t.mean().abs() < 0.02 * math.sqrt(2 / fan_in) * 10
        assert t.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.02)
    again = probe.sample(2, 8, 64, seed=0)
    assert torch.equal(w.w2, again.w2) and not torch.equal(w.w2, probe.sample(2, 8, 64, seed=1).w2)


def test_vectorized_estimate_agrees_with_per_trial_loop() -> None:
    """Same distribution: the grouped Monte Carlo and the init_resnet_ loop agree within s.e."""
    probe = ResNeXtBlockProbe(16, 4, seed=4)
    fast = normalized_variance(monte_carlo(probe, 1, 4, 400, seed=11))
    from collegial.ntk.variance import Moments

    loop = normalized_variance(Moments.of(probe.k_loop(1, 4, 150, seed=12)))
    z = (fast.v - loop.v) / math.hypot(fast.stderr, loop.stderr)
    assert abs(z) < 3.5, (fast, loop)


def test_mlp_probe_is_an_exact_ensemble() -> None:
    """For the fully connected CE the 1/m law holds exactly in distribution."""
    fit = run_algorithm1(
        family="mlp", widths=(2, 4, 8), trials=400, channels=8, m_law=(4,), m_law_width=4, seed=1
    )
    (pt,) = fit.m_law
    assert abs(pt.ratio - 1.0) < 3.5 * pt.ratio_stderr
    probe = MLPProbe(6, dtype=torch.float64, reduce=False)
    model = probe.build(3, 5, 2, seed=0)
    k = probe.k_model(model, 3)
    ref = []
    from collegial.models import CollegialMLP

    for t in range(2):
        single = CollegialMLP(6, 1, 3, 5, depth=4).double()
        with torch.no_grad():
            for ls, lf in zip(single.layers, model.layers):
                ls.weight.copy_(lf.weight[3 * t : 3 * t + 3])
                ls.bias.copy_(lf.bias[3 * t : 3 * t + 3])
        ref.append(float(empirical_ntk(single, probe.x[:1], probe.x[1:])))
    torch.testing.assert_close(k, torch.tensor(ref, dtype=torch.float64))


def test_run_algorithm1_small_and_deterministic(tmp_path) -> None:
    kw = dict(widths=(2, 4, 8), trials=40, channels=16, spatial=4, m_law=(2,), m_law_width=4, seed=5)
    a = run_algorithm1(**kw)
    b = run_algorithm1(**kw)
    assert a.variance == b.variance and a.alpha == b.alpha
    assert a.widths == [2, 4, 8] and len(a.stderr) == 3 and a.trials == 40 and a.pairs == 8
    assert a.inputs == "relu" and a.correlation == 0.6 and len(a.pair_variance[0]) == 8
    assert a.engine == "gram" and len(a.m_law) == 1 and a.m_law[0].m == 2
    assert all(s > 0 for s in a.stderr)
    plot_alpha(a, tmp_path / "fig.png")
    assert "prop1" in a.table()
    bn = run_algorithm1(**{**kw, "bn": "train", "trials": 16})
    assert bn.engine == "grouped" and bn.bn == "train"


def test_factory_family() -> None:
    def factory(n: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(2, n, 3, padding=1), nn.BatchNorm2d(n), nn.ReLU(), nn.Flatten(), nn.Linear(n * 9, 2)
        )

    fit = run_algorithm1(factory=factory, input_shape=(2, 3, 3), widths=(2, 4, 8), trials=24, bn="train")
    assert fit.family == "factory" and fit.m_law == [] and all(v > 0 for v in fit.variance)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(widths=(2, 4)), "at least 3"),
        (dict(widths=(2, 2, 4)), "duplicate"),
        (dict(widths=(0, 2, 4)), "widths"),
        (dict(widths=(2.5, 4, 8)), "integers"),
        (dict(trials=1), "2 trials per input pair"),
        (dict(trials=15), "2 trials per input pair"),
        (dict(inputs="relu"), "ProbeInputs"),
        (dict(family="cnn"), "unknown model family"),
        (dict(family="resnext-block"), "use .resnext29."),
        (dict(family="wrn"), "declares no probe"),
        (dict(family="mlp", bn="train"), "does not apply"),
        (dict(bn="frozen"), "BatchNorm"),
        (dict(parameterization="mup"), "parameterization"),
        (dict(m_law=(1,)), "m_law"),
        (dict(factory=lambda n: nn.Linear(3, n)), "input_shape"),
    ],
)
def test_user_errors(kw: dict, match: str) -> None:
    base = dict(widths=(2, 4, 8), trials=16, channels=8, spatial=2, m_law=())
    with pytest.raises(UserError, match=match):
        run_algorithm1(**{**base, **kw})


def test_worker_threads_do_not_change_the_result() -> None:
    probe = ResNeXtBlockProbe(16, 4, seed=6, dtype=torch.float64)
    threads = torch.get_num_threads()
    one = monte_carlo(probe, 2, 3, 60, seed=6, chunk=7, workers=1)
    two = monte_carlo(probe, 2, 3, 60, seed=6, chunk=7, workers=2)
    assert torch.get_num_threads() == threads
    assert one.count == two.count == 60
    assert one.mean == pytest.approx(two.mean, rel=1e-12)
    assert one.m2 == pytest.approx(two.m2, rel=1e-10)
    # the kept sample, in chunk order, and so the jackknife estimate, are the same
    assert torch.equal(one.sample, two.sample)
    assert normalized_variance(one).v == normalized_variance(two).v
