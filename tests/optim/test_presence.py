"""Gradient presence, exactly as torch.optim: a parameter takes part in a step exactly when its
`p.grad` is not None. The scenario (optim_cases.presence_run) freezes a layer for two steps,
detaches a bias, takes a step without backward, never reaches a head, unfreezes a tensor frozen
at construction and adds a param group mid-run, under both `zero_grad` modes.

Rules with a torch twin must give torch's parameters bitwise at every step; for the others
(and every memory option) a parameter without a gradient provably does not move and its state
does not change."""

from __future__ import annotations

import pytest
import torch
from optim_cases import FIRST_ORDER, LR, eager, presence_run, unmoved_without_grad

import thalweg.optim as to
from thalweg.optim import registry
from thalweg.optim.engine.storage import decode_saved

MODES = [pytest.param(None, id="default"), pytest.param(False, id="set_to_none=False")]
NO_TWIN = [i for i in registry.infos() if i.order == "first" and i.torch_reference is None]


def _same_trails(ours, theirs, exact=True):
    for k, (sa, sb) in enumerate(zip(ours, theirs, strict=True)):
        for j, (x, y) in enumerate(zip(sa, sb, strict=True)):
            if exact:
                assert torch.equal(x, y), f"step {k}, tensor {j}: {(x - y).abs().max().item()}"
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"step {k}, tensor {j}")


@pytest.mark.parametrize("set_to_none", MODES)
@pytest.mark.parametrize("info", FIRST_ORDER, ids=lambda i: i.name)
def test_twin_matches_torch_bitwise_when_parameters_lack_gradients(info, set_to_none):
    lr = LR.get(info.name, 0.01)
    ours, _ = presence_run(lambda g: info.factory(g, lr=lr, **eager(info)), set_to_none)
    theirs, _ = presence_run(lambda g: info.torch_reference(g, lr=lr, foreach=False), set_to_none)
    _same_trails(ours, theirs)


@pytest.mark.slow
@pytest.mark.xdist_group("inductor")
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_compiled_twin_matches_torch_when_parameters_lack_gradients(name):
    """The compiled kernels over the ranges that step (one fused pass each)."""
    info = registry.get(name)
    hp = {"momentum": 0.9, "weight_decay": 0.1} if name == "sgd" else {"weight_decay": 0.1, "amsgrad": True}
    ours, opt = presence_run(lambda g: info.factory(g, lr=LR[name], compile=True, **hp), None)
    theirs, _ = presence_run(lambda g: info.torch_reference(g, lr=LR[name], foreach=False, **hp), None)
    assert any(seg.compiled for seg in opt._segments)
    _same_trails(ours, theirs, exact=False)


def _memory_variants(info):
    out = [{}]
    if "state_dtype" in info.options:
        out += [{"state_dtype": "bf16"}, {"in_backward": True}]
    return out


@pytest.mark.parametrize("set_to_none", MODES)
@pytest.mark.parametrize(("info", "memory"), [pytest.param(i, m, id=f"{i.name}-{'-'.join(map(str, m.values())) or 'plain'}")
                                              for i in NO_TWIN for m in _memory_variants(i)])
def test_rule_without_twin_leaves_parameters_without_gradient_alone(info, memory, set_to_none):
    try:
        info.factory([torch.nn.Parameter(torch.zeros(2))], **memory)
    except ValueError as e:  # refused by design, with a message naming the option
        assert any(k in str(e) for k in memory), e
        pytest.skip(f"refused: {e}")
    kw = {"compile": False} if "compile" in info.options else {}
    trail, opt = presence_run(lambda g: info.factory(g, **kw, **memory), set_to_none, check=unmoved_without_grad)
    late = list(opt.param_groups[1]["params"])[1]
    assert not torch.equal(trail[-1][5], trail[0][5]), "a tensor unfrozen after construction must train"
    assert opt.state.get(late), "and have state"


