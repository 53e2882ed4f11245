"""collegial's submitit launcher against a real single-node Slurm (issue 23 point 2):
``bench/slurm_check.sh`` installs Slurm from Debian's packages, starts its daemons, runs a job array
through :func:`collegial.launch.run_jobs` and a time-limit warning that checkpoints, requeues and
continues, then stops the daemons. It installs packages and starts daemons as root, so it runs only
where ``COLLEGIAL_SLURM_CHECK=1`` asks for it (CI's ``.ci/run``), never in a plain ``make test``.
Where the cluster cannot be started the test is skipped with the script's reason; a cluster that
starts and a launcher that fails on it is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "slurm_check.sh"
CANNOT_START = 3  # the script's exit status when the cluster could not be started
LIMIT_S = 540  # a backstop: the script's own time limits add up to 490 s


def _run_script(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PY": sys.executable, **env}, timeout=LIMIT_S)


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root here: the script would go on to install Slurm")
def test_without_root_it_installs_nothing_and_says_why() -> None:
    r = _run_script()
    assert r.returncode == CANNOT_START
    assert r.stdout == "slurm_check: could not start Slurm: not root (it installs packages and starts daemons)\n"


@pytest.mark.skipif(os.environ.get("COLLEGIAL_SLURM_CHECK") != "1",
                    reason="the Slurm check installs packages and starts daemons as root: "
                    "set COLLEGIAL_SLURM_CHECK=1 to run it (CI's .ci/run does)")
def test_the_submitit_launcher_on_a_single_node_slurm() -> None:
    pytest.importorskip("submitit")
    try:
        r = _run_script(STOP="1")
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"bench/slurm_check.sh ran past {LIMIT_S} s: {e.stdout!r}")
    out = r.stdout + r.stderr
    if r.returncode == CANNOT_START:
        reason = [line for line in r.stdout.splitlines() if "could not start Slurm:" in line]
        pytest.skip(reason[-1].removeprefix("slurm_check: ") if reason else f"could not start Slurm: {out[-500:]}")
    assert r.returncode == 0 and "slurm_check: passed" in r.stdout, out[-4000:]
    print(r.stdout)  # the times of each step (pytest -rP shows them)
