"""Adafactor and Muon against torch.optim's: Adafactor's batched stacks (its grid runs in the
shared agreement tests), Muon's trajectories over its registry grid, state layout, state_dict
interop both ways through a checkpoint file, its parameter split and its AdamW half."""

from __future__ import annotations

import itertools

import pytest
import torch
from optim_cases import roundtrip

import thalweg.optim as to
from thalweg.optim import registry
from thalweg.optim.matrix.muon import newton_schulz

# equal shapes share a stack (batched), the odd ones are stacks of one; a 0-d and a 1-D too
SHAPES = [(6, 5), (6, 5), (7,), (2, 3, 4), (1,), (4, 1, 3), (6, 5), ()]
MATRICES = [(8, 5), (8, 5), (5, 12), (3, 3), (8, 5)]


def _params(shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def _loss(ps):
    return sum((1 + 0.3 * k) * 0.5 * (p * p).sum() + 0.5 * torch.sin(p).sum() for k, p in enumerate(ps))


def _groups(ps, lr):
    return [{"params": ps[:3]}, {"params": ps[3:6], "lr": lr * 0.5}, {"params": ps[6:]}]


def _train(opt, ps, steps, skip=None, maximize=False):
    for t in range(steps):
        opt.zero_grad()
        (-_loss(ps) if maximize else _loss(ps)).backward()
        if skip is not None and t % 7 == 3:
            ps[skip].grad = None  # torch skips a parameter without a gradient
        opt.step()


def _grid(name):
    info = registry.get(name)
    return [dict(zip(info.option_grid, v, strict=True)) for v in itertools.product(*info.option_grid.values())]


# ------------------------------------------------------------------------ Adafactor
# Adafactor's grid, state layout and state_dict interop run in the shared agreement tests
# (tests/optim/test_optim_agreement.py, test_optim_interop.py: its registry entry names
# torch.optim.Adafactor); here what those shapes do not reach: equal shapes batched in one
# stack, a 0-d tensor, a parameter that skips steps.
def test_adafactor_batched_stacks_match_torch():
    hp = _grid("adafactor")[-1]
    for dtype in (torch.float32, torch.float64):
        a, b = _params(SHAPES, dtype), _params(SHAPES, dtype)
        ours = to.Adafactor(_groups(a, 0.05), lr=0.05, **hp)
        theirs = torch.optim.Adafactor(_groups(b, 0.05), lr=0.05, foreach=False, **hp)
        _train(ours, a, 100, skip=2, maximize=hp["maximize"])
        _train(theirs, b, 100, skip=2, maximize=hp["maximize"])
        assert any(st.k > 1 for st in ours._stacks)  # the (6, 5) parameters share one stack
        moved = max((x - s).abs().max().item() for x, s in zip(a, _params(SHAPES, dtype), strict=True))
        assert moved > 1e-2
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)  # torch's op order: bitwise on CPU


def test_adafactor_refuses_bad_eps_naming_it():
    with pytest.raises(ValueError, match=r"eps must be a pair .*got \(None, -1\)"):
        to.Adafactor(_params(SHAPES), eps=(None, -1))
    with pytest.raises(ValueError, match=r"beta2_decay"):
        registry.create("adafactor", _params(SHAPES), beta2_decay=0.5)


# ------------------------------------------------------------------------ Muon
def test_newton_schulz_is_torchs_iteration_within_one_bfloat16_ulp():
    from torch.optim._muon import _zeropower_via_newtonschulz as ref

    g = torch.Generator().manual_seed(0)
    for shape in [(8, 5), (5, 12), (3, 3), (64, 32)]:
        stack = torch.randn(6, *shape, generator=g)
        ours = newton_schulz(stack)
        theirs = torch.stack([ref(m, (3.4445, -4.775, 2.0315), 5, 1e-7) for m in stack])
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2**-7, atol=2**-7)
        sv = torch.linalg.svdvals(newton_schulz(stack, dtype=torch.float64))
        assert sv.min() > 0.6 and sv.max() < 1.25  # ≈ orthogonal (Muon's quintic: S' ∈ [0.7, 1.2])


#: stated tolerance: bfloat16 ties round differently in batched vs single matmuls (≈1 in
#: 3000 entries), so the trajectories agree to 0.5% of the distance each tensor travelled
MUON_TOL = 5e-3


@pytest.mark.parametrize("hp", _grid("muon"), ids=lambda hp: "-".join(f"{k}={v}" for k, v in hp.items()))
def test_muon_matches_torch_on_matrices(hp):
    a, b = _params(MATRICES), _params(MATRICES)
    ours = to.Muon([{"params": a[:3]}, {"params": a[3:], "lr": 0.01}], lr=0.02, **hp)
    theirs = torch.optim.Muon([{"params": b[:3]}, {"params": b[3:], "lr": 0.01}], lr=0.02, **hp)
    assert not ours.adamw_params  # every 2-D parameter of a plain list is Muon's
    _train(ours, a, 100)
    _train(theirs, b, 100)
    for x, y, s in zip(a, b, _params(MATRICES), strict=True):
        travelled = (y - s).norm()
        assert travelled > 0.5
        assert (x - y).norm() <= MUON_TOL * travelled


