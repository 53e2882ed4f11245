"""Family-faithful probes: every built-in family's probe block is its own block at its real size,
the MLP engine measures the declared MLP exactly, and a curve measured on another size is
refused by the search (or used, when asked, with a note on the answer's first line)."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from torch import nn

from collegial.cli import main
from collegial.commands import search as search_command
from collegial.errors import UserError
from collegial.models import create_model, get_family, list_families
from collegial.models.layers import CollegialMLP
from collegial.models.mlp import MLP_SHAPE, mlp_probe
from collegial.models.resnext import BOTTLENECK_SHAPE, RESNEXT11_SHAPE, bottleneck_probe, resnext11_probe
from collegial.ntk.alpha import probe_spec, run_algorithm1
from collegial.ntk.curve import synthetic_fit
from collegial.ntk.generic import FactoryProbe
from collegial.ntk.inputs import ProbeInputs
from collegial.ntk.probe import MLPProbe, gram_coordinates
from collegial.search.variance import load_curve, probe_mismatch

#: What each built-in family declares (the paper's ResNeXts keep the reconstructed bottleneck).
DECLARED = {
    "resnext29": (bottleneck_probe, BOTTLENECK_SHAPE, "bottleneck"),
    "resnext38": (bottleneck_probe, BOTTLENECK_SHAPE, "bottleneck"),
    "resnext50": (bottleneck_probe, BOTTLENECK_SHAPE, "bottleneck"),
    "resnext101": (bottleneck_probe, BOTTLENECK_SHAPE, "bottleneck"),
    "resnext11": (resnext11_probe, RESNEXT11_SHAPE, "generic"),
    "mlp": (mlp_probe, MLP_SHAPE, "mlp"),
}


def _layers(mod: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    """(module path, type, weight shape) of every layer with weights, BatchNorm left out."""
    return [(name, type(m).__name__, tuple(m.weight.shape)) for name, m in mod.named_modules()
            if getattr(m, "weight", None) is not None and not isinstance(m, nn.BatchNorm2d)]


def test_every_builtin_family_declares_its_block():
    probed = {f for f in list_families() if get_family(f).probe is not None and get_family(f).module.startswith("collegial.")}
    assert probed == set(DECLARED)
    for family, (factory, shape, kind) in DECLARED.items():
        fam = get_family(family)
        assert fam.probe is factory and fam.probe_input_shape == shape, family
        assert probe_spec(family).kind == kind
        blk = fam.probe(2, 4)
        out = blk(torch.rand(2, *shape))  # accepts its declared input shape (with a batch axis)
        assert out.shape[0] == 2 and torch.isfinite(out).all()
    assert get_family("resnext11").probe_owner == "resnext11"  # no longer shares resnext29's curves


@pytest.mark.parametrize("arch", ["1x64d", "4x8d", "26x3d"])
def test_resnext11_probe_is_its_first_stage_block_on_its_real_map(arch):
    model = create_model("resnext11", arch=arch, dataset="mnist")
    m, n = (int(a) for a in arch.rstrip("d").split("x"))
    block = model.stages[0][0]
    probe = resnext11_probe(m, n)
    assert _layers(probe) == _layers(block)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in probe.modules())
    assert probe.conv_conv.groups == block.conv_conv.groups == m and probe.conv_conv.stride == block.conv_conv.stride
    # the block's input is the stem's output on a 28x28 MNIST image
    with torch.no_grad():
        stem_out = model.stem(torch.zeros(1, 1, 28, 28))
    assert tuple(stem_out.shape[1:]) == RESNEXT11_SHAPE
    # initialized like the family: Kaiming fan-in normal
    w = resnext11_probe(1, 64).conv_reduce.weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 16), rel=0.1)


def test_mlp_probe_is_the_mlp_model_on_its_dataset():
    probe, model = mlp_probe(3, 5), create_model("mlp", arch="3x5d", dataset="mnist")
    assert [p.shape for p in probe.parameters()] == [p.shape for p in model.parameters()]
    assert probe.in_features == MLP_SHAPE[0] == 784 and probe.out_features == 10


@pytest.mark.parametrize("param", ["standard", "ntk"])
def test_mlp_engine_reduction_is_exact(param):
    """K of a full-width MLP on x equals K of the reduced model (first weight V = W Q) on the
    pair's Gram coordinates u (x = Q u): the reduced engine measures the same K."""
    torch.manual_seed(0)
    c, m, n, b, out = 40, 3, 5, 2, 7
    kw = dict(out_features=out, dtype=torch.float64, parameterization=param, inputs=ProbeInputs(), pair=1)
    full, red = MLPProbe(c, reduce=False, **kw), MLPProbe(c, **kw)
    assert red.reduce and red.in_features == 2 and not full.reduce
    u = gram_coordinates(full.x)
    torch.testing.assert_close(u @ u.T, full.x @ full.x.T)
    q = torch.linalg.lstsq(u, full.x).solution.T  # (C, 2): x = u Q^T
    torch.testing.assert_close(q.T @ q, torch.eye(2, dtype=torch.float64))
    big = full.build(m, n, b, seed=3)
    small = red.build(m, n, b, seed=4)
    with torch.no_grad():
        for i, (ls, lf) in enumerate(zip(small.layers, big.layers)):
            ls.weight.copy_(lf.weight @ q if i == 0 else lf.weight)
            ls.bias.copy_(lf.bias + 0.1)  # nonzero biases: their terms count too
            lf.bias.add_(0.1)
    torch.testing.assert_close(red.k_model(small, m), full.k_model(big, m))


