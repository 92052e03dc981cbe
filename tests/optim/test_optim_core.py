"""The flat-buffer core: gradients the user replaces or removes, rebound parameters,
composable chains, schedules as learning rates, dtypes, and compilation without recompiles."""

from __future__ import annotations

import math

import pytest
import torch
from optim_cases import groups, loss_fn, make_params

import thalweg.optim as to


def _step_both(oa, a, ob, b, prepare=None):
    for opt, ps in ((oa, a), (ob, b)):
        opt.zero_grad()
        loss_fn(ps).backward()
        if prepare is not None:
            prepare(opt, ps)
        opt.step()


def _close(a, b, rtol=1e-6, atol=1e-6):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol)


def test_params_and_grads_are_views_of_one_flat_buffer():
    ps = make_params()
    opt = to.Adam(ps, lr=0.01, compile=False)
    assert opt.num_segments == 1
    loss_fn(ps).backward()
    seg = opt._segments[0]
    for p, pv, gv in zip(ps, seg.p_views, seg.g_views, strict=True):
        assert p.data_ptr() == pv.data_ptr()
        assert p.grad is gv  # autograd accumulated into our view
    assert seg.flat_g.abs().sum() > 0


def test_user_replaced_grad_and_set_to_none_still_step_correctly():
    a, b = make_params(), make_params()
    oa, ob = to.Adam(a, lr=0.02, compile=False), torch.optim.Adam(b, lr=0.02, foreach=False)

    def replace(opt, ps):  # a user who swaps in a fresh gradient tensor
        for p in ps:
            p.grad = p.grad.clone() * 0.5

    for k in range(30):
        if k % 3 == 0:
            _step_both(oa, a, ob, b, prepare=replace)
        else:
            for opt, ps in ((oa, a), (ob, b)):
                opt.zero_grad(set_to_none=True)
                loss_fn(ps).backward()
                opt.step()
    _close(a, b)


def test_params_without_grad_are_skipped_like_torch():
    """Some params get no gradient on some steps: their state and step count stay put."""
    a, b = make_params(), make_params()
    oa, ob = to.Adam(a, lr=0.02, compile=False), torch.optim.Adam(b, lr=0.02, foreach=False)
    for k in range(40):
        for opt, ps in ((oa, a), (ob, b)):
            opt.zero_grad(set_to_none=True)
            used = [p for i, p in enumerate(ps) if not (k % 4 == 0 and i in (1, 3))]
            loss_fn(used).backward()
            opt.step()
    _close(a, b)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert float(sa[1]["step"]) == float(sb[1]["step"]) == 30
    assert float(sa[0]["step"]) == 40


def test_rebound_parameter_data_is_noticed():
    a, b = make_params(), make_params()
    oa, ob = to.SGD(a, lr=0.05, momentum=0.9, compile=False), torch.optim.SGD(b, lr=0.05, momentum=0.9)
    _step_both(oa, a, ob, b)
    for ps in (a, b):
        ps[0].data = torch.full_like(ps[0], 0.25)  # `p.data = ...`, as some user code does
    with torch.no_grad():
        for ps in (a, b):
            ps[1].copy_(torch.linspace(-1, 1, ps[1].numel()))  # in-place, e.g. load_state_dict
    for _ in range(10):
        _step_both(oa, a, ob, b)
    _close(a, b)


def test_torch_clip_grad_norm_acts_on_the_flat_grads():
    a, b = make_params(), make_params()
    oa, ob = to.Adam(a, lr=0.02, compile=False), torch.optim.Adam(b, lr=0.02, foreach=False)
    for _ in range(20):
        _step_both(oa, a, ob, b, prepare=lambda opt, ps: torch.nn.utils.clip_grad_norm_(ps, 0.5))
    _close(a, b)


