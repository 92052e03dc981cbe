"""The test surfaces: gradients against closed forms, critical points against the Hessian."""

from __future__ import annotations

import math

import pytest
import torch

from thalweg.landscape import functions as F


def test_names_cover_the_contract() -> None:
    for name in ["rosenbrock", "beale", "x2", "xcos", "x3", "neg_x3_plus_3x", "bowl",
                 "saddle", "sinsin", "x2_2xy_y3", "ravine"]:
        fn = F.get(name)
        assert fn.name == name
        assert len(fn.domain) == fn.dim
        assert fn.latex


def test_seed_gradient_example() -> None:
    # f = x² + 2xy + y³, ∇f = (2x + 2y, 2x + 3y²) = (10, 18) at (3, 2)
    g = F.get("x2_2xy_y3").grad(torch.tensor([3.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([10.0, 18.0], dtype=torch.float64))


CLOSED_FORM_GRADS = {
    "x2": lambda x, y: [2 * x],
    "xcos": lambda x, y: [math.cos(math.pi * x) - math.pi * x * math.sin(math.pi * x)],
    "x3": lambda x, y: [3 * x**2],
    "neg_x3_plus_3x": lambda x, y: [-3 * x**2 + 3],
    "bowl": lambda x, y: [2 * x, 2 * y],
    "saddle": lambda x, y: [2 * x, -2 * y],
    "sinsin": lambda x, y: [math.cos(x) * math.sin(y), math.sin(x) * math.cos(y)],
    "x2_2xy_y3": lambda x, y: [2 * x + 2 * y, 2 * x + 3 * y**2],
    "ravine": lambda x, y: [0.2 * x, 4 * y],
    "rosenbrock": lambda x, y: [-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)],
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORM_GRADS))
def test_gradient_matches_closed_form(name: str) -> None:
    fn = F.get(name)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = torch.rand(fn.dim, generator=gen, dtype=torch.float64) * 3 - 1.5
        expected = CLOSED_FORM_GRADS[name](float(p[0]), float(p[-1]))
        torch.testing.assert_close(fn.grad(p), torch.tensor(expected, dtype=torch.float64))


def test_beale_gradient_matches_finite_differences() -> None:
    fn = F.get("beale")
    p = torch.tensor([1.3, -0.4], dtype=torch.float64)
    eps = 1e-6
    fd = [(fn(p + eps * e) - fn(p - eps * e)) / (2 * eps) for e in torch.eye(2, dtype=torch.float64)]
    torch.testing.assert_close(fn.grad(p), torch.stack(fd), rtol=1e-6, atol=1e-6)


ALL_CRITICAL = [(fn.name, cp) for fn in (F.get(n) for n in F.names()) for cp in fn.critical_points]


@pytest.mark.parametrize(("name", "cp"), ALL_CRITICAL, ids=[f"{n}-{c.point}" for n, c in ALL_CRITICAL])
def test_critical_points_have_zero_gradient_and_their_kind(name: str, cp: F.CriticalPoint) -> None:
    fn = F.get(name)
    p = torch.tensor(cp.point, dtype=torch.float64)
    assert torch.linalg.vector_norm(fn.grad(p)) < 1e-9
    for (lo, hi), c in zip(fn.domain, cp.point, strict=True):
        assert lo <= c <= hi
    eig = torch.linalg.eigvalsh(fn.hessian(p))
    tol = 1e-9
    if cp.kind == "minimum":
        assert (eig > tol).all(), eig
    elif cp.kind == "maximum":
        assert (eig < -tol).all(), eig
    elif cp.kind == "saddle":
        assert (eig > tol).any() and (eig < -tol).any(), eig
    else:
        assert (eig.abs() < tol).any(), eig


def test_minima_are_lowest_nearby_and_global_minimum_value() -> None:
    for name in F.names():
        fn = F.get(name)
        for m in fn.minima:
            p = torch.tensor(m, dtype=torch.float64)
            around = p + 1e-3 * torch.randn(20, fn.dim, dtype=torch.float64)
            assert (fn(around) >= fn(p)).all()
        if fn.global_minimum is not None:
            _, z = fn.grid(120)
            assert z.min() >= fn.global_minimum - 1e-12
            assert min(float(fn(torch.tensor(m, dtype=torch.float64))) for m in fn.minima) == \
                pytest.approx(fn.global_minimum, abs=1e-12)


def test_known_values() -> None:
    assert float(F.get("x2_2xy_y3")(torch.tensor([-2 / 3, 2 / 3], dtype=torch.float64))) == \
        pytest.approx(-4 / 27)
    xcos = F.get("xcos")
    local, glob = (float(xcos(torch.tensor(m, dtype=torch.float64))) for m in xcos.minima)
    assert glob < local  # the global minimum on [-1, 2] is the one near 1.09
    assert F.get("rosenbrock")(torch.tensor([1.0, 1.0])) == 0


def test_batched_evaluation_and_grid_shapes() -> None:
    fn = F.get("rosenbrock")
    axes, z = fn.grid(30)
    assert [a.shape for a in axes] == [(30,), (30,)]
    assert z.shape == (30, 30)
    # z[i, j] is f(x_j, y_i) (matplotlib's contour convention)
    assert float(z[3, 7]) == pytest.approx(float(fn(torch.stack([axes[0][7], axes[1][3]]))))
    _, z1 = F.get("xcos").grid(50)
    assert z1.shape == (50,)


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown test function 'nope'"):
        F.get("nope")
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        F.get("bowl")(torch.zeros(3))
    with pytest.raises(TypeError, match="fn must be"):
        F.as_function(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution"):
        F.get("bowl").grid(1)
