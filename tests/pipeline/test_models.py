"""Reference models: shapes, switches that really change the network, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from thalweg.models import MLP, CNN1d, Linear, build_model


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "weight"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_mlp_shapes_and_backward(norm: str, activation: str) -> None:
    torch.manual_seed(0)
    m = MLP(12, 3, width=16, depth=2, activation=activation, norm=norm, dropout=0.1)
    x = torch.randn(8, 12)
    out = m(x)
    assert out.shape == (8, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_mlp_layers_match_switches() -> None:
    m = MLP(10, 2, width=7, depth=3, activation="tanh", norm="batch", dropout=0.5)
    mods = list(m.modules())
    assert sum(isinstance(x, nn.Linear) for x in mods) == 4
    assert sum(isinstance(x, nn.BatchNorm1d) for x in mods) == 3
    assert sum(isinstance(x, nn.Tanh) for x in mods) == 3
    assert sum(isinstance(x, nn.Dropout) for x in mods) == 3
    ln = MLP(10, 2, width=7, depth=2, norm="layer")
    assert sum(isinstance(x, nn.LayerNorm) for x in ln.modules()) == 2
    plain = MLP(10, 2, width=7, depth=2)
    assert not any(isinstance(x, nn.Dropout | nn.BatchNorm1d) for x in plain.modules())
    # parameter count: 10*7+7 + 7*7+7 + 7*2+2
    assert sum(p.numel() for p in plain.parameters()) == 77 + 56 + 16


def test_weight_norm_decouples_direction_and_scale() -> None:
    torch.manual_seed(0)
    m = MLP(5, 2, width=4, depth=1, norm="weight")
    names = {n for n, _ in m.named_parameters()}
    assert any("original0" in n for n in names) and any("original1" in n for n in names)
    lin = m.net[1]
    g = lin.parametrizations.weight.original0
    v = lin.parametrizations.weight.original1
    expected = g * v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(lin.weight, expected)


def test_batch_norm_normalizes_hidden_activations() -> None:
    torch.manual_seed(0)
    m = MLP(6, 2, width=32, depth=1, norm="batch", activation="relu")
    x = 5.0 + 10.0 * torch.randn(256, 6)
    pre_act = m.net[2](m.net[1](m.net[0](x)))  # flatten → linear → batchnorm
    torch.testing.assert_close(pre_act.mean(0), torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(pre_act.var(0, unbiased=False), torch.ones(32), atol=1e-3, rtol=0)


def test_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    m = MLP(8, 3, width=64, depth=2, dropout=0.5)
    x = torch.randn(4, 8)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_linear_is_affine_and_flattens() -> None:
    torch.manual_seed(0)
    m = Linear(6, 2)
    x = torch.randn(5, 2, 3)
    lin = m.net[-1]
    torch.testing.assert_close(m(x), x.reshape(5, 6) @ lin.weight.T + lin.bias)


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "weight"])
def test_cnn1d_mnist1d_shapes(norm: str) -> None:
    torch.manual_seed(0)
    m = CNN1d(40, 10, channels=8, depth=3, norm=norm, dropout=0.1, activation="gelu")
    assert m(torch.randn(4, 40)).shape == (4, 10)
    assert m(torch.randn(4, 1, 40)).shape == (4, 10)
    with pytest.raises(ValueError, match=r"\(N, 1, 40\)"):
        m(torch.randn(4, 39))


def test_build_model_by_name() -> None:
    assert isinstance(build_model("linear", (40,), 10), Linear)
    mlp = build_model("mlp", (2, 20), 10, width=8, depth=1)
    assert isinstance(mlp, MLP) and mlp(torch.randn(3, 2, 20)).shape == (3, 10)
    cnn = build_model("cnn1d", (40,), 10, channels=4)
    assert isinstance(cnn, CNN1d) and cnn(torch.randn(3, 40)).shape == (3, 10)
    cnn2 = build_model("cnn1d", (2, 40), 5, channels=4)
    assert cnn2(torch.randn(3, 2, 40)).shape == (3, 5)


def test_cnn2d_and_gru_by_name() -> None:
    torch.manual_seed(0)
    cnn = build_model("cnn2d", (64,), 10, channels=4)  # digits: 64 features are an 8×8 image
    assert cnn.shape == (1, 8, 8) and cnn(torch.randn(3, 64)).shape == (3, 10)
    conv = cnn.features[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.stride == (2, 2)
    assert build_model("cnn2d", (3, 6, 6), 2, channels=4)(torch.randn(2, 3, 6, 6)).shape == (2, 2)
    gru = build_model("gru", (40,), 10)  # MNIST-1D's GRU: 6 units per direction, bidirectional
    assert gru.gru.bidirectional and gru.gru.hidden_size == 6 and gru.head.in_features == 2 * 6 * 40
    x = torch.randn(3, 40)
    assert gru(x).shape == (3, 10)
    # causal in the forward direction: the last input moves the last forward output, not the first
    x2 = x.clone()
    x2[:, -1] += 1.0
    out, _ = gru.gru(x.unsqueeze(-1))
    out2, _ = gru.gru(x2.unsqueeze(-1))
    torch.testing.assert_close(out[:, 0, :6], out2[:, 0, :6])
    assert not torch.allclose(out[:, -1, :6], out2[:, -1, :6])


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: MLP(4, 2, norm="group"), ValueError, "norm.*'group'"),
        (lambda: MLP(4, 2, activation="swish"), ValueError, "activation.*'swish'"),
        (lambda: MLP(4, 2, dropout=1.0), ValueError, "dropout.*1.0"),
        (lambda: MLP(4, 2, width=0), ValueError, "width.*0"),
        (lambda: MLP(4, 2, depth=2.5), TypeError, "depth"),
        (lambda: CNN1d(40, 10, kernel_size=0), ValueError, "kernel_size"),
        (lambda: Linear(0, 1), ValueError, "in_features"),
        (lambda: build_model("resnet", (4,), 2), ValueError, "name.*'resnet'"),
        (lambda: build_model("linear", (4,), 2, width=3), TypeError, "width"),
        (lambda: build_model("cnn1d", (1, 2, 3), 2), ValueError, "in_shape"),
        (lambda: build_model("cnn2d", (63,), 2), ValueError, "square"),
        (lambda: build_model("gru", (40,), 2, kernel_size=3), TypeError, "kernel_size"),
    ],
)
def test_bad_arguments_are_named(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()
