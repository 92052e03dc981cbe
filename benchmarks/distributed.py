"""Distributed step time and memory on 2 gloo ranks of one process group (CPU, one thread per
rank), implementations interleaved round by round in the same processes:

1. matrix rules (Muon with float32 Newton–Schulz: bfloat16 matmuls are emulated on most
   CPUs) with one owner rank per matrix (`process_group=`, what DDP runs with) against
   every rank repeating all the matrix work (DDP without owners): step time per rank, ratio
   owners / every rank (goal ≤ 0.6 for Muon and Shampoo);
2. AdamW under FSDP2 (`fully_shard`): thalweg against torch.optim.AdamW (goal ≤ 1.0);
3. memory per rank, each configuration in fresh processes: the optimizer's tensors (state
   as stored; thalweg's flat parameter and gradient buffers too), the RSS it keeps after
   its first step (state, buffers, compiled code), and the peak growth of 3 later steps.

Gradients are fixed random tensors, the same on both ranks (what DDP's all-reduce leaves);
a round of a Shampoo/SOAP row is `freq` steps (one refresh of the roots / bases per round).

    python benchmarks/distributed.py [--rounds 7] [--json out.json] [--skip-memory] [--only matrix|fsdp2]
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
#: the FSDP2 model: a stack of linear layers (width × width), 2 × 8 = 16 tensors, 4.7 M
#: parameters (2.4 M per rank: compile="auto" compiles thalweg's update, as in one process)
WIDTH, DEPTH = 768, 8


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


def _interleaved(steps: dict[str, Callable[[], None]], rounds: int, n: int, seed: int) -> dict[str, list[float]]:
    """Per label, the time of `n` calls of its step in each of `rounds` rounds, the labels
    shuffled each round (the same order on every rank)."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for label in order:
            times[label].append(_timed(steps[label], n))
    return times


def _matrix_rows(rounds: int) -> dict[str, dict[str, list[float]]]:
    rows = {}
    for rule, freq in MATRIX_ROWS:
        steps = {}
        for label, owners in (("owners", True), ("every rank", False)):
            opt = _matrix_opt(rule, freq, _params(rule, 0), owners)
            opt.step()  # state made, first refresh done
            steps[label] = opt.step
        rows[f"{rule} (precondition every {freq})" if rule != "muon" else "muon"] = _interleaved(steps, rounds, freq, 0)
    return rows


def _fsdp_rows(rounds: int) -> dict[str, dict[str, list[float]]]:
    from torch.distributed.tensor import DTensor

    model = _fsdp_model()
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.to_local().shape, generator=g) * 1e-2 for p in model.parameters()]

    def with_grads(step: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:  # FSDP2 hands every step fresh gradient DTensors
            for p, gl in zip(model.parameters(), grads, strict=True):
                p.grad = DTensor.from_local(gl, p.device_mesh, p.placements, run_check=False,
                                            shape=p.shape, stride=p.stride())
            step()
        return run

    opts = {kind: _adamw(kind, list(model.parameters())) for kind in ("thalweg", "torch-foreach", "torch-forloop")}
    steps = {kind: with_grads(o.step) for kind, o in opts.items()}
    for step in steps.values():
        step()  # state made (thalweg: compiled)
    segs = opts["thalweg"]._segments

    def copies() -> None:  # what copying the shards in and out costs of thalweg's step
        for seg in segs:
            seg.sync()
            seg.push()
    steps["copy in + out"] = with_grads(copies)
    times = _interleaved(steps, rounds, 1, 1)
    return {"fsdp2 adamw": {k: v for k, v in times.items() if k != "copy in + out"},
            "fsdp2 copies": {"copy in + out": times["copy in + out"]}}


def _time_worker(rank: int, world: int, rounds: int, out: str, only: str) -> None:
    rows = {}
    if only in ("", "matrix"):
        rows.update(_matrix_rows(rounds))
    if only in ("", "fsdp2"):
        rows.update(_fsdp_rows(rounds))
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
    opt.step()  # state made (thalweg: compiled)
    dist.barrier()
    kept = vm_kb("VmRSS") - base
    before = reset_peak()
    for _ in range(3):
        opt.step()
    dist.barrier()
    later = vm_kb("VmHWM") - before
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, {"kept_kb": kept, "later_kb": later, "buffers_b": _buffer_bytes(opt)})
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)


def _buffer_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of this rank's optimizer tensors: its state (as stored; DTensors' local shards)
    and, for thalweg's flat optimizers, the flat parameter and gradient buffers."""
    if hasattr(opt, "state_nbytes"):
        segs = getattr(opt, "_segments", [])
        return opt.state_nbytes() + sum(s.flat_p.numel() * s.flat_p.element_size() +
                                        s.flat_g.numel() * s.flat_g.element_size() for s in segs)
    seen, total = set(), 0
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                t = v.to_local() if hasattr(v, "to_local") else v
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total


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


