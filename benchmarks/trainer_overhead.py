"""Trainer overhead: one epoch through `thalweg train`'s loop vs a minimal hand-written loop
doing the same work (same data, model, AdamW from the registry, lr schedule set per step,
label smoothing, gradient clipping, one validation pass per epoch), in the same process,
interleaved (ABBA), single-threaded. The trainer additionally computes the gradient norm and
the non-finite check every step, logs metrics, keeps best.pt and writes a checkpoint per
epoch. Target: trainer / hand-written ≤ 1.05.

    .venv/bin/python benchmarks/trainer_overhead.py [--rounds 20] [--samples 20000] [--json PATH]

`--json PATH` also writes the printed block and its figures (`thalweg.record`) for `make docs`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def build(samples: int, out_dir: str) -> tuple[Any, Any]:
    from thalweg.train.config import load_config
    from thalweg.train.loop import Trainer

    cfg = load_config(None, {
        "out_dir": out_dir, "name": "bench", "data.options": {"num_samples": samples},
        "train.epochs": 1000, "regularization.early_stopping.enabled": False,
        "diagnostics.figures": False, "diagnostics.report": False,
    })
    return cfg, Trainer(cfg, quiet=True)


def hand_written(tr: Any, steps0: int = 0) -> Callable[[], None]:
    """The same work without the trainer: a fresh model/optimizer, a plain randperm loop."""
    from thalweg.train.components import build_model, build_optimizer, initialize

    model = build_model(tr.cfg, tr.splits)
    initialize(model, tr.cfg, tr.splits)
    opt, _ = build_optimizer(tr.cfg, model)
    params = list(model.parameters())
    x, y = tr.splits.x_train, tr.splits.y_train
    xv, yv = tr.splits.x_val, tr.splits.y_val
    bs, eps = tr.cfg.train.batch_size, tr.cfg.regularization.label_smoothing
    clip, sched = tr.cfg.regularization.clip_norm, tr.schedule
    g = torch.Generator().manual_seed(0)
    state = {"step": steps0}

    def epoch() -> None:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            for group in opt.param_groups:
                group["lr"] = sched(state["step"])
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=eps)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            state["step"] += 1
        model.eval()
        with torch.no_grad():
            out = model(xv)
            F.cross_entropy(out, yv).item(), (out.argmax(1) == yv).float().mean().item()
        model.train()

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--json", default=None, help="write the figures and the printed block here (thalweg.record)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, tr = build(args.samples, tmp)
        tr.view.stop()
        trainer_epoch = tr._epoch
        manual_epoch = hand_written(tr)
        trainer_epoch(), manual_epoch()  # warm-up (allocations, first checkpoint)
        tr.writer.wait()
        t_tr: list[float] = []
        t_hw: list[float] = []
        for r in range(args.rounds):
            order = [(trainer_epoch, t_tr), (manual_epoch, t_hw)]
            for fn, sink in order if r % 2 == 0 else order[::-1]:
                tr.writer.wait()  # the previous epoch's checkpoint is not billed to this one
                t0 = time.process_time()  # CPU seconds of this process (all its threads):
                fn()                      # steadier than wall time on a shared machine
                if fn is trainer_epoch:
                    tr.writer.wait()  # ... but this epoch's is
                sink.append(time.process_time() - t0)
        tr.close()
    steps = tr.steps_per_epoch
    med_tr, med_hw = statistics.median(t_tr), statistics.median(t_hw)
    ratios = [a / b for a, b in zip(t_tr, t_hw, strict=True)]
    lines = [f"{cfg.data.name} ({len(tr.splits.x_train)} train rows), MLP width {cfg.model.width}, "
             f"{cfg.optimizer.name}, batch {cfg.train.batch_size}: {steps} steps/epoch, "
             f"{args.rounds} interleaved rounds, 1 compute thread",
             f"  hand-written loop : {med_hw * 1e3:8.1f} ms CPU/epoch median, {min(t_hw) * 1e3:8.1f} min",
             f"  thalweg trainer   : {med_tr * 1e3:8.1f} ms CPU/epoch median, {min(t_tr) * 1e3:8.1f} min",
             f"  trainer / hand-written: {statistics.median(ratios):.3f} (median of per-round ratios), "
             f"{min(t_tr) / min(t_hw):.3f} (ratio of minima); target <= 1.05"]
    print("\n".join(lines))
    if args.json:
        from thalweg.record import Record

        rec = Record()
        rec.block("overhead", "\n".join(lines))
        for k, v in {"rounds": args.rounds, "steps_per_epoch": steps, "hand_ms": med_hw * 1e3,
                     "trainer_ms": med_tr * 1e3, "ratio_median": statistics.median(ratios),
                     "ratio_minima": min(t_tr) / min(t_hw), "extra_ms": (med_tr - med_hw) * 1e3}.items():
            rec.figure(k, v)
        print(f"wrote {rec.write(args.json)}")


if __name__ == "__main__":
    main()
