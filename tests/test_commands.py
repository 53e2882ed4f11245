"""The command layer: one overwrite rule and flag (``--overwrite``, ``--force`` its hidden alias),
``train --json``, ``count PRESET``, help texts a user can follow, and experiments that import
nothing from the commands."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

import collegial
from collegial.cli import build_parser, main
from collegial.commands import common
from collegial.commands import train as train_cmd
from collegial.errors import UserError
from collegial.ntk.curve import synthetic_fit

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(collegial.__file__).parent
FIT_ALPHA = ["fit-alpha", "--trials", "16", "--widths", "2,4,8", "--channels", "8", "--no-m-law", "--no-progress"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("flag", ["--overwrite", "--force"])
def test_fit_alpha_refuses_existing_output_unless_overwrite(tmp_path, capsys, flag):
    out = tmp_path / "alpha"
    out.mkdir()
    (out / "alpha.json").write_text("{}\n")
    assert main([*FIT_ALPHA, "--json", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "already exists" in err and "--overwrite" in err and "--force" not in err
    assert (out / "alpha.json").read_text() == "{}\n"
    assert main([*FIT_ALPHA, "--json", "--out", str(out), flag]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert json.loads((out / "alpha.json").read_text())["widths"] == obj["widths"] == [2, 4, 8]


@pytest.mark.parametrize("flag", ["--overwrite", "--force"])
def test_search_refuses_existing_output_unless_overwrite(tmp_path, capsys, flag):
    alpha = tmp_path / "alpha.json"
    alpha.write_text(json.dumps(synthetic_fit(lambda n: np.expm1(2.5 / n), [2, 4, 8, 16, 32, 64, 128]).to_dict()))
    out = tmp_path / "res"
    out.mkdir()
    (out / "search.md").write_text("old\n")
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--alpha-file", str(alpha),
            "--variance", "prop1", "--draws", "20", "--json", "--out", str(out)]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "search.md" in err and "--overwrite" in err and "--force" not in err
    assert (out / "search.md").read_text() == "old\n"
    assert main([*argv, flag]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["files"] and (out / "search.md").read_text() != "old\n"


def _subparsers(parser: argparse.ArgumentParser):
    """``parser`` and every parser below it (subcommands, reproduce targets)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_force_is_a_hidden_alias_of_overwrite_everywhere():
    found = 0
    for p in _subparsers(build_parser()):
        flags = {s: a for a in p._actions for s in a.option_strings}
        if "--force" in flags or "--overwrite" in flags:
            found += 1
            assert flags["--force"].dest == flags["--overwrite"].dest == "overwrite", p.prog
            assert flags["--force"].help == argparse.SUPPRESS and flags["--overwrite"].help, p.prog
            assert "--force" not in p.format_help() and "--overwrite" in p.format_help()
    assert found >= 12  # fit-alpha, search, ntk-dynamics, train and every reproduce target


def test_no_help_cites_documents_a_user_cannot_open():
    bad = re.compile(r"SPEC|\bsection \d|\bissue \d|#\d", re.IGNORECASE)
    texts = []
    for p in _subparsers(build_parser()):
        texts += [p.description or "", p.format_help()]
        texts += [a.help for a in p._actions if isinstance(a.help, str)]
    assert len(texts) > 100
    assert [t for t in texts if bad.search(t)] == []


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_experiments_import_nothing_from_commands_and_own_no_argparse():
    files = sorted((SRC / "experiments").glob("*.py"))
    assert len(files) >= 6
    for f in files:
        names = _imports(f)
        assert not any(n == "collegial.commands" or n.startswith("collegial.commands.") for n in names), f.name
        assert "argparse" not in names, f.name
    assert "argparse" not in _imports(SRC / "train" / "recipes.py")


def test_common_lists_and_out(tmp_path):
    assert common.int_list("2, 4,8", "--m") == [2, 4, 8] and common.int_list(" ", "--m") == []
    with pytest.raises(UserError, match="--m must be comma-separated integers"):
        common.int_list("2,x", "--m")
    assert common.int_list_arg("3,4") == (3, 4)
    for bad in ("", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.int_list_arg(bad)
    d = common.prepare_out(tmp_path / "new" / "dir", ["a.json"], overwrite=False)
    assert d.is_dir()
    (d / "a.json").write_text("{}")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        common.prepare_out(d, ["a.json"], overwrite=False)
    assert common.prepare_out(d, ["a.json"], overwrite=True) == d
    assert json.loads(common.strict_json({"x": float("nan"), "y": np.int64(3)})) == {"x": None, "y": 3}


def test_count_takes_a_preset_name(capsys):
    assert main(["count", "cifar10-resnext29-37x10d", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert main(["count", "resnext29", "37x10d", "--dataset", "cifar10", "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    keys = ("family", "arch", "dataset", "m", "n", "params", "flops", "macs")
    assert {k: row[k] for k in keys} == {k: direct[k] for k in keys}
    assert row["preset"] == "cifar10-resnext29-37x10d" and (row["m"], row["n"]) == (37, 10)
    assert main(["count", "imagenet32-wrn-28-10"]) == 0
    assert "wrn 28-10 on imagenet32" in capsys.readouterr().out
    assert main(["count", "cifar10-resnext29-37x10d", "3x64d"]) == 2
    assert "drop ARCH" in _one_error_line(capsys)
    assert main(["count", "cifar10-resnext29-37x10d", "--dataset", "cifar100"]) == 2
    assert "cifar10" in _one_error_line(capsys)
    assert main(["count", "resnext29"]) == 2
    assert "preset" in _one_error_line(capsys)


@pytest.fixture
def tiny_data(monkeypatch):
    from collegial.train.data import synthetic_dataset

    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=16)
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: data)
    return data


TRAIN = ["train", "mlp", "2x8d", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32", "--no-progress"]


def test_train_json_prints_the_result_it_writes(tmp_path, capsys, tiny_data):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)  # exactly one JSON object on stdout
    assert obj == json.loads((out / "result.json").read_text())
    assert obj["family"] == "mlp" and obj["arch"] == "2x8d" and obj["epochs"] == 1
    assert "mlp 2x8d on" in captured.err  # the log went to stderr
    # without --json: the human table
    assert main([*TRAIN, "--out", str(tmp_path / "run2")]) == 0
    text = capsys.readouterr().out
    assert "| MLP, 2x8d |" in text and not text.lstrip().startswith("{")


def test_train_json_with_seeds_prints_the_summary(tmp_path, capsys, tiny_data):
    out = tmp_path / "runs"
    assert main([*TRAIN, "--seeds", "2", "--out", str(out), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj == json.loads((out / "summary.json").read_text())
    assert obj["seeds"] == [0, 1] and "| MLP, 2x8d |" in obj["table"]
