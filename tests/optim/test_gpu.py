"""GPU checks, written before any device was lent (benchmarks/gpu.sh runs them with the GPU
benchmarks): every registered first-order rule on CUDA, eager and compiled, against torch
(its fused kernel where torch has one, else foreach); every flat rule with float32, bf16 and
int8 state; the matrix rules against the CPU; and FSDP2 over NCCL on two GPUs.

Skipped without CUDA. `THALWEG_GPU_TESTS_DEVICE=cpu` runs the same checks on the CPU (gloo
for the 2-rank case): that is how these tests were tested.

Tolerances: float32 against torch's fused (or foreach) kernel, rtol 1e-4 / atol 1e-5 after 50
steps — fused kernels and inductor both contract multiply-adds (FMA) where the eager CPU path
rounds twice, so the bitwise agreement of the CPU suite does not carry over; bf16/int8 state
within the CPU suite's bounds (test_lowprec.py) of the float32 trajectory.
"""

from __future__ import annotations

import os

import pytest
import torch
from optim_cases import LR, combos, loss_fn, make_params

import thalweg.optim as to
from thalweg.optim import registry

DEVICE = torch.device(os.environ.get("THALWEG_GPU_TESTS_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FIRST_ORDER = [i for i in registry.infos() if i.order == "first" and i.torch_reference is not None]
FLAT = [i for i in registry.infos() if "state_dtype" in i.options and not i.needs_model and not i.needs_closure]
WEIGHT_STATE = {"schedulefree_adamw", "schedulefree_sgd"}
SIGN_RULES = {"lion"}


def _params(device: torch.device = DEVICE) -> list[torch.nn.Parameter]:
    """The CPU suite's parameters (optim_cases.make_params), on `device`."""
    return [torch.nn.Parameter(p.detach().to(device)) for p in make_params()]


def _train(opt: torch.optim.Optimizer, ps: list[torch.nn.Parameter], steps: int, maximize: bool = False) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(ps)
        (-loss if maximize else loss).backward()
        opt.step()


def _reference(info: registry.OptimizerInfo, ps: list[torch.Tensor], **kw: object) -> torch.optim.Optimizer:
    """torch's implementation: fused where torch has it for this device, else the for-loop
    (which the CPU suite matches bit for bit)."""
    ref = info.torch_reference
    try:
        return ref(ps, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return ref(ps, foreach=False, **kw)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("info", FIRST_ORDER, ids=lambda i: i.name)
def test_every_torch_twin_matches_torch_on_the_device(info: registry.OptimizerInfo, compiled: bool) -> None:
    lr = LR[info.name]
    every = list(combos(info))
    # compiled: the combination with the most options on (one compilation per rule, not per combination)
    for hp in [max(every, key=lambda h: sum(bool(v) for v in h.values()))] if compiled else every:
        kw = {"compile": compiled} if "compile" in info.options else {}
        a, b = _params(), _params()
        ours = info.factory(a, lr=lr, **kw, **hp)
        theirs = _reference(info, b, lr=lr, **hp)
        _train(ours, a, 50, hp.get("maximize", False))
        _train(theirs, b, 50, hp.get("maximize", False))
        for x, y in zip(a, b, strict=True):
            assert x.device.type == DEVICE.type
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=lambda m, hp=hp: f"{info.name} {hp}: {m}")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("info", [i for i in FLAT if i.name not in WEIGHT_STATE], ids=lambda i: i.name)
def test_every_flat_rule_with_every_state_dtype_on_the_device(info: registry.OptimizerInfo, compiled: bool) -> None:
    lr = LR.get(info.name, 1e-2)  # as the CPU suite (test_lowprec.py)
    runs = {}
    for sd in (None, "bf16", "int8"):
        ps = _params()
        opt = info.factory(ps, **{**info.defaults(), "lr": lr, "state_dtype": sd, "compile": compiled})
        _train(opt, ps, 8)
        runs[sd] = [p.detach().clone() for p in ps]
    start = [p.detach() for p in _params()]
    moved = max(float((a - s).abs().max()) for a, s in zip(runs[None], start, strict=True))
    for sd, tol in (("bf16", 0.05), ("int8", 0.2)):
        if info.name in SIGN_RULES:
            flips = sum(int(((a - b).abs() > lr).sum()) for a, b in zip(runs[sd], runs[None], strict=True))
            assert flips <= tol * sum(p.numel() for p in start), (info.name, sd, flips)
            continue
        diff = max(float((a - b).abs().max()) for a, b in zip(runs[sd], runs[None], strict=True))
        assert diff <= tol * moved + 1e-6, (info.name, sd, diff, moved)


@pytest.mark.parametrize("rule", ["muon", "shampoo", "soap", "adafactor"])
def test_matrix_rules_on_the_device_follow_the_cpu(rule: str) -> None:
    """The same trajectory as on the CPU up to the device's matmul/eigh rounding (Muon's
    iteration runs in bfloat16 on both: compared in float32 here)."""
    make = {
        "muon": lambda ps: to.Muon(ps, lr=0.02, ns_dtype="float32"),
        "shampoo": lambda ps: to.Shampoo(ps, lr=0.01, precondition_frequency=2, max_precond_dim=32),
        "soap": lambda ps: to.SOAP(ps, lr=0.01, precondition_frequency=2, max_precond_dim=32),
        "adafactor": lambda ps: to.Adafactor(ps, lr=0.05),
    }[rule]
    dev, cpu = _params(), _params(device=torch.device("cpu"))
    if rule == "muon":
        dev, cpu = [p for p in dev if p.ndim == 2], [p for p in cpu if p.ndim == 2]
    _train(make(dev), dev, 6)
    _train(make(cpu), cpu, 6)
    for x, y in zip(dev, cpu, strict=True):
        torch.testing.assert_close(x.cpu(), y, rtol=1e-3, atol=1e-4)


def test_muon_matches_torch_muon_on_the_device() -> None:
    a = [p for p in _params() if p.ndim == 2]
    b = [p for p in _params() if p.ndim == 2]
    _train(to.Muon(a, lr=0.02, weight_decay=0.1), a, 20)
    _train(torch.optim.Muon(b, lr=0.02, weight_decay=0.1), b, 20)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def _fsdp_worker(rank: int, world: int) -> None:
    import torch.distributed as dist
    from dist_cases import batches as _batches
    from dist_cases import full as _full
    from dist_cases import model as _model
    from dist_cases import shard as _shard
    from test_distributed_matrix import RULES

    device = torch.device("cuda", rank) if DEVICE.type == "cuda" else DEVICE
    if device.type == "cuda":
        torch.cuda.set_device(device)
    batches = [(x.to(device), y.to(device)) for x, y in _batches()]
    for name, (bias, make) in {**RULES, "adamw": (True, lambda ps, **kw: to.AdamW(ps, lr=0.01, **kw))}.items():
        ref = _model(bias).to(device)
        ropt = make(list(ref.parameters()))
        model = _shard(_model(bias).to(device))
        opt = make(list(model.parameters()))
        for x, y in batches:
            for m, o in ((ref, ropt), (model, opt)):
                o.zero_grad()
                torch.nn.functional.mse_loss(m(x), y).backward()
                o.step()
        for p, q in zip(_full(model), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    dist.barrier()


@pytest.mark.slow
@pytest.mark.skipif(DEVICE.type == "cuda" and torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fsdp2_over_two_devices_follows_one_device() -> None:
    from dist_cases import run

    run(_fsdp_worker, 2, backend="nccl" if DEVICE.type == "cuda" else "gloo")
