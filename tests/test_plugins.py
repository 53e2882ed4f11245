"""Families from outside the package: ``collegial --import`` and the ``collegial.families``
entry point, seen by every subcommand; one-line errors when a plugin fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from collegial.cli import main
from collegial.ntk.curve import synthetic_fit
from collegial.models import register_model
from collegial.models import registry as reg

PLUGIN = '''
from torch import nn
from collegial.models import parse_arch, register_model


def {name}_probe(m, n):
    return nn.Sequential(nn.Conv2d(4, m * n, 1), nn.ReLU(), nn.Conv2d(m * n, m * n, 3, padding=1, groups=m),
                         nn.ReLU(), nn.Conv2d(m * n, 4, 1))


@register_model("{name}", default_dataset="mnist", probe={name}_probe, probe_input_shape=(4, 5, 5))
def {name}(arch, *, num_classes, in_channels, resolution):
    """A toy plugin family."""
    m, n = parse_arch(arch)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, stride=4, padding=1), nn.ReLU(), {name}_probe(m, n),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
'''


@pytest.fixture
def registry(tmp_path):
    """Restore the family registry (and forget the plugin modules) after a test that registers
    plugins in this process."""
    saved = dict(reg._FAMILIES)
    yield
    reg._FAMILIES.clear()
    reg._FAMILIES.update(saved)
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_import_by_module_name_and_by_path(tmp_path, monkeypatch, capsys, registry):
    (tmp_path / "toyfam_a.py").write_text(PLUGIN.format(name="toyfam_a"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "toyfam_b.py").write_text(PLUGIN.format(name="toyfam_b"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert main(["--import", "toyfam_a", "--import", "sub/toyfam_b.py", "count", "toyfam_a", "2x3d", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["family"] == "toyfam_a" and row["params"] > 0 and row["dataset"] == "mnist"
    assert main(["count", "toyfam_b", "2x3d"]) == 0  # already imported in this process
    assert "toyfam_b 2x3d" in capsys.readouterr().out
    # the same file under another module name registers nothing twice
    (tmp_path / "sub" / "__init__.py").write_text("")
    assert main(["--import", "sub.toyfam_b", "count", "toyfam_b", "2x3d"]) == 0
    assert "toyfam_b 2x3d" in capsys.readouterr().out
    # the search's help lists the imported families
    with pytest.raises(SystemExit):
        main(["--import", "toyfam_a", "search", "--help"])
    assert "toyfam_a" in capsys.readouterr().out


def test_imported_family_runs_fit_alpha_and_search(tmp_path, monkeypatch, capsys, registry):
    (tmp_path / "toyfam_c.py").write_text(PLUGIN.format(name="toyfam_c"))
    monkeypatch.chdir(tmp_path)
    argv = ["--import", "toyfam_c.py", "fit-alpha", "--family", "toyfam_c", "--trials", "64", "--pairs", "2",
            "--widths", "2,3,4,6,8", "--m-law", "2", "--m-law-width", "3", "--json", "--out", "alpha"]
    assert main(argv) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["family"] == "toyfam_c" and fit["engine"] == "vmap" and fit["input_shape"] == [4, 5, 5]
    assert [p["m"] for p in fit["m_law"]] == [2]  # the 1/m check runs: the probe takes m
    argv = ["--import", "toyfam_c.py", "search", "toyfam_c", "--baseline", "1x8d", "--alpha-file", "alpha",
            "--variance", "empirical", "--draws", "50", "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["primal"]["arch"].endswith("d") and res["probe_options"]["family"] == "toyfam_c"
    assert res["probe_options"]["trials"] == 64 and res["probe_options"]["inputs"] == "relu"
    # its curve is refused for a family with another probe, and vice versa
    assert main(["--import", "toyfam_c.py", "search", "mlp", "--baseline", "1x8d", "--alpha-file", "alpha"]) == 2
    capsys.readouterr()
    (tmp_path / "r29.json").write_text(json.dumps(synthetic_fit(lambda w: np.expm1(2.5 / w), [2, 4, 8],
                                                                 family="resnext29").to_dict()))
    # the remedy for a plugin family names the --import it needs
    assert main(["--import", "toyfam_c.py", "search", "toyfam_c", "--baseline", "1x8d", "--alpha-file", "r29.json"]) == 2
    assert "'collegial --import toyfam_c.py fit-alpha --family toyfam_c" in _err_line(capsys)
    assert main(["search", "resnext29", "--baseline", "1x128d", "--alpha-file", "alpha"]) == 2
    assert "'toyfam_c' probe, not by resnext29's; measure its own: 'collegial fit-alpha --family resnext29" in _err_line(capsys)


@pytest.mark.parametrize(
    "source, match",
    [
        (None, "--import nosuchmodule failed: ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom (broken.py:1)"),
        ("from collegial.models import register_model\n"
         "register_model('half', probe=lambda m, n: None)(lambda arch, **kw: None)\n",
         "give probe and probe_input_shape together"),
        ("from collegial.models import register_model\n"
         "register_model('badshape', probe=lambda m, n: None, probe_input_shape=(0, 3))(lambda arch, **kw: None)\n",
         "probe_input_shape must be positive integers"),
        ("from collegial.models import register_model\n"
         "register_model('mlp')(lambda arch, **kw: None)\n", "'mlp' registered twice"),
    ],
)
def test_a_failing_import_is_one_line(tmp_path, monkeypatch, capsys, registry, source, match):
    monkeypatch.chdir(tmp_path)
    name = "nosuchmodule"
    if source is not None:
        name = "broken"
        (tmp_path / "broken.py").write_text(source)
    assert main(["--import", name, "count", "mlp", "2x4d"]) == 2
    assert match in _err_line(capsys)


def test_import_after_the_subcommand_says_where_it_goes(capsys):
    assert main(["fit-alpha", "--import", "x.py", "--family", "mlp"]) == 2
    assert "--import goes before the subcommand" in _err_line(capsys)


def test_register_model_rejects_a_probe_on_a_wrn_family(registry):
    with pytest.raises(ValueError, match="only collegial"):
        register_model("w2", arch_kind="wrn", probe=lambda m, n: None, probe_input_shape=(3,))


def _entry_point_package(root: Path, name: str, body: str, value: str) -> None:
    (root / f"{name}_pkg").mkdir()
    (root / f"{name}_pkg" / "__init__.py").write_text(body)
    dist = root / f"{name}_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[collegial.families]\n{name} = {value}\n")


def _run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "collegial.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=root, timeout=120)


def test_entry_point_family_is_seen_by_every_subcommand(tmp_path):
    """An installed package declares a family through the ``collegial.families`` entry point
    (here a dist-info folder on PYTHONPATH, which is what pip installs)."""
    _entry_point_package(tmp_path, "epfam", PLUGIN.format(name="epfam"), "epfam_pkg")
    r = _run(tmp_path, "count", "epfam", "2x4d", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["family"] == "epfam"
    r = _run(tmp_path, "fit-alpha", "--family", "epfam", "--trials", "32", "--pairs", "2", "--widths", "2,4,8",
             "--no-m-law", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["family"] == "epfam"
    r = _run(tmp_path, "train", "epfam", "2x4d", "--dataset", "mnist", "--epochs", "1", "--train-limit", "256",
             "--test-limit", "128", "--batch-size", "64", "--out", "run")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["family"] == "epfam"


def test_entry_point_function_and_failure(tmp_path):
    body = PLUGIN.format(name="epfun").replace('@register_model("epfun"', 'def register():\n    @register_model("epfun"')
    # a function entry point: registers when called
    body = textwrap.dedent('''
        from torch import nn
        from collegial.models import parse_arch, register_model

        def register():
            @register_model("epfun", default_dataset="mnist")
            def epfun(arch, *, num_classes, in_channels, resolution):
                m, n = parse_arch(arch)
                return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * resolution**2, m * n), nn.ReLU(),
                                     nn.Linear(m * n, num_classes))
    ''')
    _entry_point_package(tmp_path, "epfun", body, "epfun_pkg:register")
    r = _run(tmp_path, "count", "epfun", "2x4d")
    assert r.returncode == 0 and "epfun 2x4d" in r.stdout, r.stderr
    (tmp_path / "epfun_pkg" / "__init__.py").write_text("import nosuchthing\n")
    # a broken installed plugin is one warning line; every other family (and --version) works
    r = _run(tmp_path, "count", "mlp", "2x4d")
    assert r.returncode == 0 and "mlp 2x4d" in r.stdout
    assert r.stderr.strip().count("\n") == 0 and "warning: entry point epfun = epfun_pkg:register" in r.stderr
    assert "ModuleNotFoundError" in r.stderr and "Traceback" not in r.stderr
    assert _run(tmp_path, "--version").returncode == 0
    # asking for its family: one line naming the failure, exit 2
    r = _run(tmp_path, "count", "epfun", "2x4d")
    assert r.returncode == 2 and "unknown model family 'epfun'" in r.stderr and "failed to load" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_an_imported_family_runs_reproduce_figure1(tmp_path, monkeypatch, capsys, registry):
    """An imported (plugin) family runs through the Figure 1 sweep too (quick settings)."""
    (tmp_path / "toyfam_f.py").write_text(PLUGIN.format(name="toyfam_f"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLLEGIAL_CACHE", str(tmp_path / "cache"))
    assert main(["--import", "toyfam_f.py", "fit-alpha", "--family", "toyfam_f", "--trials", "64", "--pairs", "2",
                 "--widths", "2,3,4,6,8", "--no-m-law", "--out", "alpha", "--json"]) == 0
    capsys.readouterr()
    argv = ["--import", "toyfam_f.py", "reproduce", "figure1", "--family", "toyfam_f", "--baseline", "1x8d",
            "--alpha-file", "alpha", "--quick", "--out", "fig1", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    obj = json.loads(capsys.readouterr().out)
    assert obj["config"]["family"] == "toyfam_f"
    assert (tmp_path / "fig1" / "figure1.json").is_file()


def test_a_family_whose_cost_is_not_linear_in_m_is_refused_by_the_search(tmp_path, monkeypatch, capsys, registry):
    body = PLUGIN.format(name="toyfam_q").replace(
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))",
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, m * m), nn.Linear(m * m, num_classes))")
    (tmp_path / "toyfam_q.py").write_text(body)
    monkeypatch.chdir(tmp_path)
    alpha = synthetic_fit(lambda w: np.expm1(2.5 / w), [2, 4, 8, 16], rel_stderr=0.03, family="toyfam_q")
    alpha.save(tmp_path / "a.json", plot=False)
    argv = ["--import", "toyfam_q.py", "search", "toyfam_q", "--baseline", "1x8d", "--alpha-file", "a.json"]
    assert main(argv) == 2
    assert "is not A + m B(n)" in _err_line(capsys)
