"""Measured training throughput (collegial.train.throughput) and the primal under the baseline's
throughput (collegial.search.speed, ``search --budget throughput``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import collegial.train.throughput as tp
from collegial.cli import main
from collegial.ntk.curve import synthetic_fit
from collegial.search.speed import throughput_primal
from collegial.search.variance import VarianceCurve


def test_measure_throughput_on_a_tiny_model_is_cached(tmp_path, monkeypatch):
    got = tp.measure_throughput("mlp", "2x4d", "mnist", batch_size=8, cache=tmp_path, steps=2)
    assert got.images_per_s > 0 and got.low <= got.images_per_s <= got.high
    assert got.steps >= 2 and got.channels_last is False and got.device.startswith("cpu:")
    conv = tp.measure_throughput("resnext11", "2x2d", "mnist", batch_size=4, steps=1, warmup=0)
    assert conv.images_per_s > 0  # both layouts timed on an image model; the faster one kept
    calls = []
    monkeypatch.setattr(tp, "_step_rates", lambda *a: calls.append(a) or [1.0])
    again = tp.measure_throughput("mlp", "2x4d", "mnist", batch_size=8, cache=tmp_path, steps=2)
    assert again == got and not calls  # from the cache, not measured again
    tp.measure_throughput("mlp", "2x4d", "mnist", batch_size=16, cache=tmp_path, steps=2)
    assert calls  # another batch size is another measurement


def _curve():
    fit = synthetic_fit(lambda n: np.expm1(2.5 / n), [2, 4, 8, 16, 32, 64, 128], rel_stderr=0.02, family="mlp")
    return VarianceCurve(fit, "smooth", 200)


def test_throughput_primal_takes_the_most_paths_as_fast_as_the_baseline():
    """With a rate that falls as m * n grows, each width gets the largest m at least as fast as
    the baseline, and the answer is the least variance among them."""
    def rate(arch: str) -> float:
        m, n = (int(v) for v in arch[:-1].split("x"))
        return 1e6 / (m * n + 50 * n**0.5)

    ans = throughput_primal("mlp", "1x64d", _curve(), [2, 4, 8, 16, 32, 64], rate)
    base = rate("1x64d")
    for c in ans.candidates:
        assert rate(c["arch"]) >= base and rate(f"{c['m'] + 1}x{c['n']}d") < base
    best = min(ans.candidates, key=lambda c: c["variance"])
    assert ans.best["arch"] == best["arch"] and ans.best["variance"] < ans.candidates[-1]["variance"]
    assert sum(ans.p_best.values()) == pytest.approx(1.0)
    assert all(rate(a) == r for a, r in ans.measured)


def test_search_budget_throughput_cli(tmp_path, monkeypatch, capsys):
    fit = synthetic_fit(lambda n: np.expm1(2.5 / n), [2, 4, 8, 16, 32, 64, 128], rel_stderr=0.02, family="mlp")
    d = fit.to_dict()
    alpha = tmp_path / "alpha.json"
    alpha.write_text(json.dumps(d))

    def fake(family, arch, dataset, **kw):
        m, n = (int(v) for v in arch[:-1].split("x"))
        return tp.Throughput(family, arch, dataset, kw["batch_size"], "cpu:fake", 1e6 / (m * n + 50 * n**0.5),
                             1.0, 2.0, 3, False)

    monkeypatch.setattr(tp, "measure_throughput", fake)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    argv = ["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(alpha), "--budget", "throughput",
            "--no-m-check", "--draws", "100", "--allow-probe-mismatch"]
    assert main(argv + ["--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["throughput"]["batch_size"] == 128  # the MNIST recipe's batch
    best = obj["throughput"]["primal_at_throughput"]["best"]
    assert best["ratio"] >= 1.0 and obj["throughput"]["ratio"]["1x64d"] == 1.0
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"primal at the baseline's throughput: {best['arch']}") for line in lines[:3])
    assert any(line.startswith("speed: primal") for line in lines[:4])
    assert main(argv + ["--throughput-batch", "0"]) == 2
