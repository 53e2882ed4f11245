"""``collegial verify`` and its library (``collegial.search.verify``): the estimates and group
shares from the terms, the cache, the re-solve on measured values, and tiny CLI runs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from collegial.cli import main
from collegial.ntk.variance import Moments, normalized_variance
from collegial.search.verify import (
    Measured,
    VerifyResult,
    VerifySettings,
    candidates_to_verify,
    resolve_measured,
    summarize,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))


def test_summarize_estimates_and_shares():
    g = torch.Generator().manual_seed(0)
    # three groups, the third correlated with the first: covariances must enter the shares
    a = 1 + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    b = 2 + 0.1 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    c = 0.5 * a + 0.05 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    terms = torch.stack([a, b, c], dim=2)
    row = summarize("4x8d", terms, ["x", "y", "z"], ["x"], 123, 1.0)
    k = terms.sum(2)
    per = [normalized_variance(Moments.of(k[:, p])) for p in range(4)]
    assert row.v == pytest.approx(np.mean([e.v for e in per]))
    assert row.mc_stderr == pytest.approx(math.sqrt(sum(e.stderr**2 for e in per)) / 4)
    assert row.stderr >= row.mc_stderr
    assert sum(row.share_mean.values()) == pytest.approx(1.0)
    assert sum(row.share_var.values()) == pytest.approx(1.0)
    assert row.share_var["z"] > 0.2 and row.share_var["y"] < 0.1  # z moves with x, y barely moves
    assert (row.m, row.n, row.trials) == (4, 8, 200)
    assert row.collegial_share() == (row.share_mean["x"], row.share_var["x"])


def test_summarize_refuses_a_nonpositive_mean():
    from collegial.errors import UserError

    terms = -torch.ones(10, 2, 1, dtype=torch.float64) + 0.01 * torch.arange(20.0).reshape(10, 2, 1)
    with pytest.raises(UserError, match="E\\[K\\] <= 0"):
        summarize("1x8d", terms, ["x"], [], 1, 0.0)


def test_summarize_leaves_out_pairs_with_nonpositive_mean():
    g = torch.Generator().manual_seed(1)
    terms = (1 + 0.2 * torch.randn(50, 3, 1, generator=g, dtype=torch.float64))
    terms[:, 1] -= 2.0  # pair 1: E[K] < 0
    row = summarize("2x8d", terms, ["x"], [], 1, 0.0)
    assert math.isnan(row.per_pair[1]) and "pair(s) 1 left out" in row.note
    k = terms.sum(2)
    assert row.v == pytest.approx(np.mean([normalized_variance(Moments.of(k[:, p])).v for p in (0, 2)]))


def _row(arch, v, params, role=""):
    m, n = (int(t) for t in arch[:-1].split("x"))
    return Measured(arch, m, n, params, v, 0.01, 0.01, 1.0, [v], [0.01], {}, {}, [], 0.0, 8, role=role)


def test_resolve_on_measured_values():
    res = SimpleNamespace(baseline=SimpleNamespace(arch="1x64d"), budget_kind="params", budget=1000,
                          family="resnext11", dataset="mnist")
    rows = [_row("1x64d", 0.50, 1000, "baseline"), _row("26x3d", 0.40, 200), _row("174x3d", 0.45, 990),
            _row("5x27d", 0.30, 1001), _row("61x2d", 0.55, 150)]
    out = resolve_measured(res, VerifyResult("resnext11", VerifySettings("mnist"), rows, []))
    assert out["primal"]["arch"] == "26x3d"  # least measured v within the budget (5x27d is over it)
    assert out["dual"]["arch"] == "26x3d"  # fewest params with v <= the baseline's (61x2d is above it)
    assert out["dual"]["compression"] == pytest.approx(5.0)


def test_candidates_cover_answers_sets_and_curves():
    def curve(ms, ns):
        return SimpleNamespace(m=np.array(ms), n=np.array(ns), feasible=np.ones(len(ms), bool))

    res = SimpleNamespace(
        baseline=SimpleNamespace(arch="1x64d"), primal=SimpleNamespace(arch="174x3d"),
        dual=SimpleNamespace(arch="26x3d"),
        optimal_set={"primal": SimpleNamespace(members=("174x3d", "297x2d")), "dual": SimpleNamespace(members=("26x3d",))},
        primal_curve=curve([297, 174, 50, 10], [2, 3, 8, 20]), dual_curve=curve([40, 26, 8, 2], [2, 3, 8, 20]))
    roles = candidates_to_verify(res)
    assert roles["1x64d"] == "baseline" and roles["174x3d"] == "primal" and roles["26x3d"] == "dual"
    assert roles["297x2d"] == "primal set"
    assert {"10x20d", "2x20d"} <= set(roles)  # the curves' far ends


def test_verify_cli_tiny(tmp_path, capsys):
    out = tmp_path / "v"
    argv = ["verify", "resnext11", "2x4d", "4x4d", "--trials", "4", "--pairs", "2", "--no-predict", "--no-progress",
            "--json", "--out", str(out)]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    rows = obj["measured"]
    assert [r["arch"] for r in rows] == ["2x4d", "4x4d"]
    assert all(r["v"] > 0 and r["trials"] == 4 and len(r["per_pair"]) == 2 for r in rows)
    assert sum(rows[0]["share_mean"].values()) == pytest.approx(1.0)
    assert obj["settings"]["bn"] == "batch" and "provenance" in obj
    assert json.loads((out / "verify.json").read_text())["measured"][1]["v"] == rows[1]["v"]
    assert "Whole-model NTK variance" in (out / "verify.md").read_text()
    # a second run on --out refuses; the cache makes a repeat run return the same numbers
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(tmp_path / "v2")]) == 0
    again = json.loads(capsys.readouterr().out)["measured"]
    assert [r["v"] for r in again] == [r["v"] for r in rows]


@pytest.mark.parametrize("bad, msg", [
    (["--trials", "2"], "at least 4 initializations"),
    (["--pairs", "0"], "at least 1 pair"),
    (["--model-arg", "depth"], "KEY=VALUE"),
    (["--model-arg", "bogus=3"], "bogus"),
])
def test_verify_cli_errors_are_one_line(bad, msg, capsys):
    assert main(["verify", "mlp", "2x4d", "--no-predict", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_search_verify_tiny(tmp_path, capsys):
    from collegial.models import get_family
    from collegial.ntk.curve import synthetic_fit

    d = synthetic_fit(lambda n: np.expm1(2.5 / n), [2, 3, 4, 6, 8, 12, 16, 32, 64, 128], rel_stderr=0.03,
                      family="resnext11").to_dict()
    shape = list(get_family("resnext11").probe_input_shape)
    d.update(input_shape=shape, channels=shape[0], spatial=shape[1])
    alpha = tmp_path / "alpha.json"
    alpha.write_text(json.dumps(d))
    argv = ["search", "resnext11", "--baseline", "1x16d", "--n-range", "2:8", "--alpha-file", str(alpha),
            "--no-m-check", "--draws", "50", "--verify", "--verify-trials", "4", "--verify-pairs", "2", "--json"]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    ver = obj["verify"]
    roles = {r["arch"]: r["role"] for r in ver["measured"]}
    assert roles[obj["baseline"]["arch"]] == "baseline" and roles[obj["primal"]["arch"]] == "primal"
    assert roles[obj["dual"]["arch"]] in ("dual", "primal")  # the dual may equal the primal
    assert any(r.endswith("curve") for r in roles.values())
    row = next(r for r in ver["measured"] if r["role"] == "primal")
    assert row["predicted"] == pytest.approx(obj["primal"]["variance"], rel=1e-9)
    assert row["ratio"] == pytest.approx(row["v"] / row["predicted"])
    assert ver["resolved"]["candidates"] == len(ver["measured"])
    assert obj["notes"][0].startswith("whole-model check:") and "re-solved" in obj["notes"][1]
    # a bad whole-model option is refused before any work
    assert main([*argv, "--verify-trials", "1"]) == 2
    assert "at least 4" in capsys.readouterr().err


def _shard_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from collegial.search.verify import measure_terms
    from collegial.ntk.whole import draw_pairs

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    imgs = torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pairs = draw_pairs(imgs, None, 2, 10, seed=0)[0]
    terms = measure_terms("resnext11", "2x4d", "mnist", pairs, VerifySettings("mnist", pairs=2, trials=5))[0]
    torch.save(terms, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_initializations_sharded_over_ranks_give_the_same_terms(tmp_path):
    import socket

    from collegial.ntk.whole import draw_pairs
    from collegial.search.verify import measure_terms

    imgs = torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pairs = draw_pairs(imgs, None, 2, 10, seed=0)[0]
    single = measure_terms("resnext11", "2x4d", "mnist", pairs, VerifySettings("mnist", pairs=2, trials=5))[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "terms")
    torch.multiprocessing.spawn(_shard_worker, args=(2, port, out), nprocs=2, join=True)
    for rank in range(2):
        torch.testing.assert_close(torch.load(f"{out}.{rank}"), single, rtol=1e-5, atol=0)


def test_rank_agreement_exact_permutation_p():
    from collegial.search.verify import rank_agreement

    rho, p = rank_agreement([1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 120)  # the identity and its reverse
    rho, p = rank_agreement([1, 2, 3, 4], [2, 1, 4, 3])
    assert rho == pytest.approx(0.6) and 0 < p <= 1


@pytest.mark.parametrize("argv", [
    ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--verify", "--no-m-check"],
    ["verify", "resnext29", "2x4d", "--dataset", "cifar10"],
])
def test_missing_images_are_refused_before_any_work(argv, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data-dir" in err[0], err
    assert not (tmp_path / "cache" / "alpha").exists()  # Algorithm 1 never started
