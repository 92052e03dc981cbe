"""The named-transform API: state and scalars by name, derived `n_scalars`, factories that
build transform objects, folded scales, and the global norm taken where the clip stands
(regression: `chain(scale_by_adam(), clip_by_global_norm(0.01), scale_by_lr(1))` took a step
of norm 1.41 because the norm was always the raw gradient's)."""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import pytest
import torch
from optim_cases import loss_fn, make_params
from torch import Tensor

import thalweg.optim as to
from thalweg.optim import transforms
from thalweg.optim.registry import Hyperparameter as H
from thalweg.optim.transforms.chain import StepContext


def _adam_clip_reference(ps: list[Tensor], steps: int, max_norm: float, lr: float) -> list[Tensor]:
    """Adam direction → clip *its* global norm → −lr, written out in float64."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    ref = [p.detach().clone() for p in ps]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    for t in range(1, steps + 1):
        r = [x.clone().requires_grad_(True) for x in ref]
        grads = torch.autograd.grad(loss_fn(r), r)
        d = []
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            d.append((m[i] / (1 - b1**t)) / ((v[i] / (1 - b2**t)).sqrt() + eps))
        norm = math.sqrt(sum(float((x * x).sum()) for x in d))
        scale = min(1.0, max_norm / (norm + 1e-6))
        ref = [x - lr * scale * di for x, di in zip(ref, d, strict=True)]
    return ref


def test_clip_after_adam_clips_the_adam_update_not_the_gradient():
    ps = make_params(torch.float64)
    start = [p.detach().clone() for p in ps]
    opt = to.FlatOptimizer(ps, to.chain(to.scale_by_adam(), to.clip_by_global_norm(0.01), to.scale_by_lr(1)),
                           compile=False)
    opt.zero_grad()
    loss_fn(ps).backward()
    opt.step()
    step = math.sqrt(sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(ps, start, strict=True)))
    assert step == pytest.approx(0.01, rel=1e-6)  # was 1.41 · √(#tensors)-ish: the raw norm was small
    assert len(opt._segments[0].chain.passes) == 2
    ref = _adam_clip_reference(start, 1, 0.01, 1.0)
    for p, r in zip(ps, ref, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layout", ["one-segment", "groups-and-dtypes", "param-without-grad"])
def test_mid_chain_norm_is_global_over_groups_dtypes_and_the_per_parameter_path(layout):
    """The norm between passes covers every parameter that steps, whichever path it takes."""
    ps = make_params(torch.float64)
    start = [p.detach().clone() for p in ps]
    chain = to.chain(to.scale_by_adam(), to.clip_by_global_norm(0.05), to.scale_by_lr(0.5))
    if layout == "groups-and-dtypes":  # two groups; one tensor float32 → three segments
        ps[1].data = ps[1].data.float()
        opt = to.FlatOptimizer([{"params": ps[:2]}, {"params": ps[2:]}], chain, compile=False)
        assert opt.num_segments == 3
    else:
        opt = to.FlatOptimizer(ps, chain, compile=False)
    for _ in range(5):
        opt.zero_grad(set_to_none=layout == "param-without-grad")
        if layout == "param-without-grad":
            loss_fn(ps[:3] + ps[4:]).backward()  # ps[3] gets no gradient: the per-parameter path
        else:
            loss_fn(ps).backward()
        opt.step()
    if layout == "param-without-grad":
        assert torch.equal(ps[3].detach(), start[3])
        ref = _adam_clip_reference(start[:3] + start[4:], 5, 0.05, 0.5)
        got = ps[:3] + ps[4:]
    else:
        ref, got = _adam_clip_reference(start, 5, 0.05, 0.5), ps
    tol = 1e-5 if layout == "groups-and-dtypes" else 1e-10
    for p, r in zip(got, ref, strict=True):
        torch.testing.assert_close(p.detach().double(), r, rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.xdist_group("inductor")
def test_mid_chain_norm_compiled_matches_eager():
    runs = []
    for compile in (False, True):
        ps = make_params()
        opt = to.FlatOptimizer(ps, to.chain(to.scale_by_adam(), to.clip_by_global_norm(0.05), to.scale_by_lr(0.5)),
                               compile=compile)
        for _ in range(5):
            opt.zero_grad()
            loss_fn(ps).backward()
            opt.step()
        assert all(s.compiled == compile for s in opt._segments)
        runs.append(ps)
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-6)


def test_clip_first_chains_stay_one_pass_and_scales_fold():
    c = to.chain(to.clip_by_global_norm(1.0), to.scale_by_adam(), to.scale_by_lr(1e-3))
    assert len(c.passes) == 1 and c.passes[0].needs_norm
    assert [op.transform.name for op in c.passes[0].ops] == ["clip_by_global_norm", "scale_by_adam"]
    assert c.n_scalars == 1 + 6  # scale_by_lr is folded into Adam's step size
    sgd = to.chain(to.trace(0.9), to.scale_by_lr(0.1))  # trace absorbs nothing: the final add keeps it
    assert [op.transform.name for op in sgd.passes[0].ops] == ["trace", "scale_by_lr"]


def test_folded_step_size_is_torchs():
    """−lr/(1 − β₁ᵗ) is computed once on the host, as torch computes step_size."""
    c = to.chain(to.scale_by_adam(b1=0.8), to.scale_by_lr(0.3))
    vals = c.scalars({}, 3)
    assert vals[-1] == -(0.3 / (1 - 0.8**3))


def test_transforms_are_factories_of_named_classes():
    for name in ("scale_by_adam", "scale_by_lr", "trace", "clip_by_global_norm", "scale_by_rms"):
        make = getattr(to, name)
        assert inspect.isfunction(make) and make.__name__ == name
        t = make(**{h.name: h.default for h in make.__wrapped__.schema})
        assert isinstance(t, to.Transform) and type(t).__name__[0].isupper() and t.name == name
        assert list(inspect.signature(make).parameters) == list(inspect.signature(type(t)).parameters)
    assert not hasattr(to.Chain, "structure") and not hasattr(to.Transform, "structure")


def test_state_and_scalars_are_named_tuples():
    rms = to.scale_by_rms(centered=True, momentum=0.9)
    assert rms.state_names == ("square_avg", "momentum_buffer", "grad_avg")
    assert rms.n_scalars == len(rms.Scalars._fields)
    s = rms.scalars(StepContext({}, 1))
    assert s.alpha == 0.99 and s.one_minus_alpha == pytest.approx(0.01)
    assert to.scale_by_adam(amsgrad=False).state_names == ("exp_avg", "exp_avg_sq")
    assert to.scale_by_adam(amsgrad=True).state_names == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class _SignState(NamedTuple):
    exp_avg: Tensor


class _SignScalars(NamedTuple):
    one_minus_b: Any


class _ScaleBySignMomentum(to.Transform):
    """A new rule written against the API: sign of an EMA of gradients (signum)."""

    name = "scale_by_sign_momentum"
    State = _SignState
    Scalars = _SignScalars
    schema = (H("b", 0.9, low=0.0, high=1.0, high_inclusive=False, schedulable=True),)

    def __init__(self, b: Any = 0.9) -> None:
        self.check_args(b=b)
        self.b = b

    def scalars(self, ctx: StepContext) -> _SignScalars:
        return _SignScalars(1 - ctx(self.b))

    def apply(self, u, p, state: _SignState, s: _SignScalars, norm):
        return state.exp_avg.lerp_(u, s.one_minus_b).sign()


@pytest.mark.parametrize("compile", [False, True])
def test_a_new_transform_needs_only_its_named_state_and_scalars(compile):
    ps = make_params(torch.float64)
    ref = [p.detach().clone() for p in ps]
    m = [torch.zeros_like(p) for p in ref]
    opt = to.FlatOptimizer(ps, to.chain(_ScaleBySignMomentum(0.8), to.add_decayed_weights(0.01),
                                        to.scale_by_lr(lambda t: 0.1 / (1 + t))),
                           compile=compile, compile_options={"backend": "eager"})
    for t in range(6):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
        r = [x.clone().requires_grad_(True) for x in ref]
        grads = torch.autograd.grad(loss_fn(r), r)
        for i, g in enumerate(grads):
            m[i] = 0.8 * m[i] + 0.2 * g
            ref[i] = ref[i] - 0.1 / (1 + t) * (m[i].sign() + 0.01 * ref[i])
    for p, r in zip(ps, ref, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert set(opt.state[ps[0]]) == {"exp_avg"}
    with pytest.raises(ValueError, match=r"scale_by_sign_momentum: b must be < 1\.0, got 1\.0"):
        _ScaleBySignMomentum(1.0)


def test_a_scalars_count_that_does_not_match_is_a_clear_error():
    class Bad(to.Transform):
        name = "bad"
        Scalars = transforms.Factor

        def scalars(self, ctx):
            return (1.0, 2.0)

        def apply(self, u, p, state, s, norm):
            return u

    with pytest.raises(ValueError, match=r"bad.scalars\(\) returned 2 values, its Scalars has 1"):
        to.chain(Bad(), to.scale_by_lr(0.1)).scalars({}, 1)


def test_groups_whose_chains_split_differently_are_refused():
    class TwoRules(to.Rule):
        def key(self, g):
            return (g["clip"],)

        def build(self, g):
            ts = [to.scale_by_adam(), to.clip_by_global_norm(0.1)] if g["clip"] else [to.scale_by_adam()]
            return to.chain(*ts, to.scale_by_lr(0.1))

    ps = make_params()
    opt = to.FlatOptimizer([{"params": ps[:2], "clip": True}, {"params": ps[2:], "clip": False}], TwoRules(),
                           compile=False)
    loss_fn(ps).backward()
    before = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError, match="take the global norm at different places"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before, strict=True))
