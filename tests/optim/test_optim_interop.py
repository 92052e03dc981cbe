"""state_dict interop with torch.optim (both directions, through a real checkpoint file),
hyperparameter validation and the registry that drives tests, CLI and benchmarks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from optim_cases import (
    FIRST_ORDER,
    LR,
    combos,
    eager,
    groups,
    make_params,
    roundtrip,
    train_steps,
)
from typer.testing import CliRunner

import thalweg.optim as to
from thalweg.optim import registry


@pytest.mark.parametrize("info", FIRST_ORDER, ids=lambda i: i.name)
@pytest.mark.parametrize("direction", ["torch->thalweg", "thalweg->torch"])
def test_state_dict_loads_both_ways_and_training_continues_identically(info, direction):
    lr = LR[info.name]
    hp = list(combos(info))[-1]  # the combination with the most options switched on
    hp = {k: v for k, v in hp.items() if k != "maximize"}
    ours = lambda g: info.factory(g, lr=lr, **eager(info), **hp)  # noqa: E731
    theirs = lambda g: info.torch_reference(g, lr=lr, foreach=False, **hp)  # noqa: E731
    first, second = (theirs, ours) if direction == "torch->thalweg" else (ours, theirs)

    src = make_params()
    o1 = first(groups(src, lr))
    train_steps(o1, src, 15)
    ckpt = roundtrip({"params": [p.detach().clone() for p in src], "opt": o1.state_dict()})

    resumed = [torch.nn.Parameter(t.clone()) for t in ckpt["params"]]
    o2 = second(groups(resumed, lr))
    o2.load_state_dict(ckpt["opt"])
    train_steps(o2, resumed, 15)
    train_steps(o1, src, 15)  # the uninterrupted run
    for x, y in zip(resumed, src, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-6, atol=1e-6)


def test_loaded_state_is_copied_into_flat_buffers_not_aliased():
    a = make_params()
    src = torch.optim.Adam(a, lr=0.01)
    train_steps(src, a, 3)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    dst = to.Adam(b, lr=0.01, compile=False)
    dst.load_state_dict(src.state_dict())
    seg = dst._segments[0]
    for i, p in enumerate(b):
        assert dst.state[p]["exp_avg"].data_ptr() == seg._view(seg.state["exp_avg"], i).data_ptr()
        assert dst.state[p]["exp_avg"].data_ptr() != src.state[a[i]]["exp_avg"].data_ptr()


def test_corrupt_state_dict_names_what_is_missing():
    a = make_params()
    src = torch.optim.SGD(a, lr=0.01, momentum=0.9)
    train_steps(src, a, 2)
    dst = to.Adam([torch.nn.Parameter(p.detach().clone()) for p in a], lr=0.01, compile=False)
    with pytest.raises(ValueError, match="exp_avg"):
        dst.load_state_dict(src.state_dict())


# ------------------------------------------------------------------------ validation
def _bad_values(spec: registry.Hyperparameter):
    if spec.kind == "bool":
        yield "yes"
        return
    if spec.kind == "betas":
        yield (1.0, 0.999)
        yield (0.9, -0.1)
        yield (math.nan, 0.999)
        return
    if spec.low is not None:
        yield spec.low - 0.5
    if spec.high is not None:
        yield spec.high if not spec.high_inclusive else spec.high + 0.5
    yield math.inf
    yield math.nan


VALIDATION_CASES = [
    pytest.param(info, spec.name, bad, id=f"{info.name}-{spec.name}-{bad!r}")
    for info in FIRST_ORDER
    for spec in info.hyperparameters
    for bad in _bad_values(spec)
]


@pytest.mark.parametrize(("info", "name", "bad"), VALIDATION_CASES)
def test_bad_hyperparameter_raises_value_error_naming_it(info, name, bad):
    with pytest.raises(ValueError) as exc:
        registry.create(info.name, make_params(), **{name: bad})
    msg = str(exc.value)
    assert name in msg
    assert repr(bad).split(",")[0].strip("(") in msg or str(bad) in msg


def test_bad_hyperparameter_in_a_later_group_is_rejected():
    ps = make_params()
    with pytest.raises(ValueError, match=r"lr must be ≥ 0.0, got -1"):
        to.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": -1}], lr=0.1)


@pytest.mark.parametrize(("kw", "match"), [
    ({"nesterov": True}, "nesterov=True requires momentum > 0"),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening"),
])
def test_nesterov_needs_momentum_and_no_dampening(kw, match):
    with pytest.raises(ValueError, match=match):
        to.SGD(make_params(), lr=0.1, **kw)


def test_registry_lists_and_creates_every_first_order_rule():
    assert {"sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"} <= set(registry.names())
    for info in FIRST_ORDER:
        opt = registry.create(info.name, make_params(), **eager(info))
        assert isinstance(opt, torch.optim.Optimizer)
        for spec in info.hyperparameters:
            assert opt.defaults[spec.name] == spec.default  # schema defaults are torch's defaults
        assert info.torch_reference is not None
        ref_defaults = info.torch_reference(make_params()).defaults
        assert {k: ref_defaults[k] for k in info.defaults()} == info.defaults()


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        registry.create("adamx", make_params())
    with pytest.raises(ValueError, match="no hyperparameter 'beta1'"):
        registry.create("adam", make_params(), beta1=0.9)


def test_cli_lists_the_registry_as_json():
    from thalweg.cli import app

    result = CliRunner().invoke(app, ["optimizers", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["adam"][0]["name"] == "lr" and data["adam"][0]["default"] == 1e-3
    assert {h["name"] for h in data["sgd"]} >= {"momentum", "nesterov", "dampening"}
