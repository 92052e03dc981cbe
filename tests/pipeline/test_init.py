"""Initializers against their variance formulas, and the seeds' vanishing/exploding story
through a deep tanh/ReLU stack."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from thalweg.init import (
    activation_variance,
    gain,
    initialize,
    kaiming_normal,
    kaiming_uniform,
    lsuv,
    orthogonal,
    xavier_normal,
    xavier_uniform,
)
from thalweg.models import MLP, CNN1d

N_OUT, N_IN = 300, 500  # weight shape (out, in)


def _w(*shape: int) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.empty(*shape)


def test_xavier_variance_and_bound() -> None:
    a = math.sqrt(6 / (N_IN + N_OUT))
    w = xavier_uniform(_w(N_OUT, N_IN))
    assert float(w.abs().max()) <= a and float(w.abs().max()) > 0.99 * a
    assert float(w.var()) == pytest.approx(2 / (N_IN + N_OUT), rel=0.02)
    w = xavier_normal(_w(N_OUT, N_IN))
    assert float(w.var()) == pytest.approx(2 / (N_IN + N_OUT), rel=0.02)
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-3)


def test_kaiming_variance_and_bound() -> None:
    w = kaiming_uniform(_w(N_OUT, N_IN))  # ReLU: a = √(6/n_in)
    assert float(w.abs().max()) <= math.sqrt(6 / N_IN)
    assert float(w.abs().max()) > 0.99 * math.sqrt(6 / N_IN)
    assert float(w.var()) == pytest.approx(2 / N_IN, rel=0.02)
    w = kaiming_normal(_w(N_OUT, N_IN))
    assert float(w.var()) == pytest.approx(2 / N_IN, rel=0.02)
    w = kaiming_normal(_w(N_OUT, N_IN), nonlinearity="tanh")
    assert float(w.var()) == pytest.approx((5 / 3) ** 2 / N_IN, rel=0.02)
    w = kaiming_normal(_w(N_OUT, N_IN), mode="fan_out")
    assert float(w.var()) == pytest.approx(2 / N_OUT, rel=0.02)
    conv = kaiming_normal(_w(64, 16, 5))  # fan_in = 16·5
    assert float(conv.var()) == pytest.approx(2 / 80, rel=0.03)


def test_gains() -> None:
    assert gain("relu") == pytest.approx(math.sqrt(2))
    assert gain("tanh") == pytest.approx(5 / 3)
    torch.manual_seed(0)
    z = torch.randn(2_000_000, dtype=torch.float64)
    mc = 1 / float(nn.functional.gelu(z).square().mean().sqrt())
    assert gain("gelu") == pytest.approx(mc, rel=2e-3)
    relu_mc = 1 / float(torch.relu(z).square().mean().sqrt())
    assert gain("relu") == pytest.approx(relu_mc, rel=2e-3)  # same definition as gelu's


@pytest.mark.parametrize("shape", [(64, 64), (32, 100), (100, 32)])
def test_orthogonal_has_unit_singular_values(shape: tuple[int, int]) -> None:
    w = orthogonal(_w(*shape), gain=2.0).double()
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(s, torch.full_like(s, 2.0), atol=1e-5, rtol=0)


def _layer_stats(act: str, scheme: str, nonlinearity: str | None = None, std: float = 0.01):
    """Pre-activation variance after each of 20 layers, and the first layer's grad norm."""
    torch.manual_seed(0)
    net = MLP(64, 64, width=64, depth=20, activation=act)
    initialize(net, scheme, nonlinearity, std=std)
    h = torch.randn(256, 64)
    variances = []
    for mod in net.net:
        h = mod(h)
        if isinstance(mod, nn.Linear):
            variances.append(float(h.detach().var()))
    h.square().mean().backward()
    first = net.net[1].weight.grad
    return variances[:-1], float(first.norm())


@pytest.mark.parametrize(("act", "good"), [("tanh", "xavier_normal"), ("tanh", "orthogonal"),
                                           ("relu", "kaiming_normal"), ("relu", "orthogonal")])  # fmt: skip
def test_good_init_keeps_variance_through_depth(act: str, good: str) -> None:
    variances, grad = _layer_stats(act, good, act)
    assert all(0.3 < v < 10 for v in variances), variances
    assert 1e-3 < grad < 1e3


def test_badly_scaled_init_vanishes_or_explodes() -> None:
    for act in ("tanh", "relu"):
        variances, grad = _layer_stats(act, "normal", std=0.01)  # gain 0.01²·64 per layer
        assert variances[-1] < 1e-20 and grad < 1e-15
        unit_gain, _ = _layer_stats(act, "xavier_normal")  # no ReLU gain: 2× loss per layer
        if act == "relu":
            assert unit_gain[-1] < 1e-4
    relu_big, _ = _layer_stats("relu", "normal", std=1.0)
    assert not math.isfinite(relu_big[-1]) or relu_big[-1] > 1e20
    tanh_big, grad = _layer_stats("tanh", "normal", std=1.0)  # saturates instead
    assert tanh_big[-1] > 50