def test_muon_state_layout_and_interop_with_torch():
    a, b = _params(MATRICES), _params(MATRICES)
    ours, theirs = to.Muon(a, lr=0.02), torch.optim.Muon(b, lr=0.02)
    _train(ours, a, 10)
    _train(theirs, b, 10)
    sa, sb = ours.state_dict(), theirs.state_dict()
    assert {k: list(v) for k, v in sa["state"].items()} == {k: list(v) for k, v in sb["state"].items()}
    # torch's state into ours (and ours into torch's): training continues as the source would
    for src_opt, src_ps, make in ((theirs, b, lambda ps: to.Muon(ps, lr=0.02)),
                                  (ours, a, lambda ps: torch.optim.Muon(ps, lr=0.02))):
        ckpt = roundtrip({"params": [p.detach().clone() for p in src_ps], "opt": src_opt.state_dict()})
        resumed = [torch.nn.Parameter(t.clone()) for t in ckpt["params"]]
        dst = make(resumed)
        dst.load_state_dict(ckpt["opt"])
        start = [p.detach().clone() for p in src_ps]
        _train(dst, resumed, 15)
        _train(src_opt, src_ps, 15)
        for x, y, s in zip(resumed, src_ps, start, strict=True):
            assert (x - y).norm() <= MUON_TOL * (y - s).norm()


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6)
        self.hidden = torch.nn.Linear(6, 8)
        self.conv = torch.nn.Conv1d(1, 4, 3)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, idx):
        h = self.norm(torch.relu(self.hidden(self.embed(idx))))
        c = self.conv(h.reshape(-1, 1, 8)).mean(dim=(1, 2))
        return self.head(h) + c[:, None]


def test_muon_splits_a_model_by_role_and_the_split_can_be_overridden():
    net = _Net()
    opt = to.Muon(net, lr=0.02)
    adamw = {id(p) for p in opt.adamw_params}
    named = dict(net.named_parameters())
    muon = {n for n, p in named.items() if id(p) not in adamw}
    assert muon == {"hidden.weight", "conv.weight"}  # hidden matrices and a conv kernel
    # plain tensors carry no names: every ≥2-D tensor is Muon's, as torch.optim.Muon takes them
    plain = to.Muon(list(net.parameters()), lr=0.02)
    assert {n for n, p in named.items() if id(p) not in {id(q) for q in plain.adamw_params}} == {
        "embed.weight", "hidden.weight", "conv.weight", "head.weight"}
    groups = [{"params": [net.hidden.weight], "use_muon": False}, {"params": [net.hidden.bias], "use_muon": True}]
    forced = to.Muon(groups, lr=0.02)
    assert [id(p) for p in forced.adamw_params] == [id(net.hidden.weight)]
    everything = to.Muon([torch.nn.Parameter(torch.ones(2))], split="all")
    assert not everything.adamw_params


def test_muon_adamw_half_is_adamw_and_the_whole_state_round_trips():
    torch.manual_seed(0)
    net, ref = _Net(), _Net()
    ref.load_state_dict(net.state_dict())
    idx = torch.randint(0, 10, (16,))
    opt = to.Muon(net, lr=0.02, adamw_lr_ratio=0.5, adamw_betas=(0.8, 0.9), adamw_weight_decay=0.1)
    names = {id(p): n for n, p in net.named_parameters()}
    rest = [dict(ref.named_parameters())[names[id(p)]] for p in opt.adamw_params]
    torch_adamw = torch.optim.AdamW(rest, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)

    def train(steps):
        for _ in range(steps):
            for o, m in ((opt, net), (torch_adamw, ref)):
                o.zero_grad()
                m(idx).square().mean().backward()
            opt.step()
            with torch.no_grad():  # the reference's Muon half follows ours exactly
                for p, q in zip(net.parameters(), ref.parameters(), strict=True):
                    if id(p) not in {id(r) for r in opt.adamw_params}:
                        q.copy_(p)
            torch_adamw.step()

    train(10)
    for p in opt.adamw_params:
        torch.testing.assert_close(p, dict(ref.named_parameters())[names[id(p)]], rtol=1e-6, atol=1e-6)
    sd = roundtrip(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}  # the embedding: AdamW's layout
    clone = _Net()
    clone.load_state_dict(net.state_dict())
    opt2 = to.Muon(clone, lr=0.02, adamw_lr_ratio=0.5, adamw_betas=(0.8, 0.9), adamw_weight_decay=0.1)
    opt2.load_state_dict(sd)
    for o, m in ((opt, net), (opt2, clone)):
        for _ in range(5):
            o.zero_grad()
            m(idx).square().mean().backward()
            o.step()
    for p, q in zip(net.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
