"""No lost or silently wrong results: reruns that validate before they change anything, folders
locked against a second writer, full or read-only disks that leave nothing half-written, reused
results that must be their run's own, absurd or corrupt files refused in one line, and the atomic
writer every file goes through (:mod:`collegial.io`). (The numbers in the test names group them
by the kind of failure.)"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest

from collegial import io
from collegial.errors import UserError


def _full_disk(monkeypatch):
    """Make every write through ``os.fsync`` fail as on a full disk."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", no_space)


# ------------------------------------------------------------------------- the atomic writer


def test_atomic_writer_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    p = tmp_path / "x.json"
    io.write_json_atomic(p, {"a": float("nan"), "b": 1})
    assert json.loads(p.read_text()) == {"a": None, "b": 1}
    _full_disk(monkeypatch)
    with pytest.raises(UserError, match=r"cannot write .*x\.json \(No space left on device; is the disk full\?\)"):
        io.write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"a": None, "b": 1}  # the old file, whole
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.json"]  # no temporary left
    with pytest.raises(UserError):
        io.write_text_atomic(tmp_path / "new.txt", "hello")
    assert not (tmp_path / "new.txt").exists()  # never an empty file


def test_exclusive_create_and_folder_lock(tmp_path) -> None:
    p = io.write_text_atomic(tmp_path / "a.txt", "first", exclusive=True)
    with pytest.raises(UserError, match="created by another process"):
        io.write_text_atomic(p, "second", exclusive=True)
    assert p.read_text() == "first"
    with io.folder_lock(tmp_path / "d", "sweep"):
        with pytest.raises(io.FolderInUse, match=rf"in use by another sweep \(pid {os.getpid()}\)"):
            with io.folder_lock(tmp_path / "d", "sweep"):
                pass
    with io.folder_lock(tmp_path / "d"):  # released
        pass
    assert io.strict_json({"x": math.inf, "y": [math.nan]}) == '{"x": null, "y": [null]}'


# ------------------------------------------------------------------------- figure1 sweeps

from collegial.cli import main  # noqa: E402
from collegial.train.data import shipped_data_available  # noqa: E402

needs_fashion = pytest.mark.skipif(not shipped_data_available("fashion-mnist"),
                                   reason="dataset-fashion-mnist not installed")
TINY = ["--points", "2", "--seeds", "2", "--epochs", "1", "--train-limit", "160", "--test-limit", "128",
        "--baseline", "1x128d", "--val-images", "32", "--lrs", "0.05", "--whole-trials", "0"]


def _alpha(path: Path) -> Path:
    import numpy as np

    from collegial.ntk.curve import synthetic_fit

    fit = synthetic_fit(lambda n: np.expm1(2.5 / n), list(range(2, 129)), rel_stderr=0.02, family="mlp")
    return fit.save(path, plot=False, overwrite=True)


def _sweep(out: Path, alpha: Path, *extra: str) -> list[str]:
    return ["reproduce", "figure1", "--alpha-file", str(alpha), *TINY, "--out", str(out), "--json", *extra]