def _key(row: str) -> str:
    """A figure key for a row: muon, shampoo_f1, shampoo_f10, soap_f10, fsdp2_adamw."""
    if row.startswith("fsdp2"):
        return "fsdp2_adamw"
    rule, _, rest = row.partition(" ")
    return rule if not rest else f"{rule}_f{rest.split()[-1].rstrip(')')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the tables and figures (thalweg.record) here")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--only", choices=("matrix", "fsdp2"), default="", help="time only these rows")
    args = ap.parse_args()
    import tempfile

    from thalweg.record import Record

    rec = Record()
    with tempfile.TemporaryDirectory() as tmp:
        _spawn(_time_worker, args.rounds, f"{tmp}/t.json", args.only)
        with open(f"{tmp}/t.json") as f:
            per_rank = json.load(f)
    head = ("step", "ours", "theirs", "rank 0 ms (ours / theirs)", "rank 1 ms (ours / theirs)", "ours/theirs")
    lines = []
    for row in per_rank[0]:
        if row == "fsdp2 copies":
            med = [statistics.median(r[row]["copy in + out"]) for r in per_rank]
            step = [statistics.median(r["fsdp2 adamw"]["thalweg"]) for r in per_rank]
            share = max(med) / max(step)
            rec.figure("fsdp2_adamw.copy_share", share)
            lines.append((row, "shards and gradients copied in, values out", "thalweg's whole step",
                          *[f"{1e3 * a:.1f} / {1e3 * b:.1f}" for a, b in zip(med, step, strict=True)], f"{share:.2f}"))
            continue
        med = [{k: statistics.median(v) for k, v in r[row].items()} for r in per_rank]
        fsdp = row.startswith("fsdp2")
        ours, theirs = ("thalweg", "torch-foreach") if fsdp else ("owners", "every rank")
        ratio = max(m[ours] for m in med) / max(m[theirs] for m in med)  # the slower rank ends the step
        rec.figure(f"{_key(row)}.ratio", ratio)
        cells = [f"{1e3 * m[ours]:.1f} / {1e3 * m[theirs]:.1f}" for m in med]
        lines.append((row, "thalweg AdamW" if fsdp else "one owner per matrix",
                      "torch AdamW (foreach)" if fsdp else "every rank, all matrices", *cells, f"{ratio:.2f}"))
        if fsdp:
            loop = max(m["torch-forloop"] for m in med)
            rec.figure("fsdp2_adamw.ratio_forloop", max(m[ours] for m in med) / loop)
            lines.append((row, "thalweg AdamW", "torch AdamW (for-loop)",
                          *[f"{1e3 * m[ours]:.1f} / {1e3 * m['torch-forloop']:.1f}" for m in med],
                          f"{max(m[ours] for m in med) / loop:.2f}"))
    rec.table("time", list(head), [list(r) for r in lines], align="lllrrr")
    print(_table("step time per rank (median ms; 2 gloo ranks, 1 thread each; the slower rank ends a step)",
                 head, lines))
    if not args.skip_memory:
        mem_rows = [f"{r} {f} {m}" for r, f in MATRIX_ROWS[:2] for m in ("owners", "every")]
        mem_rows += ["fsdp2 thalweg", "fsdp2 torch-foreach"]
        mlines = []
        for what in mem_rows:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    _spawn(_memory_worker, what, f"{tmp}/m.json")
                except mp.ProcessRaisedException as e:
                    mlines.append((what, "not run", str(e).strip().splitlines()[-1][:100]))
                    continue
                with open(f"{tmp}/m.json") as f:
                    kb = json.load(f)
            cells = []
            for r, k in enumerate(kb):
                for field in ("kept_kb", "later_kb"):
                    rec.figure(f"memory.{what.replace(' ', '_')}.rank{r}.{field[:-3]}_mib", k[field] / 1024)
                rec.figure(f"memory.{what.replace(' ', '_')}.rank{r}.buffers_mib", k["buffers_b"] / 2**20)
                cells.append(f"{k['buffers_b'] / 2**20:.1f} / {k['kept_kb'] / 1024:.1f} / {k['later_kb'] / 1024:.1f}")
            mlines.append((what, *cells))
        mhead = ("configuration", "rank 0 MiB", "rank 1 MiB")
        sub = "tensors held / RSS kept after the first step / peak of later steps"
        rec.table("memory", list(mhead), [list(r) for r in mlines])
        print()
        print(_table(f"memory per rank ({sub})", mhead, mlines))
    if args.json:
        rec.write(args.json)


if __name__ == "__main__":
    main()
