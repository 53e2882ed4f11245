"""Streaming moments, the normalized variance and its standard error, and sharding over ranks."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch

from collegial.ntk.variance import Moments, merge_distributed, normalized_variance


pytestmark = pytest.mark.usefixtures("one_thread")


def _central(x: np.ndarray) -> tuple[float, float, float, float]:
    mu = x.mean()
    d = x - mu
    return mu, (d**2).sum(), (d**3).sum(), (d**4).sum()


@pytest.mark.parametrize("splits", [[1000], [1, 999], [7, 300, 2, 691], [500, 500], [999, 1]])
def test_merge_equals_one_pass(splits: list[int]) -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, size=sum(splits)) + 1e3  # an offset stresses cancellation
    mom = Moments()
    start = 0
    for s in splits:
        mom.update(torch.from_numpy(x[start : start + s]))
        start += s
    mu, m2, m3, m4 = _central(x)
    assert mom.count == len(x)
    assert mom.mean == pytest.approx(mu, rel=1e-14)
    assert mom.m2 == pytest.approx(m2, rel=1e-10)
    assert mom.m3 == pytest.approx(m3, rel=1e-7, abs=1e-6 * abs(m2) ** 1.5)
    assert mom.m4 == pytest.approx(m4, rel=1e-9)
    assert Moments().merge(mom) == mom and mom.merge(Moments()) == mom
    assert Moments.from_tensor(mom.to_tensor()) == mom


def _jackknife_loop(x: np.ndarray) -> float:
    """The slow reference: the ratio recomputed without each value in turn."""
    ratio = lambda y: y.var(ddof=1) / y.mean() ** 2  # noqa: E731
    loo = [ratio(np.delete(x, i)) for i in range(len(x))]
    return len(x) * ratio(x) - (len(x) - 1) * float(np.mean(loo))


def test_normalized_variance_value() -> None:
    x = np.random.default_rng(1).lognormal(0.0, 0.5, size=500)
    nv = normalized_variance(Moments.of(x))
    assert nv.uncorrected == pytest.approx(x.var(ddof=1) / x.mean() ** 2, rel=1e-12)
    assert nv.v == pytest.approx(_jackknife_loop(x), rel=1e-9)
    assert nv.v != nv.uncorrected
    assert nv.trials == 500 and nv.stderr > 0
    # streamed in chunks: the same sample, the same estimate
    chunked = Moments().update(torch.from_numpy(x[:123])).update(torch.from_numpy(x[123:]))
    assert normalized_variance(chunked).v == pytest.approx(nv.v, rel=1e-12)
    # moments without their sample (from a tensor): the plain ratio
    assert normalized_variance(Moments.from_tensor(Moments.of(x).to_tensor())).v == pytest.approx(nv.uncorrected)
    with pytest.raises(ValueError):
        normalized_variance(Moments.of(np.ones(1)))


@pytest.mark.parametrize("shape", [0.7, 5.0])
def test_delta_method_stderr_matches_replicates(shape: float) -> None:
    """The delta-method s.e. of v_hat agrees with the spread of v_hat over replicates."""
    rng = np.random.default_rng(2)
    t, reps = 400, 600
    est, ses = [], []
    for _ in range(reps):
        nv = normalized_variance(Moments.of(rng.gamma(shape, 1.0, size=t)))
        est.append(nv.v)
        ses.append(nv.stderr)
    spread = float(np.std(est, ddof=1))
    assert np.mean(ses) == pytest.approx(spread, rel=0.15)
    assert np.mean(est) == pytest.approx(1.0 / shape, rel=0.05)  # Var/E^2 of a gamma


def test_jackknife_removes_the_ratio_bias_of_heavy_tails() -> None:
    """From 25 draws of a lognormal (sigma = 1, v = e - 1) the plain ratio averages ~0.77 of v;
    the jackknife-corrected estimate is within a few percent."""
    rng = np.random.default_rng(5)
    true = math.e - 1.0
    plain, corrected = [], []
    for _ in range(2000):
        nv = normalized_variance(Moments.of(rng.lognormal(0.0, 1.0, size=25)))
        plain.append(nv.uncorrected)
        corrected.append(nv.v)
    assert np.mean(plain) / true < 0.82
    assert abs(np.mean(corrected) / true - 1.0) < 0.1
    assert abs(np.mean(corrected) / true - 1.0) < abs(np.mean(plain) / true - 1.0) / 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from collegial.ntk.alpha import monte_carlo
    from collegial.ntk.probe import ResNeXtBlockProbe

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    probe = ResNeXtBlockProbe(8, 4, seed=3, dtype=torch.float64)
    mom = monte_carlo(probe, 1, 3, 50, seed=3, chunk=8)
    torch.save((mom.to_tensor(), normalized_variance(mom).v), f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_trials_sharded_over_ranks_merge_exactly(tmp_path) -> None:
    from collegial.ntk.alpha import monte_carlo
    from collegial.ntk.probe import ResNeXtBlockProbe

    probe = ResNeXtBlockProbe(8, 4, seed=3, dtype=torch.float64)
    single = monte_carlo(probe, 1, 3, 50, seed=3, chunk=8)
    assert merge_distributed(single) is single  # not distributed: identity
    out = str(tmp_path / "mom")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        tensor, v = torch.load(f"{out}.{rank}")
        got = Moments.from_tensor(tensor)
        # every rank's estimate is the jackknife over all 50 trials, the single process's
        assert v == pytest.approx(normalized_variance(single).v, rel=1e-9)
        assert v != normalized_variance(single).uncorrected
        assert got.count == single.count == 50
        assert got.mean == pytest.approx(single.mean, rel=1e-12)
        for a, b in ((got.m2, single.m2), (got.m3, single.m3), (got.m4, single.m4)):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12 * abs(single.m2) ** 2)
    assert math.isfinite(normalized_variance(single).stderr)
