"""Monitor: per-layer gradient norms, update ratios, dead units, saturation, non-finite counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.monitors import Monitor


def _net(act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), act(), nn.Linear(7, 2))


def test_grad_norms_and_update_ratios_match_direct_computation() -> None:
    model = _net()
    x, y = torch.randn(32, 5), torch.randint(0, 2, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = Monitor(model).attach()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    mon.snapshot()
    opt.step()
    m = mon.measure(loss=loss.detach(), step=7)
    names = [L["name"] for L in m["layers"]]
    assert names == ["0", "2"] and all(L["matrix"] for L in m["layers"])
    g0 = math.sqrt(float(grads[0].norm() ** 2 + grads[1].norm() ** 2))
    assert m["layers"][0]["grad_norm"] == pytest.approx(g0, rel=1e-6)
    total = math.sqrt(sum(float(g.norm() ** 2) for g in grads))
    assert m["grad_norm"] == pytest.approx(total, rel=1e-6)
    w0 = math.sqrt(float(before[0].norm() ** 2 + before[1].norm() ** 2))
    upd = 0.1 * g0  # plain SGD: ‖Δw‖ = lr·‖g‖
    assert m["layers"][0]["update_ratio"] == pytest.approx(upd / (
        math.sqrt(float(model[0].weight.detach().norm() ** 2 + model[0].bias.detach().norm() ** 2))), rel=1e-5)
    assert w0 > 0 and m["step"] == 7 and m["loss"] == pytest.approx(float(loss.detach()))
    json.dumps(m)  # JSON-ready
    again = mon.measure()  # no snapshot since: no update ratio, activations reset
    assert again["layers"][0]["update_ratio"] is None and again["activations"][0]["dead_fraction"] is None
    mon.detach()
    assert not model[1]._forward_hooks


def test_dead_relu_fraction_and_detach() -> None:
    model = _net()
    with torch.no_grad():
        model[0].bias[:4] = -1e3  # units 0..3 can never fire
    with Monitor(model) as mon:
        model(torch.randn(16, 5))
        model(torch.randn(16, 5))
        m = mon.measure()
    act = m["activations"][0]
    assert act["type"] == "relu" and act["units"] == 7 and act["forward_calls"] == 2
    assert act["dead_fraction"] == pytest.approx(4 / 7)
    model(torch.randn(4, 5))  # detached: nothing recorded
    assert mon.measure()["activations"][0]["forward_calls"] == 0


def test_saturation_tanh_and_sigmoid() -> None:
    for act in (nn.Tanh, nn.Sigmoid):
        model = _net(act)
        with Monitor(model) as mon:
            model(torch.randn(64, 5) * 1e3)  # huge inputs drive every unit to the flat tails
            hot = mon.measure()["activations"][0]["saturation"]
            model(torch.randn(64, 5) * 1e-3)
            cool = mon.measure()["activations"][0]["saturation"]
        assert hot > 0.9 and cool == 0.0


def test_nonfinite_counts() -> None:
    model = _net()
    with Monitor(model) as mon:
        x = torch.randn(8, 5)
        x[0, 0] = float("nan")
        loss = model(x).sum()
        loss.backward()
        m = mon.measure(loss=loss)
    nf = m["nonfinite"]
    assert nf["activations"] == 7 and nf["grads"] > 0 and nf["loss"] is True and nf["params"] == 0


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model"):
        Monitor("net")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="saturation"):
        Monitor(_net(), saturation=1.5)


def test_paused_hooks_record_nothing_until_resumed() -> None:
    model = _net()
    mon = Monitor(model).attach(record=False)
    model(torch.randn(8, 5))
    assert mon.measure()["activations"][0]["forward_calls"] == 0
    mon.record = True
    model(torch.randn(8, 5))
    act = mon.measure()["activations"][0]
    assert act["forward_calls"] == 1 and act["dead_fraction"] is not None
    mon.detach()


def test_activation_rms_input_rms_and_frozen_layers() -> None:
    model = _net(nn.Tanh)
    model[0].requires_grad_(False)
    x = 3.0 * torch.randn(64, 5, generator=torch.Generator().manual_seed(2))
    with Monitor(model) as mon:
        F.cross_entropy(model(x), torch.zeros(64, dtype=torch.long)).backward()
        m = mon.measure()
    with torch.no_grad():
        h = torch.tanh(model[0](x))
    assert m["input_rms"] == pytest.approx(float(x.square().mean().sqrt()), rel=1e-6)
    assert m["activations"][0]["rms"] == pytest.approx(float(h.square().mean().sqrt()), rel=1e-6)
    frozen, live = m["layers"]
    assert frozen["name"] == "0" and frozen["trainable"] is False and frozen["grad_norm"] is None
    assert live["trainable"] is True and live["grad_norm"] > 0
