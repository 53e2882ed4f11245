"""``collegial fit-alpha``: JSON on stdout, files in --out, errors as one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from collegial.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["fit-alpha", "--trials", "16", "--widths", "2,4,8", "--channels", "8"]
SMALL += ["--m-law", "2", "--m-law-width", "2"]
CONTRACT = ("alpha", "fit2", "widths", "variance", "stderr", "trials")
CONTRACT += ("family", "channels", "bn", "seed", "m_law")


def test_json_and_out_dir(tmp_path, capsys) -> None:
    out = tmp_path / "alpha"
    assert main([*SMALL, "--json", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)
    for key in CONTRACT:
        assert key in obj
    assert obj["widths"] == [2, 4, 8] and obj["trials"] == 16 and obj["channels"] == 8
    assert set(obj["fit2"]) == {"beta", "p", "alpha"} and obj["m_law"][0]["m"] == 2
    assert json.loads((out / "alpha.json").read_text()) == obj
    assert (out / "alpha.png").stat().st_size > 1000
    # never overwrite silently
    assert main([*SMALL, "--json", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and len(err.splitlines()) == 1
    assert main([*SMALL, "--json", "--out", str(out), "--force", "--no-progress", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 1


def test_table_output_and_mlp_family(capsys) -> None:
    assert main([*SMALL, "--family", "mlp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "prop1: alpha" in out and "fit2:" in out and "1/m law" in out


@pytest.mark.parametrize(
    "extra",
    [
        ["--widths", "2,x,8"],
        ["--widths", "4"],
        ["--trials", "1"],
        ["--family", "transformer"],
        ["--bn", "sometimes"],
        ["--family", "mlp", "--bn", "train"],
        ["--param", "mup"],
    ],
)
def test_user_errors_exit_2(extra: list[str], capsys) -> None:
    assert main([*SMALL, *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("collegial fit-alpha: error:") and len(err.splitlines()) == 1
