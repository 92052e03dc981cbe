"""Registry aliases are presets: "gd", "momentum" and "nesterov" find sgd with their
settings, the user's values override them, and registration checks them like any value."""

from __future__ import annotations

import pytest
import torch
from optim_cases import make_params

import thalweg.optim as to
from thalweg.optim import registry


@pytest.mark.parametrize(("alias", "settings"), [
    ("gd", {"momentum": 0.0, "nesterov": False}),
    ("momentum", {"momentum": 0.9, "nesterov": False}),
    ("nesterov", {"momentum": 0.9, "nesterov": True}),
])
def test_aliases_are_sgd_presets(alias, settings):
    assert registry.get(alias) is registry.get("sgd")
    opt = registry.create(alias, make_params(), lr=0.1)
    assert isinstance(opt, to.SGD)
    assert {k: opt.defaults[k] for k in settings} == settings and opt.defaults["lr"] == 0.1
    assert alias not in registry.names() and registry.aliases()[alias][0] == "sgd"


def test_user_values_override_the_preset_and_are_checked():
    assert registry.create("momentum", make_params(), momentum=0.5).defaults["momentum"] == 0.5
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        registry.create("nesterov", make_params(), momentum=0.0)
    with pytest.raises(ValueError, match=r"momentum must be < 1.0, got 1.5"):
        registry.validate_hparams("momentum", {"momentum": 1.5})


def test_registering_a_bad_alias_is_refused():
    info = registry.get("sgd")
    base = {**info.__dict__}
    with pytest.raises(ValueError, match=r"alias 'fast': momentum must be < 1.0, got 2.0"):
        registry.register(registry.OptimizerInfo(**{**base, "aliases": {"fast": {"momentum": 2.0}}}))
    with pytest.raises(ValueError, match=r"alias 'x' sets unknown \['beta'\]"):
        registry.register(registry.OptimizerInfo(**{**base, "aliases": {"x": {"beta": 0.9}}}))
    with pytest.raises(ValueError, match="alias 'adam' of 'sgd' is already a registered name"):
        registry.register(registry.OptimizerInfo(**{**base, "aliases": {"adam": {}}}))
    assert registry.get("sgd") is info  # nothing was half-registered


def test_unknown_names_list_the_aliases_too():
    with pytest.raises(ValueError, match=r"unknown optimizer 'heavyball'.*aliases: gd, momentum, nesterov"):
        registry.get("heavyball")


def test_trajectories_draw_the_aliases_with_thalwegs_own_optimizers():
    from thalweg.landscape.trajectories import resolve, trajectories

    for name, kw in (("gd", {}), ("momentum", {"momentum": 0.9}),
                     ("nesterov", {"momentum": 0.9, "nesterov": True})):
        spec = resolve(f"{name}:lr=0.01")
        assert isinstance(spec.factory([torch.zeros(2, requires_grad=True)]), to.SGD)
        ours, theirs = trajectories("rosenbrock", [spec, (torch.optim.SGD, {"lr": 0.01, **kw})],
                                    start=[-1.2, 1.0], steps=30)
        assert ours.label == f"{name} (lr=0.01)"
        assert (ours.points == theirs.points).all()  # to the bit: torch's op order
    assert isinstance(resolve("lbfgs").factory([torch.zeros(2, requires_grad=True)]), to.LBFGS)


def test_plain_alias_names_are_presets_that_set_nothing():
    info = registry.OptimizerInfo(name="x", factory=to.SGD, hyperparameters=(), aliases=("y", "z"))
    assert info.aliases == {"y": {}, "z": {}}
