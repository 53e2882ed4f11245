"""Training recipes: SPEC section 7 values, overrides and their validation, CLI exposure."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest
import torch

from collegial.commands.recipe_options import add_recipe_arguments, recipe_overrides
from collegial.errors import UserError
from collegial.models import DATASETS
from collegial.train.recipes import (
    RECIPES,
    Recipe,
    get_recipe,
    recipe_fields,
)

# SPEC section 7 (paper appendix): epochs, batch, lr, wd, milestones, gamma, crop pad, flip
PAPER = {
    "cifar10": (300, 128, 0.1, 5e-4, (150, 225), 0.1, 4, True),
    "cifar100": (300, 128, 0.1, 5e-4, (150, 225), 0.1, 4, True),
    "imagenet32": (80, 1024, 0.08, 5e-4, (20, 40, 60), 0.2, 4, True),
    "imagenet64": (60, 512, 0.04, 5e-4, (20, 30, 40), 0.2, 4, True),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes_match_spec(name: str) -> None:
    r = get_recipe(name)
    got = (
        r.epochs,
        r.batch_size,
        r.lr,
        r.weight_decay,
        r.milestones,
        r.gamma,
        r.crop_padding,
        r.flip,
    )
    assert got == PAPER[name]
    assert r.dataset == name and r.source == "paper" and r.normalization == "dataset"
    assert r.momentum == 0.9 and r.nesterov is False


def test_every_dataset_has_a_recipe() -> None:
    assert set(RECIPES) == set(DATASETS)
    im = get_recipe("imagenet")
    assert (im.epochs, im.batch_size, im.lr, im.milestones, im.gamma) == (
        100,
        256,
        0.1,
        (30, 60, 90),
        0.1,
    )
    for name in ("mnist", "fashion-mnist"):
        r = get_recipe(name)
        assert r.source == "project" and r.epochs == 10 and r.batch_size == 128
        assert r.milestones == (5, 8) and r.crop_padding == 0 and not r.flip
    with pytest.raises(UserError, match="unknown dataset"):
        get_recipe("svhn")


def test_override_typed_and_strings() -> None:
    base = get_recipe("cifar10")
    r = base.override(epochs=3, lr=1, milestones=[1, 2], flip=False, batch_size=None)
    assert (r.epochs, r.lr, r.milestones, r.flip, r.batch_size) == (3, 1.0, (1, 2), False, 128)
    assert isinstance(r.lr, float) and base.epochs == 300  # original untouched
    s = base.override(
        epochs="7",
        lr="0.05",
        milestones="3,5",
        nesterov="true",
        flip="no",
        weight_decay="0",
        crop_padding="2",
        normalization="per-channel",
    )
    assert (s.epochs, s.lr, s.milestones, s.nesterov, s.flip) == (7, 0.05, (3, 5), True, False)
    assert (s.weight_decay, s.crop_padding, s.normalization) == (0.0, 2, "per-channel")
    assert base.override(milestones="none").milestones == ()
    assert base.override() is base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"lr": "inf"}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"milestones": (5, 5)}, "milestones"),
        ({"milestones": (9, 3)}, "milestones"),
        ({"milestones": (0,)}, "milestones"),
        ({"gamma": 0}, "gamma"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"flip": 1}, "flip"),
        ({"normalization": "zca"}, "normalization"),
        ({"momentum": 0, "nesterov": True}, "nesterov"),
        ({"epochs": "ten"}, "--epochs"),
        ({"lr": "fast"}, "--lr"),
        ({"flip": "maybe"}, "--flip"),
        ({"milestones": "1,x"}, "--milestones"),
        ({"dataset": "cifar100"}, "unknown recipe field 'dataset'"),
        ({"learning_rate": 0.1}, "unknown recipe field 'learning_rate'"),
    ],
)
def test_override_validation(change: dict, needle: str) -> None:
    with pytest.raises(UserError) as e:
        get_recipe("cifar10").override(**change)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_direct_construction_is_validated() -> None:
    with pytest.raises(UserError, match="epochs"):
        Recipe("cifar10", epochs=0, batch_size=1, lr=0.1)
    with pytest.raises(UserError, match="unknown dataset"):
        Recipe("nope", epochs=1, batch_size=1, lr=0.1)


def test_scaled_and_lr_schedule() -> None:
    r = get_recipe("cifar10")
    short = r.scaled(30)
    assert short.epochs == 30 and short.milestones == (15, 22)
    assert r.scaled(2).milestones == (1, 2)  # kept distinct
    im = get_recipe("imagenet32")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=im.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(im.milestones), gamma=im.gamma)
    for epoch in range(im.epochs):
        assert math.isclose(opt.param_groups[0]["lr"], im.lr_at(epoch), rel_tol=1e-9), epoch
        opt.step()
        sched.step()
    assert math.isclose(im.lr_at(79), 0.08 * 0.2**3)


def test_cli_exposure() -> None:
    fields = recipe_fields()
    names = [f.name for f in fields]
    expected = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("dataset", "source")]
    assert names == expected
    assert {f.name: f.flag for f in fields}["batch_size"] == "batch-size"
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    args = parser.parse_args(
        [
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--milestones",
            "1",
            "--no-flip",
            "--nesterov",
            "--weight-decay",
            "1e-4",
        ]
    )
    overrides = recipe_overrides(args)
    assert overrides == {
        "epochs": "2",
        "batch_size": "64",
        "milestones": "1",
        "nesterov": True,
        "flip": False,
        "weight_decay": "1e-4",
    }
    r = get_recipe("cifar100").override(**overrides)
    assert (r.epochs, r.batch_size, r.milestones, r.flip, r.weight_decay) == (
        2,
        64,
        (1,),
        False,
        1e-4,
    )
    assert r.nesterov
    assert recipe_overrides(parser.parse_args([])) == {}
    assert recipe_overrides(parser.parse_args(["--flip"])) == {"flip": True}
    with pytest.raises(SystemExit):  # the old word form is gone: a switch takes no value
        parser.parse_args(["--flip", "false"])
    assert json.loads(json.dumps(r.as_dict()))["milestones"] == [1]
