"""The learning-rate range test: restores everything exactly, stops on divergence, suggests."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from thalweg.landscape import lr_finder as L


def _problem(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(16, 3))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return net, (x, y)


def _snapshot(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    return {"state": {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "groups": [dict(g) for g in sd["param_groups"]]}


def _same(a: dict, b: dict) -> bool:
    if a["groups"] != b["groups"] or a["state"].keys() != b["state"].keys():
        return False
    for k in a["state"]:
        for n, v in a["state"][k].items():
            w = b["state"][k][n]
            if not (torch.equal(v, w) if torch.is_tensor(v) else v == w):
                return False
    return True


def _make_opt(kind: str, net: nn.Module) -> torch.optim.Optimizer:
    if kind == "torch":
        return torch.optim.Adam(net.parameters(), lr=1e-3)
    from thalweg.optim import registry

    return registry.create("adam", net, lr=1e-3)


@pytest.mark.parametrize("kind", ["torch", "thalweg"])
def test_model_optimizer_and_rng_restored_bitwise(kind: str) -> None:
    net, data = _problem()
    opt = _make_opt(kind, net)
    # warm the optimizer up so there is state to restore
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(data[0]), data[1]).backward()
        opt.step()
    before_model = {k: v.clone() for k, v in net.state_dict().items()}
    before_opt = _snapshot(opt)
    net.eval()
    rng = torch.get_rng_state()
    res = L.lr_find(net, opt, nn.functional.cross_entropy, data, num_steps=30, batch_size=32)
    assert len(res.lrs) > 3
    for k, v in net.state_dict().items():
        assert torch.equal(v, before_model[k]), k
    assert _same(before_opt, _snapshot(opt))
    assert not net.training
    assert torch.equal(torch.get_rng_state(), rng)
    # and the restored optimizer continues exactly like an untouched copy would
    net2, _ = _problem()
    net2.load_state_dict(before_model)
    opt2 = _make_opt(kind, net2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict may share tensors
    for m, o in ((net, opt), (net2, opt2)):
        m.train()
        torch.manual_seed(5)
        o.zero_grad()
        nn.functional.cross_entropy(m(data[0]), data[1]).backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sweep_is_geometric_smoothed_and_stops_on_divergence() -> None:
    net, data = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    res = L.lr_find(net, opt, nn.functional.cross_entropy, data, start_lr=1e-4, end_lr=1e4,
                    num_steps=80, beta=0.9)
    ratios = res.lrs[1:] / res.lrs[:-1]
    np.testing.assert_allclose(ratios, (1e8) ** (1 / 79), rtol=1e-9)
    assert res.diverged and len(res.lrs) < 80
    # the returned curve is the centered smoothing of the raw losses, not a lagging EMA
    np.testing.assert_allclose(res.smoothed, L.smooth(res.lrs, res.losses, res.meta["width"]))
    assert res.suggestion is not None and res.lrs[0] <= res.suggestion <= res.best_lr


def test_smoothing_has_no_lag_and_ignores_a_spike() -> None:
    """A V-shaped loss in log lr: the centered smoothing's minimum stays at the V's bottom
    however densely it is sampled (a trailing EMA's moves right by ~1/(1-β) points), and one
    spike does not move the curve."""
    for n in (60, 120, 480):
        lrs = np.logspace(-6, 1, n)
        v = np.abs(np.log10(lrs) + 2.0) + 1.0  # bottom at lr = 1e-2
        sm = L.smooth(lrs, v)
        assert abs(np.log10(lrs[np.argmin(sm)]) + 2.0) < 0.1
        spiky = v.copy()
        spiky[n // 3] += 50.0
        assert np.abs(L.smooth(lrs, spiky) - sm).max() < 0.1  # the spike is 50


def _linreg() -> tuple[torch.Tensor, torch.Tensor, float]:
    """Least squares whose loss Hessian 2XᵀX/n has a known top eigenvalue: (stochastic) gradient
    descent diverges for lr > 2/λ_max."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 20, generator=g) * torch.linspace(0.3, 3, 20)
    y = x @ torch.randn(20, 1, generator=g) + 0.1 * torch.randn(2048, 1, generator=g)
    lam = torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max().item()
    return x, y, 2 / lam


def test_suggestion_is_stable_across_step_counts_on_a_known_problem() -> None:
    """The default rule reads the curve where it bottoms out, just below the divergence edge
    2/λ_max, which a longer sweep does not move: 100, 200 and 400 steps suggest lrs within 2×
    of each other, all below the edge. (The previous EMA + steepest rule moved 3.5× between
    100 and 200 steps on MNIST-1D; the steepest point moves ∝ 1/steps by nature, see RULES.)"""
    x, y, edge = _linreg()
    got = []
    for n in (100, 200, 400):
        torch.manual_seed(0)
        net = nn.Linear(20, 1)
        res = L.lr_find(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.functional.mse_loss, (x, y),
                        start_lr=1e-6, end_lr=10.0, num_steps=n, batch_size=64)
        assert res.rule == "min/10"
        assert res.best_lr < edge  # the smoothed minimum is before the blow-up, not in it
        got.append(res.suggestion)
    assert max(got) / min(got) < 2.0, got
    assert all(edge / 100 < g < edge / 5 for g in got), (got, edge)

def test_suggestion_rules_on_a_known_curve() -> None:
    lrs = np.logspace(-5, 0, 51)
    u = np.log10(lrs)
    smoothed = 1.0 / (1.0 + np.exp(3 * (u + 2.5))) + np.where(u > -1, (u + 1) ** 2, 0.0)
    assert L.suggest(lrs, smoothed, "steepest") == pytest.approx(10**-2.5, rel=0.15)
    assert L.suggest(lrs, smoothed, "min/10") == pytest.approx(lrs[np.argmin(smoothed)] / 10)
    assert L.suggest(lrs[:2], smoothed[:2]) is None
    with pytest.raises(ValueError, match="rule"):
        L.suggest(lrs, smoothed, "valley")


def test_figure_shows_rule(tmp_path) -> None:
    net, data = _problem()
    res = L.lr_find(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.functional.cross_entropy,
                    data, start_lr=1e-3, end_lr=1e3, num_steps=40)
    fig = L.figure_lr_find(res)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "rule: one tenth of the learning rate" in texts
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(lab.startswith("suggested lr") for lab in labels)
    assert any("stopped" in lab for lab in labels)
    fig.savefig(tmp_path / "lr.png", dpi=40)
    res.save(tmp_path / "lr.npz")
    with np.load(tmp_path / "lr.npz") as z:
        np.testing.assert_array_equal(z["lrs"], res.lrs)


def test_bad_arguments_are_named() -> None:
    net, data = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    f = nn.functional.cross_entropy
    with pytest.raises(ValueError, match="start_lr"):
        L.lr_find(net, opt, f, data, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        L.lr_find(net, opt, f, data, num_steps=2)
    with pytest.raises(ValueError, match="beta"):
        L.lr_find(net, opt, f, data, beta=1.0)
    with pytest.raises(TypeError, match="optimizer"):
        L.lr_find(net, "adam", f, data)  # type: ignore[arg-type]


def test_figure_shows_the_raw_minimum() -> None:
    """The loss axis fits the raw per-batch losses too: their minimum is never clipped off."""
    lrs = np.logspace(-6, 1, 120)
    smoothed = 2.3 - 0.3 * np.exp(-((np.log10(lrs) + 1.5) ** 2))
    raw = smoothed + np.where(np.abs(np.log10(lrs) + 1.6) < 0.05, -0.6, 0.0)  # a deep raw dip
    res = L.LRFinderResult(lrs, raw, smoothed, 3e-3, "steepest", False, 4.0)
    fig = L.figure_lr_find(res)
    lo, hi = fig.axes[0].get_ylim()
    assert lo < raw.min() < smoothed.min() < hi
    assert hi < 3.0  # the top stays near where the sweep started
    import matplotlib.pyplot as plt

    plt.close(fig)
