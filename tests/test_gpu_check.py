"""``bench/gpu_check.sh`` (the GPU checks, run where a GPU is lent): it parses, stops in one line
without CUDA, and its device comparison (``bench/compare_devices.py``) accepts equal results and
refuses different ones."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _compare():
    spec = importlib.util.spec_from_file_location("compare_devices", ROOT / "bench" / "compare_devices.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_parses_and_names_the_issue_23_checks() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "fit-alpha" in text and "compare_devices.py alpha" in text and "compare_devices.py verify" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_it_stops_in_one_line(tmp_path) -> None:
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "out")}
    env.pop("DEVICE", None)
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no CUDA device here" in r.stderr and "DEVICE=cpu" in r.stderr
    assert not (tmp_path / "out").exists()


def _alpha(scale: float = 1.0) -> dict:
    return {"widths": [2, 4], "trials": 32, "seed": 0, "variance": [1.0, 0.5 * scale], "stderr": [0.1, 0.05],
            "pair_variance": [[1.0, 1.0], [0.5, 0.5]], "m_law": [{"ratio": 1.01}], "seconds": 2.0}


def test_compare_accepts_float_noise_and_refuses_a_difference(tmp_path, capsys) -> None:
    cmp = _compare()
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_alpha()))
    b.write_text(json.dumps(_alpha(1 + 1e-6)))
    c.write_text(json.dumps(_alpha(1.01)))
    assert cmp.main(["alpha", str(a), str(b)]) == 0
    assert "the same within rtol" in capsys.readouterr().out
    assert cmp.main(["alpha", str(a), str(c)]) == 1
    assert "DIFFERENT beyond rtol" in capsys.readouterr().out
    v = {"measured": [{"arch": "1x64d", "v": 0.2, "mean_k": 3.0, "seconds": 1.5}]}
    w = {"measured": [{"arch": "2x32d", "v": 0.2, "mean_k": 3.0, "seconds": 1.5}]}
    assert cmp.verify_rows(v, v) == [("1x64d v", 0.0), ("1x64d E[K]", 0.0)]
    assert cmp.verify_rows(v, w)[0][1] == float("inf")
    assert cmp.rel_diff([1.0, None], [1.0, None]) == 0.0 and cmp.rel_diff([1.0], [1.0, 2.0]) == float("inf")
