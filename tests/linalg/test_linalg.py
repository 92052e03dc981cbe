"""thalweg.linalg against dense references: torch.func.hessian, torch.linalg.eigvalsh and solve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.linalg import (
    GraphHessian,
    Lanczos,
    LinearOperator,
    MatrixOperator,
    as_operator,
    cg,
    dense_hessian,
    flatten,
    grad_graph,
    hvp_from_graph,
    lanczos,
    rademacher,
    unflatten,
)

D = torch.float64


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(1)
    return net, torch.randn(10, 3, generator=g, dtype=D), torch.randint(0, 2, (10,), generator=g)


def _reference(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.func.hessian of the loss as a function of the flat parameter vector."""
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def f(flat: torch.Tensor) -> torch.Tensor:
        ps = dict(zip(names, unflatten(flat, params), strict=True))
        return F.cross_entropy(torch.func.functional_call(net, ps, (x,)), y)

    return torch.func.hessian(f)(flatten([p.detach() for p in params]))


def _graph(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = list(net.parameters())
    return grad_graph(F.cross_entropy(net(x), y), params), params


def test_hvp_from_graph_matches_torch_func_hessian_single_and_batched() -> None:
    net, x, y = _tiny()
    H = _reference(net, x, y)
    grads, params = _graph(net, x, y)
    V = torch.randn(5, H.shape[0], generator=torch.Generator().manual_seed(2), dtype=D)
    torch.testing.assert_close(hvp_from_graph(grads, params, V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    for chunk in (None, 2):  # one vmapped backward, or blocks of two rows
        torch.testing.assert_close(hvp_from_graph(grads, params, V, chunk=chunk), V @ H, rtol=1e-10, atol=1e-12)
    op = GraphHessian(grads, params)
    assert isinstance(op, LinearOperator) and op.shape == H.shape
    torch.testing.assert_close(op.matmat(V.T), H @ V.T, rtol=1e-10, atol=1e-12)
    assert op.num_matvecs == 5


def test_unused_and_constant_gradients_give_zero_blocks() -> None:
    a = torch.tensor([1.0, 2.0], dtype=D, requires_grad=True)
    b = torch.tensor([3.0], dtype=D, requires_grad=True)  # enters linearly: ∂²/∂b² = 0
    unused = torch.zeros(2, dtype=D, requires_grad=True)
    loss = (a**3).sum() + 5 * b.sum()
    grads = grad_graph(loss, [a, b, unused])
    assert torch.equal(grads[2], torch.zeros(2, dtype=D))
    expected = torch.zeros(5, 5, dtype=D)
    expected[0, 0], expected[1, 1] = 6.0, 12.0
    torch.testing.assert_close(dense_hessian(grads, [a, b, unused]), expected)
    flat = [g.detach() for g in grad_graph(5 * b.sum(), [b])]  # no graph at all: H = 0
    assert torch.equal(hvp_from_graph(flat, [b], torch.ones(1, dtype=D)), torch.zeros(1, dtype=D))


def test_dense_hessian_eigenvalues_match_eigvalsh_and_the_vmap_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    net, x, y = _tiny()
    H = _reference(net, x, y)
    grads, params = _graph(net, x, y)
    dense = dense_hessian(grads, params, chunk=7)
    assert torch.equal(dense, dense.T)
    torch.testing.assert_close(torch.linalg.eigvalsh(dense), torch.linalg.eigvalsh(H), rtol=1e-10, atol=1e-12)
    raw = dense_hessian(grads, params, chunk=7, symmetrize=False)
    torch.testing.assert_close(raw, H, rtol=1e-10, atol=1e-12)

    real_grad = torch.autograd.grad
    calls = {"batched": 0, "single": 0}

    def no_vmap(*args, **kwargs):  # an op without a batching rule
        if kwargs.get("is_grads_batched"):
            calls["batched"] += 1
            raise RuntimeError("Batching rule not implemented")
        calls["single"] += 1
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    fallback = dense_hessian(grads, params, chunk=7, symmetrize=False)
    assert calls["batched"] == -(-H.shape[0] // 7) and calls["single"] == H.shape[0]
    torch.testing.assert_close(fallback, raw, rtol=1e-12, atol=1e-14)


def _symmetric(n: int, seed: int, spectrum: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    ev = torch.linspace(-2.0, 5.0, n, dtype=D) if spectrum is None else spectrum
    return q @ torch.diag(ev) @ q.T, q


def test_lanczos_full_run_matches_eigvalsh_with_honest_residuals() -> None:
    A, _ = _symmetric(12, 0)
    lz = lanczos(A, steps=12, store_products=True)
    assert lz.m == 12 and lz.num_hvps == 12
    theta, s = lz.ritz()
    torch.testing.assert_close(torch.as_tensor(theta), torch.linalg.eigvalsh(A), rtol=1e-10, atol=1e-10)
    Q = lz.basis
    torch.testing.assert_close(Q @ Q.T, torch.eye(12, dtype=D), rtol=0, atol=1e-12)  # reorthogonalized
    torch.testing.assert_close(lz.tridiagonal_matrix(), Q @ A @ Q.T, rtol=0, atol=1e-10)
    Y = lz.vectors(s)
    true = (A @ Y - Y * torch.as_tensor(theta)).norm(dim=0)
    torch.testing.assert_close(torch.as_tensor(lz.residuals(theta, s)), true, rtol=0, atol=1e-12)


def test_lanczos_stops_or_restarts_at_an_invariant_subspace() -> None:
    A, q = _symmetric(8, 1, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], dtype=D))
    v0 = q[:, 2] + q[:, 5]  # lies in a 2-D invariant subspace
    stop = lanczos(A, v0, steps=8, restart=False)
    assert stop.m == 2 and stop.done
    torch.testing.assert_close(torch.as_tensor(stop.ritz()[0]), torch.tensor([3.0, 6.0], dtype=D))
    go_on = lanczos(A, v0, steps=8, restart=True)
    assert go_on.m == 8 and go_on.block_starts == [0, 2]
    torch.testing.assert_close(torch.as_tensor(go_on.ritz()[0]), torch.arange(1.0, 9.0, dtype=D), rtol=1e-10, atol=1e-10)


def test_lanczos_basis_dtype_and_bad_inputs() -> None:
    A, _ = _symmetric(6, 2)
    lz = lanczos(A.float(), torch.ones(6), steps=4, dtype=torch.float32, restart=False)
    assert lz.basis.dtype == torch.float32 and lz.tridiagonal_matrix().shape == (4, 4)
    with pytest.raises(ValueError, match="nonzero finite"):
        Lanczos(A, torch.zeros(6))
    with pytest.raises(ValueError, match="dim=6"):
        Lanczos(A, torch.ones(5))
    with pytest.raises(FloatingPointError, match="non-finite"):
        Lanczos(torch.full((3, 3), float("nan"), dtype=D)).step()


def test_cg_solves_spd_systems_like_torch_linalg_solve() -> None:
    g = torch.Generator().manual_seed(3)
    M = torch.randn(20, 20, generator=g, dtype=D)
    A = M @ M.T + 0.5 * torch.eye(20, dtype=D)
    b = torch.randn(20, generator=g, dtype=D)
    r = cg(A, b, rtol=1e-12, max_iter=100)  # κ ≈ 200: rounding costs CG a few passes over n = 20
    assert r.converged and not r.negative_curvature and r.iterations < 100 and r.residual_norm <= 1e-12 * b.norm()
    torch.testing.assert_close(r.x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    op = MatrixOperator(A)
    short = cg(op, b, max_iter=3)  # truncated: three products, not converged
    assert short.iterations == op.num_matvecs == 3 and not short.converged
    fn = cg(lambda v: A @ v, b, rtol=1e-12, max_iter=100)  # a plain function works too
    torch.testing.assert_close(fn.x, r.x, rtol=0, atol=0)


def test_cg_stops_at_negative_curvature() -> None:
    A = torch.diag(torch.tensor([-1.0, 2.0], dtype=D))
    b = torch.tensor([1.0, 0.0], dtype=D)  # first direction has bᵀAb < 0: return b itself
    r = cg(A, b)
    assert r.negative_curvature and torch.equal(r.x, b) and r.iterations == 1
    b2 = torch.tensor([0.1, 1.0], dtype=D)  # positive first, negative later: keep the iterate
    r2 = cg(A, b2)
    assert r2.negative_curvature and r2.iterations == 2
    assert float(b2 @ r2.x) > 0 and not torch.equal(r2.x, b2)


def test_rademacher_is_balanced_isotropic_and_reproducible() -> None:
    z = rademacher((40000, 6), torch.Generator().manual_seed(0))
    assert z.dtype == D and set(z.unique().tolist()) == {-1.0, 1.0}
    n = len(z)
    assert z.mean(0).abs().max() < 5 / n**0.5  # mean 0, standard error 1/sqrt(N)
    torch.testing.assert_close(z.T @ z / n, torch.eye(6, dtype=D), atol=5 / n**0.5, rtol=0)
    a = rademacher(100, torch.Generator().manual_seed(7), dtype=torch.float32)
    b = rademacher(100, torch.Generator().manual_seed(7), dtype=torch.float32)
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_as_operator_accepts_tensors_operators_and_duck_types() -> None:
    A, _ = _symmetric(4, 4)
    op = as_operator(A)
    assert isinstance(op, MatrixOperator) and op.dim == 4
    assert as_operator(op) is op

    class Duck:
        dim = 4
        calls = 0

        def matvec(self, v: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return A @ v

    duck = Duck()
    wrapped = as_operator(duck)
    assert wrapped.shape == (4, 4) and wrapped.dtype == D
    torch.testing.assert_close(wrapped.matmat(torch.eye(4, dtype=D)), A)
    assert duck.calls == 4
    with pytest.raises(TypeError, match="linear operator"):
        as_operator("matrix")
    with pytest.raises(ValueError, match="square"):
        MatrixOperator(torch.ones(2, 3))
