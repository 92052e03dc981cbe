"""What gradient presence costs: the AccumulateGrad pre-hooks that install the flat views as
`p.grad` during backward, and a step where some parameters have no gradient.

Same process, interleaved round by round (machine noise hits every variant alike):

- backward of an MLP of `--layers` Linear layers (2 tensors each) under torch.optim.Adam
  (no hooks), thalweg.optim.Adam with `zero_grad()` (set_to_none: the hooks install the views)
  and with `zero_grad(set_to_none=False)` (the views stay: the hooks return at once);
  per-backward and per-parameter overhead in µs;
- a whole training step (zero_grad, forward, backward, step), thalweg over torch;
- `step()` alone over the 60 tensors of benchmarks/step_time.py when every tensor has a
  gradient, when one in the middle has none, and when every other one has none (ranges of
  neighbours run as one kernel call each), as ratios to the all-present step.

    python benchmarks/grad_presence.py [--rounds 30] [--layers 30] [--stat min]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from step_time import SHAPES  # benchmarks/step_time.py (the script's directory is on sys.path)


def _mlp(layers: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def _backward_variants(layers: int, width: int):
    import thalweg.optim as to

    out = {}
    for label in ("torch", "thalweg", "thalweg-set_to_none=False"):
        model = _mlp(layers, width)
        if label == "torch":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
        else:
            opt = to.Adam(model.parameters(), lr=1e-3, compile=False)
        to_none = label != "thalweg-set_to_none=False"
        out[label] = (model, opt, to_none)
    return out


def _time(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20, help="calls timed together per round")
    ap.add_argument("--stat", choices=("median", "min"), default="min")
    args = ap.parse_args()
    stat = min if args.stat == "min" else statistics.median
    x = torch.randn(32, args.width)
    variants = _backward_variants(args.layers, args.width)

    def backward(model, opt, to_none):
        def run():
            opt.zero_grad(set_to_none=to_none)
            model(x).square().mean().backward()
        return run

    def train(model, opt, to_none):
        def run():
            opt.zero_grad(set_to_none=to_none)
            model(x).square().mean().backward()
            opt.step()
        return run

    import thalweg.optim as to

    patterns = {"all present": set(), "one absent": {len(SHAPES) // 2},
                "every other absent": set(range(0, len(SHAPES), 2))}
    n_step = sum(math.prod(s) for s in SHAPES)

    def step(absent):  # its own parameters: a tensor absent every step keeps its own step count
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in SHAPES]
        opt = to.Adam(ps, lr=1e-3, compile=False)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        opt.step()
        views = [p.grad for p in ps]

        def run():
            for i, p in enumerate(ps):
                p.grad = None if i in absent else views[i]
            opt.step()
        return run

    jobs = {f"backward/{k}": backward(*v) for k, v in variants.items()}
    jobs |= {f"train/{k}": train(*v) for k, v in variants.items()}
    jobs |= {f"step/{k}": step(v) for k, v in patterns.items()}
    for fn in jobs.values():  # warm up
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.rounds):
        for k, fn in jobs.items():
            reps = args.reps if k.startswith(("backward", "train")) else max(1, args.reps // 10)
            times[k].append(_time(fn, reps))
    t = {k: stat(v) for k, v in times.items()}
    n = 2 * args.layers
    print(f"backward of a {args.layers}-layer MLP ({n} tensors), {args.stat} of {args.rounds} rounds:")
    for k in variants:
        extra = (t[f"backward/{k}"] - t["backward/torch"]) * 1e6
        print(f"  {k:28s} {t[f'backward/{k}'] * 1e6:9.1f} µs   over torch {extra:+8.1f} µs "
              f"({extra / n:+.2f} µs per tensor)")
    print("training step (zero_grad, forward, backward, step), thalweg / torch (for-loop Adam):")
    for k in variants:
        print(f"  {k:28s} {t[f'train/{k}'] * 1e6:9.1f} µs   ratio {t[f'train/{k}'] / t['train/torch']:.3f}")
    print(f"step() of thalweg Adam (eager) over {len(SHAPES)} tensors, {n_step:,} elements:")
    for k in patterns:
        print(f"  {k:28s} {t[f'step/{k}'] * 1e3:9.2f} ms   ratio {t[f'step/{k}'] / t['step/all present']:.3f}")


if __name__ == "__main__":
    main()
