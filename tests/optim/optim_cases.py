"""Shared fixtures for the optimizer tests: the registry's first-order table, a small
multi-shape problem, and a helper that runs two optimizers side by side."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from thalweg.optim import registry

FIRST_ORDER = [i for i in registry.infos() if i.order == "first" and i.torch_reference is not None]

#: a learning rate per rule at which 100 steps move the parameters well away from the start
LR = {"sgd": 0.05, "adagrad": 0.1, "rmsprop": 0.01, "adadelta": 1.0, "adam": 0.02, "adamw": 0.02,
      "nadam": 0.02, "radam": 0.02, "adamax": 0.02, "adafactor": 0.05}


def eager(info: registry.OptimizerInfo) -> dict[str, Any]:
    """`compile=False` for rules on the flat core (others, e.g. Adafactor's stacks, have no such option)."""
    return {"compile": False} if "compile" in info.options else {}

SHAPES = [(6, 5), (7,), (2, 3, 4), (1,), (4, 1, 3)]


def valid(info: registry.OptimizerInfo, hp: dict[str, Any]) -> bool:
    """Option combinations torch itself accepts."""
    return not (hp.get("nesterov") and (hp.get("momentum", 0) == 0 or hp.get("dampening", 0) != 0))


def combos(info: registry.OptimizerInfo) -> Iterator[dict[str, Any]]:
    keys = list(info.option_grid)
    for values in itertools.product(*info.option_grid.values()):
        hp = dict(zip(keys, values, strict=True))
        if valid(info, hp):
            yield hp


def make_params(dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def loss_fn(params: list[torch.Tensor]) -> torch.Tensor:
    """A smooth, well-conditioned non-quadratic loss with different curvature per tensor."""
    total = params[0].new_zeros(())
    for k, p in enumerate(params):
        total = total + 0.5 * (1.0 + 0.3 * k) * (p * p).sum() + 0.5 * torch.sin(p).sum()
    return total


def groups(params: list[torch.nn.Parameter], lr: float) -> list[dict[str, Any]]:
    """Three parameter groups with different learning rates."""
    return [
        {"params": params[:2]},
        {"params": params[2:4], "lr": lr * 0.5},
        {"params": params[4:], "lr": lr * 2.0},
    ]


def run_pair(
    make_a: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
    make_b: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
    lr: float,
    steps: int = 100,
    dtype: torch.dtype = torch.float32,
    maximize: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.optim.Optimizer, torch.optim.Optimizer]:
    a, b = make_params(dtype), make_params(dtype)
    oa, ob = make_a(groups(a, lr)), make_b(groups(b, lr))
    for _ in range(steps):
        for opt, ps in ((oa, a), (ob, b)):
            opt.zero_grad()
            # maximizing −loss is the same well-posed problem as minimizing loss
            (-loss_fn(ps) if maximize else loss_fn(ps)).backward()
            opt.step()
    return [p.detach() for p in a], [p.detach() for p in b], oa, ob


def bf16_training(make: Callable[[Any], torch.optim.Optimizer], scheduler: Callable[[Any], Any] | None = None,
                  steps: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a small MLP under `torch.autocast("cpu", dtype=torch.bfloat16)` with the optimizer
    `make(parameters)` builds (and `scheduler(optimizer)`'s lr); the (start, final) weights, flattened."""
    x = torch.randn(256, 40, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = make(model.parameters())
    if callable(getattr(opt, "train", None)):
        opt.train()  # schedulefree's start in eval mode
    sched = scheduler(opt) if scheduler is not None else None
    for _ in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return start, torch.cat([p.detach().flatten() for p in model.parameters()])


def bf16_forced_steps(make: Callable[[Any], torch.optim.Optimizer], make_ref: Callable[[Any], torch.optim.Optimizer],
                      steps: int = 60) -> list[float]:
    """The reference trains the MLP of :func:`bf16_training` under bf16 autocast; at every step
    the other optimizer starts from the reference's parameters with the reference's gradients
    (its own state, which the same gradients drive). Returns, per step, the largest difference
    of the two updated parameter sets relative to the largest update. Teacher forcing keeps
    a last-bit difference from reaching the next bf16 forward, where a flipped bf16 rounding
    turns it into an O(bf16 ulp) gradient change (chaos, not the optimizer's error)."""
    x = torch.randn(256, 40, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    shadow = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    ref, ours = make_ref(model.parameters()), make(shadow)
    for opt in (ref, ours):
        if callable(getattr(opt, "train", None)):
            opt.train()
    rel = []
    for _ in range(steps):
        ref.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for s, p in zip(shadow, model.parameters(), strict=True):
                s.copy_(p)
                s.grad = p.grad.clone()
        ref.step()
        ours.step()
        step = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before, strict=True))
        diff = max((s.detach() - p.detach()).abs().max().item() for s, p in zip(shadow, model.parameters(), strict=True))
        rel.append(diff / max(step, 1e-30))
    return rel


def train_steps(opt: torch.optim.Optimizer, ps: list[torch.nn.Parameter], steps: int) -> None:
    """`steps` optimizer steps on :func:`loss_fn`."""
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()


def roundtrip(obj: Any) -> Any:
    """`obj` through torch.save / torch.load(weights_only=True), as a checkpoint would go."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ gradient presence
#: the scenario's events, by step: a layer frozen for two steps, a bias the loss does not
#: reach, a step without backward, a tensor frozen at construction unfrozen later, a group
#: added mid-run; the head is never reached
FREEZE, UNFREEZE, DETACHED, NO_BACKWARD, LATE, ADDED, STEPS = 2, 4, 3, 5, 4, 6, 9


def presence_params(dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.nn.Parameter]:
    """A two-layer net's tensors, a head no loss reaches, a late tensor (requires_grad=False
    until step LATE) and an extra tensor (given to the optimizer at step ADDED)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"w1": (6, 5), "b1": (6,), "w2": (4, 6), "b2": (4,), "head": (3, 6), "late": (4, 6), "extra": (4, 5)}
    ps = {k: torch.nn.Parameter(0.5 * torch.randn(s, generator=g, dtype=dtype)) for k, s in shapes.items()}
    ps["late"].requires_grad_(False)
    return ps


def presence_loss(ps: dict[str, torch.nn.Parameter], k: int) -> torch.Tensor:
    x = torch.linspace(-1, 1, 40, dtype=ps["w1"].dtype).reshape(8, 5)
    b1 = ps["b1"].detach() if k == DETACHED else ps["b1"]
    h = torch.tanh(x @ ps["w1"].T + b1)
    loss = ((h @ ps["w2"].T + ps["b2"]) ** 2).mean()
    if k >= LATE:
        loss = loss + 0.1 * ((h @ ps["late"].T) ** 2).mean()
    if k >= ADDED:
        loss = loss + 0.1 * ((x @ ps["extra"].T) ** 2).mean()
    return loss


def presence_run(make: Callable[[list[dict[str, Any]]], torch.optim.Optimizer], set_to_none: bool | None,
                 dtype: torch.dtype = torch.float32, check: Callable[..., None] | None = None,
                 steps: int = STEPS) -> tuple[list[list[torch.Tensor]], torch.optim.Optimizer]:
    """Run the presence scenario with the optimizer `make(groups)` builds, calling
    `zero_grad(set_to_none)` (None: the optimizer's default) before each step; returns every
    step's parameters. `check(opt, ps, before)` runs after each step, `before` holding each
    parameter's value and state entries as they were before it."""
    ps = presence_params(dtype)
    opt = make([{"params": [ps["w1"], ps["b1"], ps["w2"], ps["b2"]]}, {"params": [ps["head"], ps["late"]]}])
    trail = []
    for k in range(steps):
        if k == FREEZE:
            ps["w2"].requires_grad_(False)
            ps["b2"].requires_grad_(False)
        if k == UNFREEZE:
            ps["w2"].requires_grad_(True)
            ps["b2"].requires_grad_(True)
        if k == LATE:
            ps["late"].requires_grad_(True)
        if k == ADDED:
            opt.add_param_group({"params": [ps["extra"]]})
        if set_to_none is None:
            opt.zero_grad()
        else:
            opt.zero_grad(set_to_none=set_to_none)
        if k != NO_BACKWARD:
            presence_loss(ps, k).backward()
        before = {n: (p.detach().clone(), p.grad is None,
                      {s: v.clone() if isinstance(v, torch.Tensor) else v for s, v in opt.state.get(p, {}).items()})
                  for n, p in ps.items()}
        opt.step()
        if check is not None:
            check(opt, ps, before)
        trail.append([p.detach().clone() for p in ps.values()])
    return trail, opt


def unmoved_without_grad(opt: torch.optim.Optimizer, ps: dict[str, torch.nn.Parameter], before: dict[str, Any]) -> None:
    """A parameter that had no gradient at this step did not move and its state did not change."""
    for n, p in ps.items():
        value, no_grad, state = before[n]
        if not no_grad:
            continue
        assert torch.equal(p.detach(), value), f"{n} moved without a gradient"
        now = opt.state.get(p, {})
        assert set(now) == set(state), f"{n}: state entries changed without a gradient: {set(state)} → {set(now)}"
        for s, v in state.items():
            w = now[s]
            same = torch.equal(w, v) if isinstance(v, torch.Tensor) else w == v
            assert same, f"{n}: state {s!r} advanced without a gradient"
