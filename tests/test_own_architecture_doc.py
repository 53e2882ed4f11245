"""The documented walkthroughs, run as written on a tiny setting: every ``$ .venv/bin/collegial``
line of docs/own-architecture.md and the README's three-command quick start, in order, with
options appended that shrink the work (argparse keeps the last value of an option), in a
scratch folder (holding a copy of ``examples/``)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from collegial.cli import main
from collegial.models import registry as reg

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "own-architecture.md"

#: What each subcommand gets appended in CI (the doc's settings take minutes; these seconds).
TINY = {
    "fit-alpha": ["--trials", "64", "--pairs", "2", "--widths", "2,4,6,8,16,32,64", "--m-law", "2", "--m-law-width", "4"],
    "search": ["--draws", "50"],
    "train": ["--epochs", "1", "--train-limit", "512", "--test-limit", "256", "--batch-size", "64"],
    "count": [],
}


def doc_commands() -> list[list[str]]:
    cmds = []
    for line in DOC.read_text().splitlines():
        if line.startswith("$ .venv/bin/collegial "):
            cmds.append(shlex.split(line[len("$ .venv/bin/collegial "):]))
    return cmds


def readme_quick_start() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Quick start"):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[: block.index("```")]
    return [shlex.split(line[len(".venv/bin/collegial "):]) for line in block.splitlines()
            if line.startswith(".venv/bin/collegial ")]


def _subcommand(argv: list[str]) -> str:
    i = 0
    while argv[i] == "--import":
        i += 2
    return argv[i]


def test_the_doc_walks_every_step():
    subs = [_subcommand(c) for c in doc_commands()]
    assert subs[:3] == ["count", "fit-alpha", "search"] and "train" in subs, subs
    assert [_subcommand(c) for c in readme_quick_start()] == ["fit-alpha", "search", "train"]


def _run_all(commands: list[list[str]], capsys) -> list[str]:
    saved = dict(reg._FAMILIES)
    outs = []
    try:
        for argv in commands:
            rc = main(argv + TINY[_subcommand(argv)])
            out = capsys.readouterr()
            assert rc == 0, (argv, out.err)
            outs.append(out.out)
    finally:
        reg._FAMILIES.clear()
        reg._FAMILIES.update(saved)
    return outs


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    outs = _run_all(readme_quick_start(), capsys)
    lines = outs[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("primal "))
    assert all(line.startswith("note:") or line.startswith("  ") for line in lines[:first])  # notes first
    assert "dual " in outs[1]
    assert (tmp_path / "runs" / "alpha" / "alpha.json").is_file()
    assert list((tmp_path / "runs").glob("*/result.json"))


@pytest.mark.slow
def test_the_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    _run_all(doc_commands(), capsys)
    fit = json.loads((tmp_path / "runs" / "sepnet-alpha" / "alpha.json").read_text())
    assert fit["family"] == "sepnet" and fit["engine"] == "vmap" and fit["m_law"]
    results = sorted((tmp_path / "runs" / "sepnet").glob("*/result.json"))
    assert len(results) == 3
    assert all(json.loads(r.read_text())["family"] == "sepnet" for r in results)
