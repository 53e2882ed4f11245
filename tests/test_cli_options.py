"""The shared command-line option forms: ``--device`` (one rule, checked before any work, one
line when CUDA is asked for and absent) and ``--progress/--no-progress``."""

from __future__ import annotations

import argparse

import pytest
import torch

from collegial.commands.common import (
    DEVICE_HELP,
    add_device_option,
    add_progress_option,
    device_from_args,
    progress_from_args,
)
from collegial.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_device_option(p, "the probes")
    add_progress_option(p)
    return p


def test_device_option_accepts_cpu_and_cuda_only() -> None:
    p = _parser()
    assert p.parse_args(["--device", "cpu"]).device == "cpu"
    assert p.parse_args([]).device is None
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "cuda:1"])
    (action,) = [a for a in p._actions if "--device" in a.option_strings]
    assert action.help == f"device of the probes: {DEVICE_HELP}"


def test_device_default_is_cuda_when_available_else_cpu() -> None:
    got = device_from_args(_parser().parse_args([]))
    assert got == ("cuda" if torch.cuda.is_available() else "cpu")


def test_device_cuda_without_cuda_is_one_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device"):
        device_from_args(_parser().parse_args(["--device", "cuda"]))
    assert device_from_args(_parser().parse_args([])) == "cpu"


def test_progress_option_given_or_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _parser()
    assert progress_from_args(p.parse_args(["--progress"])) is True
    assert progress_from_args(p.parse_args(["--no-progress"])) is False
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert progress_from_args(p.parse_args([])) is True
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert progress_from_args(p.parse_args([])) is False