def test_initialize_handles_conv_weight_norm_and_biases() -> None:
    torch.manual_seed(0)
    cnn = CNN1d(40, 10, channels=64, depth=2, kernel_size=5)
    initialize(cnn, "kaiming_normal")
    conv = cnn.features[2]
    assert isinstance(conv, nn.Conv1d)
    assert float(conv.weight.detach().var()) == pytest.approx(2 / (64 * 5), rel=0.05)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in cnn.modules() if isinstance(m, nn.Conv1d))
    wn = MLP(200, 10, width=300, depth=1, norm="weight")
    initialize(wn, "xavier_uniform")
    w = wn.net[1].weight.detach()  # computed from weight norm's (g, v)
    assert float(w.var()) == pytest.approx(2 / 500, rel=0.03)
    before = [p.clone() for p in wn.parameters()]
    initialize(wn, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, wn.parameters(), strict=True))


@pytest.mark.parametrize("norm", ["none", "weight"])
def test_lsuv_reaches_unit_variance_per_layer(norm: str) -> None:
    torch.manual_seed(0)
    net = MLP(30, 5, width=64, depth=8, activation="tanh", norm=norm, dropout=0.2)
    initialize(net, "normal", std=3.0)
    x = 4.0 * torch.randn(512, 30)
    lsuv(net, x, tol=0.02)
    assert net.training  # mode restored
    variances = activation_variance(net, x)
    assert net.training and len(variances) == 9  # 8 hidden + output, mode kept
    assert all(abs(v - 1.0) < 0.02 for _, v in variances), variances
    net.eval()
    h = x
    with torch.no_grad():
        for mod in net.net:
            h = mod(h)
            if isinstance(mod, nn.Linear):
                assert abs(float(h.var()) - 1.0) < 0.02


def test_bad_arguments_are_named() -> None:
    net = MLP(4, 2, width=8, depth=1)
    with pytest.raises(ValueError, match=r"scheme.*'he'"):
        initialize(net, "he")
    with pytest.raises(ValueError, match=r"nonlinearity.*'swish'"):
        initialize(net, "kaiming_normal", "swish")
    with pytest.raises(ValueError, match="x_batch"):
        initialize(net, "lsuv")
    with pytest.raises(ValueError, match="std must be a positive number, got -1"):
        initialize(net, "normal", std=-1.0)
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(5,\)"):
        xavier_uniform(torch.empty(5))
    with pytest.raises(ValueError, match="mode"):
        kaiming_normal(torch.empty(3, 3), mode="fan")


def test_symmetric_inits_bias_fill_and_freezing() -> None:
    from thalweg.init import freeze

    net = MLP(4, 3, width=6, depth=2)
    initialize(net, "zeros")
    assert all(float(m.weight.abs().max()) == 0 for m in net.modules() if isinstance(m, nn.Linear))
    initialize(net, "constant", value=0.05, bias=-2.0)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            assert torch.equal(m.weight, torch.full_like(m.weight, 0.05))
            assert torch.equal(m.bias, torch.full_like(m.bias, -2.0))
    initialize(net, "default", bias=1.5)  # torch's weights, biases filled
    assert all(torch.equal(m.bias, torch.full_like(m.bias, 1.5)) for m in net.modules() if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="value must be a finite number"):
        initialize(net, "constant", value=math.inf)
    assert freeze(net, ["net.1"]) == ["net.1.weight", "net.1.bias"]
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["net.1.weight", "net.1.bias"]
    with pytest.raises(ValueError, match=r"freeze prefix 'net.9' matches no parameter.*net\.1\.weight"):
        freeze(net, ["net.9"])


def test_config_init_options_reach_the_model_and_bad_ones_are_named(tmp_path) -> None:
    from thalweg.train import ConfigError, fit, parse_config

    cfg = {"name": "frz", "out_dir": str(tmp_path), "data": {"name": "linreg_toy"},
           "model": {"name": "mlp", "width": 4, "depth": 1}, "init": {"rule": "constant", "value": 0.1,
                                                                     "freeze": ["net.1"]},
           "optimizer": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 2, "batch_size": 5},
           "diagnostics": {"figures": False, "report": False}}
    res = fit(cfg, quiet=True)
    w = res.model.net[1].weight
    assert torch.equal(w, torch.full_like(w, 0.1)) and not w.requires_grad  # frozen: never moved
    assert not torch.equal(res.model.net[3].weight, torch.full_like(res.model.net[3].weight, 0.1))
    with pytest.raises(ConfigError, match=r"\[init\] freeze"):
        fit({**cfg, "name": "bad", "init": {"freeze": ["nope"]}}, quiet=True)
    with pytest.raises(ConfigError, match=r"\[init\] std"):
        parse_config({**cfg, "init": {"rule": "normal", "std": -1.0}})
