"""Hessian-vector products and Lanczos against dense references (torch.autograd, eigvalsh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from torch import nn

from thalweg.curvature import HessianOperator, eigs, hvp, rademacher


def _mlp(dropout: float = 0.0, bn: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 12)]
    if bn:
        layers.append(nn.BatchNorm1d(12))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(12, 3))
    return nn.Sequential(*layers).double()


def _data(n: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _reference_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense Hessian of the mean loss from torch.autograd.functional.hessian on flat params."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
def test_hvp_and_dense_match_autograd_reference(backend: str) -> None:
    model, (x, y) = _mlp(), _data()
    op = HessianOperator(model, F.cross_entropy, (x, y), backend=backend)
    H_ref = _reference_hessian(model.eval(), x, y)
    assert op.dim == H_ref.shape[0] == 6 * 12 + 12 + 12 * 3 + 3
    V = torch.randn(op.dim, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for j in range(3):
        torch.testing.assert_close(op.matvec(V[:, j]), H_ref @ V[:, j], rtol=1e-9, atol=1e-11)
    assert op.num_matvecs == 3
    torch.testing.assert_close(op.dense(), H_ref, rtol=1e-9, atol=1e-11)


def test_many_batches_sum_weighted_by_batch_size() -> None:
    model, (x, y) = _mlp(), _data(50)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    full = HessianOperator(model, F.cross_entropy, (x, y)).matvec(v)
    batches = [(x[:7], y[:7]), (x[7:30], y[7:30]), (x[30:], y[30:])]  # unequal sizes
    split = HessianOperator(model, F.cross_entropy, batches).matvec(v)
    torch.testing.assert_close(split, full, rtol=1e-10, atol=1e-12)
    summed = HessianOperator(model, lambda o, t: F.cross_entropy(o, t, reduction="sum"), batches, reduction="sum")
    torch.testing.assert_close(summed.matvec(v), full * len(x), rtol=1e-10, atol=1e-10)


def test_backends_agree_and_auto_picks_one() -> None:
    model, (x, y) = _mlp(dropout=0.2, bn=True), _data()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    outs = [HessianOperator(model, F.cross_entropy, (x, y), mode="train", backend=b).matvec(v)
            for b in ("double_backward", "forward_over_reverse")]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-11)
    # one batch: the cached gradient graph makes double-backward the choice, no timing needed
    assert HessianOperator(model, F.cross_entropy, (x, y), mode="train").backend == "double_backward"
    # several batches: both backends are timed once (4 products, not counted), then cached
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]
    op = HessianOperator(model, F.cross_entropy, batches, mode="train")
    ref = HessianOperator(model, F.cross_entropy, batches, mode="train", backend="double_backward").matvec(v)
    torch.testing.assert_close(op.matvec(v), ref, rtol=1e-9, atol=1e-11)
    assert op.backend in ("double_backward", "forward_over_reverse")
    assert op.num_matvecs == 1 and op.selection_hvps in (0, 4)  # 0 if this process timed it already
    again = HessianOperator(model, F.cross_entropy, batches, mode="train")
    assert again.backend == op.backend and again.selection_hvps == 0


def test_train_mode_with_dropout_and_batchnorm_is_a_fixed_symmetric_matrix() -> None:
    model, (x, y) = _mlp(dropout=0.3, bn=True), _data()
    bn = model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    op = HessianOperator(model, F.cross_entropy, [(x[:20], y[:20]), (x[20:], y[20:])], mode="train")
    g = torch.Generator().manual_seed(3)
    u, v = (torch.randn(op.dim, generator=g, dtype=torch.float64) for _ in range(2))
    Hu, Hv = op.matvec(u), op.matvec(v)
    assert torch.allclose(u @ Hv, v @ Hu, rtol=1e-9)
    torch.testing.assert_close(op.matvec(u), Hu)  # same mask every time: a fixed matrix
    # the fixed-mask Hessian differs from eval mode's (dropout and batch statistics matter)
    assert not torch.allclose(HessianOperator(model, F.cross_entropy, (x, y), mode="eval").matvec(u), Hu)
    # HVPs left BatchNorm's running statistics and the module modes untouched
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert model.training  # a fresh nn.Module starts in train mode and stays there


def test_function_hessian_and_hvp() -> None:
    f = lambda p: p[0] ** 2 + 2 * p[0] * p[1] + p[1] ** 3  # noqa: E731  (seed 002's example)
    op = HessianOperator.for_function(f, [3.0, 2.0])
    torch.testing.assert_close(op.gradient(), torch.tensor([10.0, 18.0], dtype=torch.float64))
    H = torch.tensor([[2.0, 2.0], [2.0, 12.0]], dtype=torch.float64)
    torch.testing.assert_close(op.dense(), H)
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    for backend in ("double_backward", "forward_over_reverse"):
        torch.testing.assert_close(hvp(f, v, point=[3.0, 2.0], backend=backend), H @ v)
    lin = HessianOperator.for_function(lambda p: -p[0] - 2 * p[1], [1.0, 1.0])  # a plane: H = 0
    assert torch.equal(lin.matvec(v), torch.zeros(2, dtype=torch.float64))


def test_to_scipy_linear_operator_matches_dense() -> None:
    model, (x, y) = _mlp(), _data()
    op = HessianOperator(model, F.cross_entropy, (x, y))
    lo = op.to_scipy()
    assert lo.shape == (op.dim, op.dim)
    H = op.dense().numpy()
    z = np.random.default_rng(0).standard_normal(op.dim)
    np.testing.assert_allclose(lo.matvec(z), H @ z, rtol=1e-10, atol=1e-12)
    top = eigsh(lo, k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), np.linalg.eigvalsh(H)[-2:], rtol=1e-8)


def test_bad_inputs_name_the_argument() -> None:
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="mode"):
        HessianOperator(model, F.cross_entropy, (x, y), mode="training")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        HessianOperator(model, F.cross_entropy, (x, y), backend="magic")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        HessianOperator("mlp", F.cross_entropy, (x, y))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch 0"):
        HessianOperator(model, F.cross_entropy, (x, y[:3]))
    op = HessianOperator(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match="dim"):
        op.matvec(torch.zeros(5))
    with pytest.raises(ValueError, match="k="):
        eigs(torch.eye(3, dtype=torch.float64), k=4)
    with pytest.raises(ValueError, match="which"):
        eigs(op, which="top")  # type: ignore[arg-type]


def test_rademacher_probes_are_balanced_and_isotropic() -> None:
    g = torch.Generator().manual_seed(0)
    z = rademacher((20000, 8), g)
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    # mean 0 with standard error 1/sqrt(N); E[zzᵀ] = I with entry std 1/sqrt(N)
    assert z.mean(0).abs().max() < 5 / 20000**0.5
    second = z.T @ z / len(z)
    torch.testing.assert_close(second, torch.eye(8, dtype=torch.float64), atol=5 / 20000**0.5, rtol=0)


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_lanczos_matches_eigvalsh_on_small_mlp(which: str) -> None:
    model, (x, y) = _mlp(), _data()
    op = HessianOperator(model, F.cross_entropy, (x, y))
    ev = torch.linalg.eigvalsh(op.dense())
    op.num_matvecs = 0
    r = eigs(op, k=3, which=which, tol=1e-8, return_eigenvectors=True)
    top, bottom = ev[-3:].flip(0), ev[:3]
    expect = {"largest": top, "smallest": bottom, "both": torch.cat([top, bottom])}[which]
    torch.testing.assert_close(r.eigenvalues, expect, rtol=1e-6, atol=1e-9)
    assert r.all_converged and r.num_hvps == op.num_matvecs == r.iterations < op.dim
    # the residuals are true ‖Hy − θy‖, recomputed here with fresh HVPs
    V = r.eigenvectors
    assert V is not None and V.shape == (op.dim, len(expect))
    true_res = torch.stack([(op.matvec(V[:, i]) - r.eigenvalues[i] * V[:, i]).norm() for i in range(V.shape[1])])
    torch.testing.assert_close(r.residuals, true_res, rtol=1e-3, atol=1e-12)
    assert (true_res <= 1e-8 * r.scale * 1.01).all()


def test_lanczos_full_dimension_and_flags() -> None:
    # a matrix with a repeated eigenvalue: Lanczos must restart after an invariant subspace
    d = torch.tensor([5.0, 5.0, 5.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = Q @ torch.diag(d) @ Q.T
    r = eigs(A, k=6, which="largest", tol=1e-10)
    torch.testing.assert_close(r.eigenvalues, d.sort(descending=True).values, rtol=1e-9, atol=1e-9)
    # with too small a budget the flags say so honestly
    M = torch.diag(torch.linspace(1, 2, 200, dtype=torch.float64))
    r2 = eigs(M, k=1, which="largest", tol=1e-12, max_iter=5)
    assert r2.num_hvps == 5 and not r2.all_converged and r2.residuals[0] > 1e-12 * r2.scale


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
def test_weight_norm_models_get_the_true_symmetric_hessian(backend: str) -> None:
    """torch's fused weight-norm kernel has a wrong second derivative on CPU (its gradient is
    right): check Hv against central differences of the gradient, and symmetry."""
    from thalweg.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, width=5, depth=1, norm="weight").double()
    x, y = _data()
    op = HessianOperator(model, F.cross_entropy, (x, y), backend=backend)
    g = torch.Generator().manual_seed(2)
    u, v = (torch.randn(op.dim, generator=g, dtype=torch.float64) for _ in range(2))
    Hv = op.matvec(v)
    assert float(u @ Hv) == pytest.approx(float(v @ op.matvec(u)), rel=1e-9)
    params = list(model.parameters())
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def grad_at(flat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat, params)
        gr = torch.autograd.grad(F.cross_entropy(model.eval()(x), y), params)
        return torch.cat([t.reshape(-1) for t in gr])

    eps = 1e-5
    fd = (grad_at(flat0 + eps * v) - grad_at(flat0 - eps * v)) / (2 * eps)
    grad_at(flat0)  # restore
    torch.testing.assert_close(Hv, fd, rtol=1e-6, atol=1e-8)


def test_lanczos_finds_repeated_eigenvalues_after_an_invariant_subspace() -> None:
    """A 2-output linear model under MSE has every Hessian eigenvalue twice; one Krylov space
    sees each once, so eigs must restart after the breakdown to report both copies."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)  # float32: breakdown is detected at the operator's rounding level
    x, y = torch.randn(20, 3), torch.randn(20, 2)
    op = HessianOperator(model, F.mse_loss, (x, y))
    ev = torch.linalg.eigvalsh(op.dense().double())
    r = eigs(op, k=2, which="both", tol=1e-5)
    expect = torch.cat([ev[-2:].flip(0), ev[:2]])
    torch.testing.assert_close(r.eigenvalues, expect, rtol=1e-5, atol=1e-6)
    assert r.eigenvalues[0] == pytest.approx(float(r.eigenvalues[1]), rel=1e-5)  # the pair
    I3 = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(eigs(I3, k=3).eigenvalues, torch.ones(3, dtype=torch.float64))


def test_cached_graph_is_rebuilt_after_the_weights_change() -> None:
    model, (x, y) = _mlp(), _data()
    op = HessianOperator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    before = op.matvec(v)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(x), y).backward()
    opt.step()  # in-place update of every parameter
    after = op.matvec(v)
    torch.testing.assert_close(after, HessianOperator(model, F.cross_entropy, (x, y)).matvec(v))
    assert not torch.allclose(after, before)
