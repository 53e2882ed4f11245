"""CostTable on a family that cannot build every width (here: only even n): the fit, its checks
and the search use widths the family builds; a width it cannot build is its own one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from collegial.cli import main
from collegial.errors import UserError
from collegial.models import parse_arch, register_model
from collegial.models.costs import CostTable, model_costs
from collegial.ntk.curve import synthetic_fit


@pytest.fixture
def registry(family_registry):
    """The registry restored after the test (conftest's ``family_registry``)."""


def _even_family(name: str, *, cubic: bool = False, head_m2: bool = False) -> None:
    """A toy family whose function raises ValueError for odd widths. ``cubic``: a per-path layer
    of n^3 parameters (B(n) not quadratic); ``head_m2``: a head that grows with m^2."""

    @register_model(name, default_dataset="mnist")
    def fam(arch, *, num_classes, in_channels, resolution):
        m, n = parse_arch(arch)
        if n % 2:
            raise ValueError("n must be even")
        layers = [nn.Conv2d(in_channels, 4, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(4, m * n, 1),
                  nn.ReLU(), nn.Conv2d(m * n, m * n, 3, padding=1, groups=m), nn.ReLU()]
        if cubic:
            layers += [nn.Conv2d(m * n, m * n * n, 1, groups=m), nn.ReLU(), nn.Conv2d(m * n * n, 4, 1)]
        else:
            layers += [nn.Conv2d(m * n, 4, 1)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        layers += [nn.Linear(4, m * m), nn.Linear(m * m, num_classes)] if head_m2 else [nn.Linear(4, num_classes)]
        return nn.Sequential(*layers)


def test_builtin_families_keep_their_widths():
    table = CostTable("mlp", "mnist")
    assert table.fit_widths == (1, 2, 3) and table.polynomial
    assert table.buildable(np.arange(1, 9)).all()


def test_a_family_that_builds_only_even_widths(registry):
    _even_family("evenfam_a")
    table = CostTable("evenfam_a", "mnist")
    assert table.fit_widths == (2, 4, 6) and table.polynomial
    for m, n in [(1, 8), (3, 10), (7, 64), (2, 2)]:
        assert table(m, n) == model_costs("evenfam_a", f"{m}x{n}d", "mnist")
    assert table.buildable([2, 3, 4, 5]).tolist() == [True, False, True, False]
    b = table.per_path("params", np.array([2, 4, 8]))
    assert b.tolist() == [model_costs("evenfam_a", f"2x{n}d", "mnist").params
                          - model_costs("evenfam_a", f"1x{n}d", "mnist").params for n in (2, 4, 8)]


def test_exact_per_width_costs_raise_the_familys_error_at_an_unbuildable_width(registry):
    _even_family("evenfam_c", cubic=True)
    table = CostTable("evenfam_c", "mnist")
    assert not table.polynomial  # B(n) has an n^3 term: measured per width
    assert table(3, 10) == model_costs("evenfam_c", "3x10d", "mnist")
    with pytest.raises(UserError, match=r"^cannot build evenfam_c 1x3d: n must be even$"):
        table.per_path("params", 3)


def test_the_m_check_uses_buildable_widths(registry):
    _even_family("evenfam_q", head_m2=True)
    with pytest.raises(UserError, match="is not A \\+ m B\\(n\\)"):
        CostTable("evenfam_q", "mnist")


def test_a_family_that_builds_nothing_reports_its_own_error(registry):
    @register_model("nothing_fam", default_dataset="mnist")
    def nothing_fam(arch, *, num_classes, in_channels, resolution):
        raise ValueError("this family is broken")

    with pytest.raises(UserError, match=r"^cannot build nothing_fam 1x1d: this family is broken$"):
        CostTable("nothing_fam", "mnist")


def test_search_of_an_even_only_family(tmp_path, capsys, registry):
    _even_family("evenfam_s")
    synthetic_fit(lambda w: np.expm1(2.5 / w), [2, 4, 6, 8], rel_stderr=0.03, family="evenfam_s").save(
        tmp_path / "a.json", plot=False)
    argv = ["search", "evenfam_s", "--baseline", "1x8d", "--n-range", "2:8", "--alpha-file",
            str(tmp_path / "a.json"), "--variance", "empirical", "--draws", "50", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    obj = json.loads(capsys.readouterr().out)
    for prob in ("primal", "dual"):
        m, n = parse_arch(obj[prob]["arch"])
        assert n % 2 == 0, obj[prob]
        # nothing the family cannot build is even offered as a near-tie
        assert all(parse_arch(c["arch"])[1] % 2 == 0 for c in obj["near_ties"][prob]), obj["near_ties"][prob]
