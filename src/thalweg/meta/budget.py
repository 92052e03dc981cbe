"""What a `thalweg meta` run will cost before it starts — memory and least compute time, per
phase — with the field each cost grows with, so a run that cannot fit (`iterations = 10**12`,
`meta_batch = 10**9`, `adapt_steps = 10**9`) is refused naming that field instead of hanging
or failing to allocate (the cap is `thalweg.budget`'s, the one every command applies).

One example's forward FLOPs and activations are measured on the model (hooks, no grad);
a task's inner step is a forward and backward (3×) on its examples, second-order MAML
twice that; evaluation keeps one number per task and step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from thalweg import budget as cap

__all__ = ["Cost", "check", "describe", "estimate"]

_EVAL_CHUNK = 200  # tasks evaluated at once (MetaLearner.evaluate)


@dataclass(frozen=True)
class Cost:
    """One phase of the run: its peak bytes, its least seconds, and the (section, field) it
    grows with."""

    what: str
    where: tuple[str, str]
    bytes: float = 0.0
    seconds: float = 0.0


def estimate(cfg: Any, tasks: dict[str, Any], model: torch.nn.Module, device: torch.device) -> list[Cost]:
    """The costs of the run `cfg` (a MetaRunConfig) on `tasks` with the learner's `model`."""
    m, t = cfg.meta, cfg.task
    d = tasks["train"]
    x = torch.zeros(1, *d.in_shape)
    fwd, act, _ = cap.forward_cost(model, x)
    per_task = (t.n_way if t.name == "fewshot" else 1) * (t.k_shot + t.k_query)
    feats = math.prod(d.in_shape) + d.out_features
    params = sum(p.numel() for p in model.parameters())
    rate = cap.flop_rate(device, m.num_threads)
    step = 3.0 * fwd * per_task  # one inner step of one task: forward and backward on its examples
    costs = []
    for method in m.methods:
        n = 0 if method == "scratch" else int(cfg.setting(method, "iterations"))
        inner = int(cfg.setting(method, "inner_steps"))
        order = 2.0 if method == "maml" else 1.0
        train_s = n * (m.meta_batch * (inner + 1) * step * order / rate + (inner + 1) * cap.STEP_FLOOR_S)
        graph = m.meta_batch * (per_task * act * 2 + params * 4 * 3) * (inner + 1)
        costs.append(Cost(f"meta-training {method} (one meta-batch's graph)", ("meta", "meta_batch"), graph))
        where = ("meta", "meta_batch") if m.meta_batch / 25 > n / 10_000 else cfg.where(method, "iterations")
        costs.append(Cost(f"meta-training {method}", where, 0.0, train_s))
        evals = math.ceil(n / m.eval_every) if n else 0
        costs.append(Cost(f"meta-validating {method}", ("meta", "val_tasks"), 0.0,
                          evals * (m.val_tasks * (m.val_steps + 1) * step / rate + (m.val_steps + 1) * cap.STEP_FLOOR_S)))
        costs.append(Cost(f"testing {method}", ("meta", "adapt_steps"), 0.0,
                          m.test_tasks * (m.adapt_steps + 1) * step / rate
                          + math.ceil(m.test_tasks / _EVAL_CHUNK) * (m.adapt_steps + 1) * cap.STEP_FLOOR_S))
    costs += [
        Cost("the meta-validation tasks", ("meta", "val_tasks"), m.val_tasks * per_task * feats * 4.0),
        Cost("the meta-test tasks", ("meta", "test_tasks"), m.test_tasks * per_task * feats * 4.0),
        Cost("the adaptation curves", ("meta", "adapt_steps"),
             (m.test_tasks + m.fit_tasks * t.k_query * d.out_features) * (m.adapt_steps + 1) * 4.0
             + min(m.test_tasks, _EVAL_CHUNK) * params * 4.0 * 3),
        Cost("the validation curves", ("meta", "val_steps"), m.val_tasks * (m.val_steps + 1) * 4.0),
    ]
    return costs


def _peak(costs: list[Cost]) -> float:
    """Bytes held at once: the tasks and curves, and the largest method's graph (methods train
    one after another)."""
    graphs = [c.bytes for c in costs if c.what.startswith("meta-training")]
    return sum(c.bytes for c in costs if not c.what.startswith("meta-training")) + max(graphs, default=0.0)


def check(costs: list[Cost], device: torch.device) -> tuple[str, str, str] | None:
    """(section, field, problem) when the run cannot fit in the free memory or in a year;
    None when it can. The field is the one the largest cost grows with."""
    mem = max(costs, key=lambda c: c.bytes)
    if (why := cap.memory_problem(_peak(costs), device, "this meta run")) is not None:
        return (*mem.where, f"{why} ({mem.what}: {cap.size(mem.bytes)})")
    slow = max(costs, key=lambda c: c.seconds)
    total_s = sum(c.seconds for c in costs)
    if (why := cap.time_problem(total_s, "this meta run", f"{slow.what}: {cap.duration(slow.seconds)}")) is not None:
        return (*slow.where, why)
    return None


def describe(costs: list[Cost]) -> str:
    """One line: the peak memory and the least time."""
    return f"~{cap.size(_peak(costs))} of memory, at least {cap.duration(sum(c.seconds for c in costs))} of compute"
