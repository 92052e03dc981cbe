"""Distributed step time and memory on 2 gloo ranks of one process group (CPU, one thread per
rank), implementations interleaved round by round in the same processes:

1. matrix rules (Muon with float32 Newton–Schulz: bfloat16 matmuls are emulated on most
   CPUs) with one owner rank per matrix (`process_group=`, what DDP runs with) against
   every rank repeating all the matrix work (DDP without owners): step time per rank, ratio
   owners / every rank (goal ≤ 0.6 for Muon and Shampoo);
2. AdamW under FSDP2 (`fully_shard`): thalweg against torch.optim.AdamW (goal ≤ 1.0);
3. peak memory per rank (VmHWM growth over building the optimizer and stepping it, each
   configuration in fresh processes).

Gradients are fixed random tensors, the same on both ranks (what DDP's all-reduce leaves);
a round of a Shampoo/SOAP row is `freq` steps (one refresh of the roots / bases per round).

    python benchmarks/distributed.py [--rounds 7] [--json out.json] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MATRICES = [(256, 256)] * 8 + [(512, 128)] * 4
VECTORS = [(256,)] * 8
#: (rule, precondition frequency): the matrix rows
MATRIX_ROWS = [("muon", 1), ("shampoo", 1), ("shampoo", 10), ("soap", 10)]
#: the FSDP2 model: a stack of linear layers (width × width), 2 × 6 = 12 tensors
WIDTH, DEPTH = 512, 6


def _matrix_opt(rule: str, freq: int, params: list[torch.Tensor], owners: bool) -> torch.optim.Optimizer:
    import thalweg.optim as to

    kw: dict[str, Any] = {"process_group": dist.group.WORLD} if owners else {}
    if rule == "muon":
        return to.Muon(params, lr=0.02, ns_dtype="float32", **kw)  # bf16 matmuls are emulated on CPU
    if rule == "shampoo":
        return to.Shampoo(params, lr=1e-3, precondition_frequency=freq, **kw)
    return to.SOAP(params, lr=3e-3, precondition_frequency=freq, **kw)


def _params(rule: str, seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = MATRICES if rule == "muon" else MATRICES + VECTORS
    ps = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return ps


def _timed(step: Callable[[], None], n: int) -> float:
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    dist.barrier()  # the step is done when every rank has its parameters
    return (time.perf_counter() - t0) / n


def _fsdp_model() -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    return model


def _adamw(kind: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import thalweg.optim as to

    if kind == "thalweg":
        return to.AdamW(params, lr=1e-3, weight_decay=0.01)
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=kind == "torch-foreach")


def _time_worker(rank: int, world: int, rounds: int, out: str) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for rule, freq in MATRIX_ROWS:
        steps = {}
        for label, owners in (("owners", True), ("every rank", False)):
            ps = _params(rule, 0)
            opt = _matrix_opt(rule, freq, ps, owners)
            opt.step()  # state made, first refresh done
            steps[label] = opt
        times: dict[str, list[float]] = {k: [] for k in steps}
        order = list(steps)
        rng = random.Random(0)  # the same order on every rank
        for _ in range(rounds):
            rng.shuffle(order)
            for label in order:
                times[label].append(_timed(steps[label].step, freq))
        rows[f"{rule} (precondition every {freq})" if rule != "muon" else "muon"] = times
    model = _fsdp_model()
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.to_local().shape, generator=g) * 1e-2 for p in model.parameters()]
    fs: dict[str, torch.optim.Optimizer] = {}
    try:
        for kind in ("thalweg", "torch-foreach", "torch-forloop"):
            fs[kind] = _adamw(kind, list(model.parameters()))
    except Exception as e:  # the flat core without DTensor support: say so in the table
        fs = {}
        rows["fsdp2 adamw"] = {"error": [str(e).splitlines()[0][:120]]}  # type: ignore[dict-item]
    if fs:
        from torch.distributed.tensor import DTensor

        def setter() -> None:
            for p, gl in zip(model.parameters(), grads, strict=True):
                p.grad = DTensor.from_local(gl, p.device_mesh, p.placements, run_check=False,
                                            shape=p.shape, stride=p.stride())
        times = {k: [] for k in fs}
        for o in fs.values():
            setter()
            o.step()
        order = list(fs)
        rng = random.Random(1)
        for _ in range(rounds):
            rng.shuffle(order)
            for kind in order:
                setter()
                times[kind].append(_timed(fs[kind].step, 1))
        rows["fsdp2 adamw"] = times
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, rows)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)


def _memory_worker(rank: int, world: int, what: str, out: str) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import gc

    from rss import reset_peak, vm_kb

    gc.collect()
    if what.startswith("fsdp2 "):
        model = _fsdp_model()
        g = torch.Generator().manual_seed(1)
        from torch.distributed.tensor import DTensor

        for p in model.parameters():
            gl = torch.randn(p.to_local().shape, generator=g) * 1e-2
            p.grad = DTensor.from_local(gl, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                        stride=p.stride())
        base = reset_peak()
        opt = _adamw(what.split(" ", 1)[1], list(model.parameters()))
    else:
        rule, freq, mode = what.split(" ")
        ps = _params(rule, 0)
        base = reset_peak()
        opt = _matrix_opt(rule, int(freq), ps, mode == "owners")
    for _ in range(3):
        opt.step()
    dist.barrier()
    peak = vm_kb("VmHWM") - base
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, peak)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)


def _entry(rank: int, fn: Callable[..., None], world: int, port: int, args: tuple[Any, ...]) -> None:
    import datetime

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=5))
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _spawn(fn: Callable[..., None], *args: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_entry, args=(fn, 2, port, args), nprocs=2, start_method="spawn")


def _table(title: str, head: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([title, fmt.format(*head), *(fmt.format(*r) for r in lines)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    import tempfile

    record: dict[str, Any] = {"rounds": args.rounds, "matrices": MATRICES, "vectors": VECTORS,
                              "fsdp2_model": f"{DEPTH} x Linear({WIDTH}, {WIDTH})", "time": {}, "memory_kb": {}}
    with tempfile.TemporaryDirectory() as tmp:
        _spawn(_time_worker, args.rounds, f"{tmp}/t.json")
        with open(f"{tmp}/t.json") as f:
            per_rank = json.load(f)
    lines = []
    for row in per_rank[0]:
        med = [{k: statistics.median(v) for k, v in r[row].items() if k != "error"} for r in per_rank]
        if row == "fsdp2 adamw" and "error" in per_rank[0][row]:
            lines.append((row, "-", "-", "-", f"not run: {per_rank[0][row]['error'][0]}"))
            continue
        ours, theirs = ("owners", "every rank") if row != "fsdp2 adamw" else ("thalweg", "torch-foreach")
        slow_ours = max(m[ours] for m in med)
        slow_theirs = max(m[theirs] for m in med)
        record["time"][row] = {"per_rank_ms": [{k: 1e3 * v for k, v in m.items()} for m in med],
                               "ratio": slow_ours / slow_theirs}
        extra = ""
        if row == "fsdp2 adamw":
            loop = max(m["torch-forloop"] for m in med)
            extra = f"torch for-loop {1e3 * loop:.2f} ms (ratio {slow_ours / loop:.2f})"
            record["time"][row]["ratio_forloop"] = slow_ours / loop
        lines.append((row, f"{1e3 * slow_ours:.2f}", f"{1e3 * slow_theirs:.2f}", f"{slow_ours / slow_theirs:.2f}", extra))
    print(_table("step time per rank (ms, the slower rank's median; 2 gloo ranks, 1 thread each)",
                 ("row", "ours", "theirs", "ours/theirs", "note"), lines))
    print("  matrix rows: ours = one owner per matrix, theirs = every rank repeats the matrix work")
    print("  fsdp2 adamw: ours = thalweg.optim.AdamW, theirs = torch.optim.AdamW(foreach=True)")
    if not args.skip_memory:
        mem_rows = [f"{r} {f} {m}" for r, f in MATRIX_ROWS[:2] for m in ("owners", "every")]
        mem_rows += ["fsdp2 thalweg", "fsdp2 torch-foreach"]
        lines = []
        for what in mem_rows:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    _spawn(_memory_worker, what, f"{tmp}/m.json")
                except mp.ProcessRaisedException as e:
                    lines.append((what, "not run:", str(e).strip().splitlines()[-1][:100]))
                    continue
                with open(f"{tmp}/m.json") as f:
                    kb = json.load(f)
            record["memory_kb"][what] = kb
            lines.append((what, *(f"{k / 1024:.1f}" for k in kb)))
        print()
        print(_table("peak memory growth per rank (MiB: building the optimizer + 3 steps)",
                     ("configuration", "rank 0", "rank 1"), lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
