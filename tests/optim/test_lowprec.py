"""Low-precision state (int8 codes, bf16 with stochastic rounding), bf16 parameters with
stochastic rounding and master weights: error bounds, unbiasedness, every registered flat
rule with every state dtype, and state bytes (docs/memory.md)."""

from __future__ import annotations

import pytest
import torch
from optim_cases import LR, combos, loss_fn, make_params

import thalweg.optim as to
from thalweg.optim import registry
from thalweg.optim.engine.lowprec import dequantize, int8_error_bound, quantize, stochastic_bf16

#: rules whose update is sign(·)·lr (a coordinate differs by whole steps or not at all)
SIGN_RULES = {"lion"}
#: rules whose state is a copy of the weights (refuse bf16/int8 state)
WEIGHT_STATE = {"schedulefree_adamw", "schedulefree_sgd"}
FLAT = [i for i in registry.infos() if "state_dtype" in i.options and not i.needs_model and not i.needs_closure]
DTYPES = (None, "bf16", "int8")


def _blocks(seed: int, block: int = 256) -> torch.Tensor:
    """Blocks of signed, non-negative and mixed-magnitude values (10 decades), one zero block."""
    g = torch.Generator().manual_seed(seed)
    signed = torch.randn(8, block, generator=g) * torch.logspace(-6, 2, 8)[:, None]
    nonneg = torch.rand(8, block, generator=g) ** 4 * torch.logspace(-8, 0, 8)[:, None]
    wide = torch.randn(4, block, generator=g) * torch.logspace(-10, 0, block)[None, :]
    return torch.cat([signed, nonneg, wide, torch.zeros(1, block)]).reshape(-1)


