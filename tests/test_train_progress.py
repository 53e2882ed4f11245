"""The training progress bar writes to a terminal only, never into a log."""

from __future__ import annotations

import io
import sys

import pytest

from collegial.train.data import synthetic_dataset
from collegial.train.loop import RunConfig, train
from collegial.train.recipes import get_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [_Terminal, io.StringIO], ids=["terminal", "log"])
def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, stream):
    data = synthetic_dataset(name="mnist", channels=1, resolution=28, num_train=64, num_test=32)
    recipe = get_recipe("mnist").override(epochs=1, batch_size=32, milestones=())
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    train(RunConfig("mlp", "2x16d", "mnist", tmp_path / "r", progress=True, verbose=False), recipe, data)
    assert ("epoch 1/1" in err.getvalue()) == (stream is _Terminal)
