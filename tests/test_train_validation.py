"""The validation split held out of the training images: which images it holds (by content),
that training never sees them and the test split is no part of them, that every run seed holds
out the same ones, its metrics in metrics.jsonl / metrics.csv / result.json, its up-front
errors, and resume of runs with and without one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from collegial.cli import main
from collegial.commands import train as train_cmd
from collegial.errors import UserError
from collegial.models import create_model
from collegial.train.data import (
    DeviceLoader,
    ImageData,
    hold_out,
    synthetic_dataset,
    validation_indices,
)
from collegial.train.distributed import setup
from collegial.train.loop import RunConfig, evaluate, train
from collegial.train.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN, N_TEST, N_VAL = 320, 96, 64


def _tagged(n_train: int = N_TRAIN, n_test: int = N_TEST) -> ImageData:
    """Images whose first pixels say which split and index each is: byte 0 the split (1 train,
    2 test), bytes 1-2 the index; the rest is the synthetic data's (learnable) content."""
    base = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=n_train,
                             num_test=n_test, seed=4)
    train_x, test_x = base.train_x.clone(), base.test_x.clone()
    for split, x in ((1, train_x), (2, test_x)):
        idx = torch.arange(x.shape[0])
        x[:, 0, 0, 0] = split
        x[:, 0, 0, 1] = idx % 256
        x[:, 0, 0, 2] = idx // 256
    return ImageData("mnist", train_x, base.train_y, test_x, base.test_y, 10, base.mean, base.std)


def _tags(x: torch.Tensor) -> list[tuple[int, int]]:
    px = x[:, 0, 0, :3].long()
    return [(int(s), int(lo + 256 * hi)) for s, lo, hi in px.tolist()]


def _recipe(**kw):
    return get_recipe("mnist").override(**{"epochs": 2, "batch_size": 32, "lr": 0.02,
                                           "milestones": (1,), "gamma": 0.5, **kw})


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig("mlp", "2x16d", "mnist", out, verbose=False, **kw)


def test_indices_are_fixed_distinct_and_in_range() -> None:
    a = validation_indices(1000, 100)
    assert torch.equal(a, validation_indices(1000, 100))  # no hidden state: the same every call
    assert a.dtype == torch.int64 and a.tolist() == sorted(set(a.tolist()))
    assert 0 <= int(a.min()) and int(a.max()) < 1000 and len(a) == 100
    assert not torch.equal(a, torch.arange(100))  # spread over the set, not its head
    assert not torch.equal(a, validation_indices(1000, 100, seed=1))
    assert validation_indices(1000, 0).numel() == 0
    for n in (1000, 1001, -1):
        with pytest.raises(UserError, match="val_images"):
            validation_indices(1000, n)


def test_hold_out_splits_the_training_images_by_content() -> None:
    """Validation and kept training images partition the training set (by their tags); no image
    of the test split is among either."""
    data = _tagged()
    held = hold_out(data, N_VAL)
    val, kept = _tags(held.val_x), _tags(held.train_x)
    assert held.num_val == N_VAL and len(kept) == N_TRAIN - N_VAL
    assert {s for s, _ in val + kept} == {1}  # training images only, never a test image
    assert [i for _, i in val] == held.val_index.tolist()
    assert sorted(i for _, i in val + kept) == list(range(N_TRAIN))
    assert torch.equal(held.val_y, data.train_y[held.val_index])
    mask = torch.ones(N_TRAIN, dtype=torch.bool)
    mask[held.val_index] = False
    assert torch.equal(held.train_y, data.train_y[mask])
    none = hold_out(data, 0)
    assert none.num_val == 0 and none.train_x.shape[0] == N_TRAIN


def _eval_val(out: Path, data: ImageData) -> dict[str, float]:
    """The validation metrics of ``out``'s final model, recomputed on :func:`hold_out`'s images."""
    model = create_model("mlp", arch="2x16d", dataset="mnist")
    model.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    held = hold_out(data, N_VAL)
    loader = DeviceLoader(held.val_x, held.val_y, batch_size=256, mean=data.mean, std=data.std,
                          train=False)
    return evaluate(model, loader, setup("cpu")[0], split="val")


def test_every_seed_is_evaluated_on_the_same_held_out_images(tmp_path) -> None:
    """Two run seeds: each epoch's val_* metrics are those of hold_out's images (recomputed from
    the final model) and appear in metrics.jsonl, metrics.csv, result.json and the result."""
    data = _tagged()
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        res = train(_cfg(out, seed=seed, val_images=N_VAL), _recipe(), data)
        lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
        assert all({"val_loss", "val_top1_err", "val_top5_err"} <= set(r) for r in lines)
        again = _eval_val(out, data)
        assert lines[-1]["val_loss"] == pytest.approx(again["val_loss"], rel=1e-6)
        assert lines[-1]["val_top1_err"] == pytest.approx(again["val_top1_err"])
        assert res.val_top1_err == lines[-1]["val_top1_err"] and res.val_loss == lines[-1]["val_loss"]
        result = json.loads((out / "result.json").read_text())
        assert result["val_images"] == N_VAL and result["val_top1_err"] == res.val_top1_err
        assert json.loads((out / "config.json").read_text())["val_images"] == N_VAL
        rows = list(csv.DictReader((out / "metrics.csv").open()))
        assert float(rows[-1]["val_top1_err"]) == pytest.approx(res.val_top1_err)
        # steps per epoch count only the images trained on
        assert len(lines) == 2 and torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def _with(data: ImageData, **changes: torch.Tensor) -> ImageData:
    fields = {k: getattr(data, k) for k in ("train_x", "train_y", "test_x", "test_y")}
    fields.update(changes)
    return ImageData(data.name, fields["train_x"], fields["train_y"], fields["test_x"],
                     fields["test_y"], data.num_classes, data.mean, data.std)


