"""The search: variance curves, primal/dual solvers, near-ties, the `search` CLI and its errors.

Alpha data come from small fixture JSONs written here (never Algorithm 1 with a large T)."""

from __future__ import annotations

import json
import numpy as np
import pytest

from collegial.cli import main
from collegial.errors import UserError
from collegial.ntk.curve import AlphaFit, synthetic_fit
from collegial.models.costs import model_costs
from collegial.commands.budget import parse_budget_value
from collegial.search.problems import dual_m, primal_m
from collegial.search.solve import cost_table, parse_n_range, search
from collegial.search.result import MAX_SET, arch_probabilities, format_answer
from collegial.search.variance import VarianceCurve, load_curve

WIDTHS = [2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128]


def alpha_obj(alpha=2.5, rel=0.03, fit2=(1.0, 0.5, 5.0), widths=WIDTHS, table="prop1", family="resnext29"):
    """An alpha.json whose table follows prop1 (or fit2's shape) exactly."""
    if table == "prop1":
        def v_of_n(w):
            return np.expm1(alpha / w)
    else:  # a flatter curve: fit2's own shape
        def v_of_n(w):
            return fit2[0] * w ** -fit2[1] * np.exp(fit2[2] / w)
    return synthetic_fit(v_of_n, widths, rel_stderr=rel, family=family).to_dict()


def curve(model="prop1", **kw) -> VarianceCurve:
    return VarianceCurve(AlphaFit.from_dict(alpha_obj(**kw)), model, 200, 0)


@pytest.fixture
def alpha_file(tmp_path):
    p = tmp_path / "alpha.json"
    p.write_text(json.dumps(alpha_obj()))
    return p


@pytest.fixture(scope="module")
def table():
    return cost_table("resnext29", "cifar10")


# ------------------------------------------------------------------------------- variance


def test_curve_values_draws_and_auto():
    c = curve("prop1")
    n = np.array([2, 10, 128])
    assert np.allclose(c(n), np.expm1(2.5 / n))
    assert c.draws(n).shape == (200, 3) and np.all(c.stderr(n) > 0)
    f2 = curve("fit2", table="fit2", fit2=(0.7, 0.8, 4.0))
    assert np.allclose(f2(n), 0.7 * n**-0.8 * np.exp(4.0 / n))
    auto = curve("auto")
    assert auto.model == "smooth" and auto.requested == "auto" and "(auto)" in auto.describe()
    assert auto.with_model("empirical").model == "empirical"
    with pytest.raises(UserError, match="unknown variance model"):
        curve("cubic")
    with pytest.raises(UserError, match="outside the measured widths"):
        c(np.array([200]))


def test_load_curve_refuses_another_probe_family(alpha_file, tmp_path):
    assert load_curve(alpha_file, "prop1", family="resnext29").fit.alpha == pytest.approx(2.5)
    assert load_curve(tmp_path, "prop1").fit.alpha == pytest.approx(2.5)  # a directory holding alpha.json
    # every ResNeXt declares the same bottleneck probe: one curve serves them all
    assert load_curve(alpha_file, "prop1", family="resnext38").fit.family == "resnext29"
    with pytest.raises(UserError, match="measured by the 'resnext29' probe, not by mlp's; measure its own: 'collegial fit-alpha --family mlp"):
        load_curve(alpha_file, family="mlp")
    (tmp_path / "plug.json").write_text(json.dumps(alpha_obj(family="mynet")))
    with pytest.raises(UserError, match="'mynet' probe, which is not a registered family here.*--import"):
        load_curve(tmp_path / "plug.json", family="resnext29")
    # schema 2 named the bottleneck probe 'resnext-block': still read, as resnext29's
    v2 = alpha_obj() | {"schema_version": 2, "family": "resnext-block"}
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    old = load_curve(tmp_path / "v2.json", family="resnext50")
    assert old.fit.family == "resnext29"
    # files from before the jackknife correction are read as the plain ratio, and the answer says so
    assert old.fit.estimator == "plain" and any("uncorrected ratio" in n for n in old.notes)
    (tmp_path / "v3.json").write_text(json.dumps(alpha_obj() | {"schema_version": 3}))
    assert load_curve(tmp_path / "v3.json", family="resnext29").fit.estimator == "plain"
    assert not any("uncorrected" in n for n in load_curve(alpha_file, family="resnext29").notes)


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
    res = search("resnext29", "cifar10", "1x128d", load_curve(alpha_file, "prop1"))
    assert res.primal.arch == "37x10d"
    base = model_costs("resnext29", "1x128d", "cifar10")
    assert res.baseline.params == base.params and res.baseline.rho == 1.0
    assert res.primal.params == model_costs("resnext29", "37x10d", "cifar10").params <= base.params
    assert res.dual.variance <= res.baseline.variance
    assert res.dual.rho == pytest.approx(base.params / res.dual.params) and res.dual.rho > 1
    # exact costs: the table agrees with a built model for the dual optimum
    assert res.dual.flops == model_costs("resnext29", res.dual.arch, "cifar10").flops