def _state(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (but the lock) and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny sweep (8 s): ``(folder, alpha file, figure1.json object)``; tests copy it."""
    root = tmp_path_factory.mktemp("figure1")
    alpha = _alpha(root / "alpha.json")
    out = root / "sweep"
    torch_threads = __import__("torch").get_num_threads()
    __import__("torch").set_num_threads(1)
    try:
        assert main(_sweep(out, alpha)) == 0
    finally:
        __import__("torch").set_num_threads(torch_threads)
    return out, alpha, json.loads((out / "figure1.json").read_text())


@pytest.fixture
def sweep(finished, tmp_path, capsys, one_thread):
    import shutil

    out, alpha, obj = finished
    capsys.readouterr()
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    return copy, alpha, obj


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@needs_fashion
def test_1_overwrite_validates_first_and_locks_the_sweep(sweep, tmp_path, capsys) -> None:
    out, alpha, _ = sweep
    before = _state(out)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 3, "widths": [2, 4]')
    assert main(_sweep(out, bad, "--overwrite")) == 2
    assert "bad.json" in _one_line(capsys)
    assert _state(out) == before  # no run deleted, sweep.json and figure1.json untouched
    assert json.loads((out / "figure1.json").read_text())["alpha_file"]["path"] == str(alpha)
    with io.folder_lock(out, "figure1 sweep"):  # a sweep running in this folder
        assert main(_sweep(out, alpha, "--overwrite", "--seeds", "3")) == 2
        assert f"in use by another figure1 sweep (pid {os.getpid()})" in _one_line(capsys)
    assert _state(out) == before


@needs_fashion
def test_3_foreign_figure1_outputs_are_not_overwritten(tmp_path, capsys, one_thread) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "figure1.md").write_text("my notes\n")
    assert main(_sweep(out, _alpha(tmp_path / "alpha.json"))) == 2
    err = _one_line(capsys)
    assert "no sweep.json" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["figure1.md"]
    assert (out / "figure1.md").read_text() == "my notes\n"


@needs_fashion
def test_4_a_full_disk_leaves_nothing_that_blocks_the_rerun(tmp_path, capsys, monkeypatch, one_thread) -> None:
    out = tmp_path / "out"
    alpha = _alpha(tmp_path / "alpha.json")
    _full_disk(monkeypatch)
    assert main(_sweep(out, alpha)) == 2
    assert "No space left on device" in _one_line(capsys)
    assert not out.exists()  # no empty sweep.json, nothing at all
    # search --out: no truncated search.json that "already exists" would then protect
    sout = tmp_path / "search"
    assert main(["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(alpha), "--no-m-check",
                 "--out", str(sout), "--json"]) == 2
    assert "No space left on device" in _one_line(capsys)
    assert not (sout / "search.json").exists()
    monkeypatch.undo()
    assert main(["search", "mlp", "--baseline", "1x64d", "--alpha-file", str(alpha), "--no-m-check",
                 "--out", str(sout), "--json"]) == 0
    assert json.loads((sout / "search.json").read_text())["family"] == "mlp"


@needs_fashion
def test_5_reused_results_must_be_their_runs_own(sweep, capsys) -> None:
    out, alpha, obj = sweep
    runs = sorted((out / "runs").glob("*/lr*/seed*"))
    a, b = runs[0], runs[-1]
    assert a.parent != b.parent
    res = json.loads((a / "result.json").read_text())
    (a / "result.json").write_text(json.dumps({**res, "test_top1_err": -500.0}))  # out of range
    (b / "result.json").write_bytes((runs[2] / "result.json").read_bytes())  # another run's result
    assert main(_sweep(out, alpha)) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["curves"] == obj["curves"]  # both redone, with the same numbers
    assert json.loads((a / "result.json").read_text())["test_top1_err"] == res["test_top1_err"]
    # a result of another recipe (2 epochs under a 1-epoch sweep) is not reused either
    sweep_key = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps({**sweep_key, "epochs": 2}))
    assert main(_sweep(out, alpha, "--epochs", "2")) == 0
    two = json.loads(capsys.readouterr().out)
    for run in runs:
        assert json.loads((run / "result.json").read_text())["epochs"] == 2
    assert two["curves"] != obj["curves"]


@needs_fashion
@pytest.mark.parametrize("content", ["", "{", "{}", "[1, 2]", "dir"])
def test_10_corrupt_sweep_files_are_one_line(sweep, capsys, content) -> None:
    out, alpha, obj = sweep
    sweep_json = out / "sweep.json"
    sweep_json.unlink()
    if content == "dir":
        sweep_json.mkdir()
    else:
        sweep_json.write_text(content)
    assert main(_sweep(out, alpha)) == 2
    err = _one_line(capsys)
    assert "sweep.json" in err
    if content != "dir":
        assert "--overwrite" in err
    if content == "{}":  # the advice works: --overwrite starts the sweep over
        assert main(_sweep(out, alpha, "--overwrite")) == 0
        assert json.loads(capsys.readouterr().out)["curves"] == obj["curves"]


@needs_fashion
def test_10_corrupt_result_files_are_redone_or_one_line(sweep, capsys) -> None:
    out, alpha, obj = sweep
    runs = sorted((out / "runs").glob("*/lr*/seed*"))
    for run, text in zip(runs, ["", "{", "{}", "[1]"]):
        (run / "result.json").write_text(text)
    assert main(_sweep(out, alpha)) == 0
    assert json.loads(capsys.readouterr().out)["curves"] == obj["curves"]
    (runs[0] / "result.json").unlink()
    (runs[0] / "result.json").mkdir()
    assert main(_sweep(out, alpha)) == 2
    assert "is not a file" in _one_line(capsys)


@needs_fashion
def test_13_a_failed_start_writes_nothing_and_the_advice_works(sweep, tmp_path, capsys) -> None:
    _, alpha, obj = sweep
    out = tmp_path / "fresh"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    for wrong in (_sweep(out, bad), _sweep(out, alpha, "--train-limit", "1"),
                  ["reproduce", "figure1", "--trials", "1", *TINY, "--out", str(out)]):
        assert main(wrong) == 2
        _one_line(capsys)
        assert not out.exists()
    # a corrupt checkpoint of an unfinished run inside a sweep: the run starts over
    done, _, _ = sweep
    run = sorted((done / "runs").glob("*/lr*/seed*"))[0]
    (run / "result.json").unlink()
    (run / "last.pt").write_bytes(b"not a checkpoint")
    assert main(_sweep(done, alpha)) == 0
    assert json.loads(capsys.readouterr().out)["curves"] == obj["curves"]


# ------------------------------------------------------------------------- fit-alpha

SMALL_FIT = ["fit-alpha", "--trials", "32", "--widths", "2,3,4,6,8", "--channels", "8", "--no-m-law",
             "--no-progress"]


def test_2_two_fit_alpha_runs_on_one_out_one_fails_in_one_line(tmp_path, capsys, one_thread) -> None:
    import subprocess
    import sys

    out = tmp_path / "alpha"
    with io.folder_lock(out, "fit-alpha run"):  # a first run, still measuring
        assert main([*SMALL_FIT, "--out", str(out)]) == 2
        assert f"in use by another fit-alpha run (pid {os.getpid()})" in _one_line(capsys)
    assert not (out / "alpha.json").exists()
    # two real processes, different seeds, started together: one writes, the other fails in one line
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "collegial.cli", *SMALL_FIT, "--out", str(out)]
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for s in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    err = next(e for rc, e in results if rc == 2)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    seed = json.loads((out / "alpha.json").read_text())["seed"]
    assert seed == next(s for s, (rc, _) in zip((1, 2), results) if rc == 0)


# ------------------------------------------------------------------------- search and alpha files

MLP_FIT = ["fit-alpha", "--family", "mlp", "--trials", "32", "--widths", "2,3,4,6,8", "--no-m-law", "--no-progress"]


@pytest.fixture(scope="module")
def mlp_alpha(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlp_alpha")
    assert main([*MLP_FIT, "--out", str(out), "--json"]) == 0
    return out / "alpha.json"


def _search(alpha: Path, *extra: str) -> list[str]:
    return ["search", "mlp", "--baseline", "1x8d", "--alpha-file", str(alpha), "--no-m-check", "--json", *extra]


@pytest.mark.parametrize("edit, needle", [
    ({"channels": 32}, "disagree with 'input_shape'"),  # another block's channels
    ({"input_shape": [32], "channels": 32}, "measured on inputs of shape 32"),
    ({"inputs": "bogus"}, "'inputs' must be one of"),
    ({"correlation": "abc"}, "'correlation' must be a number"),
    ({"stderr": "zero"}, "must be positive"),
    ({"bn": "sometimes"}, "'bn' must be one of"),
])
def test_6_search_checks_the_alpha_files_probe(mlp_alpha, tmp_path, capsys, edit, needle) -> None:
    d = json.loads(mlp_alpha.read_text())
    if edit == {"stderr": "zero"}:
        edit = {"stderr": [0.0] * len(d["stderr"])}
    bad = tmp_path / "alpha.json"
    bad.write_text(json.dumps({**d, **edit}))
    capsys.readouterr()
    assert main(_search(bad)) == 2
    assert needle in _one_line(capsys)


def test_6_search_records_the_alpha_files_origin(mlp_alpha, capsys) -> None:
    import hashlib

    capsys.readouterr()
    assert main(_search(mlp_alpha)) == 0
    obj = json.loads(capsys.readouterr().out)
    src = obj["alpha_file"]
    assert src["path"] == str(mlp_alpha)
    assert src["sha256"] == hashlib.sha256(mlp_alpha.read_bytes()).hexdigest()
    assert src["provenance"] == json.loads(mlp_alpha.read_text())["provenance"]
    assert src["provenance"]["timestamp"]


def test_10_absurd_alpha_files_are_one_line(mlp_alpha, tmp_path, capsys) -> None:
    text = mlp_alpha.read_text()
    d = json.loads(text)
    bad = tmp_path / "alpha.json"
    for raw in (text.replace(f'"trials": {d["trials"]}', '"trials": ' + "9" * 5000),
                json.dumps({**d, "trials": 10**30})):
        bad.write_text(raw)
        assert main(_search(bad)) == 2
        err = _one_line(capsys)
        assert "trials" in err or "digits" in err, err


# ------------------------------------------------------------------------- plugins

NOISY_PLUGIN = '''
print("hello from the plugin")
from torch import nn
from collegial.models import parse_arch, register_model


@register_model("noisyfam", default_dataset="mnist")
def noisyfam(arch, *, num_classes, in_channels, resolution):
    print("building", arch)
    m, n = parse_arch(arch)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * resolution ** 2, m * n), nn.ReLU(),
                         nn.Linear(m * n, num_classes))
'''


def test_8_plugin_prints_do_not_break_json(tmp_path, capsys, family_registry) -> None:
    plugin = tmp_path / "noisy_plugin.py"
    plugin.write_text(NOISY_PLUGIN)
    try:
        for argv in (["count", "mlp", "1x8d", "--json"], ["count", "noisyfam", "2x4d", "--json"]):
            capsys.readouterr()
            assert main(["--import", str(plugin), *argv]) == 0
            out, err = capsys.readouterr()
            json.loads(out)  # exactly one JSON object
            assert "hello from the plugin" in err or "building" in err
        assert main(["--import", str(plugin), "count", "noisyfam", "2x4d"]) == 0  # without --json: as printed
    finally:
        import sys

        sys.modules.pop("noisy_plugin", None)


def test_9_import_does_not_put_the_working_folder_first(tmp_path) -> None:
    import subprocess
    import sys

    (tmp_path / "colorsys.py").write_text("open('SHADOWED', 'w').close()\n")  # a stdlib module's name
    (tmp_path / "myplug.py").write_text("import colorsys\nassert hasattr(colorsys, 'rgb_to_hsv')\n")
    script = Path(sys.executable).parent / "collegial"
    cmd = [str(script)] if script.exists() else [sys.executable, "-I", "-m", "collegial.cli"]
    r = subprocess.run([*cmd, "--import", "myplug", "count", "mlp", "1x8d", "--json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "SHADOWED").exists()
    json.loads(r.stdout)


# ------------------------------------------------------------------------- train --resume

TRAIN = ["train", "mlp", "1x8d", "--epochs", "1", "--train-limit", "256", "--test-limit", "128",
         "--batch-size", "64", "--lr", "0.02", "--no-progress"]


def test_12_resume_restores_the_runs_settings(tmp_path, capsys, one_thread) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    config = json.loads((out / "config.json").read_text())
    capsys.readouterr()
    # --resume alone: the run as it was (1 epoch, its lr, batch and data), not the recipe's 10 epochs
    assert main(["train", "--out", str(out), "--resume", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["epochs"] == 1
    assert "resuming" in cap.err and "the start of epoch 2 (1 of 1 epochs done)" in cap.err
    assert json.loads((out / "config.json").read_text())["recipe"] == config["recipe"]
    # a flag given again must match, else one line naming the difference; nothing changes
    before = _state(out)
    for extra, needle in ((["--lr", "0.5"], "--lr 0.5 (it has 0.02)"), (["--amp"], "--amp (it ran without)"),
                          (["--seed", "3"], "--seed 3 (it has 0)")):
        assert main(["train", "--out", str(out), "--resume", *extra]) == 2
        assert needle in _one_line(capsys)
    assert main(["train", "mlp", "2x8d", "--out", str(out), "--resume"]) == 2
    assert "arch '2x8d' (it has '1x8d')" in _one_line(capsys)
    assert _state(out) == before
    # only --epochs may change: the run trains one epoch more with everything else restored
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    assert json.loads((out / "config.json").read_text())["recipe"] == {**config["recipe"], "epochs": 2}


# ------------------------------------------------------------------------- probes

def test_7_a_probe_factory_that_is_not_reproducible_is_refused(capsys) -> None:
    import torch
    from torch import nn

    from collegial.ntk.alpha import run_algorithm1

    own = torch.Generator().manual_seed(0)  # a random source of its own: advances call after call

    def drifting(m: int, n: int) -> nn.Module:
        lin = nn.Linear(4, m * n)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(m * n, 4, generator=own))
        return nn.Sequential(lin, nn.ReLU(), nn.Linear(m * n, 1))

    with pytest.raises(UserError, match="probe factory is not reproducible: two calls at m=1, n=2"):
        run_algorithm1(probe=drifting, input_shape=(4,), widths=(2, 3, 4), trials=16, m_law=())


class _NaNOut(__import__("torch").nn.Module):
    def __init__(self, m: int, n: int) -> None:
        super().__init__()
        self.a, self.b = __import__("torch").nn.Linear(4, m * n), __import__("torch").nn.Linear(m * n, 1)

    def forward(self, x):
        return self.b(self.a(x).relu()) * float("nan")


class _Zero(_NaNOut):
    def forward(self, x):
        return self.b(self.a(x)) * 0.0


class _If(_NaNOut):
    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow: vmap cannot run it
            h = h.relu()
        return self.b(h)


class _Item(_NaNOut):
    def forward(self, x):
        return self.b(self.a(x)) * self.a.weight.abs().max().item()


class _Dropout(_NaNOut):
    def forward(self, x):
        return self.b(__import__("torch").nn.functional.dropout(self.a(x).relu(), 0.5, training=True))


@pytest.mark.parametrize("block, needle", [
    (_NaNOut, "NTK is not finite at m=1, n=2"), (_Zero, "K is 0 on average"),
    (_Dropout, "draws random numbers in its forward"), (_If, None), (_Item, None)])
def test_10_probes_vmap_cannot_run_fall_back_or_are_one_line(block, needle, one_thread) -> None:
    from collegial.ntk.alpha import run_algorithm1
    from collegial.ntk.generic import FactoryProbe

    kw = dict(probe=block, input_shape=(4,), widths=(2, 3, 4), trials=16, m_law=())
    if needle is not None:
        with pytest.raises(UserError, match=needle):
            run_algorithm1(**kw)
        return
    fit = run_algorithm1(**kw)  # the exact per-trial path, same numbers as the reference
    assert all(v > 0 for v in fit.variance)
    g = FactoryProbe(block, (4,), seed=0)
    k = g.k_chunk(1, 3, 4, seed=5)
    ref = [g.k_module(mod) for mod in g.build(1, 3, 4, 5)]
    assert k.tolist() == pytest.approx(ref, rel=1e-6) and not g.template(1, 3).vectorized


def test_10_plugins_paths_and_full_disks_are_one_line(tmp_path, capsys, monkeypatch, one_thread) -> None:
    boom = tmp_path / "boom.py"
    boom.write_text("class Boom(BaseException):\n    pass\n\n\nraise Boom('nope')\n")
    assert main(["--import", str(boom), "count", "mlp", "1x8d"]) == 2
    assert "Boom: nope" in _one_line(capsys)
    long = tmp_path / ("x" * 300)
    for argv in ([*SMALL_FIT, "--out", str(long)], [*TRAIN, "--out", str(long)],
                 ["search", "mlp", "--baseline", "1x8d", "--alpha-file", str(long / "alpha.json")]):
        assert main(argv) == 2
        assert "File name too long" in _one_line(capsys)
    _full_disk(monkeypatch)  # alpha.json/alpha.png and a run's files on a full disk
    assert main([*MLP_FIT, "--out", str(tmp_path / "a")]) == 2
    assert "No space left on device" in _one_line(capsys)
    assert not (tmp_path / "a" / "alpha.json").exists()
    assert main([*TRAIN, "--out", str(tmp_path / "r")]) == 2
    assert "No space left on device" in _one_line(capsys)


# ------------------------------------------------------------------------- up-front limits

def test_11_runs_that_cannot_fit_are_refused_before_starting(capsys, monkeypatch) -> None:
    from collegial.ntk import alpha

    assert main(["fit-alpha", "--trials", str(10**18), "--no-progress"]) == 2
    assert "trials per width (--trials) exceed the limit of 10,000,000" in _one_line(capsys)
    monkeypatch.setattr(alpha, "available_memory", lambda *a: 4 << 30)  # a 4 GiB machine
    assert main(["fit-alpha", "--m-law", "100000", "--widths", "2,4,8", "--trials", "32", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert "the probe at m=100000, n=8 needs about" in err and "of the 4.0 GiB available" in err
    assert "--m-law" in err
    assert main(["search", "mlp", "--baseline", "1x8d", "--trials", str(10**9)]) == 2  # Algorithm 1 run by search
    err = capsys.readouterr().err.splitlines()
    assert "exceed the limit" in err[-1] and len(err) == 2  # its announcement, then the one error line


def test_12_resume_of_a_multi_seed_run_keeps_its_seeds(tmp_path, capsys, one_thread) -> None:
    out = tmp_path / "runs"
    assert main([*TRAIN, "--seeds", "2", "--seed", "3", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [3, 4]
    assert sorted(p.name for p in out.iterdir()) == ["seed3", "seed4", "summary.json"]


@needs_fashion
def test_10_a_read_only_out_is_one_line(tmp_path, capsys, monkeypatch, one_thread) -> None:
    alpha = _alpha(tmp_path / "alpha.json")
    real_open = io.os.open

    def read_only(path, *a, **k):  # as on a read-only folder (root ignores chmod, so simulated)
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(io.os, "open", read_only)
    assert main(_sweep(tmp_path / "ro", alpha)) == 2
    assert "cannot use --out" in (err := _one_line(capsys)) and "Permission denied" in err


def test_11_a_long_run_says_how_long_before_starting(capsys, monkeypatch, one_thread) -> None:
    import torch

    from collegial.ntk import alpha
    from collegial.ntk.inputs import ProbeInputs

    probes, per = alpha._pair_probes(alpha.probe_spec("mlp"), ProbeInputs(), 64, channels=None, spatial=None,
                                     bn="none", seed=0, dtype=torch.float32, parameterization="standard")
    est = alpha.estimate_seconds(probes, [(1, 2), (1, 8), (1, 32)], per)
    assert est is not None and 0 < est < 60
    monkeypatch.setattr(alpha, "estimate_seconds", lambda *a: 7200.0)
    alpha.run_algorithm1(family="mlp", widths=(2, 4, 8), trials=16, m_law=(), progress=True)
    assert "Algorithm 1 will take about 2.0 h here" in capsys.readouterr().err


# ------------------------------------------------------------------------- one writer, enforced



def test_4_every_file_is_written_through_collegial_io() -> None:
    import re

    src = Path(io.__file__).parent
    raw = re.compile(r"\.write_text\(|\.write_bytes\(|json\.dump\(|os\.replace\(|\.savefig\(|"
                     r"open\([^)]*['\"][wa]b?['\"]")
    bad = []
    for path in sorted(src.rglob("*.py")):
        rel = str(path.relative_to(src))
        if rel == "io.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if raw.search(line) and "os.devnull" not in line and not line.lstrip().startswith(("#", '"', "``")):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "write through collegial.io (atomic):\n" + "\n".join(bad)
