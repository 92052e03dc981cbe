"""Bench records with the shape `thalweg bench run` writes, made up (seeded) so the report and
its figures can be drawn in a test without running a bench: 19 submissions × 6 workloads, some
never reaching the target, one diverging to 1e35, two-seed re-runs, an lr sweep."""

from __future__ import annotations

import random
from typing import Any

SUBS = ["adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "lamb", "lars", "lion", "muon", "nadam",
        "prodigy", "radam", "rmsprop", "schedulefree_adamw", "schedulefree_sgd", "sgd", "shampoo", "soap"]
WLS = ["rosenbrock", "quadratic", "linreg", "deep_linear", "digits_logreg", "mnist1d_mlp"]


def records(seed: int = 0) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for wl in WLS:
        acc = wl == "mnist1d_mlp"
        metric, mode, target = ("val_accuracy", "max", 0.7) if acc else ("excess_loss", "min", 1e-6)
        for k, sub in enumerate(SUBS):
            good = k % 3 != 0 or wl == "deep_linear"
            for study in range(2):
                for trial in range(3):
                    reached = good and rnd.random() < 0.8
                    steps = rnd.randint(50, 900)
                    diverged = sub == "lion" and wl == "quadratic"  # every trial: one is chosen
                    curve_m = [0.1 + 0.6 * (1 - 0.97 ** i) for i in range(0, steps, 10)] if acc else \
                        [10.0 * 0.98 ** i for i in range(0, steps, 10)]
                    if diverged:
                        curve_m = [10.0 * 3.0 ** i for i in range(len(curve_m))][:73]
                        curve_m[-1] = 1e35
                    out.append({
                        "ruleset": "external", "phase": "tune", "workload": wl, "submission": sub,
                        "study_index": study, "trial": trial, "metric": metric, "mode": mode, "target": target,
                        "status": "diverged" if diverged else "ok", "reached": reached and not diverged,
                        "time_to_target": {"steps": steps, "seconds": steps / 300},
                        "best": {"metric": curve_m[-1] if acc else min(curve_m)},
                        "curve": {"step": list(range(0, 10 * len(curve_m), 10)), "metric": curve_m},
                        "params": {"lr": 10 ** rnd.uniform(-4, -1)},
                        "config": {"optimizer": {"name": sub, "lr": 10 ** rnd.uniform(-4, -1)}},
                    })
            for s in range(2):  # two-seed re-runs: a Student-t interval of 2 values is wide
                steps = [390, 3363][s] if k == 0 else 200 + 50 * s
                out.append({"ruleset": "external", "phase": "rerun", "workload": wl, "submission": sub,
                            "reached": good, "time_to_target": {"steps": steps, "seconds": steps / 300},
                            "best": {"metric": 0.5 + 0.1 * s}, "final_metric": 0.5 + 0.1 * s,
                            "test": {"test_accuracy": 0.8 + 0.15 * s}, "status": "ok", "metric": metric})
            for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
                out.append({"ruleset": "external", "phase": "sensitivity", "workload": wl, "submission": sub,
                            "metric": metric, "target": target, "status": "diverged" if lr == 1.0 and k % 2 else "ok",
                            "time_to_target": {"steps": None, "seconds": None}, "best": {"metric": None},
                            "final_metric": (0.5 if acc else 1e-3 * lr), "config": {"optimizer": {"lr": lr}}})
    return out
