"""DDP on the CPU: 2 gloo processes under torchrun give the weights of 1 process with the same
global batch (float tolerance), and only rank 0 writes.

The MLP family has no BatchNorm, so the two runs compute the same function up to summation
order: each rank's mean loss over its half batch, averaged by DDP, is the mean over the global
batch (``DeviceLoader`` shards every global batch in two equal halves with the same crops and
flips the single process draws).

This file is also the driver: ``python tests/test_train_distributed.py OUT`` (alone or under
``torchrun --nproc_per_node 2``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

EPOCHS, TRAIN, BATCH = 2, 256, 32


def _driver(argv: list[str]) -> None:
    from collegial.train.data import synthetic_dataset
    from collegial.train.distributed import teardown
    from collegial.train.loop import RunConfig, train
    from collegial.train.recipes import get_recipe

    torch.set_num_threads(1)
    data = synthetic_dataset(
        name="mnist", channels=1, resolution=28, num_train=TRAIN, num_test=100, seed=5
    )
    recipe = get_recipe("mnist").override(
        epochs=EPOCHS, batch_size=BATCH, lr=0.02, milestones=(1,), crop_padding=2, flip=True
    )
    cfg = RunConfig("mlp", "4x16d", "mnist", Path(argv[0]), seed=3, verbose=False)
    try:
        train(cfg, recipe, data)
    finally:
        teardown()


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run(
        [sys.executable, __file__, str(one)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", __file__, str(two),
        ],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]

    a = torch.load(one / "last.pt", weights_only=True)
    b = torch.load(two / "last.pt", weights_only=True)
    assert b["config"]["world_size"] == 2 and a["config"]["world_size"] == 1
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert a["model"].keys() == b["model"].keys()  # no "module." prefix from DDP
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], atol=1e-5, rtol=1e-5)
    # the weights moved: the comparison is not between two initializations
    assert not torch.allclose(a["model"]["layers.0.weight"], _init_weight(), atol=1e-3)

    ma = [json.loads(s) for s in (one / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(s) for s in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(ma) == len(mb) == EPOCHS  # rank 1 wrote nothing
    for x, y in zip(ma, mb, strict=True):
        assert abs(x["train_loss"] - y["train_loss"]) < 1e-4
        assert abs(x["test_loss"] - y["test_loss"]) < 1e-4
        assert x["test_top1_err"] == y["test_top1_err"]  # 100 test images split 50/50


def _init_weight() -> torch.Tensor:
    from collegial.models import create_model

    torch.manual_seed(3)
    return create_model("mlp", arch="4x16d", dataset="mnist").state_dict()["layers.0.weight"]


if __name__ == "__main__":
    _driver(sys.argv[1:])
