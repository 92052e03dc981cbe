"""Every first-order rule under FSDP2 (2 gloo ranks, `fully_shard`, rows 7 and 5 sharded
unevenly): the flat core over the local shards gives the one-process trajectory, checkpoints
through DCP at 2 ranks and reshards to 1 and from 1, keeps bf16/int8 state within the
format's bound of one process, and steps during backward.

Tolerance: bitwise, except where a reduction spans a tensor or the model (LAMB's and LARS's
trust ratios, Prodigy's d, clip by global norm): each rank sums its shard and the sums are
all-reduced, a different summation order from one process's single sum, so a norm differs
in its last bit or so (~1e-7 relative), which 4 steps carry into the weights:
rtol 1e-5, atol 1e-6 (measured: ≤ 3e-8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dist_cases as dc
import pytest
import torch
import torch.nn.functional as F

import thalweg.optim as to
from thalweg.optim import registry

FIRST = [i for i in registry.infos() if i.order == "first"]
REDUCING = {"lamb", "lars", "prodigy", "clipped_adam"}
#: lr per rule at which 4 steps move the weights well beyond rounding
LR = {"prodigy": 1.0, "adadelta": 1.0, "schedulefree_sgd": 0.5}


def _makers() -> dict[str, Any]:
    out = {}
    for info in FIRST:
        kw = {"compile": False} if "compile" in info.options else {}
        out[info.name] = lambda ps, info=info, kw=kw: info.factory(ps, **kw, lr=LR.get(info.name, 0.01))
    out["clipped_adam"] = lambda ps: to.FlatOptimizer(
        ps, to.chain(to.clip_by_global_norm(0.05), to.scale_by_adam(), to.scale_by_lr(0.01)), compile=False)
    return out


def _close(a: list[torch.Tensor], b: list[torch.Tensor], name: str, what: str) -> None:
    if name not in REDUCING:
        dc.same(a, b, f"{name} {what}")
        return
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name} {what}: {m}")


def _reference(make: Any, data: list[Any]) -> list[torch.Tensor]:
    """The one-process weights after training on `data`."""
    ref = dc.make_model(True)
    dc.train(ref, make(list(ref.parameters())), data)
    return list(ref.parameters())


def _trajectory_worker(rank: int, world: int) -> None:
    data = dc.make_batches()
    for name, make in _makers().items():
        ref = _reference(make, data)
        model = dc.shard(dc.make_model(True))
        opt = make(list(model.parameters()))
        dc.train(model, opt, data)
        _close(dc.full(model), ref, name, "under FSDP2")
        assert all(type(p.grad).__name__ == "DTensor" for p in model.parameters() if p.grad is not None)
    # weights written from outside between steps (in place on the DTensors; a state dict
    # loaded into the model) are what the next step starts from, as in one process
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    nets = [dc.make_model(True), dc.shard(dc.make_model(True))]
    opts = [to.AdamW(m.parameters(), lr=0.01, compile=False) for m in nets]
    for k, (x, y) in enumerate(data):
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
            with torch.no_grad():
                if k == 1:
                    for p in net.parameters():
                        p.mul_(0.5)
                if k == 2:
                    whole = {n: (v.full_tensor() if hasattr(v, "full_tensor") else v) * 1.5
                             for n, v in net.state_dict().items()}
                    set_model_state_dict(net, whole, options=StateDictOptions(full_state_dict=True))
    dc.same(dc.full(nets[1]), list(nets[0].parameters()), "weights written between steps")


@pytest.mark.slow
def test_every_first_order_rule_under_fsdp2_is_the_one_process_trajectory() -> None:
    dc.run(_trajectory_worker, 2, timeout=400)


def _dcp_worker(rank: int, world: int, root: str) -> None:
    data = dc.make_batches()
    for name, make in _makers().items():
        ref = _reference(make, data)
        a = dc.shard(dc.make_model(True))
        oa = make(list(a.parameters()))
        dc.train(a, oa, data[:1])
        st = oa.state_dict()
        assert all(type(v).__name__ == "DTensor" for e in st["state"].values() for v in e.values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0), f"{name}: state entries are DTensors"
        for source, got in dc.resumed_on_two(make, True, data, Path(root), name).items():
            _close(got, ref, name, f"resumed from {source} rank(s) on 2")


@pytest.mark.slow
def test_every_first_order_rule_checkpoints_through_dcp_and_reshards(tmp_path: Path) -> None:
    data = dc.make_batches()
    for name, make in _makers().items():
        dc.saved_by_one(make, True, data, tmp_path / f"{name}-1")
    dc.run(_dcp_worker, 2, str(tmp_path), timeout=600)
    for name, make in _makers().items():  # one process goes on from what 2 ranks saved
        got = dc.resumed_on_one(make, True, data, tmp_path / f"{name}-2")
        _close(got, _reference(make, data), name, "resumed from 2 ranks on 1")


def _moved(run: list[torch.Tensor], start: list[torch.Tensor]) -> float:
    return max(float((a - s).abs().max()) for a, s in zip(run, start, strict=True))


def _diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _lowprec_worker(rank: int, world: int, root: str) -> None:
    """int8 blocks tile each rank's own buffer of shards, so the codes differ from one
    process's: each run stays within the format's bound of the float32 trajectory (the bound
    of tests/optim/test_lowprec.py: 0.2 of the distance moved for int8, 0.05 for bf16), and
    the sharded run within the same bound of the one-process run of that format."""
    data = dc.make_batches()
    start = [p.detach().clone() for p in dc.make_model(True).parameters()]
    for sd, tol in (("int8", 0.2), ("bf16", 0.05)):
        runs = {}
        for where, dtype in (("one", None), ("one", sd), ("fsdp2", sd)):
            model = dc.make_model(True) if where == "one" else dc.shard(dc.make_model(True))
            opt = to.AdamW(model.parameters(), lr=0.01, state_dtype=dtype, state_block_size=16, compile=False)
            dc.train(model, opt, data)
            runs[(where, dtype)] = dc.full(model)
        fp32 = runs[("one", None)]
        moved = _moved(fp32, start)
        for key in (("one", sd), ("fsdp2", sd)):
            assert _diff(runs[key], fp32) <= tol * moved, (key, _diff(runs[key], fp32), moved)
        assert _diff(runs[("fsdp2", sd)], runs[("one", sd)]) <= tol * moved
    # an int8 checkpoint at the same world size: the same codes come back (exact resume)
    a = dc.shard(dc.make_model(True))
    oa = to.AdamW(a.parameters(), lr=0.01, state_dtype="int8", state_block_size=16, compile=False)
    dc.train(a, oa, data[:2])
    dc.save(a, oa, Path(root) / "int8")
    dc.train(a, oa, data[2:])
    b = dc.shard(dc.make_model(True))
    ob = to.AdamW(b.parameters(), lr=0.01, state_dtype="int8", state_block_size=16, compile=False)
    dc.load(b, ob, Path(root) / "int8")
    dc.train(b, ob, data[2:])
    dc.same(dc.full(b), dc.full(a), "int8 state resumed at 2 ranks")


@pytest.mark.slow
def test_low_precision_state_under_fsdp2_stays_within_the_formats_bound(tmp_path: Path) -> None:
    dc.run(_lowprec_worker, 2, str(tmp_path))


def _backward_worker(rank: int, world: int) -> None:
    data = dc.make_batches()
    ref = dc.make_model(True)
    dc.train(ref, to.AdamW(ref.parameters(), lr=0.01, compile=False), data)
    model = dc.shard(dc.make_model(True))
    opt = to.AdamW(model.parameters(), lr=0.01, compile=False, in_backward=True, bucket_numel=40)
    for x, y in data:
        opt.zero_grad()
        before = dc.full(model)
        F.mse_loss(model(x), y).backward()  # the update runs in FSDP2's post-reduce hooks
        assert all(not torch.equal(a, b) for a, b in zip(before, dc.full(model), strict=True))
        opt.step()
    dc.same(dc.full(model), list(ref.parameters()), "AdamW stepping in backward under FSDP2")
    with pytest.raises(ValueError, match="sums each tensor over every rank's shard"):
        to.LAMB(dc.shard(dc.make_model(True)).parameters(), lr=0.01, in_backward=True)


@pytest.mark.slow
def test_step_in_backward_under_fsdp2_is_the_one_process_trajectory() -> None:
    dc.run(_backward_worker, 2)
