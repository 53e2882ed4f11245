"""The variance-curve module: models, goodness of fit, one out-of-grid rule, the alpha.json schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from collegial.errors import UserError
from collegial.ntk.curve import SCHEMA_VERSION, AlphaFit, synthetic_fit
from collegial.ntk.fits import MODELS, VarianceModel, fit_params

N = np.array([2, 3, 4, 6, 8, 12, 16, 32, 64, 128], dtype=float)


def _fit(v_of_n=lambda n: np.expm1(3.0 / n), rel=0.05, **kw) -> AlphaFit:
    base = synthetic_fit(v_of_n, N.astype(int), rel_stderr=rel)
    d = {**base.to_dict(), "inputs": "relu", "correlation": 0.6, "pairs": 8, **kw}
    return AlphaFit.from_dict(d)


def test_models_recover_exact_curves() -> None:
    prop1 = _fit().model("prop1")
    assert prop1.params[0] == pytest.approx(3.0, rel=1e-12)
    f2 = _fit(lambda n: 0.7 * n**-0.4 * np.exp(2.5 / n)).model("fit2")
    np.testing.assert_allclose(f2.params, [math.log(0.7), 0.4, 2.5], rtol=1e-9)
    c = [0.3, -0.9, 0.05, -0.01]
    sm = _fit(lambda n: np.exp(c[0] + c[1] * np.log(n) + c[2] * np.log(n) ** 2 + c[3] * np.log(n) ** 3)).model("smooth")
    np.testing.assert_allclose(sm.params, c, rtol=1e-8, atol=1e-10)
    for m in (prop1, f2, sm):
        chi2, dof = m.chi2
        assert chi2 == pytest.approx(0.0, abs=1e-12) and dof == N.size - m.params.size
        assert m.p_value == pytest.approx(1.0)


def test_empirical_interpolates_in_log_log() -> None:
    fit = _fit()
    emp = fit.model("empirical")
    np.testing.assert_allclose(emp(N), fit.variance, rtol=1e-12)
    mid = emp(np.array([math.sqrt(8 * 12)]))[0]
    assert mid == pytest.approx(math.sqrt(fit.variance[4] * fit.variance[5]), rel=1e-12)
    assert emp.chi2[1] == 0 and "interpolates" in emp.gof()


@pytest.mark.parametrize("kind", MODELS)
def test_one_out_of_grid_rule(kind: str) -> None:
    m = _fit().model(kind)
    assert m.domain == (2, 128)
    for bad in (1, 129, 1000):
        with pytest.raises(UserError, match="outside the measured widths 2..128"):
            m(np.array([bad]))
        with pytest.raises(UserError, match="outside"):
            m.draws(np.array([bad]), 4)


@pytest.mark.parametrize("kind", MODELS)
def test_bootstrap_refits_and_stderr(kind: str) -> None:
    m = _fit(rel=0.05).model(kind)
    n = np.array([2, 5, 10, 100])
    d = m.draws(n, 2000, seed=1)
    assert d.shape == (2000, 4)
    # draws are centred on the point fit, with a spread of the order of the table's errors
    np.testing.assert_allclose(np.median(d, axis=0), m(n), rtol=0.03)
    se = m.stderr(n, 2000, seed=1)
    assert np.all(se > 0) and np.all(se / m(n) < 0.1)
    assert np.array_equal(m.draws(n, 50, seed=3), m.draws(n, 50, seed=3))
    # without standard errors there is nothing to resample
    flat = _fit(rel=0.0).model(kind)
    np.testing.assert_allclose(flat.stderr(n, 10), 0, atol=1e-12)


def test_prop1_bootstrap_matches_the_delta_method() -> None:
    fit = _fit(rel=0.02)
    alphas = fit.model("prop1").param_draws(4000, seed=0)[:, 0]
    assert alphas.std() == pytest.approx(fit.alpha_stderr, rel=0.08)


def test_auto_is_smooth_where_it_fits_else_empirical() -> None:
    assert _fit().auto_model() == "smooth"
    rng = np.random.default_rng(0)
    wiggle = 1 + 0.3 * np.sign(rng.standard_normal(N.size))  # 30% jumps, 1% errors: nothing smooth fits
    bad = _fit(lambda n: np.expm1(3.0 / n) * wiggle, rel=0.01)
    assert bad.model("smooth").p_value < 1e-6
    assert bad.auto_model() == "empirical"


def test_goodness_of_fit_is_a_chi2() -> None:
    """With the errors the table claims, chi^2/dof of the true model is ~1 on average."""
    rng = np.random.default_rng(5)
    true = np.expm1(3.0 / N)
    chis = []
    for _ in range(200):
        v = true * np.exp(0.05 * rng.standard_normal(N.size))
        m = VarianceModel("prop1", N.astype(np.int64), v, 0.05 * v)
        chis.append(m.chi2[0] / m.chi2[1])
    assert 0.8 < np.mean(chis) < 1.25


def test_schema_roundtrip_and_version(tmp_path) -> None:
    fit = _fit()
    obj = json.loads(fit.to_json())
    assert obj["schema_version"] == SCHEMA_VERSION
    for key in ("family", "inputs", "correlation", "pairs", "trials", "seed", "widths", "variance",
                "stderr", "fits", "alpha", "fit2", "provenance", "auto_model"):
        assert key in obj, key
    assert set(obj["fits"]) == set(MODELS) and "chi2_per_dof" in obj["fits"]["smooth"]
    assert {"collegial", "torch"} <= set(obj["provenance"]) and "versions" not in obj  # versions once
    path = fit.save(tmp_path)
    assert (tmp_path / "alpha.png").stat().st_size > 1000
    again = AlphaFit.from_json(path)
    assert again.to_dict() == fit.to_dict() and AlphaFit.from_json(tmp_path).widths == fit.widths
    with pytest.raises(UserError, match="overwrite"):
        fit.save(tmp_path)
    with pytest.raises(UserError, match="directory"):
        fit.to_json(tmp_path)  # a folder is not a file
    # a path ending in .json is that file (and the .png beside it), not a folder of that name
    named = fit.save(tmp_path / "sub" / "mine.json")
    assert named == tmp_path / "sub" / "mine.json" and named.is_file()
    assert (tmp_path / "sub" / "mine.png").is_file() and not (named / "alpha.json").exists()
    assert AlphaFit.from_json(named).widths == fit.widths
    with pytest.raises(UserError, match="overwrite"):
        fit.save(named)


def test_old_and_foreign_files_are_refused_in_one_line(tmp_path) -> None:
    old = {"alpha": 5.8, "fit2": {"beta": 3.5, "p": 0.8, "alpha": 4.6}, "widths": [2, 4, 8],
           "variance": [2.0, 1.0, 0.5], "stderr": [0.1, 0.05, 0.02], "trials": 2000}
    p = tmp_path / "alpha.json"
    p.write_text(json.dumps(old))
    with pytest.raises(UserError, match="older collegial.*regenerate it with 'collegial fit-alpha"):
        AlphaFit.from_json(p)
    p.write_text(json.dumps({**old, "schema_version": 99}))
    with pytest.raises(UserError, match="schema_version 99"):
        AlphaFit.from_json(p)
    good = json.loads(_fit().to_json())
    for bad, msg in [({"variance": [1.0] * 9 + [-1.0]}, "must lie in"),
                     ({"widths": [2] * 10}, "increasing"),
                     ({"stderr": [None] * 10}, "finite"),
                     ({"widths": [2, 3]}, "differ in length")]:
        p.write_text(json.dumps({**good, **bad}))
        with pytest.raises(UserError, match=msg):
            AlphaFit.from_json(p)
    p.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        AlphaFit.from_json(p)
    with pytest.raises(UserError, match="does not exist"):
        AlphaFit.from_json(tmp_path / "nope.json")


def test_fit_params_is_vectorized_over_tables() -> None:
    v = np.expm1(np.array([[2.0], [3.0]]) / N[None, :])
    for kind in ("prop1", "fit2", "smooth"):
        batch = fit_params(kind, N, v)
        one = fit_params(kind, N, v[1])
        np.testing.assert_allclose(batch[1], one, rtol=1e-12)


def test_fits_are_not_biased_by_standard_errors_that_move_with_the_values():
    """Each width's standard error is estimated from the same noisy sample as its value (a rare
    large K raises both, the error more), so weights ``v / se`` would favour low values and bias
    the fit low. The smooth fit's weights come from the relative errors smoothed over the widths:
    on tables whose errors move with their values, its mean stays within 3% of the truth where
    the raw weights fall 6-15% below."""
    widths = np.array([2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128])
    truth = np.expm1(2.5 / widths)
    rng = np.random.default_rng(0)
    ours, raw = [], []
    for _ in range(300):
        z = rng.standard_normal(widths.size)
        v = truth * np.exp(0.15 * z - 0.15**2 / 2)
        se = v * 0.15 * np.exp(0.8 * z)  # a high value comes with a higher relative error
        model = VarianceModel("smooth", widths, v, se)
        ours.append(model(widths))
        raw_params = fit_params("smooth", widths, v, v / se)
        raw.append(np.exp(raw_params @ np.stack([np.ones(widths.size), np.log(widths), np.log(widths) ** 2,
                                                  np.log(widths) ** 3])))
    bias_ours = np.mean(np.array(ours) / truth, 0)
    bias_raw = np.mean(np.array(raw) / truth, 0)
    assert np.all(np.abs(bias_ours - 1) < 0.03), bias_ours  # measured: 0.974-1.009
    assert np.all(bias_raw < 0.95), bias_raw  # measured: 0.85-0.94
