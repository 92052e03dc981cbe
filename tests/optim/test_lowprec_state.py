"""Low-precision state dicts (round trips, conversion to and from torch.optim's float32
state, validation before anything changes) and the optimizer step fused into backward."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_cases import make_params, roundtrip, train_steps

import thalweg.optim as to
from thalweg.optim.engine.lowprec import int8_error_bound


@pytest.mark.parametrize("state_dtype", ["bf16", "int8"])
def test_low_precision_state_dict_round_trips_exactly(state_dtype):
    a, b = make_params(), make_params()
    oa = to.Adam(a, lr=0.02, state_dtype=state_dtype, state_block_size=16, compile=False)
    train_steps(oa, a, 5)
    ob = to.Adam(b, lr=0.02, state_dtype=state_dtype, state_block_size=16, compile=False)
    for p, q in zip(a, b, strict=True):
        q.data.copy_(p.data)
    ob.load_state_dict(roundtrip(oa.state_dict()))
    sa, sb = oa._segments[0], ob._segments[0]
    for k in sa.state:
        assert torch.equal(sa.state[k][: sa.numel], sb.state[k][: sb.numel])
        if state_dtype == "int8":
            assert torch.equal(sa.scales[k], sb.scales[k])
    train_steps(oa, a, 5)
    train_steps(ob, b, 5)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)  # the same state and the same steps from there on


def test_int8_state_converts_to_and_from_torch_adam_within_the_bound():
    a, b = make_params(), make_params()
    oa, ob = to.Adam(a, lr=0.02, state_dtype="int8", compile=False), torch.optim.Adam(b, lr=0.02)
    train_steps(oa, a, 5)
    train_steps(ob, b, 5)
    sd = to.to_torch_state_dict(oa.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert "state_dtype" not in sd["param_groups"][0]
    torch.optim.Adam(make_params(), lr=0.02).load_state_dict(sd)  # torch takes it
    # torch's float32 state into an int8 optimizer: each value within the code's error bound
    oc = to.Adam(make_params(), lr=0.02, state_dtype="int8", compile=False)
    oc.load_state_dict(ob.state_dict())
    seg = oc._segments[0]
    for k in ("exp_avg", "exp_avg_sq"):
        exact = torch.cat([ob.state[p][k].reshape(-1) for p in b])
        got = torch.cat([to.to_torch_state_dict(oc.state_dict())["state"][i][k].reshape(-1) for i in range(len(b))])
        padded = torch.zeros(-(-exact.numel() // 256) * 256)
        padded[: exact.numel()] = exact
        rows = padded.reshape(-1, 256)
        amax = rows.abs().amax(1, keepdim=True).expand_as(rows).reshape(-1)[: exact.numel()]
        nonneg = (rows.amin(1, keepdim=True) >= 0).expand_as(rows).reshape(-1)[: exact.numel()]
        assert bool(((got - exact).abs() <= 1.00001 * int8_error_bound(exact, amax, nonneg) + 1e-30).all()), k
        assert seg.state[k].dtype == torch.int8


def test_a_bad_int8_state_dict_is_one_clear_error_and_changes_nothing():
    ps = make_params()
    opt = to.Adam(ps, lr=0.02, state_dtype="int8", compile=False)
    train_steps(opt, ps, 2)
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["state"][2]["exp_avg.scale"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"parameter 2 of param group 0: 'exp_avg.scale' must be a tensor of shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["state"][1]["exp_avg"] = bad["state"][1]["exp_avg"].float() + 0.5
    with pytest.raises(ValueError, match="'exp_avg' must hold int8 codes"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["param_groups"][0]["state_dtype"] = "int4"
    with pytest.raises(ValueError, match="param group 0: state_dtype"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    for i, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after["state"][i][k])), (i, k)


# ------------------------------------------------------------------ step in backward
def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 40), torch.nn.Tanh(), torch.nn.Linear(40, 40),
                               torch.nn.Tanh(), torch.nn.Linear(40, 3))


@pytest.mark.parametrize("make", [lambda ps, **kw: to.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, **kw),
                                  lambda ps, **kw: to.Adam(ps, lr=1e-2, weight_decay=1e-3, **kw),
                                  lambda ps, **kw: to.AdamW(ps, lr=1e-2, state_dtype="bf16", **kw),
                                  lambda ps, **kw: to.LAMB(ps, lr=1e-2, weight_decay=1e-2, **kw),
                                  lambda ps, **kw: to.ScheduleFreeAdamW(ps, lr=1e-2, warmup_steps=3, **kw)],
                         ids=["sgd", "adam", "adamw-bf16", "lamb", "schedulefree"])
def test_step_in_backward_gives_the_ordinary_trajectory(make):
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    a, b = _net(), _net()
    oa = make(a.parameters(), compile=False)
    ob = to.step_in_backward(b, make(b.parameters(), compile=False, bucket_numel=600))
    assert len(ob._backward.buckets) > 2
    for _ in range(15):
        for opt, net in ((oa, a), (ob, b)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        kept = [p.grad for p in b.parameters() if p.grad is not None]  # the next backward's first bucket
        assert sum(g.numel() for g in kept) <= 600 and all(not g.any() for g in kept)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_step_in_backward_skips_parameters_without_a_gradient_and_refuses_global_reductions():
    net = _net()
    opt = to.Adam(net.parameters(), lr=1e-2, in_backward=True, bucket_numel=10_000, compile=False)
    frozen = net[4].weight.detach().clone()
    (net[2](net[1](net[0](torch.randn(4, 12)))).sum() + 0 * net[4].bias.sum()).backward()
    assert torch.equal(net[4].weight, frozen) and 4 not in opt.state_dict()["state"]  # no gradient, no step
    assert int(opt.state_dict()["state"][0]["step"]) == 1
    with pytest.raises(ValueError, match="reduces over every parameter"):
        to.Prodigy(_net().parameters(), in_backward=True, compile=False)
    with pytest.raises(ValueError, match="clip_by_global_norm needs the norm of every gradient"):
        to.FlatOptimizer(_net().parameters(), to.chain(to.clip_by_global_norm(1.0), to.scale_by_lr(0.1)),
                         in_backward=True)


@pytest.mark.parametrize(("rule", "state_dtype"), [("AdamW", "int8"), ("SGD", "bf16"), ("SGD", "int8")])
def test_a_loaded_low_precision_state_continues_bitwise(rule, state_dtype):
    """Everything the next steps depend on is in the state dict: int8's last block has
    padding past the last element (it must not move that block's scale: a fresh optimizer's
    padding once read as −1.016× the block's largest value), and SGD, which keeps no `step`
    in torch, rounds bf16 state stochastically with bits drawn from the step count."""
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(2))

    def model() -> torch.nn.Module:
        torch.manual_seed(0)  # 2410 parameters: the last of 10 blocks of 256 is padded
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    def steps(m: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

    kw = {"lr": 0.01, "state_dtype": state_dtype, "compile": False, **({"momentum": 0.9} if rule == "SGD" else {})}
    a, b = model(), model()
    oa = getattr(to, rule)(a.parameters(), **kw)
    steps(a, oa, 20)
    ob = getattr(to, rule)(b.parameters(), **kw)
    b.load_state_dict(a.state_dict())
    ob.load_state_dict(roundtrip(oa.state_dict()))
    steps(a, oa, 5)
    steps(b, ob, 5)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    if state_dtype == "bf16":
        assert float(oa.state_dict()["state"][0]["step"]) == 25