def test_int8_state_of_a_parameter_without_gradient_is_only_reblocked():
    """int8 blocks run over the flat buffer, so a block may hold the end of one parameter and
    the start of the next: when only the neighbour steps, the shared block is re-quantized, and
    the idle parameter's values there are re-rounded (within the code's error bound); every
    element in a block of its own is untouched, and the parameter itself never moves."""
    info = registry.get("lion")

    def check(opt, ps, before):
        for name, p in ps.items():
            value, no_grad, state = before[name]
            if not no_grad or not state:
                continue
            assert torch.equal(p.detach(), value)
            seg = next((s for s in opt._segments if any(q is p for q in s.params)), None)
            if seg is None:  # unfrozen after construction: stepped outside the flat buffers
                continue
            i = next(j for j, q in enumerate(seg.params) if q is p)
            block, off, n = seg.layout.block, seg.offsets[i], seg.numels[i]
            inner = torch.zeros(n, dtype=torch.bool)
            lo, hi = -(-off // block) * block - off, (off + n) // block * block - off
            inner[max(lo, 0):max(hi, 0)] = True
            old, new = (decode_saved(st, "exp_avg", block).reshape(-1) for st in (state, opt.state[p]))
            assert torch.equal(old[inner], new[inner]), f"{name}: a block of its own changed"
            bound = seg.scales["exp_avg"].abs().max() / 100  # A·(2/254 + 1/254²) < A/100
            assert torch.all((old[~inner] - new[~inner]).abs() <= bound)

    presence_run(lambda g: info.factory(g, compile=False, state_dtype="int8", state_block_size=16), None, check=check)


@pytest.mark.parametrize("name", ["adam", "sgd", "lamb"])
def test_step_in_backward_steps_exactly_the_parameters_a_backward_reached(name):
    """A bucket whose parameters did not all get gradients updates those that did; a tensor
    unfrozen after construction is updated at the end of backward: the same trajectory as the
    ordinary step."""
    info = registry.get(name)
    hp = {"sgd": {"momentum": 0.9, "weight_decay": 0.1}, "adam": {"weight_decay": 0.1}, "lamb": {}}[name]
    lr = LR.get(name, 0.01)
    plain, _ = presence_run(lambda g: info.factory(g, lr=lr, compile=False, **hp), None)
    fused, opt = presence_run(lambda g: info.factory(g, lr=lr, compile=False, in_backward=True, bucket_numel=40,
                                                     **hp), None)
    assert len(opt._backward.buckets) > 2
    _same_trails(fused, plain)


def test_p_grad_is_torchs():
    """None until a backward reaches the parameter, None again after zero_grad();
    `torch.autograd.grad` and `backward(inputs=...)` give no gradient to the others."""
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(4))
    opt = to.Adam([a, b], lr=0.1, compile=False)
    assert a.grad is None and b.grad is None
    torch.autograd.grad((a * a).sum() + b.sum(), [a, b])
    assert a.grad is None and b.grad is None
    ((a * a).sum() + b.sum()).backward(inputs=[b])
    assert a.grad is None and torch.equal(b.grad, torch.ones(4))
    seg = opt._segments[0]
    assert b.grad.data_ptr() == seg.g_views[1].data_ptr()  # accumulated in place in the flat buffer
    before = a.detach().clone()
    opt.step()
    assert torch.equal(a.detach(), before) and a not in opt.state
    opt.zero_grad()
    assert b.grad is None
    opt.zero_grad(set_to_none=False)
    assert b.grad is None  # torch gives no gradient to a parameter that had none


def test_a_gradient_set_to_none_by_hand_restarts_from_zero():
    """The flat view may hold an older gradient when the user drops `p.grad` by hand; the next
    backward must not add to it."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = to.SGD([a], lr=0.1, compile=False)
    ref = torch.optim.SGD([b], lr=0.1)
    for p in (a, b):
        (3 * p).sum().backward()
        p.grad = None
        (2 * p).sum().backward()
    opt.step()
    ref.step()
    assert torch.equal(a.grad, b.grad) and torch.equal(a.detach(), b.detach())


def test_a_parameter_rebound_into_another_buffer_is_updated_there():
    """`p.data = view of someone's buffer` (ZeRO's and FSDP's flat buffers do this): the update
    lands in that buffer, as torch's would, not in a private copy."""
    p, q = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    opt = to.SGD([p], lr=0.5, momentum=0.9, compile=False)
    ref = torch.optim.SGD([q], lr=0.5, momentum=0.9)
    bucket = torch.zeros(10)
    bucket[3:7] = p.detach()
    p.data = bucket[3:7]
    for x, o in ((p, opt), (q, ref)):
        for _ in range(3):
            o.zero_grad()
            (x * x).sum().backward()
            o.step()
    assert torch.equal(bucket[3:7], q.detach()) and p.data_ptr() == bucket[3:].data_ptr()


def test_muon_trains_a_matrix_unfrozen_after_construction_as_muon():
    w, h = torch.nn.Parameter(torch.randn(8, 6)), torch.nn.Parameter(torch.randn(8, 6))
    h.requires_grad_(False)
    opt = to.Muon([w, h], lr=0.02)
    assert h not in opt.adamw_params
    h.requires_grad_(True)
    for _ in range(2):
        opt.zero_grad()
        ((w @ h.T) ** 2).sum().backward()
        opt.step()
    assert any(p is h for st in opt._stacks for p in st.seg.params)
    assert set(opt.state[h]) == {"momentum_buffer"}


def _quadratic(ps):
    used, _unused = ps
    return ((used - 1.0) ** 2).sum() + (used ** 4).sum()


@pytest.mark.parametrize("name", ["newton", "adahessian", "lbfgs"])
def test_second_order_rules_leave_an_unreached_parameter_alone(name):
    ps = [torch.nn.Parameter(torch.linspace(-1, 1, 5)), torch.nn.Parameter(torch.linspace(2, 3, 4))]
    hp = {"weight_decay": 0.1} if name == "adahessian" else {}
    opt = registry.create(name, ps, **hp)
    before = ps[1].detach().clone()
    for _ in range(3):
        opt.step(lambda: _quadratic(ps))
    assert torch.equal(ps[1].detach(), before)
    assert not torch.equal(ps[0].detach(), torch.linspace(-1, 1, 5))
    if name == "adahessian":
        assert ps[1] not in opt.state


def test_kfac_leaves_an_unused_layer_alone():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 3), "b": torch.nn.Linear(4, 3)})
    opt = to.KFAC(model, lr=0.1, weight_decay=0.1)
    before = [p.detach().clone() for p in model["b"].parameters()]
    x = torch.randn(16, 4)
    for _ in range(3):
        opt.zero_grad()
        model["a"](x).pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(p.detach(), q) for p, q in zip(model["b"].parameters(), before, strict=True))
    assert all(p not in opt.state or "momentum_buffer" not in opt.state[p] for p in model["b"].parameters())
