"""One trial: train a workload with one configuration and seed, and measure when the
validation metric first reaches the target (in steps and in training seconds, evaluation
excluded, as AlgoPerf counts), the CPU time of its training steps (this thread's, so a busy
machine inflates it far less than wall seconds), and its end-of-budget metric (the median of
the last three evaluations: what calibration sets targets from). The optimizer is built as
`thalweg train` builds it (the model itself for rules that use parameter names, e.g. Muon);
a rule with train/eval modes (schedule-free) is evaluated at its averaged weights. A trial
that diverges, raises, or runs out of wall-clock is recorded as such — `run_trial` never
raises.

A trial is a plain dict in (the *spec*, built by the runner) and a plain, strict-JSON dict out
(the *record*, one line of `results.jsonl`), so it runs the same in a worker process, a Ray
task or inline.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import statistics
import time
import traceback
from typing import Any

import torch

__all__ = ["STATUSES", "environment", "run_trial"]

#: ok: ran its budget; diverged: non-finite loss or metric; crashed: raised (or its worker
#: died); timeout: over its wall-clock budget; pruned: stopped as hopeless by the pruner.
STATUSES = ("ok", "diverged", "crashed", "timeout", "pruned")
MAX_CURVE = 120

_WORKLOADS: dict[str, Any] = {}
_ENV: dict[str, Any] = {}


def environment() -> dict[str, Any]:
    """Host and versions, recorded with every trial."""
    if not _ENV:
        import optuna

        import thalweg

        _ENV.update(
            host={"name": socket.gethostname(), "platform": platform.platform(),
                  "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
            versions={"python": platform.python_version(), "torch": torch.__version__,
                      "thalweg": getattr(thalweg, "__version__", "?"), "optuna": optuna.__version__},
        )  # fmt: skip
    return _ENV


def finite_or_none(x: Any) -> float | None:
    """A float for JSON: NaN/±inf become None (results.jsonl is strict JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: finite_or_none(v) for k, v in d.items()}


def _workload(spec: dict[str, Any]) -> Any:
    from thalweg.bench.tasks import loader

    ref = spec["workload_ref"]
    if ref not in _WORKLOADS:  # data is built once per worker process
        _WORKLOADS[ref] = loader.from_ref(ref)
    return _WORKLOADS[ref]


def with_overrides(w: Any, overrides: dict[str, Any]) -> Any:
    """The `thalweg train` config of config workload `w` with dotted `overrides` applied and
    validated (a ConfigError names the field; a ValueError says `w` takes none)."""
    if w.config is None:
        raise ValueError(f"workload {w.key!r} is not a config workload; it takes no config overrides")
    from thalweg.overrides import apply
    from thalweg.train import parse_config

    return parse_config(apply(w.config.model_dump(mode="json"), overrides))


def _problem(w: Any, overrides: dict[str, Any], seed: int) -> Any:
    if not overrides:
        return w.build(seed)
    from thalweg.bench.tasks.configs import _config_problem

    return _config_problem(with_overrides(w, overrides), seed)


def _optimizer_and_schedule(cfg: dict[str, Any], model: Any, steps: int, steps_per_epoch: int) -> tuple[Any, Any, Any]:
    """(optimizer, its registry entry, lr schedule), built by `thalweg train`'s own functions."""
    from thalweg.train.components import build_optimizer, build_schedule
    from thalweg.train.config import OptimizerConfig, RunConfig, ScheduleConfig

    run = RunConfig(optimizer=OptimizerConfig(**cfg["optimizer"]),
                    schedule=ScheduleConfig(**cfg["schedule"]))  # fmt: skip
    opt, info = build_optimizer(run, model)
    return opt, info, build_schedule(run, steps, steps_per_epoch)


def _pruner(spec: dict[str, Any]) -> Any:
    """An in-memory Optuna study holding the reference curves; its trial decides pruning."""
    p = spec.get("prune")
    if not p:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=p.get("startup", 3),
                                         n_warmup_steps=p.get("warmup", 0))  # fmt: skip
    study = optuna.create_study(direction="minimize" if spec["mode"] == "min" else "maximize",
                                pruner=pruner)  # fmt: skip
    for ref in p.get("reference", []):
        iv = {int(s): float(v) for s, v in zip(ref["step"], ref["metric"], strict=True) if v is not None}
        if iv:
            best = min(iv.values()) if spec["mode"] == "min" else max(iv.values())
            study.add_trial(optuna.trial.create_trial(value=best, intermediate_values=iv))
    return study.ask()


def _thin(n: int, keep: set[int]) -> list[int]:
    """At most ~MAX_CURVE indices out of n, log-spaced (early progress matters), plus `keep`."""
    if n <= MAX_CURVE:
        return list(range(n))
    idx = {round(x) for x in torch.logspace(0, math.log10(n), MAX_CURVE).tolist()}
    return sorted({i - 1 for i in idx if 1 <= i <= n} | {0, n - 1} | {k for k in keep if k < n})