@pytest.mark.parametrize("block", [32, 256])
def test_int8_error_is_within_the_stated_bound_and_requantizing_is_exact(block):
    x = _blocks(0, block)
    codes, scale = quantize(x, block)
    assert codes.dtype == torch.int8 and scale.shape == (x.numel() // block,)
    back = dequantize(codes, scale, block)
    rows = x.reshape(-1, block)
    absmax = rows.abs().amax(1, keepdim=True).expand_as(rows).reshape(-1)
    nonneg = (rows.amin(1, keepdim=True) >= 0).expand_as(rows).reshape(-1)
    bound = int8_error_bound(x, absmax, nonneg)
    err = (back - x).abs()
    assert bool((err <= bound * (1 + 1e-5) + 1e-38).all()), float((err / bound.clamp_min(1e-38)).max())
    assert float((err / bound.clamp_min(1e-38)).max()) > 0.3  # the bound is not vacuous
    assert bool((scale[8:16] < 0).all()) and bool((scale[:8] > 0).all())  # unsigned code for >= 0 blocks
    assert bool((back[-block:] == 0).all())  # a zero block stays zero
    codes2, scale2 = quantize(back, block)  # dequantize -> quantize of unchanged values: the same codes
    assert torch.equal(codes2, codes) and torch.equal(scale2, scale)


def test_int8_keeps_small_second_moments_away_from_zero_and_nan_visible():
    v = torch.tensor([1.0] + [1e-9] * 255)  # Adam's v: a value that must not read as 0 (m/eps)
    back = dequantize(*quantize(v, 256), 256)
    assert float(back[1]) > 0
    x = torch.randn(512)
    x[3] = float("nan")
    assert bool(dequantize(*quantize(x, 256), 256)[:256].isnan().all())


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    for value in (1.0 + 2**-10, -3.3e-3, 7.77e4, 1.5 + 3 * 2**-9):
        x = torch.full((200_000,), value, dtype=torch.float32)
        r = stochastic_bf16(x, 0, 12345).float()
        lo, hi = float(r.min()), float(r.max())
        assert set(r.unique().tolist()) <= {lo, hi} and lo <= value <= hi
        spacing = hi - lo
        p = (value - lo) / spacing
        sigma = spacing * (p * (1 - p) / x.numel()) ** 0.5
        assert abs(float(r.double().mean()) - value) < 5 * sigma + 1e-12
    x = torch.randn(10_000)
    same = [stochastic_bf16(x[a:b], a, 7) for a, b in ((0, 3000), (3000, 10_000))]
    assert torch.equal(torch.cat(same), stochastic_bf16(x, 0, 7))  # bits depend on the element, not the chunk


def test_pure_bf16_training_does_not_stall_with_stochastic_rounding_or_master_weights():
    """A bf16 weight of 1.0 with updates of 1e-4 (an ulp is 7.8e-3): nearest rounding drops
    every update; stochastic rounding moves by the updates on average; a float32 master copy
    moves by them exactly (and the bf16 weight is its nearest rounding)."""
    moved, opts = {}, {}
    for mode in ("nearest", "stochastic", "master"):
        p = torch.nn.Parameter(torch.ones(2048, dtype=torch.bfloat16))
        kw = {"master_weights": True} if mode == "master" else {"param_rounding": mode}
        opts[mode] = to.SGD([p], lr=1e-4, compile=False, **kw)
        for _ in range(100):
            p.grad = torch.ones_like(p)
            opts[mode].step()
        moved[mode] = 1.0 - float(p.detach().float().mean())
    assert moved["nearest"] == 0.0
    assert moved["stochastic"] == pytest.approx(100 * 1e-4, rel=0.1)
    ref = torch.ones(2048)
    for _ in range(100):
        ref.add_(torch.ones(2048), alpha=-1e-4)
    assert torch.equal(opts["master"]._segments[0].master, ref)  # float32's own sum
    assert opts["master"].state_dict()["state"][0]["master_param"].dtype == torch.float32


@pytest.mark.parametrize("info", FLAT, ids=lambda i: i.name)
def test_every_flat_rule_runs_with_every_state_dtype(info):
    """Registry-driven: every option combination of every flat rule, with each state dtype,
    follows the float32 trajectory closely (in units of the distance moved) and keeps fewer bytes."""
    lr = LR.get(info.name, 1e-2)
    if info.name in WEIGHT_STATE:
        for sd in ("bf16", "int8"):
            with pytest.raises(ValueError, match=f"state_dtype='{sd}' is not supported by schedule_free"):
                info.factory(make_params(), **{**info.defaults(), "state_dtype": sd, "compile": False})
        return
    for hp in combos(info):
        runs = {}
        for sd in DTYPES:
            ps = make_params()
            opt = info.factory(ps, **{**info.defaults(), **hp, "lr": lr, "state_dtype": sd, "compile": False})
            for _ in range(8):
                opt.zero_grad()
                (-loss_fn(ps) if hp.get("maximize") else loss_fn(ps)).backward()
                opt.step()
            runs[sd] = ([p.detach().clone() for p in ps], opt.state_nbytes(), float(loss_fn(ps).detach()))
        start = [p.detach() for p in make_params()]
        moved = max(float((a - s).abs().max()) for a, s in zip(runs[None][0], start, strict=True))
        gain = float(loss_fn(start)) - runs[None][2]
        for sd, tol in (("bf16", 0.05), ("int8", 0.2)):
            diff = max(float((a - b).abs().max()) for a, b in zip(runs[sd][0], runs[None][0], strict=True))
            if info.name in SIGN_RULES:  # a rounded momentum near 0 flips a whole ±lr step: count flips
                flips = sum(int(((a - b).abs() > lr).sum()) for a, b in zip(runs[sd][0], runs[None][0], strict=True))
                assert flips <= tol * sum(p.numel() for p in start), (info.name, hp, sd, flips)
            else:
                assert diff <= tol * moved + 1e-6, (info.name, hp, sd, diff, moved)
            assert abs(runs[sd][2] - runs[None][2]) <= tol / 2 * abs(gain) + 1e-6, (info.name, hp, sd)
        if runs[None][1] > 4 * 5:  # the rule keeps state buffers (not just step counters)
            assert runs["bf16"][1] < runs[None][1], (info.name, hp)  # (int8 pads tiny tensors to a block)


def test_int8_adam_state_is_at_most_three_tenths_of_float32():
    sizes = {}
    for sd in (None, "int8"):
        p = torch.nn.Parameter(torch.randn(512, 1024))
        opt = to.Adam([p], state_dtype=sd, compile=False)
        p.grad = torch.randn_like(p)
        opt.step()
        sizes[sd] = opt.state_nbytes()
    assert sizes[None] == 2 * 4 * p.numel() + 4
    assert sizes["int8"] <= 0.3 * sizes[None]


def test_a_new_flat_rule_with_its_own_signature_takes_the_memory_options():
    class Sign(to.FlatOptimizer):  # what a helper adds later: its own torch-like signature
        def __init__(self, params, lr=1e-2):
            super().__init__(params, to.chain(to.trace(0.9), to.scale_by_lr(lr)), {"lr": lr}, compile=False)

    ps = make_params()
    opt = Sign(ps, lr=1e-2, state_dtype="int8", state_block_size=64)
    loss_fn(ps).backward()
    opt.step()
    assert opt.state[ps[0]]["momentum_buffer"].dtype == torch.int8
    with pytest.raises(ValueError, match="state_dtype"):
        Sign(make_params(), state_dtype="int4")
    with pytest.raises(ValueError, match="state_block_size"):
        to.Adam(make_params(), state_dtype="int8", state_block_size=100)
