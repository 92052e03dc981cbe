"""AdaHessian: Rademacher probes, the Hutchinson diagonal against the exact one, the update
against its closed form, conv spatial averaging, update_every, bitwise resume, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from thalweg.linalg import rademacher
from thalweg.optim.second_order.adahessian import AdaHessian, hutchinson_diagonal

D = torch.float64



def test_rademacher_is_plus_minus_one_with_equal_probability() -> None:
    n = 200_000
    z = rademacher((n,), generator=torch.Generator().manual_seed(0), dtype=D)
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(z * z, torch.ones(n, dtype=D))  # E[z²] = 1 exactly
    # mean of n fair ±1 has std 1/√n; 5σ bound
    assert abs(float(z.mean())) < 5 / n**0.5
    assert abs(float((z > 0).double().mean()) - 0.5) < 2.5 / n**0.5


def _tiny_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return net, torch.randn(32, 3, dtype=D), torch.randn(32, 2, dtype=D)


def _exact_hessian(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(flat: torch.Tensor) -> torch.Tensor:
        tensors, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = int(torch.Size(s).numel())
            tensors[n] = flat[i : i + k].view(s)
            i += k
        return nn.functional.mse_loss(torch.func.functional_call(net, tensors, (xb,)), yb)

    return torch.autograd.functional.hessian(f, flat0)


def test_hutchinson_diagonal_converges_to_the_exact_diagonal() -> None:
    net, xb, yb = _tiny_net()
    params = list(net.parameters())
    h = _exact_hessian(net, xb, yb)
    loss = nn.functional.mse_loss(net(xb), yb)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    n = 3000
    est = hutchinson_diagonal(grads, params, n_samples=n, generator=torch.Generator().manual_seed(1))
    est = torch.cat([e.reshape(-1) for e in est])
    diag = torch.diagonal(h)
    # Var[z_i (Hz)_i] = Σ_{j≠i} H_ij²: a 5σ band around the exact diagonal, per entry.
    sigma = ((h**2).sum(1) - diag**2).sqrt() / n**0.5
    assert torch.all((est - diag).abs() <= 5 * sigma + 1e-12), (est - diag).abs() / sigma
    assert torch.allclose(est, diag, atol=0.05 * float(diag.abs().max()))


def test_hutchinson_is_exact_for_a_diagonal_hessian() -> None:
    c = torch.tensor([0.5, 2.0, 8.0], dtype=D)
    x = torch.tensor([1.0, -1.0, 3.0], dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(0.5 * (c * x**2).sum(), [x], create_graph=True)
    (est,) = hutchinson_diagonal([g], [x], n_samples=1)
    torch.testing.assert_close(est, c)


def _reference(x0: torch.Tensor, c: torch.Tensor, steps: int, lr: float, b1: float, b2: float,
               eps: float, k: float, wd: float) -> torch.Tensor:
    """AdaHessian by hand on f = ½ Σ c_i x_i² (diag(H) = c exactly)."""
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for t in range(1, steps + 1):
        g = c * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * c * c
        denom = (v / (1 - b2**t)).sqrt() ** k + eps
        x = x * (1 - lr * wd) - lr * (m / (1 - b1**t)) / denom
    return x


@pytest.mark.parametrize(("k", "wd"), [(1.0, 0.0), (0.5, 0.0), (1.0, 0.1)])
def test_update_matches_the_closed_form_on_a_diagonal_quadratic(k: float, wd: float) -> None:
    c = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=D)
    x0 = torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=D)
    x = x0.clone().requires_grad_(True)
    opt = AdaHessian([x], lr=0.1, betas=(0.9, 0.99), eps=1e-4, hessian_power=k, weight_decay=wd)
    for _ in range(10):
        opt.step(lambda: 0.5 * (c * x**2).sum())
    torch.testing.assert_close(x.detach(), _reference(x0, c, 10, 0.1, 0.9, 0.99, 1e-4, k, wd))


def test_one_newton_step_with_no_averaging_and_power_one() -> None:
    c = torch.tensor([0.1, 1.0, 10.0], dtype=D)
    x = torch.tensor([1.0, -2.0, 0.5], dtype=D, requires_grad=True)
    opt = AdaHessian([x], lr=1.0, betas=(0.0, 0.0), eps=1e-12)
    opt.step(lambda: 0.5 * (c * x**2).sum())
    torch.testing.assert_close(x.detach(), torch.zeros(3, dtype=D), rtol=0, atol=1e-10)


def test_conv_kernels_use_the_spatially_averaged_diagonal() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1)).double()
    xb, yb = torch.randn(5, 2, 6, 6, dtype=D), torch.randn(5, 1, dtype=D)
    params = list(net.parameters())
    opt = AdaHessian(params, betas=(0.9, 0.99), seed=3)

    loss = nn.functional.mse_loss(net(xb), yb)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    expected = hutchinson_diagonal(grads, params, generator=torch.Generator().manual_seed(3))
    w = expected[0].abs().mean(dim=(2, 3), keepdim=True).expand_as(expected[0])

    opt.step(lambda: nn.functional.mse_loss(net(xb), yb))
    v = opt.state[params[0]]["exp_hessian_diag_sq"]
    torch.testing.assert_close(v, 0.01 * w * w)
    assert torch.equal(v, v[:, :, :1, :1].expand_as(v))  # one value per (out, in) kernel
    torch.testing.assert_close(opt.state[params[1]]["exp_hessian_diag_sq"],
                               0.01 * expected[1] ** 2)  # 1-D bias: |D|, no averaging


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(64, 5, generator=g)
    return xb, (xb[:, 0] + 0.5 * xb[:, 1] > 0).long()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))


def test_update_every_refreshes_the_diagonal_only_every_k_steps() -> None:
    net, (xb, yb) = _mlp(), _data()
    opt = AdaHessian(net.parameters(), lr=0.05, update_every=3)
    w = net[0].weight
    seen = []
    for _ in range(7):
        opt.step(lambda: nn.functional.cross_entropy(net(xb), yb))
        seen.append(opt.state[w]["exp_hessian_diag_sq"].clone())
    assert int(opt.state[w]["hessian_step"]) == 3  # steps 0, 3, 6
    assert int(opt.state[w]["step"]) == 7
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])
    assert not torch.equal(seen[2], seen[3])


def test_trains_a_classifier_and_resumes_bitwise() -> None:
    xb, yb = _data()

    def run(net: nn.Module, opt: AdaHessian, steps: int) -> list[float]:
        return [float(opt.step(lambda: nn.functional.cross_entropy(net(xb), yb)))
                for _ in range(steps)]

    net = _mlp()
    opt = AdaHessian(net.parameters(), lr=0.1)
    losses = run(net, opt, 30)
    assert losses[-1] < 0.5 * losses[0]

    a = _mlp()
    opt_a = AdaHessian(a.parameters(), lr=0.1)
    run(a, opt_a, 8)
    ckpt = copy.deepcopy({"model": a.state_dict(), "opt": opt_a.state_dict()})
    run(a, opt_a, 8)

    b = _mlp()
    opt_b = AdaHessian(b.parameters(), lr=0.1, seed=99)  # the seed is restored from the state
    b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["opt"])
    run(b, opt_b, 8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr": -1.0}, "lr"), ({"betas": (1.0, 0.9)}, r"betas\[0\]"), ({"betas": (0.9,)}, "betas"),
     ({"eps": 0.0}, "eps"), ({"hessian_power": 1.5}, "hessian_power"),
     ({"update_every": 0}, "update_every"), ({"n_samples": 0}, "n_samples"),
     ({"weight_decay": -0.1}, "weight_decay")],
)
def test_bad_hyperparameters_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AdaHessian([torch.zeros(2, requires_grad=True)], **kwargs)