def test_flops_budget_nearest_rounding_can_exceed_budget(alpha_file, table):
    c = curve("prop1", alpha=1.6)
    floor = search("resnext29", "cifar10", "1x128d", c, budget="flops", rounding="floor")
    near = search("resnext29", "cifar10", "1x128d", c, budget="flops", rounding="nearest")
    assert floor.primal.flops <= floor.baseline.flops
    assert near.primal.arch == "44x8d"  # the paper's FLOPs optimum: 4.191 G > 4.181 G
    assert near.primal.flops > near.baseline.flops


def test_near_ties_and_optimal_set_follow_uncertainty(table):
    # a noisy empirical table: neighbours of the optimum cannot be told apart
    noisy = curve("empirical", rel=0.08)
    res = search("resnext29", "cifar10", "1x128d", noisy)
    ties = res.near_ties["primal"]
    assert ties, "an 8% Monte Carlo error must leave near-ties"
    assert res.primal.arch not in {c.arch for c in ties}
    assert all(c.variance >= res.primal.variance for c in ties)
    assert 0 < res.primal.p_best < 1
    for prob in ("primal", "dual"):
        st = res.optimal_set[prob]
        assert 1 <= len(st.candidates) <= MAX_SET and st.coverage >= 0.95 - 1e-9
        p = [c.p_best for c in st.candidates]
        assert p == sorted(p, reverse=True) and st.size >= len(st.candidates) == min(st.size, MAX_SET)
        assert st.widths[0] <= min(c.n for c in st.candidates) <= max(c.n for c in st.candidates) <= st.widths[1]
    # a noise-free curve has no near-ties and a one-member set
    res0 = search("resnext29", "cifar10", "1x128d", curve("empirical", rel=0.0))
    assert res0.near_ties == {"primal": [], "dual": []}
    assert res0.primal.p_best == 1.0 and res0.optimal_set["primal"].members == (res0.primal.arch,)
    # overlap is the more generous rule here
    res_o = search("resnext29", "cifar10", "1x128d", noisy, ties="overlap")
    assert {c.arch for c in ties} <= {c.arch for c in res_o.near_ties["primal"]}


def test_by_model_reports_every_model_with_its_fit(table):
    res = search("resnext29", "cifar10", "1x128d", curve("auto", rel=0.05))
    assert set(res.by_model) == {"prop1", "fit2", "smooth", "empirical"}
    assert res.by_model["smooth"]["selected"] and not res.by_model["prop1"]["selected"]
    assert res.by_model["prop1"]["primal"] == "37x10d"  # the table is exactly prop1 with alpha 2.5
    assert res.by_model["empirical"]["chi2_per_dof"] is None


def test_search_errors(alpha_file, table):
    c = load_curve(alpha_file, "prop1")
    with pytest.raises(UserError, match="below the smallest member"):
        search("resnext29", "cifar10", "1x128d", c, budget_value=1000)
    for bad in ("13.8M", 0, 10**19, True):  # the library takes a count; the command parses text
        with pytest.raises(UserError, match="`budget_value`"):
            search("resnext29", "cifar10", "1x128d", c, budget_value=bad)
    with pytest.raises(UserError, match="not a member"):
        search("resnext29", "cifar10", "28-10", c)
    with pytest.raises(UserError, match="no \\(m, n\\) architecture"):
        search("wrn", "imagenet32", "28-10", c)
    with pytest.raises(UserError, match="empty"):
        search("resnext29", "cifar10", "1x128d", c, n_range="9:3")
    with pytest.raises(UserError, match="rounding"):
        search("resnext29", "cifar10", "1x128d", c, rounding="up")
    with pytest.raises(UserError, match="outside the measured widths"):
        search("resnext29", "cifar10", "1x256d", c)
    with pytest.raises(UserError, match="outside the measured widths"):
        search("resnext29", "cifar10", "1x128d", c, n_range="2:200")


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
    assert set(out) >= {"baseline", "primal", "dual", "optimal_set", "near_ties", "by_model",
                        "variance_model", "alpha", "probe"}
    for k in ("arch", "m", "n", "params", "flops", "variance", "variance_se", "rho", "p_best"):
        assert k in out["primal"] and k in out["dual"]
    for prob in ("primal", "dual"):
        st = out["optimal_set"][prob]
        assert len(st["widths"]) == 2 and 1 <= len(st["candidates"]) <= 5
        assert all({"arch", "p_best"} <= set(c) for c in st["candidates"])
    assert out["variance_model"] == "smooth"  # the default, auto, picks the smooth fit here
    assert out["by_model"]["prop1"]["primal"] == "37x10d"
    assert out["alpha"] == pytest.approx(2.5) and set(out["near_ties"]) == {"primal", "dual"}
    assert out["primal"]["params"] <= out["baseline"]["params"]
    assert main(argv + ["--variance", "prop1"]) == 0
    assert json.loads(capsys.readouterr().out)["primal"]["arch"] == "37x10d"