def test_chain_clip_adam_decay_lr_matches_hand_written_float64():
    """The issue's example chain is an optimizer: check it against the formulas in float64."""
    lr, wd, b1, b2, eps, max_norm = 0.05, 1e-2, 0.9, 0.999, 1e-8, 1.0
    ps = make_params(torch.float64)
    ref = [p.detach().clone() for p in ps]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    opt = to.FlatOptimizer(ps, to.chain(
        to.clip_by_global_norm(max_norm), to.scale_by_adam(b1, b2, eps),
        to.add_decayed_weights(wd), to.scale_by_lr(lr)), compile=False)
    for t in range(1, 26):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
        r = [x.clone().requires_grad_(True) for x in ref]
        grads = torch.autograd.grad(loss_fn(r), r)
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        scale = min(1.0, max_norm / (norm + 1e-6))
        for i, g in enumerate(grads):
            g = g * scale
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat, vhat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            ref[i] = ref[i] - lr * (mhat / (vhat.sqrt() + eps) + wd * ref[i])
    _close(ps, ref, rtol=1e-10, atol=1e-12)
    assert set(opt.state[ps[0]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_chain_rejects_non_transforms_and_duplicate_state():
    with pytest.raises(TypeError, match="Transform"):
        to.chain(to.scale_by_lr(0.1), "adam")
    with pytest.raises(ValueError, match="same state name"):
        to.chain(to.scale_by_adam(), to.scale_by_adam())


def test_schedule_as_lr_equals_setting_lr_each_step():
    def schedule(t: int) -> float:
        return 0.05 * 0.9**t

    a, b = make_params(), make_params()
    oa = to.SGD(a, lr=schedule, momentum=0.9, compile=False)
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.9, foreach=False)
    for t in range(30):
        ob.param_groups[0]["lr"] = schedule(t)
        _step_both(oa, a, ob, b)
    _close(a, b)
    sd = oa.state_dict()
    assert sd["param_groups"][0]["lr"] == pytest.approx(schedule(30))
    assert sd["param_groups"][0]["lr_schedule_step"] == 30
    # resuming restores the schedule position, not just the weights
    c = [p.detach().clone().requires_grad_(True) for p in a]
    oc = to.SGD(c, lr=schedule, momentum=0.9, compile=False)
    oc.load_state_dict(sd)
    assert callable(oc.param_groups[0]["lr"])
    for _ in range(5):
        ob.param_groups[0]["lr"] = schedule(30 + _)
        _step_both(oc, c, ob, b)
    _close(c, b)


def test_low_precision_params_keep_their_dtype_and_descend():
    ps = make_params(torch.bfloat16)
    opt = to.AdamW(ps, lr=0.05, compile=False)
    first = float(loss_fn(ps).detach())
    for _ in range(50):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
    assert all(p.dtype == torch.bfloat16 for p in ps)
    assert all(s.dtype == torch.bfloat16 for s in opt.state[ps[0]].values() if s.dim() > 0)
    assert float(loss_fn(ps).detach()) < first - 1.0


def test_mixed_dtypes_make_one_segment_per_group_and_dtype():
    ps = make_params()
    extra = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = to.Adam([*groups(ps, 0.01), {"params": [extra]}], lr=0.01, compile=False)
    assert opt.num_segments == 4
    loss_fn([*ps, extra]).backward()
    opt.step()
    assert extra.dtype == torch.float64 and len(opt.state) == len(ps) + 1


def test_add_param_group_after_construction():
    a, b = make_params(), make_params()
    oa = to.RMSprop(a[:3], lr=0.01, compile=False)
    ob = torch.optim.RMSprop(b[:3], lr=0.01, foreach=False)
    oa.add_param_group({"params": a[3:], "lr": 0.005})
    ob.add_param_group({"params": b[3:], "lr": 0.005})
    for _ in range(20):
        _step_both(oa, a, ob, b)
    _close(a, b)


def test_frozen_params_are_left_alone():
    ps = make_params()
    ps[1].requires_grad_(False)
    before = ps[1].detach().clone()
    opt = to.SGD(ps, lr=0.1, momentum=0.9, compile=False)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
    assert torch.equal(ps[1], before)
    assert ps[1] not in opt.state


def test_compile_option_is_checked():
    with pytest.raises(ValueError, match="compile"):
        to.Adam(make_params(), compile="yes")


def test_changing_lr_every_step_causes_no_recompilation():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    ps = make_params()
    opt = to.AdamW(ps, lr=lambda t: 1e-2 / (1 + t), compile=True, compile_options={"backend": "eager"})
    opt.zero_grad()
    loss_fn(ps).backward()
    opt.step()
    assert opt._segments[0].compiled
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    for t in range(10):
        opt.param_groups[0]["betas"] = (0.9 - 0.01 * t, 0.999)  # scalar hyperparameters too
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
@pytest.mark.xdist_group("inductor")
@pytest.mark.parametrize(("name", "hp"), [("adam", {"amsgrad": True}), ("sgd", {"momentum": 0.9, "nesterov": True})])
def test_inductor_compiled_matches_torch(name, hp):
    from thalweg.optim import registry

    info = registry.get(name)
    a, b = make_params(), make_params()
    oa = info.factory(groups(a, 0.02), lr=0.02, compile=True, **hp)
    ob = info.torch_reference(groups(b, 0.02), lr=0.02, foreach=False, **hp)
    for _ in range(100):
        _step_both(oa, a, ob, b)
    assert all(seg.compiled for seg in oa._segments)
    _close(a, b)


def test_deepcopy_gives_an_independent_optimizer_that_continues_identically():
    import copy

    ps = make_params()
    opt = to.Adam(ps, lr=0.02, compile=False)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(ps).backward()
        opt.step()
    twin_params, twin = copy.deepcopy((ps, opt))
    for _ in range(5):
        for o, q in ((opt, ps), (twin, twin_params)):
            o.zero_grad()
            loss_fn(q).backward()
            o.step()
    _close(twin_params, ps, rtol=0, atol=0)
    assert twin_params[0].data_ptr() != ps[0].data_ptr()


def test_torch_lr_scheduler_drives_a_thalweg_optimizer():
    a, b = make_params(), make_params()
    oa, ob = to.SGD(a, lr=0.05, momentum=0.9, compile=False), torch.optim.SGD(b, lr=0.05, momentum=0.9)
    sa = torch.optim.lr_scheduler.StepLR(oa, step_size=5, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, step_size=5, gamma=0.5)
    for _ in range(20):
        _step_both(oa, a, ob, b)
        sa.step()
        sb.step()
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"] == 0.05 * 0.5**4
    _close(a, b)


def test_moving_the_model_before_the_first_step_repacks_after_it_is_a_clear_error():
    torch.manual_seed(0)
    model, ref = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    opt = to.SGD(model.parameters(), lr=0.1, momentum=0.9, compile=False)
    ropt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for m in (model, ref):
        m.double()  # before any step: packed anew in float64, as torch would just go on
    for _ in range(2):
        for m, o in ((model, opt), (ref, ropt)):
            o.zero_grad()
            m(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
            o.step()
    assert opt._segments[0].dtype == torch.float64
    _close(list(model.parameters()), list(ref.parameters()))
    model.float()
    model(torch.ones(1, 3)).sum().backward()
    with pytest.raises(ValueError, match="create the optimizer after moving the model"):
        opt.step()


def test_auto_compiles_large_multi_pass_rules_only(monkeypatch):
    import thalweg.optim.engine.core as core

    monkeypatch.setattr(core, "AUTO_COMPILE_MIN_NUMEL", 10)
    ps = make_params()
    adam, sgd = to.Adam(ps, lr=0.01), to.SGD(make_params(), lr=0.01)
    adam._ensure_chain(adam._segments[0])
    sgd._ensure_chain(sgd._segments[0])
    assert adam._want_compile(adam._segments[0]) == core._compiler_available(torch.device("cpu"))
    assert not sgd._want_compile(sgd._segments[0])  # one eager add_ already
    monkeypatch.setattr(core, "AUTO_COMPILE_MIN_NUMEL", 10**9)
    assert not adam._want_compile(adam._segments[0])


def test_chunked_eager_update_equals_one_pass(monkeypatch):
    """Eager updates walk big buffers in chunks; every transform is elementwise, so the
    result is the same to the bit."""
    import thalweg.optim.engine.kernel as kernel

    runs = []
    for chunk in (kernel.EAGER_CHUNK, 7):  # one pass, then many uneven chunks over ~50 elements
        monkeypatch.setattr(kernel, "EAGER_CHUNK", chunk)
        ps = make_params()
        opt = to.RMSprop(ps, lr=0.01, centered=True, momentum=0.9, compile=False)
        for _ in range(10):
            opt.zero_grad()
            loss_fn(ps).backward()
            opt.step()
        runs.append(ps)
    assert sum(p.numel() for p in runs[0]) > 7
    _close(runs[0], runs[1], rtol=0, atol=0)
