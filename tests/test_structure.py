"""Shared pieces behave alike wherever they are used, and the library's boundary holds.

* mean +- standard error: the train command's table and figure1's points agree with
  :func:`collegial.stats.mean_se`, the one-value case included;
* costs: the search's cost table, the training loop's FLOPs and ``count`` give the same numbers;
* one process group: Algorithm 1 and training see the same ranks (:mod:`collegial.distributed`);
* closed vocabularies checked by :func:`collegial.choices.check_choice`, errors that name the
  library's arguments (never a command-line flag), translated into flags by the commands;
* no function in ``src/`` over 80 lines.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from collegial.choices import ChoiceError, check_choice
from collegial.errors import UserError, flag_message, flag_names
from collegial.stats import mean_se

SRC = Path(__file__).resolve().parents[1] / "src" / "collegial"
LIBRARY = ("search", "ntk", "models", "train")


# ------------------------------------------------------------------------- mean +- s.e.


def test_mean_se_values_and_the_one_value_case() -> None:
    mean, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert se == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2.0, rel=1e-15)
    assert mean_se(np.array([4.0, 4.0])) == (4.0, 0.0)  # arrays and iterables too
    one = mean_se([4.5])
    assert one[0] == 4.5 and math.isnan(one[1])  # one value: a mean, no standard error
    assert all(math.isnan(v) for v in mean_se([]))


def test_every_layer_reports_mean_and_standard_error_alike() -> None:
    """The train command's table and figure1's points give the mean and standard error of
    :func:`mean_se`, the one-value case included (a mean, no "± nan")."""
    from types import SimpleNamespace

    from collegial.commands.train import results_table
    from collegial.experiments import figure1

    for errors in ([10.0, 10.5, 9.8], [7.25]):
        pt = figure1.Point("1x8d", 1, 8, 100, 0.5, 0.01, errors=errors)
        m, se = mean_se(errors)
        assert pt.error_mean == m and (pt.error_se == se or math.isnan(pt.error_se) and math.isnan(se))
        runs = [SimpleNamespace(params=1000, test_top1_err=e, test_top5_err=e) for e in errors]
        row = results_table("mlp", "1x8d", runs, list(range(len(errors)))).splitlines()[2]
        if len(errors) > 1:
            assert f"| {m:.2f} ± {se:.2f} |" in row
        else:
            assert "| 7.25 | 7.25 |" in row and "nan" not in row


# ------------------------------------------------------------------------- costs


def test_search_and_train_count_costs_in_one_place() -> None:
    """The search's cost table, the training loop's FLOPs and ``count`` give the same numbers,
    under the same cost kinds."""
    from collegial.models import costs
    from collegial.search import solve
    from collegial.train import loop

    assert solve.BUDGETS == costs.COST_KINDS
    table = solve.cost_table("mlp", "mnist")  # what the search prices candidates with
    for arch, (m, n) in (("3x16d", (3, 16)), ("1x64d", (1, 64))):
        flops = costs.forward_flops("mlp", arch, "mnist")
        assert table(m, n).flops == flops == costs.model_costs("mlp", arch, "mnist").flops
        assert loop.train_flops_per_image("mlp", arch, "mnist") == 3 * flops
        assert table(m, n).params == costs.model_costs("mlp", arch, "mnist").params
    # an override changes the input the FLOPs are counted on, in both paths
    small = costs.forward_flops("resnext29", "2x4d", "cifar10", resolution=16)
    assert small < costs.forward_flops("resnext29", "2x4d", "cifar10")
    assert small == costs.model_costs("resnext29", "2x4d", "cifar10", resolution=16).flops


# ------------------------------------------------------------------------- process group


def test_one_process_group_helper(monkeypatch) -> None:
    import torch.distributed as dist

    from collegial import distributed
    from collegial.ntk import alpha
    from collegial.train import distributed as train_dist

    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.launched() == distributed.Dist() and not distributed.Dist().enabled
    assert distributed.rank_and_world() == (0, 1)
    # Algorithm 1 and training see the same (absent) process group
    assert alpha.rank_and_world() == (0, 1) and train_dist.setup("cpu") == (distributed.Dist(), torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's variables without a rendezvous: one process
    assert distributed.rank_and_world() == alpha.rank_and_world() == (0, 1) and not dist.is_initialized()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched() == distributed.Dist(1, 2, 1)


# ------------------------------------------------------------------------- choices and messages


def test_check_choice() -> None:
    assert check_choice("ties", "paired", ("paired", "overlap")) == "paired"
    with pytest.raises(ChoiceError) as e:
        check_choice("ties", "loose", ("paired", "overlap"), "tie rule")
    assert str(e.value) == "`ties='loose'`: unknown tie rule; choose from paired, overlap"
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    with pytest.raises(ChoiceError):
        check_choice("ties", None, ("paired", "overlap"))


def _curve():
    from collegial.search.variance import synthetic_curve

    return synthetic_curve(lambda n: np.expm1(2.5 / n), np.arange(2, 65), draws=8, family="mlp")


def _library_errors():
    from collegial.models import BlockDiagonalLinear, CollegialMLP
    from collegial.ntk import empirical_ntk
    from collegial.ntk.alpha import make_probe, run_algorithm1
    from collegial.ntk.generic import FactoryProbe
    from collegial.ntk.inputs import ProbeInputs
    from collegial.ntk.probe import ResNeXtBlockProbe
    from collegial.search.problems import primal_m
    from collegial.search.solve import parse_n_range, search
    from collegial.search.variance import load_curve
    from collegial.train.distributed import setup

    def srch(**kw):
        return search("mlp", "mnist", "1x64d", _curve(), **kw)

    small = dict(widths=(2, 4, 8), trials=16, channels=8, spatial=2, m_law=())
    return [
        (lambda: srch(budget="memory"), "`budget='memory'`"),
        (lambda: srch(rounding="up"), "`rounding='up'`"),
        (lambda: srch(ties="loose"), "`ties='loose'`"),
        (lambda: srch(solver="greedy"), "`solver='greedy'`"),
        (lambda: srch(level=1.5), "`level`"),
        (lambda: srch(n_range="9:3"), "`n_range` 9:3 is empty"),
        (lambda: srch(n_range="2:100"), "narrower `n_range`"),
        (lambda: parse_n_range("2-8"), "malformed `n_range`"),
        (lambda: srch(budget_value="lots"), "`budget_value` 'lots' must be an integer"),
        (lambda: primal_m(0, np.array([1]), 5, "up"), "`rounding='up'`"),
        (lambda: load_curve(None, "cubic"), "`model='cubic'`: unknown variance model"),
        (lambda: run_algorithm1(**small, bn="frozen"), "`bn='frozen'`: unknown BatchNorm mode"),
        (lambda: run_algorithm1(**small, parameterization="mup"), "`parameterization='mup'`"),
        (lambda: run_algorithm1(**small, engine="fast"), "`engine='fast'`"),
        (lambda: make_probe(channels=8, spatial=2, bn="frozen"), "`bn='frozen'`"),
        (lambda: ResNeXtBlockProbe(8, 2, engine="fft"), "`engine='fft'`"),
        (lambda: ResNeXtBlockProbe(8, 2, parameterization="mup"), "`parameterization='mup'`"),
        (lambda: FactoryProbe(lambda m, n: torch.nn.Linear(3, n), (3,), bn="eval"), "`bn='eval'`"),
        (lambda: ProbeInputs("uniform"), "`kind='uniform'`: unknown probe inputs"),
        (lambda: BlockDiagonalLinear(2, 3, 4, parameterization="mup"), "`parameterization='mup'`"),
        (lambda: CollegialMLP(3, 2, 2, 4, activation="gelu"), "`activation='gelu'`"),
        (lambda: empirical_ntk(torch.nn.Linear(3, 2), torch.ones(2, 3), batchnorm="none"), "`batchnorm='none'`"),
        (lambda: setup("tpu"), "`device='tpu'`"),
    ]


@pytest.mark.parametrize("i", range(len(_library_errors())))
def test_library_errors_name_library_arguments(i: int) -> None:
    call, needle = _library_errors()[i]
    with pytest.raises(UserError) as e:
        call()
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert not re.search(r"(?<![\w-])--[a-z]", msg), msg  # no command-line flag


def _message_text(node: ast.AST) -> str:
    """The literal text of a raise's message ({} for each formatted field)."""
    parts = []
    for c in ast.walk(node):
        if isinstance(c, ast.Constant) and isinstance(c.value, str):
            parts.append(c.value)
        elif isinstance(c, ast.FormattedValue):
            parts.append("{}")
    return "".join(parts)


