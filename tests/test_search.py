"""The search: variance curves, primal/dual solvers, near-ties, the `search` CLI and its errors.

Alpha data come from small fixture JSONs written here (never Algorithm 1 with a large T)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from collegial.cli import main
from collegial.errors import UserError
from collegial.ntk.alpha import fit2_theta, prop1_alpha
from collegial.search.costs import model_costs
from collegial.search.solve import (
    cost_table,
    dual_m,
    parse_budget_value,
    parse_n_range,
    primal_m,
    search,
)
from collegial.search.variance import (
    VarianceCurve,
    load_alpha_file,
    make_curve,
    parse_alpha,
)

WIDTHS = [2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128]


def alpha_obj(alpha=2.5, rel=0.03, fit2=(1.0, 0.5, 5.0), widths=WIDTHS, table="prop1"):
    w = np.asarray(widths, dtype=float)
    if table == "prop1":
        v = np.expm1(alpha / w)
    else:  # a flatter curve: fit2's own shape
        v = fit2[0] * w ** -fit2[1] * np.exp(fit2[2] / w)
    return {
        "alpha": alpha,
        "fit2": {"beta": fit2[0], "p": fit2[1], "alpha": fit2[2]},
        "widths": list(widths),
        "variance": v.tolist(),
        "stderr": (rel * v).tolist(),
        "trials": 2000,
        "family": "resnext",
        "channels": 256,
        "bn": False,
        "seed": 0,
    }


@pytest.fixture
def alpha_file(tmp_path):
    p = tmp_path / "alpha.json"
    p.write_text(json.dumps(alpha_obj()))
    return p


@pytest.fixture(scope="module")
def table():
    return cost_table("resnext29", "cifar10")


# ------------------------------------------------------------------------------- variance


def test_prop1_and_fit2_values_and_refits():
    d = parse_alpha(alpha_obj())
    n = np.array([2, 10, 128])
    assert np.allclose(make_curve("prop1", d)(n), np.expm1(2.5 / n))
    assert np.allclose(make_curve("fit2", d)(n), n**-0.5 * np.exp(5.0 / n))
    w = np.array(WIDTHS, dtype=float)
    assert prop1_alpha(w, np.expm1(3.0 / w)) == pytest.approx(3.0)
    c, p, a = fit2_theta(w, 0.7 * w**-0.8 * np.exp(4.0 / w))
    assert (np.exp(c), p, a) == pytest.approx((0.7, 0.8, 4.0))


def test_empirical_is_loglog_interpolation_and_refuses_extrapolation():
    d = parse_alpha(alpha_obj(widths=[2, 8, 32, 128], table="fit2", fit2=(2.0, 0.75, 0.0)))
    c = make_curve("empirical", d)
    n = np.arange(2, 129)
    assert np.allclose(c(n), 2.0 * n**-0.75)  # exact for a power law
    assert c.domain == (2, 128)
    with pytest.raises(UserError, match="outside the empirical variance table"):
        c(np.array([200]))


def test_bootstrap_matches_delta_method_for_prop1():
    d = parse_alpha(alpha_obj(rel=0.05))
    c = VarianceCurve("prop1", d, draws_count=4000, seed=1)
    n = np.array([10])
    draws = c.draws(n)[:, 0]
    alphas = 10 * np.log1p(draws)
    # delta method for the least-squares alpha: se = sqrt(sum x^2 s^2) / sum x^2
    w = np.array(WIDTHS, dtype=float)
    v = np.expm1(2.5 / w)
    s = 0.05 * v / (1 + v)
    x = 1 / w
    se = np.sqrt(np.sum(x**2 * s**2)) / np.sum(x**2)
    assert alphas.mean() == pytest.approx(2.5, abs=3 * se / np.sqrt(4000) + 1e-3)
    assert alphas.std() == pytest.approx(se, rel=0.1)


def test_alpha_only_file_has_no_uncertainty():
    d = parse_alpha({"alpha": 3.0})
    c = make_curve("prop1", d, draws=10)
    assert not c.has_uncertainty
    assert np.all(c.stderr(np.array([4, 8])) == 0)
    with pytest.raises(UserError, match="fit2"):
        make_curve("fit2", d)
    with pytest.raises(UserError, match="at least 2 widths"):
        make_curve("empirical", d)


@pytest.mark.parametrize(
    "obj, msg",
    [
        ([1, 2], "JSON object"),
        ({"fit2": None}, "missing key 'alpha'"),
        ({"alpha": "x"}, "finite number"),
        ({"alpha": -1.0}, "positive"),
        ({"alpha": 1.0, "widths": [2, 4], "variance": [0.5], "stderr": [0.1]}, "differ in length"),
        ({"alpha": 1.0, "widths": [2, 4], "variance": [0.5, -0.1], "stderr": [0.1, 0.1]}, "positive"),
        ({"alpha": 1.0, "widths": [2, 2.5], "variance": [0.5, 0.1], "stderr": [0.1, 0.1]}, "integers"),
        ({"alpha": 1.0, "fit2": {"beta": 1.0}}, "fit2"),
    ],
)
def test_malformed_alpha_data(obj, msg):
    with pytest.raises(UserError, match=msg):
        parse_alpha(obj)


def test_load_alpha_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_alpha_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"alpha": 2.5,')
    with pytest.raises(UserError, match="not valid JSON"):
        load_alpha_file(bad)
    (tmp_path / "alpha.json").write_text(json.dumps(alpha_obj()))
    assert load_alpha_file(tmp_path).alpha == 2.5  # a directory holding alpha.json


# ------------------------------------------------------------------------------- solver parts


def test_primal_m_rounding():
    b = np.array([10, 7, 3])
    assert primal_m(5, b, 40, "floor").tolist() == [3, 5, 11]
    assert primal_m(5, b, 40, "nearest").tolist() == [3, 5, 12]  # 35/7 = 5; 35/3 = 11.67 -> 12
    assert primal_m(5, b, 40 + 0, "nearest")[0] == 3  # 35/10 = 3.5 ties to the smaller
    assert primal_m(50, b, 40, "floor").tolist() == [0, 0, 0]


def test_dual_m_is_least_feasible():
    v = np.array([1.0, 0.3, 0.1, 0.05])
    m = dual_m(v, 0.1)
    assert m.tolist() == [10, 3, 1, 1]
    assert np.all(v / m <= 0.1) and np.all((m == 1) | (v / np.maximum(m - 1, 1) > 0.1))


def test_parsers():
    assert parse_n_range("2:128") == (2, 128)
    for bad in ("10:5", "0:4", "a:b", "5", "2:9999999"):
        with pytest.raises(UserError):
            parse_n_range(bad)
    assert parse_budget_value("13.8M") == 13_800_000
    assert parse_budget_value("4.2g") == 4_200_000_000
    with pytest.raises(UserError):
        parse_budget_value("lots")


# ------------------------------------------------------------------------------- search


def test_search_cifar10_prop1_reproduces_paper_primal(alpha_file, table):
    res = search("resnext29", "cifar10", "1x128d", make_curve("prop1", load_alpha_file(alpha_file)))
    assert res.primal.arch == "37x10d"
    base = model_costs("resnext29", "1x128d", "cifar10")
    assert res.baseline.params == base.params and res.baseline.rho == 1.0
    assert res.primal.params == model_costs("resnext29", "37x10d", "cifar10").params <= base.params
    assert res.dual.variance <= res.baseline.variance
    assert res.dual.rho == pytest.approx(base.params / res.dual.params) and res.dual.rho > 1
    # exact costs: the table agrees with a built model for the dual optimum
    assert res.dual.flops == model_costs("resnext29", res.dual.arch, "cifar10").flops


def test_flops_budget_nearest_rounding_can_exceed_budget(alpha_file, table):
    c = make_curve("prop1", parse_alpha({"alpha": 1.6}))
    floor = search("resnext29", "cifar10", "1x128d", c, budget="flops", rounding="floor")
    near = search("resnext29", "cifar10", "1x128d", c, budget="flops", rounding="nearest")
    assert floor.primal.flops <= floor.baseline.flops
    assert near.primal.arch == "44x8d"  # the paper's FLOPs optimum: 4.191 G > 4.181 G
    assert near.primal.flops > near.baseline.flops


def test_near_ties_follow_uncertainty(table):
    # a noisy empirical table: neighbours of the optimum cannot be told apart
    noisy = parse_alpha(alpha_obj(rel=0.08))
    res = search("resnext29", "cifar10", "1x128d", make_curve("empirical", noisy))
    ties = res.near_ties["primal"]
    assert ties, "an 8% Monte Carlo error must leave near-ties"
    assert res.primal.arch not in {c.arch for c in ties}
    assert all(c.variance >= res.primal.variance for c in ties)
    assert 0 < res.primal.p_best < 1
    # a noise-free curve has none
    exact = parse_alpha(alpha_obj(rel=0.0))
    res0 = search("resnext29", "cifar10", "1x128d", make_curve("empirical", exact))
    assert res0.near_ties == {"primal": [], "dual": []}
    assert res0.primal.p_best == 1.0
    # overlap is the more generous rule here
    res_o = search("resnext29", "cifar10", "1x128d", make_curve("empirical", noisy), ties="overlap")
    assert {c.arch for c in ties} <= {c.arch for c in res_o.near_ties["primal"]}


def test_search_errors(alpha_file, table):
    c = make_curve("prop1", load_alpha_file(alpha_file))
    with pytest.raises(UserError, match="below the smallest member"):
        search("resnext29", "cifar10", "1x128d", c, budget_value=1000)
    with pytest.raises(UserError, match="not a member"):
        search("resnext29", "cifar10", "28-10", c)
    with pytest.raises(UserError, match="no \\(m, n\\) architecture"):
        search("wrn", "imagenet32", "28-10", c)
    with pytest.raises(UserError, match="empty"):
        search("resnext29", "cifar10", "1x128d", c, n_range="9:3")
    with pytest.raises(UserError, match="rounding"):
        search("resnext29", "cifar10", "1x128d", c, rounding="up")
    emp = make_curve("empirical", load_alpha_file(alpha_file))
    with pytest.raises(UserError, match="outside the empirical"):
        search("resnext29", "cifar10", "1x256d", emp)


# ------------------------------------------------------------------------------- CLI


def _one_line_error(capsys, argv):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err
    return err


def test_cli_json(alpha_file, table, capsys):
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--json",
            "--alpha-file", str(alpha_file)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"baseline", "primal", "dual", "near_ties", "variance_model", "alpha"}
    for k in ("arch", "m", "n", "params", "flops", "variance", "rho"):
        assert k in out["primal"] and k in out["dual"]
    assert out["primal"]["arch"] == "37x10d" and out["variance_model"] == "empirical"  # the default
    assert out["alpha"] == 2.5 and set(out["near_ties"]) == {"primal", "dual"}
    assert out["primal"]["params"] <= out["baseline"]["params"]
    assert main(argv + ["--variance", "prop1"]) == 0
    assert json.loads(capsys.readouterr().out)["variance_model"] == "prop1"


def test_cli_table_and_out(alpha_file, table, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d",
            "--alpha-file", str(alpha_file), "--variance", "empirical", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| baseline | ResNeXt-29 1x128d | 1.00 | 13.78M | 4.18 |" in text
    assert "| primal |" in text and "| dual |" in text and "near-ties" in text
    for name in ("search.json", "search.md", "primal.png", "dual.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "primal.png").read_bytes()[:4] == b"\x89PNG"
    err = _one_line_error(capsys, argv)
    assert "already exists" in err and "--force" in err
    assert main(argv + ["--force"]) == 0


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--budget-value", "1k"], "below the smallest member"),
        (["--baseline", "28-10"], "not a member"),
        (["--baseline", "0x3d"], "not a member"),
        (["--n-range", "64:8"], "empty"),
        (["--n-range", "2-128"], "malformed"),
        (["--variance", "cubic"], "invalid choice"),
        (["--rounding", "up"], "invalid choice"),
        (["--budget", "memory"], "invalid choice"),
        (["--level", "1.5"], "confidence level"),
    ],
)
def test_cli_user_errors(alpha_file, table, capsys, extra, msg):
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d",
            "--alpha-file", str(alpha_file)]
    # a later --baseline replaces the first one
    assert msg in _one_line_error(capsys, argv + extra)


def test_cli_alpha_file_errors(tmp_path, capsys):
    base = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d"]
    assert "does not exist" in _one_line_error(capsys, base + ["--alpha-file", str(tmp_path / "x.json")])
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert "not valid JSON" in _one_line_error(capsys, base + ["--alpha-file", str(bad)])
    only = tmp_path / "only.json"
    only.write_text('{"alpha": 2.0}')
    assert "fit2" in _one_line_error(capsys, base + ["--alpha-file", str(only), "--variance", "fit2"])
    assert "unknown model family" in _one_line_error(capsys, ["search", "resnet", "--baseline", "1x64d"])


def test_on_the_fly_algorithm1_is_cached(monkeypatch, tmp_path, table, capsys):
    """Without --alpha-file the search runs collegial.ntk.alpha.run_algorithm1 once per settings."""
    calls = []

    class Fit:
        def __init__(self, trials, seed):
            self.obj = alpha_obj() | {"trials": trials, "seed": seed}

        def to_dict(self):
            return self.obj

    def run_algorithm1(*, trials, seed, **kw):
        calls.append((trials, seed))
        return Fit(trials, seed)

    fake = types.ModuleType("collegial.ntk.alpha")
    fake.run_algorithm1 = run_algorithm1
    import collegial.ntk

    monkeypatch.setitem(sys.modules, "collegial.ntk.alpha", fake)
    monkeypatch.setattr(collegial.ntk, "alpha", fake, raising=False)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--json", "--trials", "64"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert calls == [(64, 0)]
    assert first["primal"] == second["primal"] and first["primal"]["arch"] == "37x10d"
    assert "cached at" in second["alpha_source"]
    assert len(list((tmp_path / "cache" / "alpha").glob("*.json"))) == 1


def test_relaxed_solver_shares_n_between_primal_and_dual(alpha_file, table):
    c = make_curve("fit2", load_alpha_file(alpha_file))
    res = search("resnext29", "cifar10", "1x128d", c, solver="relaxed")
    assert res.primal.n == res.dual.n and res.solver == "relaxed"
    n = np.arange(2, 129)
    b = table.per_path("params", n)
    assert res.primal.n == n[np.argmin(c(n) * b)]  # argmin V1(n) B(n)
    i = int(np.searchsorted(res.primal_curve.n, res.primal.n))
    assert res.primal_curve.y[i] == pytest.approx(res.primal.variance)  # plots show V1(n)/m
    assert res.primal.params <= res.baseline.params and res.dual.variance <= res.baseline.variance
