"""The learning-rate milestones follow ``--epochs`` (the recipe's schedule scaled to the run's
length) unless ``--fixed-milestones`` or ``--milestones`` is given; ``--resume`` keeps the
milestones a run started with, including runs started before milestones followed ``--epochs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collegial.cli import main
from collegial.commands import train as train_cmd
from collegial.train.data import synthetic_dataset
from collegial.train.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST = get_recipe("mnist")  # 10 epochs, milestones 5, 8, gamma 0.1


def test_with_overrides_scales_the_schedule_to_the_new_length() -> None:
    assert MNIST.milestones == (5, 8) and MNIST.epochs == 10
    assert MNIST.with_overrides({"epochs": 2}).milestones == (1, 2)
    assert MNIST.with_overrides({"epochs": "20", "lr": "0.1"}).milestones == (10, 16)
    assert MNIST.with_overrides({"epochs": 2}, fixed_milestones=True).milestones == (5, 8)
    assert MNIST.with_overrides({"epochs": 2, "milestones": "1"}).milestones == (1,)
    assert MNIST.with_overrides({"lr": 0.2}) == MNIST.override(lr=0.2)
    assert MNIST.with_overrides({"epochs": 10}) == MNIST


def _train(tmp_path: Path, monkeypatch, *flags: str, out: str = "run") -> int:
    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=32)
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: data)
    return main(["train", "mlp", "1x8d", "--batch-size", "32", "--no-progress",
                 "--out", str(tmp_path / out), *flags])


def _recipe_of(tmp_path: Path, out: str = "run") -> dict:
    return json.loads((tmp_path / out / "config.json").read_text())["recipe"]


def _lrs(tmp_path: Path, out: str = "run") -> list[float]:
    lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(s)["lr"] for s in lines]


@pytest.mark.parametrize(
    "flags, milestones",
    [
        ([], [1, 2]),  # the default: 5, 8 of 10 epochs scaled to 2
        (["--scale-milestones"], [1, 2]),  # the old flag, now the default, still accepted
        (["--fixed-milestones"], [5, 8]),
        (["--milestones", "1"], [1]),
    ],
)
def test_a_short_run_decays_its_learning_rate(tmp_path, monkeypatch, capsys, flags, milestones) -> None:
    assert _train(tmp_path, monkeypatch, "--epochs", "2", *flags) == 0
    assert _recipe_of(tmp_path)["milestones"] == milestones
    lr = MNIST.lr
    assert _lrs(tmp_path) == ([lr, lr] if milestones == [5, 8] else [lr, lr * MNIST.gamma])


def test_fixed_and_scale_together_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    assert _train(tmp_path, monkeypatch, "--epochs", "2", "--fixed-milestones", "--scale-milestones") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contradict" in err[0]
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_milestones_the_run_started_with(tmp_path, monkeypatch, capsys) -> None:
    """A longer --resume neither rescales a scaled run's milestones nor scales a run whose
    config.json kept the recipe's (as every run before milestones followed --epochs did)."""
    assert _train(tmp_path, monkeypatch, "--epochs", "2", out="scaled") == 0
    assert _train(tmp_path, monkeypatch, "--epochs", "1", "--fixed-milestones", out="fixed") == 0
    config = json.loads((tmp_path / "fixed" / "config.json").read_text())
    assert config["recipe"]["milestones"] == [5, 8]  # what an old run's config.json holds
    for out, milestones in (("scaled", [1, 2]), ("fixed", [5, 8])):
        assert main(["train", "--out", str(tmp_path / out), "--resume", "--epochs", "3", "--no-progress"]) == 0
        assert _recipe_of(tmp_path, out) == {**_recipe_of(tmp_path, out), "milestones": milestones, "epochs": 3}
    lr, g = MNIST.lr, MNIST.gamma
    assert _lrs(tmp_path, "scaled") == pytest.approx([lr, lr * g, lr * g * g])
    assert _lrs(tmp_path, "fixed") == [lr, lr, lr]


def test_config_scales_its_runs_schedule(tmp_path, monkeypatch, capsys) -> None:
    """--config FILE --epochs E: that run's recipe, its schedule scaled to E like a recipe's."""
    assert _train(tmp_path, monkeypatch, "--epochs", "2", out="first") == 0
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: synthetic_dataset(
        name="mnist", channels=1, resolution=28, num_train=64, num_test=32))
    base = ["train", "--config", str(tmp_path / "first"), "--no-progress", "--epochs", "4"]
    assert main([*base, "--out", str(tmp_path / "second")]) == 0
    assert _recipe_of(tmp_path, "second")["milestones"] == [2, 4]
    assert main([*base, "--fixed-milestones", "--out", str(tmp_path / "third")]) == 0
    assert _recipe_of(tmp_path, "third")["milestones"] == [1, 2]


def test_resume_and_config_restore_the_recipes_switches(tmp_path, monkeypatch, capsys) -> None:
    """--nesterov/--no-nesterov and --flip/--no-flip are stored in config.json: --resume keeps
    them (giving the other form is one line naming it) and --config starts from them (a switch
    given overrides them)."""
    assert _train(tmp_path, monkeypatch, "--epochs", "1", "--nesterov", "--flip", out="first") == 0
    assert (_recipe_of(tmp_path, "first")["nesterov"], _recipe_of(tmp_path, "first")["flip"]) == (True, True)
    resume = ["train", "--out", str(tmp_path / "first"), "--resume", "--no-progress"]
    assert main([*resume, "--no-nesterov"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-nesterov (it has True)" in err[0]
    assert main([*resume, "--epochs", "2", "--nesterov"]) == 0
    assert (_recipe_of(tmp_path, "first")["nesterov"], _recipe_of(tmp_path, "first")["flip"]) == (True, True)
    config = ["train", "--config", str(tmp_path / "first"), "--no-progress", "--epochs", "1"]
    assert main([*config, "--out", str(tmp_path / "same")]) == 0
    assert (_recipe_of(tmp_path, "same")["nesterov"], _recipe_of(tmp_path, "same")["flip"]) == (True, True)
    assert main([*config, "--no-flip", "--out", str(tmp_path / "noflip")]) == 0
    assert (_recipe_of(tmp_path, "noflip")["nesterov"], _recipe_of(tmp_path, "noflip")["flip"]) == (True, False)
