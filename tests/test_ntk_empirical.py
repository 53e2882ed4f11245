"""Empirical NTK: every method against a plain per-sample autograd loop, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collegial.models import Bottleneck, CollegialMLP
from collegial.ntk import NtkMethod, empirical_ntk, empirical_ntk_fn, ntk_autograd_loop
from collegial.ntk.structured import structured_fraction

METHODS = ["jacobian", "ntk_vps", "structured", "auto"]


@pytest.fixture(autouse=True)
def _float64():
    """float64 for exact comparisons; one intra-op thread (tiny models: threads only add
    synchronization, and stall badly on a busy machine)."""
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
    torch.set_num_threads(threads)


class TwiceLinear(nn.Module):
    """One Linear applied twice (shared weights across calls) plus a tied head."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.tied = nn.Linear(4, 2)
        self.tied.weight = self.head.weight  # a parameter shared by two modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(torch.tanh(self.lin(x))))
        return self.head(h) + self.tied(h * h)


class SeqLinear(nn.Module):
    """A Linear over (N, T, F) inputs (several positions per sample) and a Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1, stride=2)
        self.lin = nn.Linear(4, 5)
        self.out = nn.Linear(5 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).transpose(1, 2)  # (N, 3, 4)
        return self.out(torch.tanh(self.lin(h)).flatten(1))


class UnusedBranch(nn.Module):
    """A Linear whose output does not reach the model's output (its NTK contribution is 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.dead, self.c = nn.Linear(3, 4), nn.Linear(3, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.dead(x)
        return self.c(torch.tanh(self.a(x)))


def _bn_model() -> nn.Module:
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )
    bn = m[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    return m


MODELS = {
    "mlp": (
        lambda: nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 3)),
        (5,),
    ),
    "ce": (lambda: CollegialMLP(5, 3, 3, 4, depth=3), (5,)),
    "ce_ntk": (lambda: CollegialMLP(5, 2, 2, 4, depth=3, parameterization="ntk", activation="tanh"), (5,)),
    "conv": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(4, 4, 2, groups=2, dilation=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4, 3),
        ),
        (2, 5, 5),
    ),
    "bn_eval": (_bn_model, (2, 5, 5)),
    "bottleneck": (
        lambda: nn.Sequential(
            Bottleneck(8, 8, cardinality=2, width=2, ref_channels=8, bn=False),
            nn.Flatten(),
            nn.Linear(128, 1),
        ),
        (8, 4, 4),
    ),
    "layernorm": (lambda: nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2)), (5,)),
    "shared": (TwiceLinear, (4,)),
    "seq": (SeqLinear, (3, 6)),
    "unused": (UnusedBranch, (3,)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("trace", [True, False])
def test_methods_match_autograd_loop(name: str, trace: bool) -> None:
    build, shape = MODELS[name]
    model = build()
    x1, x2 = torch.randn(4, *shape), torch.randn(3, *shape)
    ref = ntk_autograd_loop(model, x1, x2, trace=trace)
    scale = ref.abs().max()
    for method in METHODS:
        k = empirical_ntk(model, x1, x2, trace=trace, method=method, chunk_size=2)
        assert k.shape == ref.shape, method
        assert not k.requires_grad
        torch.testing.assert_close(k / scale, ref / scale, atol=1e-12, rtol=0, msg=method)
    # x2 = None is x2 = x1
    same = ntk_autograd_loop(model, x1, None, trace=trace)
    torch.testing.assert_close(empirical_ntk(model, x1, trace=trace, method="structured"), same)


def test_shapes_and_trace_is_sum() -> None:
    model = MODELS["mlp"][0]()
    x1, x2 = torch.randn(4, 5), torch.randn(6, 5)
    full = empirical_ntk(model, x1, x2, trace=False)
    assert full.shape == (4, 6, 3, 3)
    traced = empirical_ntk(model, x1, x2, trace=True)
    assert traced.shape == (4, 6)
    torch.testing.assert_close(traced, full.diagonal(dim1=2, dim2=3).sum(-1))
    scalar = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))
    assert empirical_ntk(scalar, x1, x2, trace=False).shape == (4, 6)
    # the kernel is symmetric positive semi-definite on one set
    k = empirical_ntk(model, x1, trace=True)
    torch.testing.assert_close(k, k.T)
    assert torch.linalg.eigvalsh(k).min() > -1e-10


def test_small_blocks_and_chunks_agree() -> None:
    build, shape = MODELS["conv"]
    model = build()
    x1, x2 = torch.randn(7, *shape), torch.randn(5, *shape)
    ref = ntk_autograd_loop(model, x1, x2, trace=False)
    for method in METHODS:
        k = empirical_ntk(model, x1, x2, trace=False, method=method, chunk_size=3, block_elements=64)
        torch.testing.assert_close(k, ref)


