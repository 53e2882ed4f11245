"""Every JSON the tool writes carries a ``provenance`` object (versions, command line, seed,
timestamp, git commit), so a result says how to reproduce it; ``collegial --version`` prints the
version."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

import collegial
from collegial import provenance as prov
from collegial.cli import main
from collegial.errors import UserError
from collegial.ntk.curve import AlphaFit, synthetic_fit

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = {"collegial", "torch", "python", "command", "seed", "timestamp", "git_commit", "git_dirty"}


def _check(p: dict, seed: int | None, command: str | None = None) -> None:
    assert set(p) == FIELDS
    assert p["seed"] == seed and p["collegial"] == collegial.__version__
    if command is not None:
        assert p["command"] == command
    assert isinstance(p["git_commit"], str) and re.fullmatch(r"[0-9a-f]{40}", p["git_commit"])


@pytest.fixture
def argv(monkeypatch):
    """Set ``sys.argv`` as the ``collegial`` script would see it; returns the recorded command."""

    def set_argv(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["/some/venv/bin/collegial", *args])
        return shlex.join(["collegial", *args])

    return set_argv


def test_fields_and_types(argv) -> None:
    cmd = argv("fit-alpha", "--out", "a dir")
    p = prov.provenance(3)
    _check(p, 3)
    assert p["command"] == "collegial fit-alpha --out 'a dir'"  # shlex-quoted, argv[0] basename
    assert p["torch"] == torch.__version__.split("+")[0] and "+" not in p["torch"]
    assert re.fullmatch(r"3\.\d+\.\d+", p["python"])
    assert p["timestamp"].endswith("Z") and len(p["timestamp"]) == len("2024-01-01T00:00:00Z")
    t = datetime.strptime(p["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - t).total_seconds()) < 60
    assert isinstance(p["git_dirty"], bool)  # git is installed here and /work/main is a checkout
    assert prov.provenance()["seed"] is None and cmd.startswith("collegial ")
    assert json.loads(json.dumps(p)) == p
    # the git lookup is cached: a call costs nothing measurable
    t0 = time.perf_counter()
    for _ in range(200):
        prov.provenance(0)
    assert (time.perf_counter() - t0) / 200 < 1e-3


def test_not_a_checkout(monkeypatch, tmp_path) -> None:
    src = tmp_path / "site-packages" / "collegial"
    src.mkdir(parents=True)
    monkeypatch.setattr(prov, "_SOURCE_DIR", src)
    p = prov.provenance(1)
    assert p["git_commit"] is None and p["git_dirty"] is None


def test_reads_head_without_git(monkeypatch, tmp_path) -> None:
    """No git executable: the commit comes from .git/HEAD and its ref (loose or packed)."""
    sha, other = "a" * 40, "b" * 40
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    packed = f"# pack-refs with: peeled\n{other} refs/heads/dev\n{sha} refs/heads/main\n"
    (tmp_path / ".git" / "packed-refs").write_text(packed)
    monkeypatch.setattr(prov, "_run_git", lambda *a: None)
    assert prov._checkout_root(tmp_path / "src" / "collegial") == tmp_path
    prov.git_state.cache_clear()
    try:
        assert prov.git_state(tmp_path) == (sha, None)
        (tmp_path / ".git" / "refs" / "heads" / "main").write_text(other + "\n")
        prov.git_state.cache_clear()
        assert prov.git_state(tmp_path) == (other, None)
        (tmp_path / ".git" / "HEAD").write_text(sha + "\n")  # detached
        prov.git_state.cache_clear()
        assert prov.git_state(tmp_path) == (sha, None)
    finally:
        prov.git_state.cache_clear()


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"collegial {collegial.__version__}"


def test_count_json(argv, capsys) -> None:
    cmd = argv("count", "mlp", "2x16d", "--json")
    assert main(sys.argv[1:]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["params"] > 0
    _check(row["provenance"], None, cmd)
    cmd = argv("count", "--presets", "--json")
    assert main(sys.argv[1:]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj) == {"rows", "provenance"} and len(obj["rows"]) > 5 and "preset" in obj["rows"][0]
    _check(obj["provenance"], None, cmd)


def test_search_json(argv, tmp_path, capsys) -> None:
    f = tmp_path / "alpha.json"
    fit = synthetic_fit(lambda w: np.expm1(2.5 / w), [2, 4, 8, 16, 32, 64, 128], rel_stderr=0.03)
    f.write_text(json.dumps(fit.to_dict()))
    out = tmp_path / "out"
    cmd = argv("search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--json", "--seed", "3",
               "--variance", "prop1", "--alpha-file", str(f), "--draws", "50", "--out", str(out))
    assert main(sys.argv[1:]) == 0
    obj = json.loads(capsys.readouterr().out)
    _check(obj["provenance"], 3, cmd)
    assert json.loads((out / "search.json").read_text())["provenance"] == obj["provenance"]


def test_fit_alpha_json_and_round_trip(argv, tmp_path, capsys) -> None:
    out = tmp_path / "alpha"
    cmd = argv("fit-alpha", "--trials", "16", "--widths", "2,4,8", "--channels", "8", "--no-m-law",
               "--seed", "2", "--json", "--out", str(out), "--no-progress")
    assert main(sys.argv[1:]) == 0
    obj = json.loads(capsys.readouterr().out)
    _check(obj["provenance"], 2, cmd)
    assert "versions" not in obj  # the versions are the provenance's, written once
    assert json.loads((out / "alpha.json").read_text()) == obj  # the file and stdout agree
    # a loaded fit keeps its own provenance, not the loader's
    argv("search", "something", "else")
    again = AlphaFit.from_json(out)
    assert again.provenance == obj["provenance"] and again.to_dict()["provenance"] == obj["provenance"]
    # a file from before provenance was recorded is read, its versions kept under provenance
    old = {k: v for k, v in obj.items() if k != "provenance"} | {"versions": {"collegial": "0.1", "torch": "2.1"}}
    assert AlphaFit.from_dict(old).provenance == {"recorded": False, "collegial": "0.1", "torch": "2.1"}
    with pytest.raises(UserError, match="provenance") as e:
        AlphaFit.from_dict({**obj, "provenance": "yesterday"})
    assert "\n" not in str(e.value)


def test_train_files(argv, tmp_path, capsys, monkeypatch) -> None:
    from collegial.commands import train as train_cmd
    from collegial.train.data import synthetic_dataset

    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=16)
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: data)
    out = tmp_path / "runs"
    cmd = argv("train", "mlp", "2x8d", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32",
               "--seeds", "2", "--seed", "4", "--out", str(out), "--no-progress")
    assert main(sys.argv[1:]) == 0
    capsys.readouterr()
    _check(json.loads((out / "summary.json").read_text())["provenance"], 4, cmd)
    for s in (4, 5):
        for name in ("config.json", "result.json"):
            _check(json.loads((out / f"seed{s}" / name).read_text())["provenance"], s, cmd)
