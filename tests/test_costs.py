"""Every parameter count, GFLOPs figure and rho the paper prints (:data:`collegial.paper.MODELS`),
to the paper's rounding."""

import json
import math

import numpy as np
import pytest

from collegial.cli import main
from collegial.models import PRESETS, format_arch
from collegial.models.costs import CostTable, model_costs
from collegial.paper import MODELS

# (dataset, family, arch, params in millions as printed in the paper)
PARAMS = [(*m.key, m.params_m) for m in MODELS if m.params_m is not None]


@pytest.mark.parametrize("dataset, family, arch, millions", PARAMS)
def test_params_match_paper(dataset, family, arch, millions):
    assert round(model_costs(family, arch, dataset).params / 1e6, 1) == millions


# Table 3 GFLOPs. Conv + linear FLOPs (2 x MACs) agree with every figure when rounded *up* to two
# decimals (the paper's rounding); to the nearest they are 0.01 low on three of four rows.
# Adding one FLOP per BN output element (--bn-flops) matches three of four to the nearest.
GFLOPS = [(*m.key, m.gflops) for m in MODELS if m.gflops is not None]


@pytest.mark.parametrize("dataset, family, arch, gflops", GFLOPS)
def test_flops_match_paper(dataset, family, arch, gflops):
    flops = model_costs(family, arch, dataset).flops
    assert math.ceil(flops / 1e7) / 100 == pytest.approx(gflops)
    assert abs(flops / 1e9 - gflops) < 0.0101


def test_bn_flops_option_adds_bn_elements():
    plain = model_costs("resnext29", "1x128d", "cifar10")
    with_bn = model_costs("resnext29", "1x128d", "cifar10", bn_flops=True)
    assert with_bn.macs == plain.macs
    assert with_bn.flops - plain.flops == 3571712  # BN output elements of ResNeXt-29 1x128d
    assert round(model_costs("resnext29", "44x8d", "cifar10", bn_flops=True).flops / 1e9, 2) == 4.20


# rho = params(baseline) / params(model), as reported (the paper truncates some and rounds others).
RHO = [(m.dataset, m.family, m.rho_baseline, m.arch, m.rho) for m in MODELS if m.rho is not None]


@pytest.mark.parametrize("dataset, family, base, arch, rho", RHO)
def test_rho_match_paper(dataset, family, base, arch, rho):
    r = model_costs(family, base, dataset).params / model_costs(family, arch, dataset).params
    assert abs(r - rho) < 0.06


def test_every_printed_figure_is_checked():
    """20 parameter counts, 4 GFLOPs figures (Table 3) and 5 compressions: none lost from the facts."""
    assert (len(PARAMS), len(GFLOPS), len(RHO)) == (20, 4, 5)


def test_every_preset_builds_and_counts():
    for p in PRESETS.values():
        c = model_costs(p.family, p.arch, p.dataset)
        assert c.params > 0 and c.flops == 2 * c.macs


@pytest.mark.parametrize("family, dataset", [("resnext29", "cifar10"), ("mlp", "mnist"), ("resnext11", "mnist")])
def test_cost_table_is_exact(family, dataset):
    table = CostTable(family, dataset)
    assert table.polynomial
    rng = np.random.default_rng(0)
    for m, n in [(1, 128), (37, 10), (3, 7)] + [tuple(rng.integers(1, 40, 2)) for _ in range(3)]:
        c = model_costs(family, format_arch(m, n), dataset)
        assert table(int(m), int(n)) == c
    ms, ns = np.meshgrid(np.arange(1, 50), np.arange(2, 129))
    assert table.cost("params", ms, ns).shape == ms.shape


def test_count_json(capsys):
    assert main(["count", "resnext29", "37x10d", "--dataset", "cifar10", "--json"]) == 0
    out = capsys.readouterr().out
    row = json.loads(out)
    assert set(row) == {"family", "arch", "dataset", "m", "n", "params", "flops", "macs", "provenance"}
    assert (row["m"], row["n"], row["params"]) == (37, 10, 13743646)
    assert row["flops"] == 2 * row["macs"] == 4519358464
