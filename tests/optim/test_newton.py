"""Newton: one step on a quadratic, the saddle story, Rosenbrock vs GD, Krylov = exact."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from thalweg.landscape import functions
from thalweg.linalg import dense_hessian
from thalweg.optim.second_order.newton import Newton

D = torch.float64



def _spd(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=D)
    return a @ a.T + 0.5 * torch.eye(n, dtype=D), torch.randn(n, generator=g, dtype=D)


def _point(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=D, requires_grad=True)


@pytest.mark.parametrize("mode", ["damped", "saddle_free"])
@pytest.mark.parametrize("solver", ["exact", "krylov"])
def test_one_step_to_the_minimum_of_a_strongly_convex_quadratic(mode: str, solver: str) -> None:
    a, b = _spd(8)
    x = torch.zeros(8, dtype=D, requires_grad=True)
    opt = Newton([x], mode=mode, solver=solver)
    opt.step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b), rtol=0, atol=1e-10)


def test_plain_newton_walks_to_the_saddle_saddle_free_walks_away() -> None:
    saddle = functions.get("saddle")  # x² − y², critical point (0, 0)
    x = _point(0.1, 0.05)
    Newton([x], line_search=False).step(lambda: saddle(x))
    torch.testing.assert_close(x.detach(), torch.zeros(2, dtype=D), rtol=0, atol=1e-15)

    x = _point(0.1, 0.05)
    opt = Newton([x], mode="saddle_free", line_search=False)
    values, ys = [float(saddle(x.detach()))], [abs(float(x.detach()[1]))]
    for _ in range(4):
        opt.step(lambda: saddle(x))
        values.append(float(saddle(x.detach())))
        ys.append(abs(float(x.detach()[1])))
    assert all(b < a for a, b in itertools.pairwise(values)), values
    assert all(b > a for a, b in itertools.pairwise(ys)), ys  # escapes along y
    assert float(x.detach().norm()) > 5 * 0.1118
    # |H| = 2I: x jumps to its minimum 0, y doubles each step (escape along −y²).
    torch.testing.assert_close(x.detach(), torch.tensor([0.0, 0.05 * 16], dtype=D))


def test_damping_turns_the_step_into_gradient_descent_when_large() -> None:
    a, b = _spd(5, seed=3)
    x = torch.zeros(5, dtype=D, requires_grad=True)
    lam = 1e8
    Newton([x], damping=lam, line_search=False).step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach() * lam, b, rtol=1e-6, atol=0)


def test_rosenbrock_in_far_fewer_iterations_than_gradient_descent() -> None:
    rosen = functions.get("rosenbrock")
    x = _point(-1.5, 2.0)
    opt = Newton([x])
    newton_iters = None
    for i in range(1, 101):
        opt.step(lambda: rosen(x))
        if float(rosen(x.detach())) < 1e-10:
            newton_iters = i
            break
    assert newton_iters is not None and newton_iters <= 40
    torch.testing.assert_close(x.detach(), torch.ones(2, dtype=D), rtol=0, atol=1e-4)

    y = _point(-1.5, 2.0)
    gd = torch.optim.SGD([y], lr=1e-3)  # near the largest stable step at the start
    for _ in range(20 * newton_iters):
        gd.zero_grad()
        rosen(y).backward()
        gd.step()
    assert float(rosen(y.detach())) > 1e-3  # GD is still crawling along the valley floor


def test_armijo_line_search_repairs_an_overshooting_newton_step() -> None:
    # f = sqrt(1 + x²): at x = 2 the pure Newton step lands at −8, where f is larger.
    x = _point(2.0)
    Newton([x], line_search=False).step(lambda: torch.sqrt(1 + x @ x))
    assert float(x.detach()) == pytest.approx(-8.0)
    x = _point(2.0)
    f0 = float(torch.sqrt(torch.tensor(5.0, dtype=D)))
    opt = Newton([x])
    opt.step(lambda: torch.sqrt(1 + x @ x))
    f1 = float(torch.sqrt(1 + x.detach() @ x.detach()))
    t = opt.state[x]["step_size"]
    assert 0 < t < 1
    slope = -(2 / 5**0.5) * (2 * 5)  # g·d with d = −g/h = −x(1 + x²)
    assert f1 <= f0 + 1e-4 * t * slope


def test_krylov_saddle_free_matches_exact_on_an_indefinite_quadratic() -> None:
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=D))
    h = q @ torch.diag(torch.tensor([-3.0, -1.0, 0.5, 1.0, 2.0, 4.0], dtype=D)) @ q.T
    x0 = torch.randn(6, generator=g, dtype=D)
    out = []
    for solver in ("exact", "krylov"):
        x = x0.clone().requires_grad_(True)
        Newton([x], mode="saddle_free", solver=solver, damping=0.1, line_search=False).step(
            lambda x=x: 0.5 * x @ h @ x)
        out.append(x.detach())
    torch.testing.assert_close(out[0], out[1], rtol=1e-9, atol=1e-10)
    evals, evecs = torch.linalg.eigh(h)
    expected = x0 - evecs @ ((evecs.T @ (h @ x0)) / (evals.abs() + 0.1))
    torch.testing.assert_close(out[0], expected)


def _tiny_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return net, torch.randn(16, 3, dtype=D), torch.randn(16, 2, dtype=D)


def test_dense_hessian_equals_torch_autograd_hessian_of_a_network() -> None:
    net, xb, yb = _tiny_net()
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]
    loss = nn.functional.mse_loss(net(xb), yb)
    grads = list(torch.autograd.grad(loss, params, create_graph=True))
    h = dense_hessian(grads, params, chunk=7)

    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def f(flat: torch.Tensor) -> torch.Tensor:
        tensors, i = {}, 0
        for n, p in zip(names, params, strict=True):
            tensors[n] = flat[i : i + p.numel()].view_as(p)
            i += p.numel()
        return nn.functional.mse_loss(torch.func.functional_call(net, tensors, (xb,)), yb)

    torch.testing.assert_close(h, torch.autograd.functional.hessian(f, flat0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["exact", "krylov"])
def test_newton_trains_a_small_network_and_writes_grads(solver: str) -> None:
    net, xb, yb = _tiny_net()
    opt = Newton(net.parameters(), mode="saddle_free", damping=1e-2, solver=solver,
                 krylov_iters=10)

    def closure() -> torch.Tensor:
        return nn.functional.mse_loss(net(xb), yb)

    losses = [float(opt.step(closure)) for _ in range(12)] + [float(closure().detach())]
    assert all(b <= a for a, b in itertools.pairwise(losses)), losses  # Armijo
    assert losses[-1] < 0.4 * losses[0], losses  # 0.87 → ~0.15; Adam needs >200 steps for 0.4
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr": 0.0}, "lr"), ({"damping": -1.0}, "damping"), ({"mode": "plain"}, "mode"),
     ({"solver": "cg"}, "solver"), ({"max_exact": 0}, "max_exact"),
     ({"krylov_iters": 0}, "krylov_iters"), ({"backtrack": 1.0}, "backtrack"),
     ({"armijo_c": 0.0}, "armijo_c"), ({"lr": float("nan")}, "lr")],
)
def test_bad_hyperparameters_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Newton([_point(1.0)], **kwargs)


def test_bad_types_and_param_groups_are_reported() -> None:
    with pytest.raises(TypeError, match="max_exact"):
        Newton([_point(1.0)], max_exact=2.5)
    with pytest.raises(ValueError, match="one parameter group"):
        Newton([{"params": [_point(1.0)]}, {"params": [_point(2.0)]}])
