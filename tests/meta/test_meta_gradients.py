"""Meta-gradients against references: second-order MAML against a hand-written
double-backward loop and central finite differences; first-order MAML and Reptile against
their definitions; Meta-SGD's step-size gradient; any elementwise chain (Adam) as the inner
optimizer against hand-written Adam; vmap against the loop fallback (BatchNorm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from thalweg.meta import FOMAML, MAML, Episode, InnerChain, InnerSGD, Pretrained, Reptile, Sinusoid
from thalweg.optim import scale_by_lr, trace
from thalweg.optim.transforms import chain

T, STEPS, LR = 3, 2, 0.1


def tiny(norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(1, 6)]
    if norm:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.Tanh(), nn.Linear(6, 1)]
    return nn.Sequential(*layers).double()


def episode() -> Episode:
    ep = Sinusoid(k_shot=5, k_query=7).sample(T, seed=3)
    return Episode(*(t.double() for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y)), ep.info)


def mse(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((functional_call(m, p, (x,)) - y) ** 2).mean()


def reference_maml(m: nn.Module, ep: Episode, first_order: bool, lrs: dict | None = None) -> torch.Tensor:
    """The for-loop definition with torch.autograd.grad (create_graph for second order)."""
    theta = dict(m.named_parameters())
    total = 0.0
    for t in range(T):
        p = dict(theta)
        for _ in range(STEPS):
            g = torch.autograd.grad(mse(m, p, ep.support_x[t], ep.support_y[t]), list(p.values()),
                                    create_graph=not first_order)
            p = {k: v - (lrs[k] if lrs else LR) * gi for (k, v), gi in zip(p.items(), g, strict=True)}
        total = total + mse(m, p, ep.query_x[t], ep.query_y[t])
    return total / T


def grads_of(learner, ep: Episode) -> list[torch.Tensor]:
    for p in learner.parameters():
        p.grad = None
    learner.meta_backward(ep)
    return [p.grad.clone() for p in learner.parameters()]


@pytest.mark.parametrize("vectorize", [True, False])
def test_second_order_maml_matches_double_backward(vectorize: bool) -> None:
    m, ep = tiny(), episode()
    got = grads_of(MAML(m, inner_steps=STEPS, inner_lr=LR, vectorize=vectorize), ep)
    ref = torch.autograd.grad(reference_maml(m, ep, first_order=False), list(m.parameters()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and it is not the first-order gradient (the Hessian term matters here)
    fo = torch.autograd.grad(reference_maml(m, ep, first_order=True), list(m.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(got, fo, strict=True)) > 1e-4


def test_second_order_maml_matches_finite_differences() -> None:
    m, ep = tiny(), episode()
    learner = MAML(m, inner_steps=STEPS, inner_lr=LR)
    got = grads_of(learner, ep)
    gen = torch.Generator().manual_seed(1)
    dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in m.parameters()]
    eps = 1e-5

    def meta_loss(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(m.parameters(), dirs, strict=True):
                p.add_(sign * eps * d)
        value = reference_maml(m, ep, first_order=False).item()
        with torch.no_grad():
            for p, d in zip(m.parameters(), dirs, strict=True):
                p.sub_(sign * eps * d)
        return value

    fd = (meta_loss(1.0) - meta_loss(-1.0)) / (2 * eps)
    directional = sum((g * d).sum() for g, d in zip(got, dirs, strict=True)).item()
    assert abs(fd - directional) < 1e-7 * max(1.0, abs(fd))


def test_first_order_maml_is_the_query_gradient_at_the_adapted_weights() -> None:
    m, ep = tiny(), episode()
    got = grads_of(FOMAML(m, inner_steps=STEPS, inner_lr=LR), ep)
    theta = dict(m.named_parameters())
    ref = [torch.zeros_like(p) for p in theta.values()]
    for t in range(T):  # φ by plain SGD; meta-gradient = mean_t ∇φ L_query(φ)
        phi = {k: v.detach().clone() for k, v in theta.items()}
        for _ in range(STEPS):
            g = torch.autograd.grad(mse(m, {k: v.requires_grad_() for k, v in phi.items()},
                                        ep.support_x[t], ep.support_y[t]), list(phi.values()))
            phi = {k: (v - LR * gi).detach() for (k, v), gi in zip(phi.items(), g, strict=True)}
        gq = torch.autograd.grad(mse(m, {k: v.requires_grad_() for k, v in phi.items()},
                                     ep.query_x[t], ep.query_y[t]), list(phi.values()))
        ref = [r + gi / T for r, gi in zip(ref, gq, strict=True)]
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reptile_gradient_is_theta_minus_mean_adapted() -> None:
    m, ep = tiny(), episode()
    got = grads_of(Reptile(m, inner_steps=STEPS, inner_lr=LR), ep)
    theta = dict(m.named_parameters())
    mean_phi = [torch.zeros_like(p) for p in theta.values()]
    for t in range(T):
        phi = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
        for _ in range(STEPS):
            g = torch.autograd.grad(mse(m, phi, ep.support_x[t], ep.support_y[t]), list(phi.values()))
            phi = {k: (v - LR * gi).detach().requires_grad_() for (k, v), gi in zip(phi.items(), g, strict=True)}
        mean_phi = [a + v.detach() / T for a, v in zip(mean_phi, phi.values(), strict=True)]
    for a, p, b in zip(got, theta.values(), mean_phi, strict=True):
        torch.testing.assert_close(a, p.detach() - b, rtol=1e-10, atol=1e-12)


def test_meta_sgd_learned_step_sizes_get_the_exact_gradient() -> None:
    m, ep = tiny(), episode()
    learner = MAML(m, inner_steps=STEPS, inner_lr=LR, learn_inner_lr=True)
    with torch.no_grad():  # distinct step sizes per weight, so a wrong pairing would show
        for a in learner.inner_lrs:
            a.mul_(torch.rand(a.shape, generator=torch.Generator().manual_seed(a.numel()), dtype=a.dtype) + 0.5)
    got = grads_of(learner, ep)
    lrs = dict(zip(learner.names, learner.inner_lrs, strict=True))
    ref = torch.autograd.grad(reference_maml(m, ep, False, lrs), learner.parameters())
    assert len(got) == 2 * len(list(m.parameters()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_any_elementwise_chain_is_differentiable_as_the_inner_optimizer() -> None:
    m, ep = tiny(), episode()
    learner = MAML(m, inner_steps=STEPS, inner=InnerChain.from_registry("adam", lr=LR))
    got = grads_of(learner, ep)
    theta = dict(m.named_parameters())
    total = 0.0
    for t in range(T):  # hand-written Adam (torch's defaults), differentiated through
        p = dict(theta)
        mom = {k: torch.zeros_like(v) for k, v in p.items()}
        vel = {k: torch.zeros_like(v) for k, v in p.items()}
        for s in range(1, STEPS + 1):
            g = torch.autograd.grad(mse(m, p, ep.support_x[t], ep.support_y[t]), list(p.values()), create_graph=True)
            for k, gi in zip(list(p), g, strict=True):
                mom[k] = 0.9 * mom[k] + 0.1 * gi
                vel[k] = 0.999 * vel[k] + 0.001 * gi * gi
                p[k] = p[k] - LR * (mom[k] / (1 - 0.9**s)) / ((vel[k] / (1 - 0.999**s)).sqrt() + 1e-8)
        total = total + mse(m, p, ep.query_x[t], ep.query_y[t])
    ref = torch.autograd.grad(total / T, list(theta.values()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    # momentum SGD as a hand-built chain, vmap and loop agree
    mom_chain = chain(trace(0.9), scale_by_lr(LR))
    a = grads_of(MAML(m, inner_steps=STEPS, inner=mom_chain, vectorize=True), ep)
    b = grads_of(MAML(m, inner_steps=STEPS, inner=mom_chain, vectorize=False), ep)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_registry_sgd_chain_equals_plain_inner_sgd() -> None:
    m, ep = tiny(), episode()
    a = grads_of(MAML(m, inner_steps=STEPS, inner=InnerSGD(LR)), ep)
    b = grads_of(MAML(m, inner_steps=STEPS, inner=InnerChain.from_registry("sgd", lr=LR)), ep)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_batchnorm_in_train_mode_falls_back_to_a_loop_with_exact_gradients() -> None:
    m, ep = tiny(norm=True), episode()
    learner = MAML(m, inner_steps=STEPS, inner_lr=LR)
    assert not learner.vectorized
    got = grads_of(learner, ep)
    ref = torch.autograd.grad(reference_maml(m, ep, first_order=False), list(m.parameters()))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pretrained_gradient_is_the_joint_loss_gradient() -> None:
    m, ep = tiny(), episode()
    got = grads_of(Pretrained(m), ep)
    theta = dict(m.named_parameters())
    loss = sum(mse(m, theta, torch.cat([ep.support_x[t], ep.query_x[t]]),
                   torch.cat([ep.support_y[t], ep.query_y[t]])) for t in range(T)) / T
    for a, b in zip(got, torch.autograd.grad(loss, list(theta.values())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