def _train(spec: dict[str, Any], w: Any, rec: dict[str, Any], t0: float) -> None:
    from thalweg.optim import eval_mode

    cfg, seed, steps = spec["config"], int(spec["seed"]), int(spec["steps"])
    torch.manual_seed(seed)
    problem = _problem(w, cfg.get("overrides") or {}, seed)
    model = problem.model
    opt, info, schedule = _optimizer_and_schedule(cfg, model, steps, problem.steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    target, mode, metric = spec.get("target"), spec["mode"], spec["metric"]
    eval_every, max_seconds = max(1, int(spec["eval_every"])), float(spec["max_seconds"])
    pruning = _pruner(spec)

    def reached(v: float) -> bool:
        return target is not None and (v <= target if mode == "min" else v >= target)

    c_step: list[int] = []
    c_sec: list[float] = []
    c_val: list[float] = []
    best: tuple[float, int] | None = None
    hit: int | None = None
    train_s = eval_s = cpu_s = 0.0
    last: dict[str, float] = {}
    status = "ok"

    def measure(step: int) -> float:
        nonlocal last, best, hit, eval_s
        te = time.perf_counter()
        with eval_mode(opt):
            last = problem.evaluate()
        model.train()
        eval_s += time.perf_counter() - te
        v = float(last[metric])
        c_step.append(step)
        c_sec.append(train_s)
        c_val.append(v)
        if math.isfinite(v) and (best is None or (v < best[0] if mode == "min" else v > best[0])):
            best = (v, step)
        if hit is None and math.isfinite(v) and reached(v):
            hit = len(c_step) - 1
        return v

    model.train()
    measure(0)
    step = 0
    while step < steps:
        lr = schedule(step)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next(problem.batches)
        ts, tc = time.perf_counter(), time.thread_time()
        if info.needs_closure:

            def closure(batch: Any = batch) -> torch.Tensor:
                opt.zero_grad()
                out = problem.loss(batch)
                out.backward()
                return out

            loss = opt.step(closure)
        else:
            opt.zero_grad()
            loss = problem.loss(batch)
            loss.backward()
            if problem.clip_value is not None:
                torch.nn.utils.clip_grad_value_(params, problem.clip_value)
            if problem.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, problem.clip_norm)
            opt.step()
        lv = float(loss.detach())
        train_s += time.perf_counter() - ts
        cpu_s += time.thread_time() - tc
        step += 1
        if not math.isfinite(lv):
            status = "diverged"
            break
        if step % eval_every == 0 or step == steps:
            v = measure(step)
            if not math.isfinite(v):
                status = "diverged"
                break
            if hit is not None and spec.get("stop_at_target"):
                break
            if pruning is not None:
                pruning.report(v, step)
                if pruning.should_prune():
                    status = "pruned"
                    break
        if time.perf_counter() - t0 > max_seconds:
            status = "timeout"
            break
    keep = {hit} if hit is not None else set()
    idx = _thin(len(c_step), keep)
    # the end-of-budget metric: the median of the last three evaluations after step 0 (fewer
    # in a short run), none where the run diverged or stopped early
    tail = [v for s_, v in zip(c_step, c_val, strict=True) if s_ > 0][-3:] if status == "ok" and step == steps else []
    rec.update(
        status=status, steps=step, steps_per_epoch=problem.steps_per_epoch,
        reached=hit is not None,
        time_to_target={"steps": c_step[hit] if hit is not None else None,
                        "seconds": c_sec[hit] if hit is not None else None},
        final=_clean(last), final_metric=finite_or_none(last.get(metric)),
        best={"metric": finite_or_none(best[0]) if best else None, "step": best[1] if best else None},
        end_metric=float(statistics.median(tail)) if tail and all(math.isfinite(v) for v in tail) else None,
        cpu={"train": cpu_s, "per_step": cpu_s / step if step else None},
        curve={"step": [c_step[i] for i in idx], "seconds": [round(c_sec[i], 6) for i in idx],
               "metric": [finite_or_none(c_val[i]) for i in idx]},
        seconds={"train": train_s, "eval": eval_s},
    )  # fmt: skip
    if status in ("ok", "timeout") and (test := problem.test()):
        rec["test"] = _clean(test)


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one trial (see the module docstring); every outcome is a record."""
    t0 = time.perf_counter()
    rec: dict[str, Any] = {
        k: spec.get(k) for k in ("study", "trial", "phase", "ruleset", "workload", "submission",
                                 "study_index", "seed", "params", "config", "target", "metric", "group",
                                 "mode")
    }  # fmt: skip
    rec["step_budget"] = spec.get("steps")
    rec.update(status="crashed", error=None, reached=False, steps=0,
               time_to_target={"steps": None, "seconds": None}, final={}, final_metric=None,
               best={"metric": None, "step": None}, end_metric=None, cpu={},
               curve={"step": [], "seconds": [], "metric": []},
               started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), pid=os.getpid())  # fmt: skip
    threads = int(spec.get("threads") or 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        _train(spec, _workload(spec), rec, t0)
    except Exception as e:  # a crashing trial is a result, never the bench's end
        rec["status"] = "crashed"
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc(limit=6)[-2000:]
    rec["seconds"] = {**rec.get("seconds", {}), "total": time.perf_counter() - t0}
    rec.update(environment())
    return rec
