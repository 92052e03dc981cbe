"""Schedules against torch's LR schedulers, the seeds' closed forms, and round trips."""

from __future__ import annotations

import io
import math
import tomllib
import warnings

import pytest
import tomli_w
import torch
from torch.optim import lr_scheduler as tls

from thalweg import schedules as S

BASE = 0.1


def _torch_lrs(make, steps: int, base: float = BASE, momentum: float = 0.0) -> list[float]:
    """lr of a dummy SGD optimizer after 0, 1, …, steps−1 scheduler steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base, momentum=momentum)
    sched = make(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def _ours(schedule: S.Schedule, steps: int) -> list[float]:
    return [schedule(t) for t in range(steps)]


def _close(a: list[float], b: list[float], rtol: float = 1e-10) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == pytest.approx(y, rel=rtol, abs=1e-15), f"step {t}: {x} != {y}"


def test_step_decay_matches_steplr() -> None:
    _close(_ours(S.step_decay(BASE, 7, 0.5), 60), _torch_lrs(lambda o: tls.StepLR(o, 7, 0.5), 60))


def test_exponential_matches_exponentiallr_and_seed_formula() -> None:
    gamma = 0.93
    s = S.exponential(BASE, -math.log(gamma))
    _close(_ours(s, 80), _torch_lrs(lambda o: tls.ExponentialLR(o, gamma), 80), rtol=1e-9)
    assert S.exponential(2.0, 0.5)(4) == pytest.approx(2.0 * math.exp(-2.0), rel=1e-15)


def test_polynomial_is_seed_formula() -> None:
    s = S.polynomial(0.5, beta=0.2, alpha=0.5)
    for t in (0, 1, 7, 100):
        assert s(t) == pytest.approx(0.5 * (0.2 * t + 1) ** -0.5, rel=1e-15)
    assert S.polynomial(1.0, 1.0, 1.0)(9) == pytest.approx(0.1)


def test_piecewise_constant_matches_multisteplr() -> None:
    s = S.piecewise_constant([3, 6], [BASE, BASE / 2, BASE / 4])
    assert _ours(s, 8) == [BASE] * 3 + [BASE / 2] * 3 + [BASE / 4] * 2
    _close(_ours(s, 20), _torch_lrs(lambda o: tls.MultiStepLR(o, [3, 6], 0.5), 20))


def test_cosine_matches_cosineannealinglr() -> None:
    s = S.cosine(BASE, 30, final=1e-3)
    _close(_ours(s, 31), _torch_lrs(lambda o: tls.CosineAnnealingLR(o, 30, 1e-3), 31), rtol=1e-9)
    assert s(30) == s(500) == pytest.approx(1e-3)


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_warm_restarts_matches_cosineannealingwarmrestarts(mult: int) -> None:
    s = S.warm_restarts(BASE, period=5, mult=mult, final=0.01)
    ref = _torch_lrs(lambda o: tls.CosineAnnealingWarmRestarts(o, 5, mult, 0.01), 120)
    _close(_ours(s, 120), ref, rtol=1e-12)
    assert s(5) == pytest.approx(BASE)  # first restart


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_matches_onecyclelr(anneal: str, three_phase: bool) -> None:
    s = S.one_cycle(0.5, 50, pct_start=0.3, div_factor=10.0, final_div_factor=100.0,
                    anneal=anneal, three_phase=three_phase)  # fmt: skip
    ref = _torch_lrs(
        lambda o: tls.OneCycleLR(o, 0.5, total_steps=50, pct_start=0.3, anneal_strategy=anneal,
                                 cycle_momentum=False, div_factor=10.0, final_div_factor=100.0,
                                 three_phase=three_phase),
        50,
    )  # fmt: skip
    _close(_ours(s, 50), ref, rtol=1e-12)
    assert s(14) == pytest.approx(0.5) and max(_ours(s, 50)) == pytest.approx(0.5)


def test_linear_warmup_matches_linearlr() -> None:
    s = S.linear_warmup(BASE, 8, start=BASE / 4)
    _close(_ours(s, 20), _torch_lrs(lambda o: tls.LinearLR(o, 0.25, 1.0, total_iters=8), 20))


def test_warmup_then_cosine_matches_sequentiallr() -> None:
    s = S.warmup(S.cosine(BASE, 40), 10, start=BASE / 10)

    def make(o):
        return tls.SequentialLR(
            o, [tls.LinearLR(o, 0.1, 1.0, total_iters=10), tls.CosineAnnealingLR(o, 40)], [10]
        )

    _close(_ours(s, 50), _torch_lrs(make, 50), rtol=1e-9)


def test_join_restarts_each_piece_at_zero() -> None:
    s = S.join([S.constant(1.0), S.exponential(2.0, 0.1), S.constant(0.5)], [3, 10])
    assert [s(t) for t in (0, 2)] == [1.0, 1.0]
    assert s(3) == 2.0 and s(5) == pytest.approx(2.0 * math.exp(-0.2))
    assert s(10) == 0.5 and s(10**9) == 0.5


def test_warmup_stable_decay_closed_form() -> None:
    s = S.warmup_stable_decay(1.0, total_steps=100, warmup_steps=10, decay_steps=20, final=0.1)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == 1.0 and s(79) == 1.0
    assert s(80) == 1.0 and s(90) == pytest.approx(0.55) and s(100) == s(150) == pytest.approx(0.1)
    c = S.warmup_stable_decay(1.0, 100, 10, 20, final=0.0, decay="cosine")
    assert c(90) == pytest.approx(0.5)
    r = S.warmup_stable_decay(1.0, 100, 10, 20, final=0.0, decay="sqrt")
    assert r(85) == pytest.approx(1 - math.sqrt(0.25))


def test_scale() -> None:
    assert S.scale(S.cosine(1.0, 10), 0.5)(5) == pytest.approx(0.25)


def test_to_torch_sets_absolute_lr_and_round_trips(tmp_path) -> None:
    sched = S.warmup(S.cosine(0.3, 30), 5)
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 7.0}], lr=1.0)
    lr_sched = S.to_torch(sched, opt)
    assert all(g["lr"] == sched(0) for g in opt.param_groups)
    for k in range(1, 18):
        opt.step()
        lr_sched.step()
        assert [g["lr"] for g in opt.param_groups] == [sched(k)] * 2
        assert lr_sched.get_last_lr() == [sched(k)] * 2
    path = tmp_path / "sched.pt"
    torch.save(lr_sched.state_dict(), path)
    state = torch.load(path, weights_only=True)  # no pickled schedule objects
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lr2 = S.to_torch(sched, opt2)
    lr2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == sched(17)
    opt2.step()
    lr2.step()
    assert opt2.param_groups[0]["lr"] == sched(18) and lr2.last_epoch == 18


def test_to_torch_one_schedule_per_group() -> None:
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)  # fmt: skip
    a, b = S.constant(0.1), S.exponential(1.0, 0.5)
    sch = S.to_torch([a, b], opt)
    opt.step()
    sch.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1, b(1)]
    with pytest.raises(ValueError, match="3 schedules for 2 param groups"):
        S.to_torch([a, a, a], opt)


ALL = [
    S.constant(0.1), S.piecewise_constant([2, 5], [1.0, 0.5, 0.1]), S.exponential(0.1, 0.01),
    S.polynomial(0.1, 0.5, 0.5), S.step_decay(0.1, 10, 0.5), S.cosine(0.1, 100, 0.001),
    S.linear_warmup(0.1, 10), S.warmup(S.cosine(0.1, 90), 10), S.scale(S.constant(2.0), 0.5),
    S.warm_restarts(0.1, 10, 2, 0.0), S.one_cycle(0.1, 100, three_phase=True),
    S.warmup_stable_decay(0.1, 100, 10, 20, decay="sqrt"),
]  # fmt: skip


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: s.kind)
def test_dict_and_toml_round_trip(schedule: S.Schedule) -> None:
    spec = tomllib.loads(tomli_w.dumps({"lr": schedule.to_dict()}))["lr"]
    rebuilt = S.build_schedule(spec)
    assert rebuilt == schedule
    assert _ours(rebuilt, 120) == _ours(schedule, 120)


def test_bad_inputs_name_the_field() -> None:
    s = S.cosine(0.1, 10)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        s(-1)
    with pytest.raises(TypeError, match=r"step must be an int, got 1\.5"):
        s(1.5)
    assert s(torch.tensor(3)) == s(3)  # 0-d integer tensors are steps too
    with pytest.raises(ValueError, match="total_steps must be >= 1, got 0"):
        S.cosine(0.1, 0)
    with pytest.raises(ValueError, match="boundaries must be strictly increasing"):
        S.piecewise_constant([5, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="values needs len"):
        S.piecewise_constant([5], [1.0])
    with pytest.raises(ValueError, match="init must be a finite number, got nan"):
        S.exponential(float("nan"), 0.1)
    with pytest.raises(ValueError, match="pct_start"):
        S.one_cycle(0.1, 10, pct_start=1.5)
    with pytest.raises(ValueError, match="exceeds total_steps"):
        S.warmup_stable_decay(0.1, 10, 6, 6)
    with pytest.raises(ValueError, match=r"schedule name.*'cosin'"):
        S.build_schedule({"name": "cosin"})
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['T_max'\]"):
        S.build_schedule({"name": "cosine", "init": 0.1, "T_max": 10})


def test_plot_writes_png(tmp_path) -> None:
    import matplotlib.image as mpimg

    p = S.plot({"a": S.cosine(0.1, 50), "b": S.warm_restarts(0.1, 10)}, 60, tmp_path / "s.png")
    img = mpimg.imread(io.BytesIO(p.read_bytes()), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 300
    q = S.cosine(0.1, 20).plot(tmp_path / "one.png", 30)
    assert q.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
