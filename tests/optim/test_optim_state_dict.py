"""Loading a bad optimizer state dict is one clear error naming the group, parameter and key,
and a failed load leaves the optimizer exactly as it was (it is checked whole first)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from optim_cases import groups, make_params, train_steps

import thalweg.optim as to


def _trained() -> tuple[to.Adam, list[torch.nn.Parameter], dict[str, Any]]:
    ps = make_params()
    opt = to.Adam(groups(ps, 0.02), lr=0.02, amsgrad=True, compile=False)
    train_steps(opt, ps, 3)
    return opt, ps, opt.state_dict()


def _edit(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], Any]:
    def make(sd: dict[str, Any]) -> Any:
        bad = copy.deepcopy(sd)
        fn(bad)
        return bad
    return make


def _set(path: tuple, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(sd: dict[str, Any]) -> None:
        node = sd
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


BAD = [
    pytest.param(lambda sd: {}, r"lacks \['state', 'param_groups'\]", id="empty-dict"),
    pytest.param(lambda sd: None, r"takes the dict state_dict\(\) returns.*got NoneType", id="None"),
    pytest.param(lambda sd: [], r"takes the dict state_dict\(\) returns.*got list", id="list"),
    pytest.param(_edit(_set(("param_groups", 1, "lr"), "0.1")),
                 r"param group 1: lr must be a number, got '0.1' \(a string: write 0.1 without quotes\)",
                 id="string-lr"),
    pytest.param(_edit(_set(("param_groups", 0, "betas"), (0.9, 1.5))), r"param group 0: betas\[1\] must be < 1.0",
                 id="bad-betas"),
    pytest.param(_edit(lambda sd: sd["param_groups"].pop()), r"has 2 param group\(s\), this Adam has 3",
                 id="fewer-groups"),
    pytest.param(_edit(lambda sd: sd["param_groups"][2]["params"].append(99)),
                 r"param group 2: the state dict has 2 parameter\(s\), this Adam has 1", id="more-params"),
    pytest.param(_edit(_set(("state", 2, "exp_avg"), torch.zeros(3, 3))),
                 r"state of parameter 0 of param group 1: 'exp_avg' has shape \(3, 3\), the parameter has \(2, 3, 4\)",
                 id="mismatched-shape"),
    pytest.param(_edit(lambda sd: sd["state"][4].pop("max_exp_avg_sq")),
                 r"state of parameter 0 of param group 2 lacks \['max_exp_avg_sq'\] needed by Adam", id="missing-key"),
    pytest.param(_edit(_set(("state", 1, "exp_avg_sq"), [0.0] * 7)),
                 r"state of parameter 1 of param group 0: 'exp_avg_sq' must be a tensor, got list", id="not-a-tensor"),
    pytest.param(_edit(_set(("state", 0, "step"), torch.tensor(float("nan")))),
                 r"state of parameter 0 of param group 0: 'step' must be finite", id="nan-step"),
    pytest.param(_edit(_set(("state", 7), {"step": torch.tensor(1.0)})),
                 r"entry for parameter id 7, which no param group lists", id="unknown-id"),
    pytest.param(_edit(lambda sd: sd["param_groups"][0].pop("params")), r"param group 0: expected a dict with a 'params'",
                 id="group-without-params"),
]


@pytest.mark.parametrize(("make_bad", "match"), BAD)
def test_bad_state_dict_is_one_clear_error_and_changes_nothing(make_bad, match):
    opt, ps, sd = _trained()
    twin_ps, twin = copy.deepcopy((ps, opt))  # untouched, for the continuation
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(make_bad(sd))
    after = opt.state_dict()
    assert [g["lr"] for g in after["param_groups"]] == [g["lr"] for g in before["param_groups"]]
    assert after["param_groups"] == before["param_groups"]
    for k, st in before["state"].items():
        for name, t in st.items():
            assert torch.equal(after["state"][k][name], t), (k, name)
    train_steps(opt, ps, 3)  # and it still trains exactly like the twin that saw no bad load
    train_steps(twin, twin_ps, 3)
    for a, b in zip(ps, twin_ps, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_a_good_state_dict_still_loads_after_a_failed_one():
    opt, ps, sd = _trained()
    with pytest.raises(ValueError):
        opt.load_state_dict(_edit(_set(("param_groups", 0, "lr"), -1.0))(sd))
    fresh_ps = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    fresh = to.Adam(groups(fresh_ps, 0.02), lr=0.02, amsgrad=True, compile=False)
    fresh.load_state_dict(sd)
    train_steps(fresh, fresh_ps, 2)
    train_steps(opt, ps, 2)
    for a, b in zip(ps, fresh_ps, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_flat_optimizer_without_a_schema_still_checks_lr():
    ps = make_params()
    opt = to.FlatOptimizer(ps, to.chain(to.scale_by_adam(), to.scale_by_lr(0.1)), compile=False)
    train_steps(opt, ps, 1)
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = "fast"
    with pytest.raises(ValueError, match=r"param group 0: lr must be a number, got 'fast'"):
        opt.load_state_dict(sd)
