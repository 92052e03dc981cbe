"""K-FAC: factors against per-example closed forms, the preconditioner against a dense
Kronecker solve, KL clipping, the fallback rule, bitwise resume, DDP, and MNIST-1D speed."""

from __future__ import annotations

import copy
import io
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thalweg.optim.second_order.kfac import KFAC

D = torch.float64



def _step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
          loss_fn=F.mse_loss) -> float:
    opt.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _per_example_output_grads(layer: nn.Module, model: nn.Module, xb: torch.Tensor,
                              yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer input, ∂ℓ_n/∂out_n for each example's own loss ℓ_n) by a separate autograd pass."""
    seen = {}

    def hook(m, inp, out):
        out.retain_grad()
        seen["in"], seen["out"] = inp[0].detach(), out

    h = layer.register_forward_hook(hook)
    per_example = F.mse_loss(model(xb), yb, reduction="none").flatten(1).mean(1)
    h.remove()
    per_example.sum().backward()  # ℓ_n depends on out_n only, so this is g_n for each n
    return seen["in"], seen["out"].grad.detach()


def test_linear_factors_equal_per_example_closed_forms() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    xb, yb = torch.randn(7, 4, dtype=D), torch.randn(7, 3, dtype=D)
    refs = [copy.deepcopy(model) for _ in range(2)]
    opt = KFAC(model)
    _step(model, opt, xb, yb)
    for i, ref in zip((0, 2), refs, strict=True):
        a, g = _per_example_output_grads(ref[i], ref, xb, yb)
        a1 = torch.cat([a, torch.ones(7, 1, dtype=D)], 1)
        st = opt.state[model[i].weight]
        torch.testing.assert_close(st["A"], a1.T @ a1 / 7)
        torch.testing.assert_close(st["G"], g.T @ g / 7)


def _patches(x: torch.Tensor, k: int, pad: int, stride: int) -> torch.Tensor:
    """Conv patches by explicit slicing: rows (n, position), columns (channel, kernel offsets)."""
    if x.dim() == 3:
        x = x.unsqueeze(2)
        kh, ph = 1, 0
    else:
        kh, ph = k, pad
    x = F.pad(x, (pad, pad, ph, ph))
    rows = []
    for n in range(x.shape[0]):
        for i in range(0, x.shape[2] - kh + 1, stride if kh > 1 else 1):
            for j in range(0, x.shape[3] - k + 1, stride):
                rows.append(x[n, :, i : i + kh, j : j + k].reshape(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_factors_equal_patch_closed_forms(dims: int) -> None:
    torch.manual_seed(0)
    conv = (nn.Conv1d(2, 3, 3, padding=1, stride=2) if dims == 1
            else nn.Conv2d(2, 3, 2, padding=1, stride=2)).double()
    shape = (4, 2, 7) if dims == 1 else (4, 2, 5, 5)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten()).double()
    xb = torch.randn(*shape, dtype=D)
    yb = torch.randn_like(model(xb))
    ref = copy.deepcopy(model)
    opt = KFAC(model)
    _step(model, opt, xb, yb)
    a = _patches(xb, conv.kernel_size[-1], conv.padding[-1], conv.stride[-1])
    a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=D)], 1)
    _, g = _per_example_output_grads(ref[0], ref, xb, yb)
    g_rows = g.movedim(1, -1).reshape(-1, 3)
    st = opt.state[conv.weight]
    torch.testing.assert_close(st["A"], a.T @ a / a.shape[0])  # mean over examples·positions
    torch.testing.assert_close(st["G"], g_rows.T @ g_rows / 4)  # sum over positions, mean over n


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("inverse", ["eigen", "cholesky"])
def test_preconditioned_step_equals_a_dense_kronecker_solve(inverse: str, bias: bool) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4, bias=bias)).double()
    xb, yb = torch.randn(9, 3, dtype=D), torch.randn(9, 4, dtype=D)
    lam = 0.05
    opt = KFAC(model, lr=1.0, damping=lam, momentum=0.0, kl_clip=0.0, inverse=inverse)

    def weights() -> torch.Tensor:
        w = model[0].weight.detach()
        return torch.cat([w, model[0].bias.detach()[:, None]], 1) if bias else w.clone()

    w0 = weights().clone()
    _step(model, opt, xb, yb)
    st = opt.state[model[0].weight]
    a, g = st["A"], st["G"]
    grad = model[0].weight.grad
    if bias:
        grad = torch.cat([grad, model[0].bias.grad[:, None]], 1)
    n_a = a.shape[0]
    assert n_a == (4 if bias else 3)
    if inverse == "eigen":
        big = torch.kron(g, a) + lam * torch.eye(n_a * 4, dtype=D)
    else:
        pi = ((a.trace() / n_a) / (g.trace() / 4)).sqrt()
        big = torch.kron(g + lam**0.5 / pi * torch.eye(4, dtype=D),
                         a + pi * lam**0.5 * torch.eye(n_a, dtype=D))
    v = torch.linalg.solve(big, grad.reshape(-1)).reshape_as(grad)
    torch.testing.assert_close(w0 - weights(), v)


