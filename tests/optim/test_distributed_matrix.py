"""Muon, Shampoo, SOAP and Adafactor across 2 gloo ranks: each matrix has one owner that runs
the one-process update, under DDP (`process_group=`, every rank the same batch) and under FSDP2
(`fully_shard`, uneven shards). The trajectories are the one-process trajectories bit for
bit, each matrix's Newton–Schulz / inverse root / eigenbasis is computed once across the
ranks (counted), and the state round-trips through `state_dict`, DCP, and 2→1 / 1→2
resharding, continuing as if never interrupted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dist_cases as dc
import pytest
import torch
from torch import nn

from thalweg.optim import KFAC, LBFGS, SOAP, Adafactor, AdaHessian, AdamW, Muon, Newton, Shampoo

#: name → (biases in the model, constructor); Muon's vectors would go to its AdamW
RULES: dict[str, tuple[bool, Callable[..., torch.optim.Optimizer]]] = {
    "muon": (False, lambda ps, **kw: Muon(ps, lr=0.02, **kw)),
    "shampoo": (True, lambda ps, **kw: Shampoo(ps, lr=0.01, precondition_frequency=2, max_precond_dim=4, **kw)),
    "soap": (True, lambda ps, **kw: SOAP(ps, lr=0.01, precondition_frequency=2, max_precond_dim=4, **kw)),
    "adafactor": (True, lambda ps, **kw: Adafactor(ps, lr=0.05, **kw)),
}


class _Count:
    """Counts matrices through the expensive kernels (Newton–Schulz, inverse roots,
    eigenbases, power iterations): their batch sizes, summed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import thalweg.optim.matrix.kronecker as kr
        import thalweg.optim.matrix.muon as mu

        self.n = 0
        for mod, name in ((mu, "newton_schulz"), (kr, "inverse_root"), (kr, "eigenbasis"),
                          (kr, "power_iteration_basis")):
            monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name)))

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(x: torch.Tensor, *a: Any, **k: Any) -> Any:
            self.n += x.shape[0]
            return fn(x, *a, **k)
        return counted


def _wrapped(mode: str, bias: bool) -> nn.Module:
    """The test model under DDP (every rank the same batch: the all-reduced mean of two equal
    gradients is that gradient, bit for bit) or sharded by FSDP2."""
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(dc.make_model(bias))
    return dc.shard(dc.make_model(bias))


def _trajectories_worker(rank: int, world: int) -> None:
    import torch.distributed as dist

    mp = pytest.MonkeyPatch()
    count = _Count(mp)
    batches = dc.make_batches()
    try:
        for name, (bias, make) in RULES.items():
            ref = dc.make_model(bias)
            count.n = 0
            dc.train(ref, make(list(ref.parameters())), batches)
            alone = count.n
            for mode in ("ddp", "fsdp2"):
                model = _wrapped(mode, bias)
                kw = {"process_group": dist.group.WORLD} if mode == "ddp" else {}
                count.n = 0
                opt = make(list(model.parameters()), **kw)
                dc.train(model, opt, batches[:2])
                sd = opt.state_dict()  # collective: whole (DDP) or DTensors (FSDP2)
                dc.train(model, opt, batches[2:])
                dc.same(dc.full(model), list(ref.parameters()), f"{name} {mode}")
                mine = torch.tensor([count.n])
                total = mine.clone()
                dist.all_reduce(total)
                assert int(total) == alone, f"{name} {mode}: {int(total)} matrices computed, one process {alone}"
                if alone:
                    assert 0 < int(mine) < alone, f"{name} {mode}: rank {rank} computed {int(mine)} of {alone}"
                # the state after 2 steps is one process's after 2 steps; loaded into a fresh
                # optimizer (over the weights of step 2) it continues as if never stopped
                two = dc.make_model(bias)
                o2 = make(list(two.parameters()))
                dc.train(two, o2, batches[:2])
                s2 = o2.state_dict()["state"]
                assert set(sd["state"]) == set(s2)
                for i, entries in s2.items():
                    for k, v in entries.items():
                        got = sd["state"][i][k]
                        got = got.full_tensor() if hasattr(got, "full_tensor") else got
                        assert torch.equal(torch.as_tensor(got), torch.as_tensor(v)), f"{name} {mode}: state {i}.{k}"
                again = _wrapped(mode, bias)
                dc.assign(again, list(two.parameters()))
                oa = make(list(again.parameters()), **kw)
                oa.load_state_dict(sd)
                dc.train(again, oa, batches[2:])
                dc.same(dc.full(again), list(ref.parameters()), f"{name} {mode} resumed")
    finally:
        mp.undo()


@pytest.mark.slow
def test_owners_give_the_one_process_trajectory_and_split_the_matrix_work() -> None:
    dc.run(_trajectories_worker, 2)


def _dcp_worker(rank: int, world: int, root: str) -> None:
    batches = dc.make_batches()
    for name, (bias, make) in RULES.items():
        ref = dc.make_model(bias)
        dc.train(ref, make(list(ref.parameters())), batches)
        for source, got in dc.resumed_on_two(make, bias, batches, Path(root), name).items():
            dc.same(got, list(ref.parameters()), f"{name}: {source} → 2 ranks")


@pytest.mark.slow
def test_dcp_checkpoints_reshard_two_to_one_and_one_to_two(tmp_path: Path) -> None:
    batches = dc.make_batches()
    for name, (bias, make) in RULES.items():
        dc.saved_by_one(make, bias, batches, tmp_path / f"{name}-1")
    dc.run(_dcp_worker, 2, str(tmp_path))
    for name, (bias, make) in RULES.items():
        ref = dc.make_model(bias)
        dc.train(ref, make(list(ref.parameters())), batches)
        got = dc.resumed_on_one(make, bias, batches, tmp_path / f"{name}-2")
        dc.same(got, list(ref.parameters()), f"{name}: 2 ranks → 1")


def _refusal_worker(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard"))
    model = dc.make_model(False)
    fully_shard(model, mesh=mesh)  # HSDP: replicate × shard
    for _name, (_, make) in RULES.items():
        with pytest.raises(ValueError, match="2-D device mesh \\(HSDP or tensor parallel\\)"):
            make(list(model.parameters()))
    with pytest.raises(ValueError, match="2-D device mesh"):  # the flat core too
        AdamW(model.parameters(), compile=False)
    half = dc.shard(dc.make_model(False)[:1])
    mixed = [*half.parameters(), nn.Parameter(torch.zeros(3, 3))]
    with pytest.raises(ValueError, match="mixed with plain tensors"):
        Muon(mixed)
    # the second-order rules need whole tensors for their curvature products: refused at
    # construction, naming FSDP2 and the way out (DDP)
    sharded = dc.shard(dc.make_model(True))
    for make in (lambda: LBFGS(sharded.parameters()), lambda: Newton(sharded.parameters()),
                 lambda: AdaHessian(sharded.parameters()), lambda: KFAC(sharded)):
        with pytest.raises(ValueError, match=r"does not support DTensor parameters \(FSDP2.*strategy = \"ddp\""):
            make()


@pytest.mark.slow
def test_what_owners_cannot_split_is_refused_at_construction_naming_it() -> None:
    dc.run(_refusal_worker, 2)
