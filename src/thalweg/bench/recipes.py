"""Recipes: the configuration a bench chose for a config workload, as a `thalweg train` TOML.

The workload's config, its searched overrides (width, dropout, …), the tuned optimizer and
schedule, and as many epochs as the bench's step budget; early stopping off, since the
bench trained for the whole budget (the trainer still keeps the best weights).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from thalweg.bench import scoring
from thalweg.bench.results import read_results
from thalweg.bench.tasks import workloads

__all__ = ["chosen_record", "recipe_toml"]


def _round(v: Any) -> Any:
    """Four significant digits: a readable recipe (the tuning is not finer than that)."""
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, list | tuple):
        return [_round(x) for x in v]
    return v


def _minimal(d: dict[str, Any], defaults: dict[str, Any], keep: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    """`d` without the values equal to `defaults` (names kept; None never written)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(defaults.get(k), dict):
            sub = _minimal(v, defaults[k], keep)
            if sub:
                out[k] = sub
        elif k in keep or defaults.get(k) != v:
            out[k] = v
    return out


def chosen_record(records: list[dict[str, Any]], workload: str, submission: str | None = None) -> dict[str, Any]:
    """The tuning trial of `workload` (of `submission`, else any) with the best metric."""
    tuned = [r for r in records if r["workload"] == workload and r["phase"] == "tune"
             and (submission is None or r["submission"] == submission)]  # fmt: skip
    best = scoring.best_record(tuned, by="metric")
    if best is None:
        raise ValueError(f"no finished tuning trial of workload {workload!r}"
                         + (f" with submission {submission!r}" if submission else ""))  # fmt: skip
    return dict(best)


def _definition(bench_dir: Path, workload: str) -> tuple[dict[str, Any] | None, str, str]:
    """(train config, mode, metric) of `workload`: as the bench stored it in bench.json (so a
    `thalweg train` config or code workload exports without its file), else the registry's."""
    import json

    try:
        meta = json.loads((bench_dir / "bench.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    for part in meta.values() if isinstance(meta, dict) else ():
        d = (part.get("workloads") or {}).get(workload) if isinstance(part, dict) else None
        if isinstance(d, dict) and isinstance(d.get("config"), dict):
            return d["config"], d.get("mode", "min"), d.get("metric", "val_loss")
    try:
        w = workloads.get(workload)
    except workloads.WorkloadError:
        return None, "min", ""
    return (None if w.config is None else w.config.model_dump(mode="json")), w.mode, w.metric


def recipe_toml(bench_dir: str | Path, workload: str, submission: str | None = None,
                name: str | None = None) -> str:  # fmt: skip
    """The chosen configuration of `workload` in the bench at `bench_dir` as TOML."""
    import tomli_w

    from thalweg.train import parse_config

    records = read_results(Path(bench_dir) / "results.jsonl")
    rec = chosen_record(records, workload, submission)
    config, mode, metric = _definition(Path(bench_dir), workload)
    if config is None:
        raise ValueError(f"workload {workload!r} is not defined by a `thalweg train` config")
    data = copy.deepcopy(config)
    base_name = data.get("name", workload)
    for key, value in (rec["config"].get("overrides") or {}).items():
        value = _round(value)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    data["optimizer"] = {k: _round(v) for k, v in rec["config"]["optimizer"].items()}
    data["schedule"] = {k: _round(v) for k, v in rec["config"]["schedule"].items()}
    spe = rec.get("steps_per_epoch")
    if not spe:  # records written before steps_per_epoch was recorded
        from thalweg.train.components import prepare_data

        spe = math.ceil(len(prepare_data(parse_config(data)).x_train) / data["train"]["batch_size"])
    data["train"]["epochs"] = math.ceil(rec["step_budget"] / spe)
    data["train"]["best_metric"] = "val_accuracy" if mode == "max" and "accuracy" in metric else "val_loss"
    data["regularization"]["early_stopping"]["enabled"] = False
    data["name"] = name or base_name
    cfg = parse_config(data)
    defaults = type(cfg)().model_dump(mode="json")
    short = _minimal(cfg.model_dump(mode="json"), defaults)
    assert parse_config(short) == cfg
    steps = rec["time_to_target"]["steps"]
    head = (f"# A recipe for the bench workload {workload}, tuned by `thalweg bench` "
            f"({Path(bench_dir).name}): submission {rec['submission']}, trial {rec['study']}#{rec['trial']};\n"
            f"# best {metric} {rec['best']['metric']:.4g}"
            + (f", target reached at step {steps}" if steps else "") + ".\n")  # fmt: skip
    return head + tomli_w.dumps(short)
