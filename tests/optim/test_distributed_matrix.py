"""Muon, Shampoo, SOAP and Adafactor across 2 gloo ranks: each matrix has one owner that runs
the one-process update, under DDP-style replicas (`process_group=`) and under FSDP2
(`fully_shard`, uneven shards). The trajectories are the one-process trajectories bit for
bit, each matrix's Newton–Schulz / inverse root / eigenbasis is computed once across the
ranks (counted), and the state round-trips through `state_dict`, DCP, and 2→1 / 1→2
resharding, continuing as if never interrupted."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from dist_spawn import run
from torch import nn

from thalweg.optim import SOAP, Adafactor, Muon, Shampoo

STEPS = 4


def _model(bias: bool) -> nn.Sequential:
    """Five layers: three matrices of one shape (a stack split across owners), rows 8, 8, 8,
    7 and 5 (uneven over 2 ranks), biases for the rules that stack vectors too."""
    torch.manual_seed(0)
    dims = [6, 8, 8, 8, 7, 5]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b, bias=bias), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 6, generator=g), torch.randn(16, 5, generator=g)) for _ in range(STEPS)]


#: name → (biases in the model, constructor); Muon's vectors would go to its AdamW
RULES: dict[str, tuple[bool, Callable[..., torch.optim.Optimizer]]] = {
    "muon": (False, lambda ps, **kw: Muon(ps, lr=0.02, **kw)),
    "shampoo": (True, lambda ps, **kw: Shampoo(ps, lr=0.01, precondition_frequency=2, max_precond_dim=4, **kw)),
    "soap": (True, lambda ps, **kw: SOAP(ps, lr=0.01, precondition_frequency=2, max_precond_dim=4, **kw)),
    "adafactor": (True, lambda ps, **kw: Adafactor(ps, lr=0.05, **kw)),
}


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Any]) -> None:
    for x, y in batches:
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


def _shard(model: nn.Sequential) -> nn.Sequential:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _full(model: nn.Module) -> list[torch.Tensor]:
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in model.parameters()]


def _assign(model: nn.Module, values: list[torch.Tensor]) -> None:
    """Set the (maybe sharded) parameters of `model` to full values."""
    from torch.distributed.tensor import distribute_tensor

    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            if hasattr(p, "to_local"):
                p.to_local().copy_(distribute_tensor(v.detach(), p.device_mesh, p.placements).to_local())
            else:
                p.copy_(v)


def _same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"{what}: parameter {i} differs by {(x - y).abs().max().item():.3g}"


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


def _trajectories_worker(rank: int, world: int) -> None:
    import torch.distributed as dist

    mp = pytest.MonkeyPatch()
    count = _Count(mp)
    batches = _batches()
    try:
        for name, (bias, make) in RULES.items():
            ref = _model(bias)
            count.n = 0
            _train(ref, make(list(ref.parameters())), batches)
            alone = count.n
            for mode in ("replicas", "fsdp2"):
                model = _model(bias) if mode == "replicas" else _shard(_model(bias))
                kw = {"process_group": dist.group.WORLD} if mode == "replicas" else {}
                count.n = 0
                opt = make(list(model.parameters()), **kw)
                _train(model, opt, batches[:2])
                sd = opt.state_dict()  # collective: whole (replicas) or DTensors (FSDP2)
                _train(model, opt, batches[2:])
                _same(_full(model), list(ref.parameters()), f"{name} {mode}")
                mine = torch.tensor([count.n])
                total = mine.clone()
                dist.all_reduce(total)
                assert int(total) == alone, f"{name} {mode}: {int(total)} matrices computed, one process {alone}"
                if alone:
                    assert 0 < int(mine) < alone, f"{name} {mode}: rank {rank} computed {int(mine)} of {alone}"
                # the state after 2 steps is one process's after 2 steps; loaded into a fresh
                # optimizer (over the weights of step 2) it continues as if never stopped
                two = _model(bias)
                o2 = make(list(two.parameters()))
                _train(two, o2, batches[:2])
                s2 = o2.state_dict()["state"]
                assert set(sd["state"]) == set(s2)
                for i, entries in s2.items():
                    for k, v in entries.items():
                        got = sd["state"][i][k]
                        got = got.full_tensor() if hasattr(got, "full_tensor") else got
                        assert torch.equal(torch.as_tensor(got), torch.as_tensor(v)), f"{name} {mode}: state {i}.{k}"
                again = _model(bias) if mode == "replicas" else _shard(_model(bias))
                _assign(again, list(two.parameters()))
                oa = make(list(again.parameters()), **kw)
                oa.load_state_dict(sd)
                _train(again, oa, batches[2:])
                _same(_full(again), list(ref.parameters()), f"{name} {mode} resumed")
    finally:
        mp.undo()


@pytest.mark.slow
def test_owners_give_the_one_process_trajectory_and_split_the_matrix_work() -> None:
    run(_trajectories_worker, 2)


def _save(model: nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def _load(model: nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def _dcp_worker(rank: int, world: int, root: str) -> None:
    batches = _batches()
    for name, (bias, make) in RULES.items():
        ref = _model(bias)
        _train(ref, make(list(ref.parameters())), batches)
        a = _shard(_model(bias))
        oa = make(list(a.parameters()))
        _train(a, oa, batches[:2])
        _save(a, oa, Path(root) / f"{name}-2")
        for source in ("2", "1"):  # saved by these 2 ranks, and by one process
            b = _shard(_model(bias))
            ob = make(list(b.parameters()))
            _load(b, ob, Path(root) / f"{name}-{source}")
            _train(b, ob, batches[2:])
            _same(_full(b), list(ref.parameters()), f"{name}: {source} → 2 ranks")


@pytest.mark.slow
def test_dcp_checkpoints_reshard_two_to_one_and_one_to_two(tmp_path: Path) -> None:
    batches = _batches()
    for name, (bias, make) in RULES.items():  # one process saves after 2 steps
        a = _model(bias)
        oa = make(list(a.parameters()))
        _train(a, oa, batches[:2])
        _save(a, oa, tmp_path / f"{name}-1")
    run(_dcp_worker, 2, str(tmp_path))
    for name, (bias, make) in RULES.items():  # one process loads what 2 ranks saved
        ref = _model(bias)
        _train(ref, make(list(ref.parameters())), batches)
        c = _model(bias)
        oc = make(list(c.parameters()))
        _load(c, oc, tmp_path / f"{name}-2")
        _train(c, oc, batches[2:])
        _same(list(c.parameters()), list(ref.parameters()), f"{name}: 2 ranks → 1")


def _refusal_worker(rank: int, world: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard"))
    model = _model(False)
    fully_shard(model, mesh=mesh)  # HSDP: replicate × shard
    for _name, (_, make) in RULES.items():
        with pytest.raises(ValueError, match="2-D device mesh \\(HSDP or tensor parallel\\)"):
            make(list(model.parameters()))
    half = _shard(_model(False)[:1])
    mixed = [*half.parameters(), nn.Parameter(torch.zeros(3, 3))]
    with pytest.raises(ValueError, match="mixed with plain tensors"):
        Muon(mixed)


@pytest.mark.slow
def test_what_owners_cannot_split_is_refused_at_construction_naming_it() -> None:
    run(_refusal_worker, 2)
