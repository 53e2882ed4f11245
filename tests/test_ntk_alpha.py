"""Algorithm 1: probe engines against the module loop, fits, the AlphaFit contract, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from collegial.errors import UserError
from collegial.ntk import empirical_ntk
from collegial.ntk.alpha import (
    AlphaFit,
    fit_fit2,
    fit_prop1,
    monte_carlo,
    plot_alpha,
    run_algorithm1,
    variance_model,
    variance_stderr,
)
from collegial.ntk.probe import MLPProbe, ResNeXtBlockProbe
from collegial.ntk.variance import normalized_variance


pytestmark = pytest.mark.usefixtures("one_thread")


CONTRACT = ("alpha", "fit2", "widths", "variance", "stderr", "trials")
CONTRACT += ("family", "channels", "bn", "seed", "m_law")

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
    probe = MLPProbe(6, dtype=torch.float64)
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


def test_fits_recover_exact_curves() -> None:
    n = np.array([2, 4, 8, 16, 32, 64], dtype=float)
    v = np.expm1(3.0 / n)
    alpha, se = fit_prop1(n, v, 0.01 * v)
    assert alpha == pytest.approx(3.0, rel=1e-12) and se > 0
    v2 = 0.7 * n**-0.4 * np.exp(2.5 / n)
    f2, cov = fit_fit2(n, v2, 0.05 * v2)
    assert f2 == pytest.approx({"beta": 0.7, "p": 0.4, "alpha": 2.5}, rel=1e-9)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    with pytest.raises(UserError):
        fit_fit2(n[:2], v2[:2])


def _fit(**kw) -> AlphaFit:
    n = [2, 4, 8, 16, 32]
    v = [float(np.expm1(3.0 / w)) for w in n]
    base = dict(
        family="resnext-block", channels=256, bn="none", seed=0, trials=100, widths=n, variance=v,
        stderr=[0.1 * x for x in v], mean_k=[1.0] * 5, alpha=3.0, alpha_stderr=0.1,
        fit2={"beta": 1.0, "p": 0.5, "alpha": 2.0}, fit2_cov=np.eye(3).tolist(),
    )
    base.update(kw)
    return AlphaFit(**base)


def test_variance_models_and_stderr() -> None:
    fit = _fit()
    grid = np.array([2.0, 4.0, 8.0, 16.0, 32.0])
    emp = fit.variance_model("empirical")
    np.testing.assert_allclose(emp(grid), fit.variance, rtol=1e-12)
    # between grid points: linear in log-log
    mid = emp(np.array([math.sqrt(8 * 16)]))[0]
    assert mid == pytest.approx(math.sqrt(fit.variance[2] * fit.variance[3]), rel=1e-12)
    # outside: power-law extrapolation of the end segment, clamp, or raise
    slope = math.log(fit.variance[-1] / fit.variance[-2]) / math.log(2)
    assert emp(np.array([64.0]))[0] == pytest.approx(fit.variance[-1] * 2**slope, rel=1e-12)
    clamp = fit.variance_model("empirical", outside="clamp")(np.array([1000.0, 1.0]))
    np.testing.assert_allclose(clamp, [fit.variance[-1], fit.variance[0]], rtol=1e-12)
    with pytest.raises(ValueError):
        fit.variance_model("empirical", outside="raise")(np.array([1.0]))
    np.testing.assert_allclose(fit.variance_model("prop1")(grid), np.expm1(3.0 / grid))
    np.testing.assert_allclose(fit.variance_model("fit2")(grid), grid**-0.5 * np.exp(2.0 / grid))
    for kind in ("prop1", "fit2", "empirical"):
        se = fit.variance_stderr(kind)(grid)
        assert se.shape == grid.shape and np.all(se > 0)
    np.testing.assert_allclose(fit.variance_stderr("empirical")(grid), fit.stderr, rtol=1e-12)
    with pytest.raises(UserError):
        fit.variance_model("cubic")  # type: ignore[arg-type]


def test_json_contract_roundtrip(tmp_path) -> None:
    fit = _fit()
    obj = json.loads(fit.to_json())
    for key in CONTRACT:
        assert key in obj
    assert set(obj["fit2"]) >= {"beta", "p", "alpha"}
    path = fit.save(tmp_path, plot=True)
    assert (tmp_path / "alpha.png").stat().st_size > 1000
    again = AlphaFit.from_json(path)
    assert again == fit and AlphaFit.from_json(tmp_path) == fit
    assert variance_model(path, "prop1")(np.array([3.0]))[0] == pytest.approx(math.expm1(1.0))
    assert variance_stderr(str(path), "prop1")(np.array([3.0]))[0] > 0
    with pytest.raises(UserError, match="overwrite"):
        fit.save(tmp_path)
    fit.save(tmp_path, overwrite=True)
    with pytest.raises(UserError):
        AlphaFit.from_json(tmp_path / "missing.json")
    search = pytest.importorskip("collegial.search.variance")
    if hasattr(search, "parse_alpha"):
        parsed = search.parse_alpha(obj)
        assert parsed.alpha == fit.alpha


def test_run_algorithm1_small_and_deterministic(tmp_path) -> None:
    kw = dict(widths=(2, 4, 8), trials=40, channels=16, spatial=4, m_law=(2,), m_law_width=4, seed=5)
    a = run_algorithm1(**kw)
    b = run_algorithm1(**kw)
    assert a.variance == b.variance and a.alpha == b.alpha
    assert a.widths == [2, 4, 8] and len(a.stderr) == 3 and a.trials == 40
    assert a.engine == "gram" and len(a.m_law) == 1 and a.m_law[0].m == 2
    assert all(s > 0 for s in a.stderr)
    plot_alpha(a, tmp_path / "fig.png")
    assert "prop1" in a.table()
    bn = run_algorithm1(**{**kw, "bn": "train", "trials": 12})
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
        (dict(trials=1), "at least 2 trials"),
        (dict(family="cnn"), "unknown family"),
        (dict(family="mlp", bn="train"), "resnext-block"),
        (dict(bn="frozen"), "BatchNorm"),
        (dict(parameterization="mup"), "parameterization"),
        (dict(m_law=(1,)), "m_law"),
        (dict(factory=lambda n: nn.Linear(3, n)), "input_shape"),
    ],
)
def test_user_errors(kw: dict, match: str) -> None:
    base = dict(widths=(2, 4, 8), trials=4, channels=8, spatial=2, m_law=())
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
