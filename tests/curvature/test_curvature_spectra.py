"""Trace, spectral density and critical-point classification against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.curvature import (
    HessianOperator,
    certify_min_sign,
    classify,
    condition_number,
    density,
    find_critical_point,
    plot_density,
    trace,
)


def _spd_with_outliers(n: int = 120, seed: int = 0) -> torch.Tensor:
    """A Hessian-like spectrum: a few large outliers over a bulk near zero (both signs)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    d = torch.cat([torch.tensor([50.0, 30.0, 20.0, 10.0, 5.0], dtype=torch.float64),
                   0.2 * torch.randn(n - 5, generator=g, dtype=torch.float64)])
    return Q @ torch.diag(d) @ Q.T


def test_hutchinson_is_exact_on_a_diagonal_and_unbiased_in_general() -> None:
    D = torch.diag(torch.linspace(-1, 3, 40, dtype=torch.float64))
    r = trace(D, "hutchinson", 5)  # zᵀDz = tr D exactly for z ∈ {±1}ⁿ
    assert r.estimate == pytest.approx(float(D.trace()), abs=1e-12) and r.stderr == pytest.approx(0.0, abs=1e-12)
    A = _spd_with_outliers()
    r = trace(A, "hutchinson", 400, seed=1)
    assert r.num_hvps == 400 and len(r.samples) == 400
    assert abs(r.estimate - float(A.trace())) < 4 * r.stderr  # within 4 standard errors
    assert 0 < r.stderr < 0.2 * abs(float(A.trace()))


def test_hutchinson_rtol_stops_early() -> None:
    A = torch.diag(torch.linspace(1, 2, 30, dtype=torch.float64)) + 0.01 * torch.ones(30, 30, dtype=torch.float64)
    r = trace(A, "hutchinson", 500, rtol=0.01)
    assert 10 <= r.num_hvps < 500 and r.stderr <= 0.01 * abs(r.estimate)


def test_hutchpp_beats_hutchinson_on_a_spectrum_with_outliers() -> None:
    A = _spd_with_outliers()
    exact = float(A.trace())
    errs = {m: [abs(trace(A, m, 30, seed=s).estimate - exact) for s in range(8)] for m in ("hutchinson", "hutch++")}
    assert np.mean(errs["hutch++"]) < 0.5 * np.mean(errs["hutchinson"])
    r = trace(A, "hutch++", 30)
    assert r.num_hvps == 30 and math.isfinite(r.stderr)
    with pytest.raises(ValueError, match="method"):
        trace(A, "exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_hvps"):
        trace(A, "hutch++", 2)


def test_slq_density_moments_are_exact_on_a_diagonal(tmp_path) -> None:
    d = torch.tensor([-1.0, 0.0, 0.5, 2.0, 4.0, 9.0], dtype=torch.float64)
    res = density(torch.diag(d), steps=6, num_probes=2)
    # Rademacher probe on a diagonal: weights 1/n at the exact eigenvalues
    for t, w in zip(res.nodes, res.weights, strict=True):
        np.testing.assert_allclose(np.sort(t), d.numpy(), atol=1e-10)
        np.testing.assert_allclose(w, np.full(6, 1 / 6), atol=1e-10)
    assert res.moment(1) == pytest.approx(float(d.mean()), rel=1e-10)
    assert res.moment(2) == pytest.approx(float((d**2).mean()), rel=1e-10)
    dx = res.grid[1] - res.grid[0]
    assert float(res.density.sum() * dx) == pytest.approx(1.0, abs=1e-3)
    assert res.num_hvps == 12
    png = plot_density(res, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slq_on_a_model_finds_the_top_eigenvalue() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    op = HessianOperator(model, F.cross_entropy, (x, y))
    ev = torch.linalg.eigvalsh(op.dense())
    res = density(op, steps=40)
    assert max(t.max() for t in res.nodes) == pytest.approx(float(ev[-1]), rel=1e-6)
    assert res.grid[0] < float(ev[0]) and res.grid[-1] > float(ev[-1])


SADDLE = lambda p: p[0] ** 2 - p[1] ** 2  # noqa: E731
BOWL = lambda p: p[0] ** 2 + p[1] ** 2  # noqa: E731
CAP = lambda p: -p[0] ** 2 - p[1] ** 2  # noqa: E731
CUBE = lambda p: p[0] ** 3  # noqa: E731
XCOS = lambda p: p[0] * torch.cos(math.pi * p[0])  # noqa: E731


@pytest.mark.parametrize(("f", "point", "kind", "lmin", "lmax"), [
    (SADDLE, [0.0, 0.0], "saddle", -2.0, 2.0),
    (BOWL, [0.0, 0.0], "minimum", 2.0, 2.0),
    (CAP, [0.0, 0.0], "maximum", -2.0, -2.0),
    (CUBE, [0.0], "flat", 0.0, 0.0),
    (SADDLE, [1.0, 0.5], "not_critical", -2.0, 2.0),
])
def test_classify_the_seeds_surfaces(f, point, kind, lmin, lmax) -> None:
    c = classify(f, point)
    assert c.kind == kind
    assert c.lambda_min == pytest.approx(lmin, abs=1e-12) and c.lambda_max == pytest.approx(lmax, abs=1e-12)
    text = c.explain()
    assert text.startswith("Verdict:") and kind.replace("not_critical", "not a critical").split("_")[0] in text
    assert c.to_dict()["kind"] == kind


def test_xcos_local_and_global_minima_on_the_interval() -> None:
    found = {}
    for x0 in (-0.6, 0.2, 1.3):
        x = find_critical_point(XCOS, [x0])
        found[round(float(x), 2)] = (classify(XCOS, x).kind, float(XCOS(x)))
    # seed 003: local minimum near −0.3, global one near 1.1, a maximum between them
    assert found[-0.27][0] == "minimum" and found[1.09][0] == "minimum" and found[0.27][0] == "maximum"
    assert found[1.09][1] < found[-0.27][1]
    with pytest.raises(ValueError, match="x0"):
        find_critical_point(lambda p: p[0] + 0 * p[0] ** 2, [0.0], max_iter=3)  # no critical point


def _regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 1.0], [3.0, 1.0]], dtype=torch.float64) + 0.1