def test_mlp_engine_matches_the_generic_engine_on_one_module():
    """Ten outputs read out by the pair's random readout, as the generic engine reads them."""
    inputs = ProbeInputs(pairs=2)
    probe = MLPProbe(12, out_features=10, reduce=False, dtype=torch.float64, inputs=inputs, pair=1)
    generic = FactoryProbe(lambda m, n: CollegialMLP(12, 10, m, n), (12,), dtype=torch.float64,
                           inputs=inputs, pair=1)
    model = probe.build(4, 3, 1, seed=2)
    assert probe.k_model(model, 4).item() == pytest.approx(generic.k_module(model), rel=1e-10)


def test_mlp_fit_records_its_declared_input():
    fit = run_algorithm1(family="mlp", widths=(2, 3, 4), trials=32, m_law=(2,), m_law_width=3,
                         inputs=ProbeInputs(pairs=2))
    assert fit.input_shape == [784] and fit.engine == "grouped" and probe_mismatch(fit, "mlp") is None


# ------------------------------------------------------------------ mismatched alpha files


def _fit_file(tmp_path, name, **fields):
    obj = synthetic_fit(lambda w: 2.0 / w, [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128], rel_stderr=0.03,
                        family=fields.pop("family", "resnext29")).to_dict()
    if fields.get("engine", "synthetic") != "synthetic":  # a measured table names real inputs
        obj |= {"inputs": "relu", "correlation": 0.6}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(obj | fields))
    return path


def test_a_resized_bottleneck_curve_is_refused_or_noted(tmp_path):
    small = run_algorithm1(family="resnext29", channels=8, spatial=4, widths=(2, 3, 4), trials=32, m_law=(),
                           inputs=ProbeInputs(pairs=2))
    small.save(tmp_path / "small")
    with pytest.raises(UserError, match=r"measured on inputs of shape 8x4x4, not on the 256x8x8 that "
                       r"resnext29's probe block declares.*allow_probe_mismatch=True"):
        load_curve(tmp_path / "small", family="resnext29")
    c = load_curve(tmp_path / "small", "prop1", family="resnext29", allow_probe_mismatch=True)
    probe_notes = [n for n in c.notes if "initializations per input pair" not in n]  # T=32: also that note
    assert len(probe_notes) == 1 and probe_notes[0].startswith("note: alpha file") and "8x4x4" in probe_notes[0]
    assert c.with_model("empirical").notes == c.notes
    # a file at the declared size: no note; a schema-2 file (no input_shape) reads C and S
    assert load_curve(_fit_file(tmp_path, "ok"), family="resnext38").notes == []
    with pytest.raises(UserError, match="32x8x8"):
        load_curve(_fit_file(tmp_path, "c32", channels=32, input_shape=[], engine="gram"), family="resnext29")


def test_old_mlp_and_resnext11_curves_are_refused(tmp_path):
    with pytest.raises(UserError, match="measured on inputs of shape 256, not on the 784"):
        load_curve(_fit_file(tmp_path, "mlp256", family="mlp", input_shape=[256], spatial=0), family="mlp")
    # resnext11 was searched with resnext29's bottleneck: that curve no longer fits it
    with pytest.raises(UserError, match="measured by the 'resnext29' probe, not by resnext11's"):
        load_curve(_fit_file(tmp_path, "r29"), family="resnext11")


def test_search_cli_refuses_a_mismatch_and_notes_it_when_allowed(tmp_path, capsys):
    path = _fit_file(tmp_path, "c32", channels=32, input_shape=[32, 8, 8])
    argv = ["search", "resnext29", "--dataset", "cifar10", "--baseline", "1x128d", "--alpha-file", str(path),
            "--variance", "prop1", "--draws", "50"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "32x8x8" in err and "--allow-probe-mismatch" in err
    assert "Traceback" not in err
    # allowed: the note is the answer's first line, and in the JSON
    skip = ["--no-m-check"] if "--m-check" in inspect.getsource(search_command) else []  # a synthetic table
    assert main([*argv, "--allow-probe-mismatch", *skip]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("note: alpha file") and "32x8x8" in first and "used anyway" in first
    assert main([*argv, "--allow-probe-mismatch", "--json", *skip]) == 0
    notes = [n for n in json.loads(capsys.readouterr().out)["notes"] if "initializations per input pair" not in n]
    assert len(notes) == 1 and "32x8x8" in notes[0]


def test_fit_alpha_refuses_to_resize_a_declared_block(capsys):
    assert main(["fit-alpha", "--family", "resnext11", "--channels", "64", "--trials", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fixes its own channels and input size (16, 14, 14)" in err
