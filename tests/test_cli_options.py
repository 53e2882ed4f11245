"""The shared command-line option forms: ``--device`` (one rule, checked before any work, one
line when CUDA is asked for and absent) and ``--progress/--no-progress``."""

from __future__ import annotations

import argparse
import json

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


# --------------------------------------------------------------------------- the commands' device rule

FIT = ["fit-alpha", "--trials", "32", "--widths", "2,3,4", "--channels", "8", "--m-law", "2", "--m-law-width", "2",
       "--json", "--no-progress"]


def _fit(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    from collegial.cli import main

    assert main([*FIT, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _numbers(obj: dict) -> tuple:
    return obj["variance"], obj["stderr"], obj["pair_variance"], [p["ratio"] for p in obj["m_law"]]


@pytest.mark.usefixtures("one_thread")
def test_fit_alpha_device_cpu_is_the_default_and_the_same_seed_the_same_numbers(capsys) -> None:
    """On a machine without CUDA the default device is cpu: --device cpu gives exactly the
    numbers of no flag, and the same seed twice the same numbers; another seed others."""
    if torch.cuda.is_available():
        pytest.skip("the default is cuda here (bench/gpu_check.sh compares the devices)")
    plain = _numbers(_fit(capsys))
    assert _numbers(_fit(capsys, "--device", "cpu")) == plain
    assert _numbers(_fit(capsys)) == plain
    assert _numbers(_fit(capsys, "--seed", "1")) != plain


@pytest.mark.parametrize("argv", [
    ["fit-alpha", "--trials", "32", "--widths", "2,3,4", "--device", "cuda"],
    ["ntk-dynamics", "--preset", "tiny", "--dataset", "synthetic", "--device", "cuda"],
    ["search", "resnext29", "--baseline", "1x64d", "--device", "cuda"],
    ["verify", "resnext11", "2x4d", "--device", "cuda"],
    ["demo", "--device", "cuda"],
])
def test_device_cuda_without_cuda_is_one_line_before_any_work(argv, monkeypatch, capsys) -> None:
    from collegial.cli import main
    from collegial.experiments import ntk_dynamics as nd
    from collegial.ntk import alpha

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(alpha, "run_algorithm1", lambda **kw: pytest.fail("Algorithm 1 ran"))
    monkeypatch.setattr(nd, "run_ntk_dynamics", lambda cfg: pytest.fail("the experiment ran"))
    monkeypatch.setattr("collegial.search.verify.measure", lambda *a, **kw: pytest.fail("verify measured"))
    monkeypatch.setattr("collegial.commands.demo.run_demo", lambda cfg: pytest.fail("the demo ran"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: no CUDA device is available" in err[0]


def test_device_word_outside_the_rule_is_a_usage_error(capsys) -> None:
    from collegial.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fit-alpha", "--device", "cuda:1"])
    assert e.value.code == 2 and "invalid choice: 'cuda:1'" in capsys.readouterr().err


def test_demo_device_and_progress_reach_its_config(monkeypatch, tmp_path) -> None:
    from collegial.cli import main

    seen = []
    monkeypatch.setattr("collegial.commands.demo.run_demo", seen.append)
    assert main(["demo", "--device", "cpu", "--no-progress", "--no-train", "--out", str(tmp_path / "d")]) == 0
    assert seen[0].device == "cpu" and seen[0].progress is False and seen[0].train is False


def test_ntk_dynamics_device_reaches_the_experiment(monkeypatch) -> None:
    import argparse

    from collegial.commands import ntk_dynamics as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    cfg = cmd.config_from_args(p.parse_args(["--preset", "tiny", "--device", "cpu", "--no-progress"]))
    assert cfg.device == "cpu" and cfg.progress is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cmd.config_from_args(p.parse_args(["--preset", "tiny"])).device == "cpu"


def test_chunks_in_flight_follow_the_device_memory(monkeypatch) -> None:
    """On the CPU one chunk per thread; on CUDA as many chunks as fit in the share of the
    device's free memory (the chunk itself, the seeds' unit, stays the same)."""
    from collegial.ntk import alpha

    class Fake:
        def __init__(self, device: str) -> None:
            self.device = torch.device(device)

        def trial_bytes(self, m: int, n: int) -> int:
            return 1 << 20

        def chunk_size(self, m: int, n: int) -> int:
            return 10

    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert alpha.chunks_in_flight(Fake("cpu"), 1, 4) == 8
    monkeypatch.setattr(alpha, "available_memory", lambda dev=None: 50 << 20)
    assert alpha.chunks_in_flight(Fake("cuda"), 1, 4) == 4  # 0.8 * 50 MiB / 10 MiB
    monkeypatch.setattr(alpha, "available_memory", lambda dev=None: 5 << 20)
    assert alpha.chunks_in_flight(Fake("cuda"), 1, 4) == 1
    monkeypatch.setattr(alpha, "available_memory", lambda dev=None: 1 << 40)
    assert alpha.chunks_in_flight(Fake("cuda"), 1, 4) == 8


def test_fit_alpha_no_m_law(capsys) -> None:
    from collegial.cli import main

    argv = [a for a in FIT if a not in ("--m-law", "2", "--m-law-width")]
    assert main([*argv, "--no-m-law"]) == 0
    assert json.loads(capsys.readouterr().out)["m_law"] == []
    assert main([*argv, "--m-law", ""]) == 0  # the old spelling: still accepted, with a note
    captured = capsys.readouterr()
    assert json.loads(captured.out)["m_law"] == [] and "deprecated; write --no-m-law" in captured.err


# --------------------------------------------------------------------------- every parser, one form

#: Options of files whose owners are conforming them (each entry: "subcommand path: option").
#: Remove an entry when its owner has conformed; the test then fails if the entry is stale.
EXPECTED_FAILURES: set[str] = set()

_BOOL_WORDS = {"yes", "no", "true", "false", "on", "off", "0", "1"}


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)parser of ``collegial`` with its command path (``reproduce figure1``, ...)."""
    from collegial.cli import build_parser

    todo, out = [("collegial", build_parser())], []
    while todo:
        name, p = todo.pop()
        out.append((name, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(f"{name} {k}".removeprefix("collegial "), sp) for k, sp in a.choices.items()]
    return out


def _violations() -> set[str]:
    from collegial.commands.common import DEVICES, PROGRESS_HELP

    bad: set[str] = set()
    for name, p in _parsers():
        flags = {o for a in p._actions for o in a.option_strings}
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            opt = max(a.option_strings, key=len)
            where = f"{name}: {opt}"
            if not (a.help or "").strip():
                bad.add(f"{where} has no help text")
            if "--device" in a.option_strings and (tuple(a.choices or ()) != DEVICES or a.default is not None
                                                   or not (a.help or "").endswith(DEVICE_HELP)):
                bad.add(f"{where} is not the shared --device (add_device_option)")
            if any("progress" in o for o in a.option_strings) and (
                    not isinstance(a, argparse.BooleanOptionalAction) or a.help != PROGRESS_HELP):
                bad.add(f"{where} is not the shared --progress/--no-progress (add_progress_option)")
            words = {str(c).lower() for c in (a.choices or ())}
            word_metavar = str(a.metavar).upper() in {"BOOL", "BOOLEAN", "YES|NO", "TRUE|FALSE"}
            if a.nargs != 0 and (isinstance(a.default, bool) or (words and words <= _BOOL_WORDS) or word_metavar):
                bad.add(f"{where} takes a yes/no word: make it --x/--no-x")
            for o in a.option_strings:
                if o.startswith("--no-") and "--" + o[5:] not in flags:
                    bad.add(f"{where} has no positive form --{o[5:]}: make it --x/--no-x")
            if "--inputs" in a.option_strings and a.default != "relu":
                bad.add(f"{where} defaults to {a.default!r}, not relu as everywhere")
    return bad


def test_every_parser_uses_the_shared_option_forms() -> None:
    """Walks every subparser of the CLI: each option has help text; every --device is the shared
    one (add_device_option), every progress option the shared --progress/--no-progress; no
    option takes a yes/no word and every --no-x has its --x; --inputs defaults to relu. Cases of
    files other owners are conforming are listed in EXPECTED_FAILURES."""
    bad = _violations()
    assert sorted(bad - EXPECTED_FAILURES) == []
    assert sorted(EXPECTED_FAILURES - bad) == [], "stale EXPECTED_FAILURES entries: the owners conformed"
