"""Regularizers against torch's own implementations and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.regularize import (
    EarlyStopping,
    clip_grad_norm,
    clip_grad_value,
    confidence_penalty,
    cutout,
    fgsm,
    l1_penalty,
    l2_penalty,
    label_smoothing,
    mixup,
)


def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, generator=g), torch.randn(32, 1, generator=g)
    torch.manual_seed(0)
    return nn.Linear(5, 1), x, y


def _run(opt_cls, penalty: float, steps: int = 5, decoupled_first: float = 0.0, **kw):
    model, x, y = _problem()
    opt = opt_cls(model.parameters(), lr=0.1, **kw)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        if penalty:
            loss = loss + l2_penalty(model, penalty)
        loss.backward()
        if decoupled_first:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 - 0.1 * decoupled_first)
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_l2_penalty_is_torch_coupled_weight_decay_not_adamw() -> None:
    lam = 0.3
    torch.testing.assert_close(_run(torch.optim.SGD, lam), _run(torch.optim.SGD, 0.0, weight_decay=lam))
    coupled = _run(torch.optim.Adam, lam)
    torch.testing.assert_close(coupled, _run(torch.optim.Adam, 0.0, weight_decay=lam))
    adamw = _run(torch.optim.AdamW, 0.0, weight_decay=lam)
    torch.testing.assert_close(adamw, _run(torch.optim.Adam, 0.0, decoupled_first=lam))
    assert (adamw - coupled).abs().max() > 1e-3  # coupled ≠ decoupled under Adam


def test_penalty_values_and_weights_only() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]))
        model.bias.copy_(torch.tensor([4.0, -4.0]))
    assert l1_penalty(model, 0.1).item() == pytest.approx(0.1 * (7.5 + 8.0))
    assert l1_penalty(model, 0.1, weights_only=True).item() == pytest.approx(0.75)
    assert l2_penalty(model, 2.0).item() == pytest.approx(1.0 * (15.25 + 32.0))
    l1_penalty(model, 0.5).backward()
    torch.testing.assert_close(model.weight.grad, 0.5 * model.weight.detach().sign())
    with pytest.raises(ValueError, match="weight must be a finite number >= 0, got -1"):
        l2_penalty(model, -1.0)


def test_label_smoothing_matches_formula() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target, eps, k = torch.randn(16, 7, generator=g), torch.randint(7, (16,), generator=g), 0.2, 7
    q = (1 - eps) * F.one_hot(target, k) + eps / k
    expected = -(q * F.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(label_smoothing(logits, target, eps), expected)
    torch.testing.assert_close(label_smoothing(logits, target, 0.0), F.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothing(logits, target, 1.0)


def test_confidence_penalty_is_negative_entropy() -> None:
    assert float(confidence_penalty(torch.zeros(4, 10), 0.5)) == pytest.approx(-0.5 * math.log(10))
    assert float(confidence_penalty(torch.tensor([[100.0, 0.0, 0.0]]), 1.0)) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(3, 5, requires_grad=True)
    confidence_penalty(z, 1.0, reduction="sum").backward()
    p = F.softmax(z.detach(), -1)
    h = -(p * p.log()).sum(-1, keepdim=True)
    torch.testing.assert_close(z.grad, p * (p.log() + h))  # −∂H/∂z


def test_mixup_blends_and_is_reproducible() -> None:
    x, y = torch.randn(8, 3), torch.arange(8)
    m = mixup(x, y, alpha=0.4, generator=torch.Generator().manual_seed(5))
    assert 0.0 <= m.lam <= 1.0 and torch.equal(m.y_a, y)
    perm = m.y_b  # labels are indices, so y_b is the permutation
    torch.testing.assert_close(m.x, m.lam * x + (1 - m.lam) * x[perm])
    m2 = mixup(x, y, alpha=0.4, generator=torch.Generator().manual_seed(5))
    assert m2.lam == m.lam and torch.equal(m2.y_b, m.y_b)
    logits = torch.randn(8, 8)
    soft = m.lam * F.one_hot(m.y_a, 8) + (1 - m.lam) * F.one_hot(m.y_b, 8)
    torch.testing.assert_close(m.loss(F.cross_entropy, logits), F.cross_entropy(logits, soft.float()))
    gen = torch.Generator().manual_seed(0)
    lams = torch.tensor([mixup(x, y, 0.5, gen).lam for _ in range(3000)])
    assert float(lams.mean()) == pytest.approx(0.5, abs=0.02)  # Beta(α, α) mean ½
    assert float(lams.var()) == pytest.approx(1 / (4 * (2 * 0.5 + 1)), rel=0.1)  # 1/(4(2α+1))


def test_cutout_1d_zeroes_one_window_per_example() -> None:
    x = torch.ones(50, 3, 40)
    out = cutout(x, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.ones(50, 3, 40))  # input untouched
    for i in range(50):
        zero = (out[i] == 0).all(0)
        assert torch.equal((out[i] == 0).any(0), zero)  # same window on every channel
        idx = zero.nonzero().flatten()
        assert 3 <= len(idx) <= 6 and int(idx[-1] - idx[0]) + 1 == len(idx)
    assert cutout(torch.ones(4, 40), 6).eq(0).sum(1).le(6).all()


def test_cutout_2d_square() -> None:
    x = torch.ones(20, 2, 16, 16)
    out = cutout(x, 4, generator=torch.Generator().manual_seed(1))
    for i in range(20):
        rows = (out[i, 0] == 0).any(1).nonzero().flatten()
        cols = (out[i, 0] == 0).any(0).nonzero().flatten()
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4
        assert int((out[i, 0] == 0).sum()) == len(rows) * len(cols)
    assert (cutout(torch.ones(3, 16, 16), 4, spatial_dims=2) == 0).any()
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        cutout(x, 0)


def test_fgsm_matches_closed_form_sign_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(6, 4), torch.randn(6, 1)
    x_adv = fgsm(model, F.mse_loss, x, y, epsilon=0.1)
    w, b = model.weight.detach(), model.bias.detach()
    residual = x @ w.T + b - y  # ∇ₓ mean (wᵀx + b − y)² = 2·residual·w/N
    torch.testing.assert_close(x_adv, x + 0.1 * torch.sign(residual * w))
    assert F.mse_loss(model(x_adv), y) > F.mse_loss(model(x), y)
    assert model.weight.grad is None
    clamped = fgsm(model, F.mse_loss, x, y, epsilon=5.0, clamp=(-1.0, 1.0))
    assert clamped.abs().max() <= 1.0


def test_clipping_wraps_torch() -> None:
    model = nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)  # 8 entries → norm 2√8
    norm = clip_grad_norm(model, 1.0)
    assert float(norm) == pytest.approx(2 * math.sqrt(8))
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    model.weight.grad = torch.tensor([[3.0, -0.5, 0.1], [-9.0, 0.0, 1.0]])
    clip_grad_value(model.parameters(), 0.5)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.5, -0.5, 0.1], [-0.5, 0.0, 0.5]]))
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        clip_grad_norm(model, 0.0)


def test_early_stopping_patience_min_delta_mode_and_state(tmp_path) -> None:
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert [es.step(v) for v in [1.0, 0.8, 0.75, 0.85]] == [False, False, False, True]
    assert es.best == 0.8 and es.best_step == 1  # 0.75 is within min_delta
    acc = EarlyStopping(patience=3, mode="max")
    results = [acc.step(v) for v in [0.5, 0.6, float("nan"), 0.6, 0.59]]
    assert results == [False, False, False, False, True] and acc.best == 0.6
    es2 = EarlyStopping(patience=3)
    for v in [3.0, 2.0, 2.5]:
        es2.step(v)
    path = tmp_path / "es.pt"
    torch.save(es2.state_dict(), path)
    resumed = EarlyStopping(patience=3)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.step(2.4) is False and resumed.step(2.2) is True
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'low'"):
        EarlyStopping(mode="low")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
