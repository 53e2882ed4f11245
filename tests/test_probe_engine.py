"""The probe-engine protocol (collegial.ntk.engine): the built-in engines satisfy it, an engine
written in another style (no base class, one module per trial) runs through Algorithm 1 and
gives the numbers of the built-in engine measuring the same block, and an object that is not an
engine is refused in one line naming what it lacks."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from collegial.errors import UserError
from collegial.ntk.alpha import make_probe, run_algorithm1
from collegial.ntk.engine import ENGINE_MEMBERS, ProbeEngine, check_engines
from collegial.ntk.inputs import ProbeInputs

SHAPE = (6,)
#: Algorithm 1 calls k_chunk from several threads; the global RNG is one per process.
_RNG_LOCK = threading.Lock()


def block(m: int, n: int) -> nn.Module:
    return nn.Sequential(nn.Linear(6, m * n), nn.ReLU(), nn.Linear(m * n, 3))


class LoopEngine:
    """A probe engine inheriting from nothing: each trial one module from ``block`` under the
    global RNG seeded from the chunk's seed (held by one thread at a time), K by two autograd
    passes, in float64."""

    engine = "loop"
    input_shape = SHAPE
    device = torch.device("cpu")

    def __init__(self, inputs: ProbeInputs, pair: int, seed: int = 0) -> None:
        self.pair = pair
        self.x, self.r = inputs.draw(SHAPE, 3, seed, pair, torch.float64)

    def chunk_size(self, m: int, n: int) -> int:
        return 1000

    def trial_bytes(self, m: int, n: int) -> int | None:
        return None

    def k_chunk(self, m: int, n: int, trials: int, seed: int) -> torch.Tensor:
        with _RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mods = [block(m, n).to(torch.float64) for _ in range(trials)]
        out = []
        for mod in mods:
            params = list(mod.parameters())
            f = mod(self.x) @ self.r
            g0 = torch.autograd.grad(f[0], params, retain_graph=True)
            g1 = torch.autograd.grad(f[1], params)
            out.append(sum(float((u * v).sum()) for u, v in zip(g0, g1)))
        return torch.tensor(out, dtype=torch.float64)


def test_the_built_in_engines_are_probe_engines():
    inputs = ProbeInputs(pairs=1)
    for engine in (make_probe("resnext29", channels=8, spatial=2, inputs=inputs), make_probe("mlp", channels=8),
                   make_probe(probe=block, input_shape=SHAPE)):
        assert isinstance(engine, ProbeEngine)
        assert check_engines([engine], 1) == [engine]


def test_an_engine_of_another_style_gives_the_built_in_numbers():
    """The same block and weights measured by the generic engine (vmapped, replayed
    initialization) and by the loop engine: the same table, m-law and recorded shape."""
    inputs = ProbeInputs(pairs=2)
    kw = {"widths": (2, 3, 4), "trials": 16, "inputs": inputs, "m_law": (2,), "m_law_width": 3, "seed": 5}
    built_in = run_algorithm1(probe=block, input_shape=SHAPE, dtype=torch.float64, **kw)
    mine = run_algorithm1(engines=[LoopEngine(inputs, p, seed=5) for p in range(2)], family="loopy", **kw)
    for key in ("variance", "stderr", "mean_k"):
        assert getattr(mine, key) == pytest.approx(getattr(built_in, key), rel=1e-9), key
    assert mine.m_law[0].ratio == pytest.approx(built_in.m_law[0].ratio, rel=1e-9)
    assert (mine.family, mine.engine, mine.input_shape, mine.channels) == ("loopy", "loop", [6], 6)
    assert built_in.engine == "vmap"


def test_a_non_engine_is_refused_naming_what_it_lacks():
    class Half:
        pair, engine, input_shape, device = 0, "half", (3,), torch.device("cpu")

        def chunk_size(self, m: int, n: int) -> int:
            return 4

    with pytest.raises(UserError, match=r"Half is not a probe engine: it lacks trial_bytes, k_chunk"):
        run_algorithm1(engines=[Half()], inputs=ProbeInputs(pairs=1), widths=(2, 3, 4), trials=4)
    assert set(ENGINE_MEMBERS) == {"pair", "engine", "input_shape", "device", "chunk_size", "trial_bytes", "k_chunk"}


@pytest.mark.parametrize("engines, kw, message", [
    (lambda: [LoopEngine(ProbeInputs(pairs=2), 0)], {}, "1 probe engines for 2 input pairs"),
    (lambda: [LoopEngine(ProbeInputs(pairs=2), 1), LoopEngine(ProbeInputs(pairs=2), 0)], {}, "in pair order"),
    (lambda: [LoopEngine(ProbeInputs(pairs=2), p) for p in range(2)], {"channels": 8}, "leave out `channels`"),
    (lambda: LoopEngine(ProbeInputs(pairs=2), 0), {}, "must be a sequence of probe engines"),
])
def test_engines_that_do_not_fit_the_run_are_refused(engines, kw, message):
    with pytest.raises(UserError, match=message):
        run_algorithm1(engines=engines(), inputs=ProbeInputs(pairs=2), widths=(2, 3, 4), trials=8, **kw)