def test_valid_string_padding_is_preconditioned() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 2, 3, padding="valid"), nn.Flatten(), nn.Linear(2 * 6, 1))
    opt = KFAC(model)
    assert opt.fallback_names == []
    _step(model, opt, torch.randn(4, 1, 8), torch.randn(4, 1))
    assert opt.state[model[0].weight]["A"].shape == (4, 4)
    same = KFAC(nn.Sequential(nn.Conv1d(1, 2, 3, padding="same")))
    assert same.fallback_names == ["0.weight", "0.bias"]


def test_kl_clip_scales_the_step_by_the_closed_form_factor() -> None:
    xb, yb = torch.randn(9, 3, dtype=D), torch.randn(9, 4, dtype=D)
    deltas = []
    for clip in (0.0, 1e-6):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(3, 4)).double()
        w0 = model[0].weight.detach().clone()
        opt = KFAC(model, lr=0.5, momentum=0.0, kl_clip=clip)
        _step(model, opt, xb, yb)
        deltas.append((model[0].weight.detach() - w0, model[0].weight.grad, model[0].bias.grad,
                       model[0].bias.detach()))
    (dw, gw, gb, b_now), (dw_clip, *_rest) = deltas[0], deltas[1]
    v_w = -dw / 0.5
    torch.manual_seed(1)
    b0 = nn.Sequential(nn.Linear(3, 4)).double()[0].bias.detach()
    v_b = -(b_now - b0) / 0.5
    vg = float((v_w * gw).sum() + (v_b * gb).sum())
    nu = min(1.0, (1e-6 / (0.25 * vg)) ** 0.5)
    assert nu < 1
    torch.testing.assert_close(dw_clip, nu * dw)


def test_other_parameters_fall_back_to_momentum_sgd() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2))
    opt = KFAC(model, lr=0.1, momentum=0.9)
    assert opt.fallback_names == ["1.weight", "1.bias"]
    xb, yb = torch.randn(8, 3), torch.randn(8, 2)
    ln = model[1]
    buf_w = torch.zeros(6)
    for _ in range(3):
        w0 = ln.weight.detach().clone()
        _step(model, opt, xb, yb)
        buf_w = 0.9 * buf_w + ln.weight.grad if buf_w.any() else ln.weight.grad.clone()
        torch.testing.assert_close(ln.weight.detach(), w0 - 0.1 * buf_w)


def _train(model: nn.Module, opt: KFAC, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for xb, yb in batches:
        _step(model, opt, xb, yb, F.cross_entropy)


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 3))