def test_batchnorm_train_mode_uses_the_probe_batch() -> None:
    model = _bn_model()
    bn = model[1]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x1, x2 = torch.randn(3, 2, 5, 5), torch.randn(2, 2, 5, 5)
    ref = ntk_autograd_loop(model, x1, x2, trace=False, batchnorm="train")
    for method in ("jacobian", "ntk_vps", "auto"):
        k = empirical_ntk(model, x1, x2, trace=False, method=method, batchnorm="train")
        torch.testing.assert_close(k, ref)
    with pytest.raises(ValueError, match="structured"):
        empirical_ntk(model, x1, x2, method="structured", batchnorm="train")
    # eval and train modes differ, and neither touches the BatchNorm state or mode
    k_eval = empirical_ntk(model, x1, x2, batchnorm="eval")
    assert not torch.allclose(k_eval, ref.diagonal(dim1=2, dim2=3).sum(-1))
    assert model.training and bn.training and bn.track_running_stats
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_ensemble_ntk_is_mean_of_path_ntks() -> None:
    """SPEC section 1: K^e(x, x') = (1/m) sum_j K_n(x, x'; theta_j) for the fully connected CE."""
    for param in ("standard", "ntk"):
        m, n = 4, 6
        ens = CollegialMLP(5, 3, m, n, depth=4, parameterization=param)
        x1, x2 = torch.randn(5, 5), torch.randn(4, 5)
        k_ens = empirical_ntk(ens, x1, x2, trace=False)
        paths = []
        for j in range(m):
            single = CollegialMLP(5, 3, 1, n, depth=4, parameterization=param)
            with torch.no_grad():
                for ls, le in zip(single.layers, ens.layers):
                    ls.weight.copy_(le.weight[j : j + 1])
                    ls.bias.copy_(le.bias[j : j + 1])
            paths.append(empirical_ntk(single, x1, x2, trace=False, method="jacobian"))
        torch.testing.assert_close(k_ens, torch.stack(paths).mean(0))


def test_factory_api_and_errors() -> None:
    model = MODELS["ce"][0]()
    assert structured_fraction(model) == 1.0
    assert structured_fraction(MODELS["layernorm"][0]()) < 1.0
    fn = empirical_ntk_fn(model, method=NtkMethod.STRUCTURED_DERIVATIVES)
    x = torch.randn(3, 5)
    torch.testing.assert_close(fn(x, x), empirical_ntk(model, x, method="jacobian"))
    with pytest.raises(ValueError, match="unknown NTK method"):
        empirical_ntk_fn(model, method="magic")
    with pytest.raises(ValueError):
        empirical_ntk_fn(model, batchnorm="frozen")
    frozen = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        empirical_ntk(frozen, torch.randn(2, 3))


class _NoVmapSquare(torch.autograd.Function):
    """x**2 whose backward leaves torch (numpy, as a C extension would): no vmap support."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return torch.from_numpy(2 * x.detach().numpy() * grad.detach().numpy())


class _SquareNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_NoVmapSquare.apply(self.a(x)))


@pytest.mark.parametrize("batched", [True, False])
def test_batched_and_per_output_backward_agree(batched: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from collegial.ntk import structured

    monkeypatch.setattr(structured, "BATCHED_BACKWARD", batched)
    for model, shape in ((MODELS["mlp"][0](), (5,)), (MODELS["conv"][0](), MODELS["conv"][1]), (_SquareNet(), (5,))):
        x1, x2 = torch.randn(4, *shape), torch.randn(3, *shape)
        ref = ntk_autograd_loop(model, x1, x2, trace=False)
        k = empirical_ntk(model, x1, x2, trace=False, method="structured")
        torch.testing.assert_close(k, ref)


def test_graph_without_vmap_support_falls_back_to_per_output_passes() -> None:
    from collegial.ntk import structured

    x = torch.randn(4, 5, requires_grad=True)
    model = _SquareNet()
    with pytest.raises(RuntimeError):  # what the fallback catches
        torch.autograd.grad(model(x), x, torch.eye(3).unsqueeze(1).expand(3, 4, 3), is_grads_batched=True)
    assert structured._batched_signals(model(x), [x], 3) is None
    taps, rest = structured.find_taps(model)
    f = structured.side_features(model, taps, rest, x)
    assert f.k == 3 and len(f.gl) == 2


def test_batched_backward_groups_outputs_to_bound_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from collegial.ntk import structured

    groups: list[int] = []
    real = structured._batched_signals

    def spy(y, outs, group):
        groups.append(group)
        return real(y, outs, group)

    monkeypatch.setattr(structured, "_batched_signals", spy)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 12))
    x = torch.randn(5, 6)
    ref = ntk_autograd_loop(model, x, None, trace=False)
    for block, expect in ((1, 1), (100, 1), (250, 2), (1 << 25, 12)):  # signals: 5 * (8 + 12) per output
        k = empirical_ntk(model, x, trace=False, method="structured", block_elements=block)
        torch.testing.assert_close(k, ref)
        assert groups[-1] == expect