def test_cli_prints_the_answer_first(alpha_file, table, capsys):
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--alpha-file", str(alpha_file)]
    assert main(argv + ["--variance", "empirical"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("primal ") and "P(optimal)" in lines[0] and "GFLOPs" in lines[0]
    assert lines[1].startswith("dual ") and "compression" in lines[1]
    assert lines[2].startswith("primal optimal set") and lines[3].startswith("dual optimal set")
    assert lines[4].startswith("other variance models") and "chi2/dof" in lines[4]
    for line in lines[2:4]:  # at most five candidates each
        assert line.split(";", 1)[1].count(" 0.") + line.split(";", 1)[1].count(" 1.0") <= 5
    text = "\n".join(lines)
    assert "near-ties" not in text and "(P=" not in text  # the full lists only with --all-ties
    assert main(argv + ["--variance", "empirical", "--all-ties"]) == 0
    assert "(P=" in capsys.readouterr().out


def test_cli_table_and_out(alpha_file, table, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d",
            "--alpha-file", str(alpha_file), "--variance", "empirical", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| baseline | ResNeXt-29 1x128d | 1.00 | 13.78M | 4.18 |" in text
    assert "| primal |" in text and "| dual |" in text and "optimal set" in text
    for name in ("search.json", "search.md", "primal.png", "dual.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "primal.png").read_bytes()[:4] == b"\x89PNG"
    err = _one_line_error(capsys, argv)
    assert "already exists" in err and "--overwrite" in err
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--budget-value", "1k"], "below the smallest member"),
        (["--baseline", "28-10"], "not a member"),
        (["--baseline", "0x3d"], "not a member"),
        (["--n-range", "64:8"], "empty"),
        (["--n-range", "2-128"], "malformed"),
        (["--variance", "cubic"], "invalid choice"),
        (["--n-range", "2:200"], "outside the measured widths"),
        (["--baseline", "1x256d"], "outside the measured widths"),
        (["--rounding", "up"], "invalid choice"),
        (["--budget", "memory"], "invalid choice"),
        (["--level", "1.5"], "--level must lie"),
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
    old = tmp_path / "old.json"
    old.write_text('{"alpha": 2.0, "widths": [2, 4, 8], "variance": [1, 0.5, 0.2], "stderr": [0.1, 0.1, 0.1]}')
    assert "older collegial" in _one_line_error(capsys, base + ["--alpha-file", str(old)])
    assert "unknown model family" in _one_line_error(capsys, ["search", "resnet", "--baseline", "1x64d"])
    err = _one_line_error(capsys, ["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(tmp_path / "a.json")])
    assert "does not exist" in err
    (tmp_path / "a.json").write_text(json.dumps(alpha_obj()))
    err = _one_line_error(capsys, ["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(tmp_path / "a.json")])
    assert "'resnext29' probe" in err and "not by mlp's" in err


def test_on_the_fly_algorithm1_is_cached_per_family_and_inputs(monkeypatch, tmp_path, table, capsys):
    """Without --alpha-file the search runs run_algorithm1 for the family's own probe, once per
    probe settings (family, inputs, correlation, pairs, T, seed)."""
    calls = []

    def run_algorithm1(*, family, trials, seed, inputs, **kw):
        calls.append((family, trials, seed, inputs.kind, inputs.correlation, inputs.pairs))
        return AlphaFit.from_dict(alpha_obj(family=family) | {"trials": trials, "seed": seed})

    import collegial.ntk.alpha

    monkeypatch.setattr(collegial.ntk.alpha, "run_algorithm1", run_algorithm1)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--json", "--trials", "64",
            "--variance", "prop1"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert calls == [("resnext29", 64, 0, "relu", 0.6, 8)]
    assert first["primal"] == second["primal"] and first["primal"]["arch"] == "37x10d"
    assert "cached at" in second["alpha_source"]
    assert main(argv + ["--correlation", "0.3"]) == 0
    assert main(argv + ["--inputs", "gaussian", "--pairs", "4"]) == 0
    assert main(["search", "mlp", "--baseline", "1x64d", "--json", "--trials", "64", "--variance", "prop1"]) == 0
    # resnext38 declares resnext29's block: the cached curve is reused, not measured again
    assert main(["search", "resnext38", "--baseline", "1x96d", "--json", "--trials", "64", "--variance", "prop1"]) == 0
    capsys.readouterr()
    assert [c[0] for c in calls] == ["resnext29"] * 3 + ["mlp"]
    assert calls[1][4] == 0.3 and calls[2][3:] == ("gaussian", 0.6, 4)
    assert len(list((tmp_path / "cache" / "alpha").glob("*.json"))) == 4


def test_relaxed_solver_shares_n_between_primal_and_dual(alpha_file, table):
    c = load_curve(alpha_file, "fit2")
    res = search("resnext29", "cifar10", "1x128d", c, solver="relaxed")
    assert res.primal.n == res.dual.n and res.solver == "relaxed"
    n = np.arange(2, 129)
    b = table.per_path("params", n)
    assert res.primal.n == n[np.argmin(c(n) * b)]  # argmin V1(n) B(n)
    i = int(np.searchsorted(res.primal_curve.n, res.primal.n))
    assert res.primal_curve.y[i] == pytest.approx(res.primal.variance)  # plots show V1(n)/m
    assert res.primal.params <= res.baseline.params and res.dual.variance <= res.baseline.variance


def test_arch_probabilities_count_architectures_not_widths():
    """The dual's m changes between draws: P(optimal) is counted per m x n, not per width."""
    win = np.array([0, 0, 0, 1, 1])
    m = np.array([[3, 9], [3, 9], [4, 9], [3, 9], [3, 9]])  # width 0 wins thrice, at m = 3, 3, 4
    probs = arch_probabilities(win, m)
    assert probs == [(0, 3, 0.4), (1, 9, 0.4), (0, 4, 0.2)]
    assert arch_probabilities(win, np.array([3, 9])) == [(0, 3, 0.6), (1, 9, 0.4)]  # primal: m per width


def test_headline_is_the_most_probable_architecture(alpha_file, table):
    """The first line names each problem's most probable architecture (the point optimum beside
    it when it differs), and the probabilities are per architecture: they sum to 1 over the
    architectures the draws choose, and the optimal set's members are distinct."""
    curve = load_curve(str(alpha_file), model="empirical")
    res = search("resnext29", "cifar10", "1x128d", curve, table=table)
    for prob in ("primal", "dual"):
        head = res.headline(prob)
        st = res.optimal_set[prob]
        assert head.arch in st.members and head.p_best == max(c.p_best for c in st.candidates)
        assert len(set(st.members)) == len(st.members)
        point = getattr(res, prob)
        assert point.p_best <= head.p_best
    line = format_answer(res).splitlines()[1]
    assert line.split()[:2] == ["dual", res.headline("dual").arch]
    if res.dual.arch != res.headline("dual").arch:
        assert f"point optimum {res.dual.arch}" in line


def test_calibrated_draws_are_less_confident_and_cover_more():
    """The calibration check at reduced size (bench/calibration.py at full size): on replicate
    tables around a known truth (8 pairs, 6% errors), the calibrated draws report a lower
    P(optimal) for the headline and their optimal sets cover the true optimum at least as often
    as draws that take the standard errors as exact."""
    import dataclasses

    from collegial.search.calibration import calibration

    fit = dataclasses.replace(synthetic_fit(lambda n: np.expm1(2.5 / n), [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128],
                                            rel_stderr=0.06), pairs=8)
    base = VarianceCurve(fit, "smooth")
    got = {e: calibration(40, e, "resnext29", "cifar10", "1x128d", base=base, draws=200) for e in ("normal", "calibrated")}
    for prob in ("primal", "dual"):
        normal, cal = got["normal"][prob], got["calibrated"][prob]
        assert normal["truth"] == cal["truth"] == {"primal": "37x10d", "dual": "13x11d"}[prob]
        assert cal["head_p"] < normal["head_p"]
        assert cal["coverage"] >= normal["coverage"] >= 0.8
        assert all(0 <= rp <= 1 and 0 <= f <= 1 for _, _, _, rp, f in cal["bins"])


def test_the_widening_of_the_calibrated_draws_is_a_curve_setting():
    """``calibrated`` draws widened by 1 are the ``t`` draws; the default widening is
    CALIBRATED_SCALE; a widening <= 0 is refused."""
    from collegial.search.variance import CALIBRATED_SCALE

    fit = synthetic_fit(lambda n: np.expm1(2.5 / n), WIDTHS, rel_stderr=0.05)
    n = np.array([4, 8, 16])
    t = VarianceCurve(fit, "smooth", 50, estimator="t").draws(n, for_argmin=True)
    one = VarianceCurve(fit, "smooth", 50, estimator="calibrated", widening=1.0)
    assert np.array_equal(one.draws(n, for_argmin=True), t)
    assert np.array_equal(one.with_model("smooth").draws(n, for_argmin=True), t)  # kept by with_model
    wide = VarianceCurve(fit, "smooth", 50, estimator="calibrated")
    assert wide.widening == CALIBRATED_SCALE and not np.array_equal(wide.draws(n, for_argmin=True), t)
    with pytest.raises(UserError, match="`widening`"):
        VarianceCurve(fit, "smooth", 50, widening=0.0)


def test_replicates_of_a_precise_truth_carry_the_errors_of_the_searchs_table():
    """A truth measured at T = 40000 gives replicate tables with the errors of T = 2000 (sqrt(20)
    larger); a synthetic fit (0 trials recorded) keeps its own."""
    import dataclasses

    from collegial.search.calibration import replicate_fit

    fit = dataclasses.replace(synthetic_fit(lambda n: np.expm1(2.5 / n), WIDTHS, rel_stderr=0.01), pairs=8)
    precise = dataclasses.replace(fit, trials=40000)
    truth = np.asarray(fit.variance)
    rng = np.random.default_rng(0)
    rel = [np.std(np.log(np.asarray(replicate_fit(f, truth, rng, 2000).variance) / truth))
           for f in (precise, fit) for _ in range(200)]
    assert np.mean(rel[:200]) == pytest.approx(0.01 * np.sqrt(20), rel=0.1)
    assert np.mean(rel[200:]) == pytest.approx(0.01, rel=0.1)
    assert replicate_fit(precise, truth, rng, 2000).trials == 2000 and replicate_fit(fit, truth, rng, 2000).trials == 0


def test_robustness_counts_agreement_and_unions_the_sets(table):
    """search --robust: the answer under each probe design and acceptable model, the union of
    their optimal sets, and a first line that says robust or conditional on the probe."""
    from collegial.search.robust import format_robustness, robustness

    widths = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128]

    def curve_of(f):
        return VarianceCurve(synthetic_fit(f, widths, rel_stderr=0.02), "smooth", draws_count=100)

    def solve(c):
        return search("resnext29", "cifar10", "1x128d", c, table=table)

    same = curve_of(lambda n: np.expm1(2.5 / n))
    res = solve(same)
    rob = robustness(res, {"a": same, "b": curve_of(lambda n: np.expm1(2.5 / n) * 1.01)}, solve)
    assert all(c.answer["primal"] == res.headline("primal").arch for c in rob.combos)
    assert rob.robust("primal") and rob.line("primal").startswith(f"robust: primal {res.headline('primal').arch} under")
    other = curve_of(lambda n: 0.05 * n ** -0.3)  # flat: wide paths win
    rob2 = robustness(res, {"a": same, "b": other, "c": other}, solve)
    assert not rob2.robust("primal")
    assert rob2.line("primal").startswith("conditional on the probe: primal n = ")
    held = dict(rob2.union("primal"))
    assert held[res.headline("primal").arch] >= 1 and max(held.values()) <= len(rob2.combos)
    assert "optimal set over designs" in format_robustness(rob2)
    assert set(rob2.to_dict()) >= {"combinations", "robust", "union"}


def test_cli_robust_measures_each_design_once_and_says_it_first(monkeypatch, tmp_path, capsys):
    """search --robust runs the family's probe at the other documented correlations (cached like
    any curve), skips data inputs for a dataset not shipped here, and opens with the verdict."""
    calls = []

    def run_algorithm1(*, family, trials, seed, inputs, **kw):
        calls.append(inputs.correlation)
        alpha = {0.3: 2.5, 0.6: 2.5, 0.9: 6.0}[inputs.correlation]  # 0.9 moves the answer
        return AlphaFit.from_dict(alpha_obj(alpha=alpha, family=family) | {
            "trials": trials, "seed": seed, "inputs": "relu", "correlation": inputs.correlation, "pairs": 8})

    import collegial.ntk.alpha

    monkeypatch.setattr(collegial.ntk.alpha, "run_algorithm1", run_algorithm1)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--trials", "64",
            "--variance", "prop1", "--robust", "--no-m-check", "--draws", "100"]
    assert main(argv + ["--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert sorted(calls) == [0.3, 0.6, 0.9]
    rob = obj["robust"]
    assert {c["design"] for c in rob["combinations"]} == {"relu(corr=0.3)", "relu(corr=0.6)", "relu(corr=0.9)"}
    assert any("cifar10 is not shipped" in s for s in rob["skipped"])
    assert main(argv) == 0  # cached: no new measurement
    first = capsys.readouterr().out.splitlines()[0]
    assert sorted(calls) == [0.3, 0.6, 0.9]
    assert first.startswith(("robust: primal", "conditional on the probe: primal")), first


def test_a_pooled_truth_is_the_mean_of_the_other_fresh_runs(monkeypatch):
    """``truth="pooled"``: each fresh run is scored against the mean table of the *other* runs
    (other input pairs), not against the base curve; fewer than 3 runs are refused. Here the base
    curve is far from the runs, whose pooled answer is the truth."""
    import dataclasses

    import collegial.search.calibration as cal

    widths = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128]
    runs_truth = lambda n: np.expm1(2.5 / n)  # noqa: E731
    base = VarianceCurve(dataclasses.replace(synthetic_fit(lambda n: 3 * np.expm1(9.0 / n), widths, rel_stderr=0.05),
                                             pairs=8), "smooth")
    rng = np.random.default_rng(1)

    def fake_run(*, family, trials, seed):
        v = runs_truth(np.asarray(widths, float)) * np.exp(0.001 * rng.standard_normal(len(widths)))
        fit = dataclasses.replace(synthetic_fit(lambda n: v, widths, rel_stderr=0.03), pairs=8, trials=trials)
        return fit, None

    monkeypatch.setattr(cal, "alpha_on_the_fly", fake_run)
    with pytest.raises(UserError, match="at least 3 fresh runs"):
        cal.calibration(0, "calibrated", "resnext29", "cifar10", "1x128d", base=base, fresh=2, truth="pooled")
    pooled = cal.calibration(0, "calibrated", "resnext29", "cifar10", "1x128d", base=base, fresh=6,
                             fresh_trials=2000, truth="pooled", draws=100)
    truth = search("resnext29", "cifar10", "1x128d", VarianceCurve(synthetic_fit(runs_truth, widths), "smooth"))
    assert pooled["primal"]["truth"] == truth.primal.arch
    against_base = cal.calibration(0, "calibrated", "resnext29", "cifar10", "1x128d", base=base, fresh=6,
                                   fresh_trials=2000, truth="base", draws=100)
    assert against_base["primal"]["truth"] != truth.primal.arch
    assert pooled["primal"]["coverage"] > against_base["primal"]["coverage"]


def test_an_answer_from_fewer_initializations_per_pair_than_calibrated_says_so():
    """P(optimal) was calibrated at CALIBRATED_PER_PAIR initializations per input pair; a curve
    with fewer carries a note for the answer's first lines, one with as many (or a synthetic
    table) none."""
    import dataclasses

    from collegial.search.variance import CALIBRATED_PER_PAIR, few_trials_note

    fit = dataclasses.replace(synthetic_fit(lambda n: np.expm1(2.5 / n), WIDTHS, rel_stderr=0.05), pairs=8)
    assert few_trials_note(fit) is None  # synthetic: no trials recorded
    assert few_trials_note(dataclasses.replace(fit, trials=8 * CALIBRATED_PER_PAIR)) is None
    note = few_trials_note(dataclasses.replace(fit, trials=200))
    assert note is not None and note.startswith("note: 25 initializations per input pair (T=200)")
    path = dataclasses.replace(fit, trials=200).to_json()
    assert any(n.startswith("note: 25 initializations") for n in load_curve(path, family="resnext29").notes)
