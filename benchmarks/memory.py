"""Bytes per parameter: optimizer-state bytes, peak memory of a training step, and the
quality cost of low-precision optimizer state (docs/memory.md).

    python benchmarks/memory.py state                  # state bytes of every flat rule × state_dtype
    python benchmarks/memory.py peak [--params 100e6]  # peak RSS of a training step, fresh process each
    python benchmarks/memory.py quality [--seeds 3]    # MNIST-1D default run + a small CNN, fp32/bf16/int8
    python benchmarks/memory.py state --json PATH      # (any of them) the figures and table for `make docs`

`peak` trains a stack of 2048×2048 linear layers (batch 8: activations are small next to
the weights) and reports, per configuration, the model's bytes, `opt.state_nbytes()`, the
gradient memory kept between steps and the memory one training step needs above model and
state (resident high-water mark of the step after warm-up, plus the kept gradients). Each
configuration runs in its own process with glibc returning freed blocks at once
(MALLOC_MMAP_THRESHOLD_), so freed memory is never counted and never hides a peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from typing import Any

from rss import reset_peak, vm_kb  # benchmarks/rss.py (the script's directory is on sys.path)

CONFIGS = {  # label → (optimizer keyword arguments, peer)
    "torch fused AdamW": ({}, "torch"),
    "AdamW fp32": ({}, None),
    "AdamW bf16 state": ({"state_dtype": "bf16"}, None),
    "AdamW int8 state": ({"state_dtype": "int8"}, None),
    "AdamW fp32, in backward": ({"in_backward": True}, None),
    "AdamW int8, in backward": ({"state_dtype": "int8", "in_backward": True}, None),
}


def peak_child(label: str, n_params: float, bucket: int) -> dict:
    """One configuration in this fresh process: bytes of model, state and gradients kept
    between steps, and the peak resident memory of one training step after warm-up."""
    import torch

    import thalweg.optim as to

    torch.manual_seed(0)
    width = 2048
    depth = max(1, round(n_params / (width * width + width)))
    x = torch.randn(8, width)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])
    kw, peer = CONFIGS[label]
    if peer == "torch":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    else:
        opt = to.AdamW(model.parameters(), lr=1e-4, compile=True, bucket_numel=bucket, **kw)

    def step() -> None:
        opt.zero_grad(set_to_none=True) if peer else opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    for _ in range(3):  # state, compilation, allocator warm-up
        step()
    if peer:
        opt.zero_grad(set_to_none=True)
    kept = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    if not peer and opt._backward is None:
        kept = sum(s.flat_g.numel() * s.flat_g.element_size() for s in opt._segments)
    before = reset_peak() * 1024
    step()
    model_b = sum(p.numel() * p.element_size() for p in model.parameters())
    state_b = opt.state_nbytes() if hasattr(opt, "state_nbytes") else sum(
        t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return {"params": sum(p.numel() for p in model.parameters()), "model": model_b, "state": state_b,
            "kept": kept, "step": vm_kb("VmHWM") * 1024 - before + kept}


def peak(n_params: float, bucket: int, rec: Any = None) -> None:
    mb = 2**20
    rows = []
    print(f"memory of one AdamW training step (~{n_params / 1e6:.0f} M parameters in 2048×2048 layers, "
          f"batch 8, in-backward bucket {bucket * 4 / mb:.0f} MB); MB\n")
    head = (f"{'configuration':<26}{'model':>7}{'state':>7}{'state/fp32':>11}{'grads kept':>11}"
            f"{'step peak above model+state':>29}")
    print(head + "\n" + "-" * len(head))
    fp32_state = None
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed tensors leave the RSS at once
    for label in CONFIGS:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", label, str(n_params), str(bucket)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{label:<26} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        fp32_state = fp32_state or r["state"]
        print(f"{label:<26}{r['model'] / mb:>7.0f}{r['state'] / mb:>7.0f}{r['state'] / fp32_state:>11.3f}"
              f"{r['kept'] / mb:>11.0f}{r['step'] / mb:>29.0f}")
        total = r["model"] + r["state"] + r["step"]
        rows.append([label if label.startswith("torch") else f"thalweg {label}", *(f"{v / mb:.0f}" for v in (
            r["model"], r["state"], r["kept"], r["step"], total))])
        key = label.replace(",", "").replace(" ", "_")
        if rec is not None:
            rec.figure(f"peak.{key}.step_mb", r["step"] / mb)
            rec.figure(f"peak.{key}.total_mb", total / mb)
            rec.figure("peak.params_m", r["params"] / 1e6)
    print("\ngrads kept: gradient memory held between steps; step peak above model+state: the resident"
          "\nhigh-water mark of one step (forward, backward, update) minus what the process held before it,"
          "\nplus the gradients kept: the gradients, activations and temporaries of a step."
          f"\nA full set of gradients is the model's size; one bucket {bucket * 4 / mb:.0f} MB; one layer's gradient"
          f" {2048 * 2048 * 4 / mb:.0f} MB.")
    if rec is not None and rows:
        rec.table("peak", ["configuration", "model", "state", "gradients kept between steps",
                           "step's peak above model + state", "total"], rows)
        t = {r[0]: float(r[-1]) for r in rows}
        if "torch fused AdamW" in t and "thalweg AdamW int8, in backward" in t:
            rec.figure("peak.int8_in_backward_over_torch", t["thalweg AdamW int8, in backward"] / t["torch fused AdamW"])


def state_table(rec: Any = None) -> None:
    import torch

    from thalweg.optim import registry

    print(f"{'rule':<10}{'fp32 B/param':>14}{'bf16':>8}{'int8':>8}{'int8/fp32':>11}")
    rows = []
    for info in registry.infos():
        if "state_dtype" not in info.options or info.needs_model:
            continue
        sizes = {}
        hp = {**info.defaults(), **({"momentum": 0.9} if info.name == "sgd" else {})}  # SGD's state is momentum
        for sd in (None, "bf16", "int8"):
            ps = [torch.nn.Parameter(torch.randn(1024, 1024))]
            try:
                opt = info.factory(ps, **{**hp, "state_dtype": sd, "compile": False})
            except ValueError:  # schedule-free: its z is a copy of the weights (docs/memory.md)
                break
            ps[0].grad = torch.randn_like(ps[0])
            opt.step()
            sizes[sd] = opt.state_nbytes() / ps[0].numel()
        if sizes[None] < 0.01 or len(sizes) < 3:
            continue
        print(f"{info.name:<10}{sizes[None]:>14.3f}{sizes['bf16']:>8.3f}{sizes['int8']:>8.3f}"
              f"{sizes['int8'] / sizes[None]:>11.3f}")
        rows.append([info.name, f"{sizes[None]:.3g}", f"{sizes['bf16']:.3g}", f"{sizes['int8']:.3f}",
                     f"**{sizes['int8'] / sizes[None]:.3f}**"])
        if rec is not None:
            rec.figure(f"state.{info.name}.int8_ratio", sizes["int8"] / sizes[None])
            rec.figure(f"state.{info.name}.int8_bytes", sizes["int8"])
    if rec is not None:
        rec.table("state", ["rule", "fp32", "bf16", "int8", "int8 / fp32"], rows)


def quality(seeds: int, epochs: int | None, rec: Any = None) -> None:
    import tomllib

    from thalweg.train import fit
    from thalweg.train.config import DEFAULT_TOML

    tasks = {"MNIST-1D MLP (default run)": {}, "MNIST-1D CNN (cnn1d)": {
        "model": {"name": "cnn1d", "channels": 64, "kernel_size": 5, "depth": 3}}}
    out = tempfile.mkdtemp(prefix="thalweg-memory-")
    rows = []
    for task, change in tasks.items():
        for sd in ("fp32", "bf16", "int8"):
            accs, losses = [], []
            for seed in range(seeds):
                cfg = tomllib.loads(DEFAULT_TOML)
                for section, values in change.items():
                    cfg[section] = {**{k: v for k, v in cfg[section].items() if k == "name"}, **values}
                cfg["optimizer"]["state_dtype"] = sd
                cfg["train"]["seed"] = seed
                cfg["diagnostics"] = {"figures": False, "report": False}
                if epochs:
                    cfg["train"]["epochs"] = epochs
                cfg.update(name=f"q-{len(rows)}-{seed}", out_dir=out)
                res = fit(cfg, quiet=True)
                accs.append(100 * res.test_accuracy)
                losses.append(res.test_loss)
                print(f"  {task} {sd} seed {seed}: test accuracy {accs[-1]:.2f} %, loss {losses[-1]:.4f}", flush=True)
            rows.append((task, sd, accs, losses))
    table: list[list[str]] = []
    print(f"\n{'task':<28}{'state':<7}{'test accuracy %':>22}{'test loss':>20}   per seed")
    for task, sd, accs, losses in rows:
        sa = statistics.stdev(accs) if len(accs) > 1 else 0.0
        sl = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(f"{task:<28}{sd:<7}{statistics.mean(accs):>14.2f} ± {sa:<5.2f}{statistics.mean(losses):>12.4f} ± "
              f"{sl:<6.4f} {' '.join(f'{a:.2f}' for a in accs)}")
        table.append([task if sd == "fp32" else "", sd, f"{statistics.mean(accs):.2f} ± {sa:.2f}",
                      f"{statistics.mean(losses):.4f} ± {sl:.4f}", " ".join(f"{a:.2f}" for a in accs)])
        if rec is not None:
            rec.figure(f"quality.{'cnn' if 'CNN' in task else 'mlp'}.{sd}.accuracy", statistics.mean(accs))
    if rec is not None:
        rec.figure("quality.seeds", seeds)
        rec.table("quality", ["task", "state", "test accuracy %", "test loss", "per seed (accuracy %)"], table,
                  "llrrl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("state")
    p = sub.add_parser("peak")
    p.add_argument("--params", type=float, default=100e6)
    p.add_argument("--bucket", type=int, default=1 << 22, help="in-backward bucket, elements")
    q = sub.add_parser("quality")
    q.add_argument("--seeds", type=int, default=3)
    q.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    for sp in (sub.choices["state"], p, q):
        sp.add_argument("--json", default=None, help="write the figures and table here (thalweg.record)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from thalweg.record import Record

    rec = Record() if args.json else None
    if args.what == "state":
        state_table(rec)
    elif args.what == "peak":
        peak(args.params, args.bucket, rec)
    else:
        quality(args.seeds, args.epochs, rec)
    if rec is not None:
        print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        warnings.filterwarnings("ignore")
        print(json.dumps(peak_child(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
