"""Every first-order rule, every option combination: thalweg's trajectory equals torch.optim's."""

from __future__ import annotations

import pytest
import torch

from optim_cases import FIRST_ORDER, LR, combos, make_params, run_pair

CASES = [
    pytest.param(info, hp, id=f"{info.name}-" + "-".join(f"{k}={v}" for k, v in hp.items()))
    for info in FIRST_ORDER
    for hp in combos(info)
]


@pytest.mark.parametrize(("info", "hp"), CASES)
def test_matches_torch_float32_and_float64(info, hp):
    lr = LR[info.name]
    for dtype, rtol, atol in ((torch.float32, 1e-6, 1e-6), (torch.float64, 1e-12, 1e-12)):
        ours, theirs, _, _ = run_pair(
            lambda g: info.factory(g, lr=lr, compile=False, **hp),
            lambda g: info.torch_reference(g, lr=lr, foreach=False, **hp),
            lr, steps=100, dtype=dtype, maximize=hp.get("maximize", False),
        )
        start = make_params(dtype)
        moved = max((x - s).abs().max().item() for x, s in zip(ours, start, strict=True))
        assert moved > 1e-2, "the trajectory must go somewhere for the comparison to mean anything"
        for x, y in zip(ours, theirs, strict=True):
            assert x.dtype == dtype
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("info", FIRST_ORDER, ids=lambda i: i.name)
def test_state_layout_matches_torch(info):
    lr = LR[info.name]
    hp = next(iter(combos(info)))
    _, _, ours, theirs = run_pair(
        lambda g: info.factory(g, lr=lr, compile=False, **hp),
        lambda g: info.torch_reference(g, lr=lr, **hp),
        lr, steps=3,
    )
    sa, sb = ours.state_dict(), theirs.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for k in sb["state"]:
        assert list(sa["state"][k]) == list(sb["state"][k])
        for name, tb in sb["state"][k].items():
            ta = sa["state"][k][name]
            assert ta.shape == tb.shape and ta.dtype == tb.dtype, (name, ta.shape, tb.shape)
            torch.testing.assert_close(ta, tb, rtol=1e-5, atol=1e-6)
    for ga, gb in zip(sa["param_groups"], sb["param_groups"], strict=True):
        assert set(ga) == set(gb)
        assert ga["params"] == gb["params"]