def test_no_command_line_flags_in_library_errors() -> None:
    """Raised messages in the library name its arguments; suggestions of a whole command
    ('collegial fit-alpha --json --out DIR') are fine. Not checked: models/plugins.py, the
    implementation of the command line's ``collegial --import`` itself."""
    bad = []
    for pkg in LIBRARY:
        for path in sorted((SRC / pkg).rglob("*.py")):
            if path.name == "plugins.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    text = re.sub(r"'collegial [^']*'|collegial --import MODULE", "", _message_text(node.exc))
                    if re.search(r"(?<![\w-])--[a-z]", text):
                        bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {text}")
    assert not bad, "\n".join(bad)


def test_flag_message_translates_library_arguments() -> None:
    flags = {"n_range": "--n-range", "overwrite": "--overwrite", "bn": "--bn",
             "run_algorithm1(widths=...)": "fit-alpha --widths"}
    assert flag_message("`n_range` 64:8 is empty", flags) == "--n-range 64:8 is empty"
    assert flag_message("pass `overwrite=True` to start over", flags) == "pass --overwrite to start over"
    assert flag_message("`bn='frozen'`: unknown", flags) == "--bn frozen: unknown"
    assert flag_message("measure it (`run_algorithm1(widths=...)`)", flags) == "measure it (fit-alpha --widths)"
    assert flag_message("try a lower `lr`", flags) == "try a lower `lr`"  # not this command's

    class Diverged(UserError):
        pass

    @flag_names({"lr": "--lr"})
    def run() -> int:
        raise Diverged("loss is not finite; try a lower `lr`")

    with pytest.raises(Diverged, match="try a lower --lr$"):
        run()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["fit-alpha", "--bn", "sometimes", "--no-progress"], "--bn sometimes: unknown BatchNorm mode"),
        (["fit-alpha", "--param", "mup", "--no-progress"], "--param mup: unknown parameterization"),
        (["fit-alpha", "--inputs", "uniform", "--no-progress"], "--inputs uniform: unknown probe inputs"),
    ],
)
def test_commands_name_their_flags(argv, needle, capsys) -> None:
    from collegial.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "`" not in err and len(err.splitlines()) == 1


def test_search_command_names_its_flags(tmp_path, capsys) -> None:
    from collegial.cli import main

    alpha = _curve().fit.save(tmp_path / "alpha.json", plot=False)
    base = ["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(alpha)]
    for extra, needle in ((["--n-range", "9:3"], "--n-range 9:3 is empty"),
                          (["--n-range", "2:100"], "(fit-alpha --widths) or search a narrower --n-range"),
                          (["--budget-value", "lots"], "malformed --budget-value 'lots'")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "`" not in err, err


# ------------------------------------------------------------------------- function length

MAX_LINES = 80


def _long_functions(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_LINES:
                    out.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_in_src_over_80_lines() -> None:
    """No declarative tables are exempt: every function in src/ is checked."""
    assert not _long_functions(SRC)
