"""Absurd inputs to fit-alpha and search end in one line and exit code 2, before any long work;
answers are buildable members of the family; the JSON written is strict (no NaN or inf), for the
variance curve and the search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collegial.cli import main
from collegial.errors import UserError
from collegial.ntk.curve import AlphaFit, synthetic_fit

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTHS = [2, 3, 4, 6, 8, 12, 16, 32, 64, 128]
BASE = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d"]


def _alpha(tmp_path, **changes):
    obj = {**synthetic_fit(lambda n: np.expm1(2.5 / n), WIDTHS, rel_stderr=0.03).to_dict(), **changes}
    p = tmp_path / "alpha.json"
    p.write_text(json.dumps(obj))
    return str(p)


def _one_line(capsys, argv):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, msg", [
    (["--budget-value", "1T"], "not a buildable resnext29"),
    (["--budget-value", "1e30"], "exceeds 1e+18"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--draws", "100000000"], "--draws must lie in 2..100000"),
    (["--draws", "1"], "--draws must lie in"),
])
def test_search_options_out_of_range(tmp_path, capsys, extra, msg):
    assert msg in _one_line(capsys, BASE + ["--alpha-file", _alpha(tmp_path), *extra])


@pytest.mark.parametrize("changes, msg", [
    ({"trials": float("inf")}, "'trials' must be a non-negative integer"),
    ({"seed": float("nan")}, "'seed' must be"),
    ({"pairs": 0}, "'pairs' must be a positive integer"),
    ({"variance": [1e308] * len(WIDTHS)}, "must lie in (0, 1e+12]"),
    ({"stderr": [1e300] * len(WIDTHS)}, "'stderr' entries must lie in"),
    ({"widths": [2, 3, 4, 6, 8, 12, 16, 32, 64, 1e20]}, "integers in 1..4096"),
])
def test_absurd_alpha_files_are_refused(tmp_path, capsys, changes, msg):
    assert msg in _one_line(capsys, BASE + ["--alpha-file", _alpha(tmp_path, **changes)])


def test_deep_nesting_and_unfittable_tables(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in _one_line(capsys, BASE + ["--alpha-file", str(deep)])
    # a table that slipped past validation (built directly): the fit refuses, never returns NaN
    from collegial.ntk.fits import VarianceModel

    w = np.asarray(WIDTHS, dtype=np.int64)
    v = np.expm1(2.5 / w)
    v[3] = np.inf
    for kind in ("prop1", "fit2", "smooth", "empirical"):
        with pytest.raises(UserError, match="cannot be fitted"):
            VarianceModel(kind, w, v, 0.03 * v)(np.array([10]))
    assert "no estimate" in _one_line(capsys, BASE + ["--alpha-file", _alpha(
        tmp_path, stderr=(500 * np.expm1(2.5 / w)).tolist())])


def test_json_is_strict_and_answers_are_buildable(tmp_path, capsys):
    # a huge standard error at one width: the bootstrap spread is enormous, the JSON still strict
    v = np.expm1(2.5 / np.asarray(WIDTHS, dtype=float))
    se = 0.03 * v
    se[0] = 60 * v[0]
    path = _alpha(tmp_path, stderr=se.tolist())
    assert main(BASE + ["--alpha-file", path, "--json", "--variance", "empirical"]) == 0
    out = capsys.readouterr().out
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_fit_alpha_out_is_checked_before_the_trials(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    small = ["fit-alpha", "--trials", "16", "--widths", "2,3,4", "--channels", "8", "--no-m-law", "--no-progress"]
    assert "is not a directory" in _one_line(capsys, small + ["--out", str(f)])
    assert "cannot create" in _one_line(capsys, small + ["--out", str(f / "sub")])
    assert "--seed must be >= 0" in _one_line(capsys, small + ["--seed", "-3"])


def test_alpha_json_is_written_atomically(tmp_path, monkeypatch):
    fit = synthetic_fit(lambda n: np.expm1(2.5 / n), WIDTHS)
    path = tmp_path / "alpha.json"
    fit.to_json(path)
    good = path.read_text()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    import collegial.io

    monkeypatch.setattr(collegial.io.os, "fsync", full_disk)  # every file goes through collegial.io
    with pytest.raises(UserError, match="No space left"):
        fit.to_json(path, overwrite=True)
    monkeypatch.undo()
    assert path.read_text() == good  # the previous good file survives
    assert not list(tmp_path.glob(".alpha.json.tmp-*"))
    assert AlphaFit.from_json(path).widths == WIDTHS
