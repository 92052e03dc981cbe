"""L-BFGS: torch's trajectory exactly, strong-Wolfe by default, closures with or without
backward(), clear errors; and the registry entries of all four second-order optimizers."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from torch import nn

from thalweg.landscape import functions
from thalweg.optim import registry
from thalweg.optim.second_order.adahessian import AdaHessian
from thalweg.optim.second_order.kfac import KFAC
from thalweg.optim.second_order.lbfgs import LBFGS
from thalweg.optim.second_order.newton import Newton

D = torch.float64



def _rosen_run(opt_cls, steps: int, backward: bool, **kw) -> tuple[torch.Tensor, list[float]]:
    rosen = functions.get("rosenbrock")
    x = torch.tensor([-1.5, 2.0], dtype=D, requires_grad=True)
    opt = opt_cls([x], **kw)

    def closure() -> torch.Tensor:
        loss = rosen(x)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    return x.detach(), losses


def test_trajectory_equals_torch_lbfgs_with_strong_wolfe() -> None:
    ours, ours_losses = _rosen_run(LBFGS, 4, backward=True, max_iter=5, max_eval=8)
    ref, ref_losses = _rosen_run(torch.optim.LBFGS, 4, backward=True, max_iter=5, max_eval=8,
                                 line_search_fn="strong_wolfe")
    assert torch.equal(ours, ref)
    assert ours_losses == ref_losses
    done, _ = _rosen_run(LBFGS, 5, backward=True)  # defaults: 20 iterations per step
    torch.testing.assert_close(done, torch.ones(2, dtype=D), rtol=0, atol=1e-4)


def test_defaults_turn_strong_wolfe_on() -> None:
    opt = LBFGS([torch.zeros(2, requires_grad=True)])
    assert opt.defaults["line_search_fn"] == "strong_wolfe"
    none = LBFGS([torch.zeros(2, requires_grad=True)], line_search_fn=None)
    assert none.defaults["line_search_fn"] is None


def test_default_max_eval_is_torchs_from_20_iterations_and_lets_one_iteration_move() -> None:
    assert LBFGS([torch.zeros(1, requires_grad=True)]).defaults["max_eval"] == 25  # = torch
    stuck, _ = _rosen_run(torch.optim.LBFGS, 20, backward=True, max_iter=1,
                          line_search_fn="strong_wolfe")
    assert torch.equal(stuck, torch.tensor([-1.5, 2.0], dtype=D))  # torch: max_eval=1, no search
    _, losses = _rosen_run(LBFGS, 60, backward=True, max_iter=1)
    assert losses[-1] < 1e-3 * losses[0]


def test_a_closure_that_only_returns_the_loss_gives_the_same_trajectory() -> None:
    with_bw, _ = _rosen_run(LBFGS, 3, backward=True, max_iter=5)
    without, _ = _rosen_run(LBFGS, 3, backward=False, max_iter=5)
    assert torch.equal(with_bw, without)


def test_state_dict_round_trip_resumes_bitwise() -> None:
    rosen = functions.get("rosenbrock")

    def make(x0: torch.Tensor) -> tuple[torch.Tensor, LBFGS]:
        x = x0.clone().requires_grad_(True)
        return x, LBFGS([x], max_iter=3, history_size=5)

    a, opt_a = make(torch.tensor([-1.5, 2.0], dtype=D))
    for _ in range(2):
        opt_a.step(lambda: rosen(a))
    # deepcopy: torch's LBFGS state_dict shares the history lists it keeps mutating
    saved, x_saved = copy.deepcopy(opt_a.state_dict()), a.detach().clone()
    for _ in range(2):
        opt_a.step(lambda: rosen(a))
    b, opt_b = make(x_saved)
    opt_b.load_state_dict(saved)
    for _ in range(2):
        opt_b.step(lambda: rosen(b))
    assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [({"lr": 0.0}, ValueError, "lr"), ({"max_iter": 0}, ValueError, "max_iter"),
     ({"max_iter": 2.5}, TypeError, "max_iter"), ({"max_eval": 0}, ValueError, "max_eval"),
     ({"history_size": 0}, ValueError, "history_size"),
     ({"tolerance_grad": -1.0}, ValueError, "tolerance_grad"),
     ({"line_search_fn": "armijo"}, ValueError, "line_search_fn")],
)
def test_bad_hyperparameters_name_the_argument(kwargs: dict, exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        LBFGS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_step_without_closure_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="closure"):
        LBFGS([torch.zeros(2, requires_grad=True)]).step(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "cls", "closure", "model"),
    [("newton", Newton, True, False), ("lbfgs", LBFGS, True, False),
     ("kfac", KFAC, False, True), ("adahessian", AdaHessian, True, False)],
)
def test_registry_entries_match_the_constructors(name: str, cls: type, closure: bool,
                                                 model: bool) -> None:
    info = registry.get(name)
    assert info.order == "second"
    assert (info.needs_closure, info.needs_model) == (closure, model)
    sig = inspect.signature(cls.__init__).parameters
    for h in info.hyperparameters:  # every schema entry is a constructor argument, same default
        assert h.name in sig, h.name
        assert sig[h.name].default == h.default, h.name
    net = nn.Linear(3, 1)
    opt = registry.create(name, net if model else net.parameters(), lr=0.5)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.5
    if model:
        with pytest.raises(TypeError, match=name):
            registry.create(name, net.parameters())
    with pytest.raises(ValueError, match="no hyperparameter 'nope'"):
        registry.create(name, net if model else net.parameters(), nope=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "hp"),
    [("newton", {"mode": "saddle_free", "damping": 0.01, "krylov_iters": 8}),
     ("lbfgs", {"max_iter": 4}), ("kfac", {}), ("adahessian", {"lr": 0.05})],
)
def test_trains_from_a_config_and_its_checkpoint_loads(name: str, hp: dict, tmp_path) -> None:
    from thalweg.train import fit

    cfg = {
        "name": name, "out_dir": str(tmp_path),
        "data": {"name": "digits"}, "model": {"name": "mlp", "width": 16, "depth": 1},
        "optimizer": {"name": name, **hp}, "schedule": {"name": "constant"},
        "train": {"epochs": 1, "batch_size": 512, "num_threads": 1, "checkpoint_every": 2},
        "diagnostics": {"figures": False, "report": False},
    }
    res = fit(cfg, quiet=True)
    assert res.stopped == "completed"
    assert math.isfinite(res.test_loss) and res.test_loss < math.log(10)  # better than chance
    last = sorted((res.run_dir / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(last, weights_only=True)["state"]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = registry.create(name, model if name == "kfac" else model.parameters(), **hp)
    opt.load_state_dict(state["optimizer"])
    assert opt.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