def test_training_never_sees_the_held_out_images_nor_the_split_the_test(tmp_path) -> None:
    """Relabelling the held-out images changes the validation metrics only (training and test
    identical); changing the test images changes the test metrics only."""
    data = _tagged()
    idx = hold_out(data, N_VAL).val_index
    relabelled = data.train_y.clone()
    relabelled[idx] = (relabelled[idx] + 1) % 10
    other_test = (data.test_x.long() * 7 % 256).to(torch.uint8).contiguous()
    runs = {}
    for name, d in (("base", data), ("val", _with(data, train_y=relabelled)),
                    ("test", _with(data, test_x=other_test))):
        runs[name] = train(_cfg(tmp_path / name, val_images=N_VAL), _recipe(epochs=1), d).history[-1]

    def part(r: dict, prefix: str) -> list[float]:  # the metrics, not the timings
        return [r[k] for k in sorted(r) if k.startswith(prefix) and not k.endswith("_seconds")]

    base, val, test = runs["base"], runs["val"], runs["test"]
    assert part(val, "train_") == part(base, "train_") and part(val, "test_") == part(base, "test_")
    assert part(val, "val_") != part(base, "val_")
    assert part(test, "train_") == part(base, "train_") and part(test, "val_") == part(base, "val_")
    assert part(test, "test_") != part(base, "test_")


def test_without_val_images_nothing_changes(tmp_path) -> None:
    data = _tagged()
    res = train(_cfg(tmp_path / "r"), _recipe(epochs=1), data)
    assert res.val_top1_err is None and not any(k.startswith("val_") for k in res.history[-1])
    assert json.loads((tmp_path / "r" / "result.json").read_text())["val_images"] == 0


def test_too_many_val_images_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(UserError, match="val_images=320 .* 320 training images"):
        train(_cfg(tmp_path / "r", val_images=N_TRAIN), _recipe(), _tagged())
    assert not (tmp_path / "r").exists()


def test_resume_keeps_the_split_and_old_runs_resume_without_one(tmp_path) -> None:
    data = _tagged()
    out = tmp_path / "r"
    train(_cfg(out, val_images=N_VAL), _recipe(epochs=1), data)
    with pytest.raises(UserError, match="val_images"):
        train(_cfg(out, resume=True), _recipe(epochs=2), data)
    res = train(_cfg(out, resume=True, val_images=N_VAL), _recipe(epochs=2), data)
    assert res.epochs == 2 and res.val_top1_err is not None
    # a checkpoint written before validation splits existed (no val_images in its config)
    old = tmp_path / "old"
    train(_cfg(old), _recipe(epochs=1), data)
    ckpt = torch.load(old / "last.pt", weights_only=True)
    del ckpt["config"]["val_images"]
    torch.save(ckpt, old / "last.pt")
    assert train(_cfg(old, resume=True), _recipe(epochs=2), data).epochs == 2


def _cli(tmp_path: Path, monkeypatch, *flags: str) -> int:
    monkeypatch.setattr(train_cmd, "load_dataset", lambda *a, **k: _tagged())
    return main(["train", "mlp", "2x16d", "--epochs", "1", "--batch-size", "32", "--no-progress",
                 "--out", str(tmp_path / "cli"), *flags])


def test_cli_val_images(tmp_path, monkeypatch, capsys) -> None:
    """--val-images N: checked before loading, stored, restored by --resume, a different value
    refused in one line."""
    assert _cli(tmp_path, monkeypatch, "--val-images", "-1") == 2
    assert "--val-images must be >= 0" in capsys.readouterr().err
    assert _cli(tmp_path, monkeypatch, "--val-images", "50", "--train-limit", "50") == 2
    assert "--val-images 50 leaves none of the --train-limit 50" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    assert _cli(tmp_path, monkeypatch, "--val-images", str(N_VAL), "--json") == 0
    assert json.loads(capsys.readouterr().out)["val_images"] == N_VAL
    assert main(["train", "--out", str(tmp_path / "cli"), "--resume", "--val-images", "8"]) == 2
    assert "--val-images 8 (it has 64)" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "cli"), "--resume", "--epochs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_images"] == N_VAL and result["epochs"] == 2
