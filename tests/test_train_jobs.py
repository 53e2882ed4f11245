"""``train --seeds K`` under a launcher: each seed is a job (``_seed_job``) that submitit may run
again (requeued after a time-out or a preemption); a job whose folder holds its own checkpoint
continues it instead of being refused or starting over."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from collegial.cli import main
from collegial.commands import train as train_cmd
from collegial.train.data import synthetic_dataset
from collegial.train.loop import RunConfig
from collegial.train.recipes import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    return synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=32)


def _epochs(folder: Path) -> list[dict]:
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def _stored_recipe(folder: Path, **changes) -> Recipe:
    stored = json.loads((folder / "config.json").read_text())["recipe"]
    return Recipe(**{**stored, "milestones": tuple(stored["milestones"])}).override(**changes)


@pytest.fixture
def first_run(tmp_path, monkeypatch, capsys) -> Path:
    """A finished one-epoch seed 0 of a two-seed run: DIR/seed0 holds last.pt."""
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: _data())
    argv = ["train", "mlp", "1x8d", "--batch-size", "32", "--epochs", "1", "--seeds", "2", "--no-progress",
            "--device", "cpu", "--out", str(tmp_path / "base")]
    assert main(argv) == 0
    capsys.readouterr()
    return tmp_path / "base" / "seed0"


def _cfg(out: Path, **changes) -> RunConfig:
    return RunConfig(family="mlp", arch="1x8d", dataset="mnist", out=out, seed=0, device="cpu", progress=False,
                     **changes)


def test_a_requeued_seed_job_continues_its_checkpoint(first_run) -> None:
    """The same call again (resume and overwrite as the command gave them: neither) finds the
    job's last.pt and continues it: epoch 1 is the stored one, epoch 2 is new."""
    before = _epochs(first_run)
    res = train_cmd._seed_job(_cfg(first_run), _stored_recipe(first_run, epochs=2), None, None, None, time.time())
    after = _epochs(first_run)
    assert len(before) == 1 and len(after) == 2 and after[0] == before[0]
    assert res.stopped is None and res.test_top1_err == json.loads((first_run / "result.json").read_text())[
        "test_top1_err"]


def test_with_overwrite_only_a_checkpoint_of_this_command_is_continued(first_run) -> None:
    """--overwrite: a last.pt older than the submission is the run being started over (another
    learning rate shows it is redone, not continued); one written after it is the job's own."""
    before = _epochs(first_run)
    mtime = (first_run / "last.pt").stat().st_mtime
    recipe = _stored_recipe(first_run, epochs=2)
    train_cmd._seed_job(_cfg(first_run, overwrite=True), recipe, None, None, None, mtime - 1)  # its own: continued
    assert _epochs(first_run)[0] == before[0] and len(_epochs(first_run)) == 2
    os.utime(first_run / "last.pt", (mtime, mtime))
    other = _stored_recipe(first_run, epochs=1, lr=recipe.lr / 2)
    train_cmd._seed_job(_cfg(first_run, overwrite=True), other, None, None, None, time.time() + 1)  # older: redone
    redone = _epochs(first_run)
    assert len(redone) == 1 and redone[0]["lr"] == other.lr and redone[0] != before[0]


# --------------------------------------------------------------------------- several tasks per job


def _tiny_run(out: str) -> dict:
    """One tiny training run (synthetic data), as a job's task runs it: the world it saw and
    its result."""
    import torch.distributed as dist

    from collegial.train.loop import train

    res = train(_cfg(Path(out)), _stored_recipe_of_mnist(), _data())
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {"rank": int(os.environ.get("RANK", "0")), "world": world, "top1": res.test_top1_err}


def _stored_recipe_of_mnist() -> Recipe:
    from collegial.train.recipes import get_recipe

    return get_recipe("mnist").override(epochs=1, batch_size=32)


def test_a_two_task_submitit_job_trains_one_run_with_ddp(tmp_path) -> None:
    """--gpus-per-job G > 1 makes each job G tasks; on the CPU (gloo) submitit's local executor
    runs a two-task job: both tasks join one process group of world size 2, rank 0 writes the
    run, and the job's result is rank 0's."""
    pytest.importorskip("submitit")
    cloudpickle = pytest.importorskip("cloudpickle")
    import sys

    from collegial.launch import Launcher, run_jobs

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job's processes cannot import tests/
    launcher = Launcher("submitit", cluster="local", tasks_per_job=2, time_min=5)
    (out,) = run_jobs(_tiny_run, [(str(tmp_path / "run"),)], launcher, tmp_path / "submitit")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert out == {"rank": 0, "world": 2, "top1": result["test_top1_err"]}
    assert config["world_size"] == 2


def test_gpus_per_job_makes_one_task_per_gpu_and_exports_the_ddp_environment(tmp_path, monkeypatch) -> None:
    """--launcher submitit --gpus-per-job 2 (no GPU needed here: the executor is a stand-in):
    the executor is asked for 2 tasks and 2 GPUs per job; each task exports the torch.distributed
    environment (every GPU of the job kept visible) before the run and gets rank 0's result; the
    runs default to cuda without a GPU on the submitting machine."""
    submitit = pytest.importorskip("submitit")
    import argparse

    from collegial import launch
    from collegial.commands.launch_options import add_launcher_arguments, jobs_device, launcher_from_args

    asked: dict = {}
    exported: list[dict] = []

    class Job:
        job_id = "1"

        def __init__(self, value):
            self.value = value

        def results(self):
            return [self.value, "rank 1's"]

    class Executor:
        cluster = "slurm"

        def __init__(self, folder, cluster=None):
            pass

        def update_parameters(self, **params):
            asked.update(params)

        def map_array(self, task, *columns):
            asked["distributed"] = task.distributed
            return [Job(task(*c)) for c in zip(*columns)]

    class Env:
        def export(self, **kwargs):
            exported.append(kwargs)
            return self

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    monkeypatch.setattr(submitit.helpers, "TorchDistributedEnvironment", Env)
    p = argparse.ArgumentParser()
    p.add_argument("--device", default=None)
    add_launcher_arguments(p)
    args = p.parse_args(["--launcher", "submitit", "--gpus-per-job", "2"])
    launcher = launcher_from_args(args)
    assert launcher.tasks == 2 and jobs_device(args, launcher) == "cuda"
    assert launch.run_jobs(str.upper, [("a",), ("b",)], launcher, tmp_path) == ["A", "B"]
    assert (asked["tasks_per_node"], asked["gpus_per_node"], asked["distributed"]) == (2, 2, True)
    assert exported == [{"set_cuda_visible_devices": False, "overwrite": True}] * 2
    one = launcher_from_args(p.parse_args(["--launcher", "submitit", "--gpus-per-job", "1"]))
    asked.clear()
    exported.clear()
    assert launch.run_jobs(str.upper, [("a",)], one, tmp_path) == ["A"]
    assert (asked["tasks_per_node"], asked["distributed"], exported) == (1, False, [])


def test_several_tasks_only_under_submitit() -> None:
    from collegial.errors import UserError
    from collegial.launch import Launcher

    assert Launcher("local", jobs=2, gpus_per_job=4).tasks == 1  # --gpus-per-job is submitit's option
    with pytest.raises(UserError, match="several only with the submitit launcher"):
        Launcher("local", tasks_per_job=2)
    with pytest.raises(UserError, match="at least 1"):
        Launcher("local", tasks_per_job=0)
