"""The recipe builds the training loop's optimizer and schedule: its optimizer's settings and
each epoch's learning rate are the recipe's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collegial.train.recipes import RECIPES, get_recipe


def _params() -> list[nn.Parameter]:
    return list(nn.Linear(3, 2).parameters())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_optimizer_is_the_recipes_sgd(name: str) -> None:
    rec = RECIPES[name]
    opt = rec.optimizer(_params())
    assert type(opt) is torch.optim.SGD
    (group,) = opt.param_groups
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        rec.lr, rec.momentum, rec.nesterov, rec.weight_decay,
    )
    assert group["dampening"] == 0 and len(group["params"]) == 2


def test_overrides_reach_the_optimizer_and_the_schedule() -> None:
    rec = get_recipe("mnist").override(
        lr=0.3, momentum=0.8, nesterov=True, weight_decay=1e-3, milestones=(2, 4), gamma=0.5
    )
    opt = rec.optimizer(_params())
    (group,) = opt.param_groups
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.3, 0.8, True, 1e-3,
    )
    sched = rec.schedule(opt)
    assert type(sched) is torch.optim.lr_scheduler.MultiStepLR
    assert dict(sched.milestones) == {2: 1, 4: 1} and sched.gamma == 0.5
    lrs = []
    for _ in range(6):  # stepped once per epoch, as the loop does
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([rec.lr_at(e) for e in range(6)]) == [0.3, 0.3, 0.15, 0.15, 0.075, 0.075]


def test_no_milestones_is_a_constant_rate() -> None:
    rec = get_recipe("cifar10").override(milestones="none")
    opt = rec.optimizer(_params())
    sched = rec.schedule(opt)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == rec.lr == 0.1
