"""Stored targets of the built-in workloads and the calibration record they come from
(`calibration.json` beside this file: the protocol, the command, its CPU time, and per
workload each baseline's chosen configuration and end-of-budget metric on every seed).

Set as AlgoPerf sets them (docs/bench.md, "Targets"): the target-setting baselines (AdamW,
NAdamW with decoupled decay, SGD with Nesterov momentum) tuned with 3 studies × 20
quasi-random trials (four times a submission's 15) at a quarter of the workload's step budget;
each one's best configuration re-run over 10 seeds; a baseline's value is the median over
seeds of its end-of-budget metric (the median of its last three evaluations, not a noisy
peak); the target is the best baseline's — never tighter than a toy problem's tolerance.
Submissions get the whole budget: r_max = 4 times the steps the baselines had, so a
submission up to r_max times slower than the tuned baselines still reaches the target.

`thalweg bench calibrate` recomputes them (DIR/calibrate/calibration.json has the same
layout); a bench config may override a target (`[targets]`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["TARGETS", "lookup", "record"]


@lru_cache(maxsize=1)
def record() -> dict[str, Any]:
    """The calibration record shipped with thalweg ({} if absent)."""
    try:
        text = resources.files("thalweg.bench").joinpath("calibration.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return {}
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


def _targets() -> dict[str, dict[str, Any]]:
    rec = record()
    out = {}
    for key, w in (rec.get("workloads") or {}).items():
        medians = ", ".join(f"{s} {b['median']:.4g}" for s, b in w["baselines"].items() if b.get("median") is not None)
        out[key] = {"value": w["value"], "source": w.get("source") or rec.get("command", ""), "baselines": medians}
    return out


TARGETS: dict[str, dict[str, Any]] = _targets()


def lookup(key: str) -> dict[str, Any] | None:
    """The stored target of workload `key` (name plus non-default parameters), if any."""
    return TARGETS.get(key)
