"""Step time and memory on a GPU (benchmarks/gpu.sh runs it): thalweg's compiled flat rules
(float32, bf16 and int8 state) against torch.optim's fused and foreach kernels, the matrix
rules against torch.optim.Muon, and the peak memory of a step — one process, implementations
interleaved round by round, CUDA synchronized around each timed step.

    python benchmarks/gpu.py [--rounds 20] [--quick] [--device cuda] [--json PATH]

`--device cpu --quick` runs the same code on the CPU in a few seconds (to test the script).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

#: a transformer-like set of tensors: 24 blocks of (4d×d, d×4d, 3d×d, d×d) and norms
D = 768
SHAPES = [s for _ in range(24) for s in ((4 * D, D), (D, 4 * D), (3 * D, D), (D, D), (D,), (D,))]
QUICK = [(64, 32), (32, 64), (32,)] * 4
MATRIX = [(D, D)] * 12 + [(4 * D, D)] * 6
FIRST_ORDER = {"adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
               "adam": ("Adam", {"lr": 1e-3}),
               "sgd_momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
               "lion": ("Lion", {"lr": 1e-4, "weight_decay": 0.1})}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(shapes: list[tuple[int, ...]], device: torch.device) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g).to(device) * 0.02) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(device) * 1e-3
    return ps


def _impls(rule: str, device: torch.device) -> dict[str, Callable[[list], Any]]:
    import thalweg.optim as to

    if rule in ("muon", "shampoo"):
        out: dict[str, Callable[[list], Any]] = {}
        if rule == "muon":
            out["thalweg"] = lambda ps: to.Muon(ps, lr=0.02)
            out["torch"] = lambda ps: torch.optim.Muon(ps, lr=0.02)
        else:
            out["thalweg"] = lambda ps: to.Shampoo(ps, lr=1e-3, precondition_frequency=10)
        return out
    name, kw = FIRST_ORDER[rule]
    ours = getattr(to, name)
    out = {f"thalweg-{sd or 'fp32'}": (lambda ps, sd=sd: ours(ps, compile=True, state_dtype=sd, **kw))
           for sd in (None, "bf16", "int8")}
    ref = getattr(torch.optim, name, None)
    if ref is not None:
        for kind in ("fused", "foreach"):
            try:
                ref([torch.nn.Parameter(torch.zeros(1, device=device))], **{kind: True}, **kw)
            except (RuntimeError, TypeError, ValueError):
                continue
            out[f"torch-{kind}"] = lambda ps, kind=kind: ref(ps, **{kind: True}, **kw)
    return out


def _bench(rule: str, shapes: list[tuple[int, ...]], device: torch.device, rounds: int) -> dict[str, dict[str, float]]:
    impls = _impls(rule, device)
    opts, mem = {}, {}
    for label, make in impls.items():
        ps = _params(shapes, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        opt = make(ps)
        t0 = time.perf_counter()
        opt.step()  # compiles, makes the state
        _sync(device)
        first = time.perf_counter() - t0
        opt.step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else 0
        opts[label] = opt
        mem[label] = {"first_step_s": first, "peak_mib": peak / 2**20}
    times: dict[str, list[float]] = {k: [] for k in opts}
    order = list(opts)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for label in order:
            _sync(device)
            t0 = time.perf_counter()
            opts[label].step()
            _sync(device)
            times[label].append(time.perf_counter() - t0)
    return {k: {"ms": 1e3 * statistics.median(v), **mem[k]} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny tensors, 3 rounds (tests the script)")
    ap.add_argument("--json", help="write the tables (thalweg.record) here")
    args = ap.parse_args()
    device = torch.device(args.device)
    rounds = 3 if args.quick else args.rounds
    from thalweg.record import Record

    rec = Record()
    rows = []
    for rule in (*FIRST_ORDER, "muon", "shampoo"):
        matrix = rule in ("muon", "shampoo")
        shapes = ([(64, 32)] * 4 if matrix else QUICK) if args.quick else (MATRIX if matrix else SHAPES)
        res = _bench(rule, shapes, device, rounds)
        base = next((res[k]["ms"] for k in ("torch-fused", "torch-foreach", "torch") if k in res), None)
        for label, r in res.items():
            ratio = f"{r['ms'] / base:.2f}" if base and label.startswith("thalweg") else ""
            rows.append([rule, label, f"{r['ms']:.3f}", ratio, f"{r['peak_mib']:.1f}", f"{r['first_step_s']:.1f}"])
            rec.figure(f"{rule}.{label}.ms", r["ms"])
            rec.figure(f"{rule}.{label}.peak_mib", r["peak_mib"])
    flat = QUICK if args.quick else SHAPES
    n = sum(int(torch.Size(s).numel()) for s in flat)
    head = ["rule", "implementation", "step ms", "ours/torch", "peak MiB (2 steps)", "first step s"]
    rec.table("gpu_step", head, rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rec.figure("device", name)
    rec.figure("params", n)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"{name}: {n / 1e6:.2f} M parameters in {len(flat)} tensors (matrix rules: {len(MATRIX)} matrices)")
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    if args.json:
        rec.write(args.json)


if __name__ == "__main__":
    main()