def test_state_dict_round_trip_resumes_bitwise() -> None:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 12, generator=g), torch.randint(0, 3, (16,), generator=g))
               for _ in range(10)]
    kw = dict(lr=0.1, factor_update_every=2, inverse_update_every=3, weight_decay=1e-3)
    a = _conv_net()
    opt_a = KFAC(a, **kw)
    _train(a, opt_a, batches[:5])
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    _train(a, opt_a, batches[5:])

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    assert "A" in ckpt["opt"]["state"][0] and "QG" in ckpt["opt"]["state"][0]
    b = _conv_net()
    opt_b = KFAC(b, lr=0.1)  # intervals come back from the state
    b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["opt"])
    _train(b, opt_b, batches[5:])
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for key in ("A", "G", "QA", "dG", "momentum_buffer"):
        assert torch.equal(opt_a.state[a[0].weight][key], opt_b.state[b[0].weight][key])


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        model = _conv_net()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = KFAC(ddp, lr=0.1)
        xs, ys = _ddp_batch()
        half = slice(rank * 8, rank * 8 + 8)
        _step(ddp, opt, xs[half], ys[half], F.cross_entropy)
        torch.save({"A": opt.state[model[0].weight]["A"], "G": opt.state[model[3].weight]["G"],
                    "params": [p.detach() for p in model.parameters()]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _ddp_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(16, 1, 12, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.slow
def test_ddp_all_reduces_factors_to_the_full_batch_values(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    model = _conv_net()
    opt = KFAC(model, lr=0.1)
    _step(model, opt, *_ddp_batch(), F.cross_entropy)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["A"], opt.state[model[0].weight]["A"])
        torch.testing.assert_close(got["G"], opt.state[model[3].weight]["G"])
        for p, q in zip(got["params"], model.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6)


# Tuned in benchmarks/second_order.py (grid over lr, best epochs-to-target on this problem).
SGD_LR, ADAM_LR, TARGET = 0.1, 0.01, 0.6


def _epochs_to_target(make, splits, max_epochs: int) -> int | None:
    from thalweg.models import MLP

    torch.manual_seed(0)
    model = MLP(40, 10, width=64, depth=2)
    opt = make(model)
    x, y = splits.x_train, splits.y_train
    g = torch.Generator().manual_seed(0)
    for epoch in range(1, max_epochs + 1):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            _step(model, opt, x[idx], y[idx], F.cross_entropy)
        with torch.no_grad():
            if float(F.cross_entropy(model(x), y)) <= TARGET:
                return epoch
    return None


@pytest.mark.slow
def test_kfac_reaches_the_target_loss_on_mnist1d_in_fewer_epochs() -> None:
    from thalweg.data import load_dataset, standardize

    splits, _ = standardize(load_dataset("mnist1d", num_samples=2500))
    kfac = _epochs_to_target(lambda m: KFAC(m), splits, 12)
    assert kfac is not None
    sgd = _epochs_to_target(
        lambda m: torch.optim.SGD(m.parameters(), lr=SGD_LR, momentum=0.9), splits, 20)
    adam = _epochs_to_target(lambda m: torch.optim.Adam(m.parameters(), lr=ADAM_LR), splits, 20)
    assert sgd is None or kfac < sgd, (kfac, sgd)
    assert adam is None or kfac < adam, (kfac, adam)
    assert (sgd or 99) >= kfac + 3 and (adam or 99) >= kfac + 3, (kfac, sgd, adam)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr": 0.0}, "lr"), ({"damping": 0.0}, "damping"), ({"factor_decay": 1.0}, "factor_decay"),
     ({"factor_update_every": 0}, "factor_update_every"),
     ({"inverse_update_every": 0}, "inverse_update_every"), ({"kl_clip": -1.0}, "kl_clip"),
     ({"momentum": 1.0}, "momentum"), ({"inverse": "svd"}, "inverse")],
)
def test_bad_hyperparameters_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        KFAC(nn.Linear(2, 2), **kwargs)


def test_kfac_needs_a_module() -> None:
    with pytest.raises(TypeError, match="model"):
        KFAC(list(nn.Linear(2, 2).parameters()))  # type: ignore[arg-type]
