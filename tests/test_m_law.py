"""The 1/m-law experiment: per-layer terms of K against autograd, the experiment's columns
against fit-alpha's Monte Carlo, and ``collegial reproduce m-law``."""

from __future__ import annotations

import json

import pytest
import torch

from collegial.cli import main
from collegial.experiments.m_law import TERMS, MLawConfig, layer_terms, run_m_law
from collegial.ntk.alpha import monte_carlo
from collegial.ntk.probe import ResNeXtBlockProbe
from collegial.ntk.variance import normalized_variance
from collegial.ntk.whole import Pairs, WholeModelNtk


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("m,n", [(1, 2), (3, 2), (2, 5)])
def test_gram_terms_are_the_whole_model_engines_group_terms(m: int, n: int) -> None:
    """One split for both: the probe's fast per-layer terms equal the group terms that
    ``collegial verify``'s engine computes for the same block, weights and pair."""
    probe = ResNeXtBlockProbe(16, 4, seed=1, dtype=torch.float64)
    w = probe.sample(m, n, 3, seed=7)
    terms = probe.gram_terms(w)
    assert terms.shape == (3, 3)
    pairs = Pairs(probe.x, probe.r.reshape(1, -1))
    for t in range(3):
        for method in ("loop", "auto"):
            eng = WholeModelNtk(lambda: probe.load(probe.block(m, n), w, t), pairs, bn="running",
                                method=method, dtype=torch.float64)
            ref, groups = eng.terms(eng.model(0, t))
            assert tuple(groups.names) == TERMS and set(groups.collegial) == set(TERMS)
            torch.testing.assert_close(terms[t], ref[0])
    torch.testing.assert_close(terms.sum(1), probe.k_gram(w))


@pytest.mark.parametrize("param", ["standard", "ntk"])
def test_block_without_final_relu_gram_equals_autograd(param: str) -> None:
    probe = ResNeXtBlockProbe(16, 4, seed=2, dtype=torch.float64, final_relu=False, parameterization=param)
    with_relu = ResNeXtBlockProbe(16, 4, seed=2, dtype=torch.float64, parameterization=param)
    for m, n in [(1, 3), (2, 4), (1, 48)]:
        w = probe.sample(m, n, 2, seed=m + n)
        torch.testing.assert_close(probe.k_gram(w), probe.k_grouped(w))
        assert not torch.allclose(probe.k_gram(w), with_relu.k_gram(w))
    with pytest.raises(ValueError):
        probe.k_loop(1, 2, 2, seed=0)


def test_standard_column_is_fit_alphas_monte_carlo_and_mean_form_differs() -> None:
    cfg = MLawConfig(multiplicities=(2, 4), width=2, trials=40, channels=8, seed=3)
    rows = run_m_law(cfg)
    assert [r.m for r in rows] == [1, 2, 4]
    probe = ResNeXtBlockProbe(8, seed=3)
    for r in rows:
        nv = normalized_variance(monte_carlo(probe, r.m, 2, 40, seed=3, workers=1))
        assert r.v_standard == pytest.approx(nv.v, rel=1e-6)  # float32 K, summed in float64 here
        assert sum(r.share.values()) == pytest.approx(1.0) and sum(r.share_var.values()) == pytest.approx(1.0)
    assert rows[0].v_mean_form == rows[0].v_standard and rows[0].ratio_standard == 1.0
    assert rows[2].v_mean_form != pytest.approx(rows[2].v_standard, rel=1e-3)
    # the expand layer's share of E[K] grows with m (a sum over paths, not a mean)
    assert rows[0].share["expand"] < rows[1].share["expand"] < rows[2].share["expand"]
    t = layer_terms(probe, 4, 2, 40, 3)
    assert t.shape == (40, 3) and t.dtype == torch.float64


def test_cli_writes_files_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    args = ["reproduce", "m-law", "--trials", "24", "--m", "2", "--width", "2", "--channels", "8"]
    out = tmp_path / "mlaw"
    assert main([*args, "--json", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["m"] for r in res["rows"]] == [1, 2]
    for name in ("m_law.md", "m_law.json", "m_law.png"):
        assert (out / name).stat().st_size > 0
    before = (out / "m_law.json").read_text()
    assert main([*args, "--out", str(out), "--seed", "1"]) == 2
    assert (out / "m_law.json").read_text() == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    assert main([*args, "--no-final-relu"]) == 0
    assert "without the ReLU" in capsys.readouterr().out
    for bad in (["--m", "0"], ["--m", "x"], ["--trials", "1"]):
        assert main([*args, *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_m_law_names_and_checks_its_inputs(capsys, tmp_path) -> None:
    from collegial.cli import main

    assert main(["reproduce", "m-law", "--inputs", "data"]) == 2
    assert "relu or gaussian" in capsys.readouterr().err
    assert main(["reproduce", "m-law", "--inputs", "relu", "--trials", "8", "--channels", "16",
                 "--m", "2", "--width", "2"]) == 0
    assert "inputs relu(corr=0.6) (one pair)" in capsys.readouterr().out