def test_classify_models_by_lanczos_least_squares_minimum() -> None:
    x, y = _regression_data()
    model = nn.Linear(4, 2).double()
    X1 = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(X1, y).solution  # the exact least-squares minimum
    with torch.no_grad():
        model.weight.copy_(sol[:4].T)
        model.bias.copy_(sol[4])
    op = HessianOperator(model, F.mse_loss, (x, y))
    ev = torch.linalg.eigvalsh(op.dense())
    c = classify(op, dense_max=0, tol=1e-10, max_hvps=op.dim)
    assert c.kind == "minimum" and c.grad_norm < 1e-10 and "lanczos" in c.method, c.explain()
    assert c.lambda_max == pytest.approx(float(ev[-1]), rel=1e-8)
    assert c.lambda_min == pytest.approx(float(ev[0]), rel=1e-6)
    far = classify(nn.Linear(4, 2).double(), loss_fn=F.mse_loss, data=(x, y))
    assert far.kind == "not_critical" and far.grad_norm > 1e-3


def test_deep_linear_net_at_zero_is_a_saddle_or_flat() -> None:
    """Seed 001: a linear net with one hidden layer has a strict saddle at W = 0; with two
    hidden layers the Hessian there vanishes entirely (a flat, degenerate saddle)."""
    x, y = _regression_data()
    for depth, kind in ((2, "saddle"), (3, "flat")):
        layers = [nn.Linear(4, 3, bias=False)]
        layers += [nn.Linear(3, 3, bias=False) for _ in range(depth - 2)] + [nn.Linear(3, 2, bias=False)]
        model = nn.Sequential(*layers).double()
        for p in model.parameters():
            nn.init.zeros_(p)
        op = HessianOperator(model, F.mse_loss, (x, y))
        ev = torch.linalg.eigvalsh(op.dense())
        c = classify(op, dense_max=0, tol=1e-10, max_hvps=op.dim)
        assert c.kind == kind and c.grad_norm == 0.0, c.explain()
        assert c.lambda_min == pytest.approx(float(ev[0]), abs=1e-9)
        assert c.lambda_max == pytest.approx(float(ev[-1]), abs=1e-9)
        if kind == "saddle":  # eigenvalues come in ± pairs (singular values of the cross-covariance)
            assert float(ev[0]) == pytest.approx(-float(ev[-1]), rel=1e-8)


def test_certify_min_sign_with_residual_certificate() -> None:
    A = _spd_with_outliers()  # bulk contains negative eigenvalues down to about −0.5
    cert = certify_min_sign(A, max_hvps=150)
    lam_min = float(torch.linalg.eigvalsh(A)[0])
    assert cert.sign == "negative" and cert.num_hvps <= 150
    assert cert.theta + cert.residual < 0 and cert.theta >= lam_min - 1e-12
    pd = torch.diag(torch.linspace(1.0, 3.0, 30, dtype=torch.float64))
    cert = certify_min_sign(pd, max_hvps=60)
    assert cert.sign == "positive" and cert.theta == pytest.approx(1.0, rel=1e-6)


def test_condition_number_of_a_ravine() -> None:
    ravine = lambda p: 0.1 * p[0] ** 2 + 2 * p[1] ** 2  # noqa: E731
    c = condition_number(ravine, [0.0, 0.0])
    assert c.value == pytest.approx(20.0) and c.method == "dense eigh"
    assert math.isinf(condition_number(SADDLE, [0.0, 0.0]).value)
    big = torch.diag(torch.logspace(0, 4, 200, dtype=torch.float64))
    c = condition_number(big, dense_max=0, tol=1e-10, max_hvps=200)
    assert c.value == pytest.approx(1e4, rel=1e-6) and "lanczos" in c.method


def test_classify_agrees_with_every_known_critical_point_of_the_landscape_functions() -> None:
    from thalweg.landscape import functions as lf

    checked = 0
    for name in lf.names():
        tf = lf.get(name)
        for cp in tf.critical_points:
            c = classify(tf.f, torch.tensor(cp.point, dtype=torch.float64), grad_tol=1e-6)
            assert c.kind == {"degenerate": "flat"}.get(cp.kind, cp.kind), (name, cp, c.explain())
            checked += 1
    assert checked >= 10


def test_minimum_odds_saddles_dominate_in_high_dimension() -> None:
    from thalweg.curvature import minimum_odds

    assert minimum_odds(3)["independent"] == 0.125 and minimum_odds(3)["goe"] is None
    one = minimum_odds(1, trials=20000)
    assert abs(one["goe"] - 0.5) < 4 * one["goe_stderr"]  # a 1×1 GOE "matrix" is a fair coin
    four = minimum_odds(4, trials=20000)
    assert four["goe"] < four["independent"] / 10  # eigenvalue repulsion: far rarer than 0.5**k
    with pytest.raises(ValueError, match="k must"):
        minimum_odds(0)
