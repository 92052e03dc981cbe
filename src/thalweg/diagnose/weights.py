"""The weights themselves and the config that made them: SYMMETRIC_INIT (units of a layer that
are copies of each other), FROZEN_PARAMETERS (tensors that never changed) and SMALL_BATCH_NORM.

`weight_changes` compares the weights at the end with the weights the run started from (the
trainer's initialization is reproducible from the config's seed), `unit_spread` measures how
different the units (rows) of each weight matrix are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from thalweg.diagnose.findings import Finding, Thresholds

__all__ = ["WeightReport", "config_findings", "unit_spread", "weight_changes", "weight_findings"]


@dataclass
class WeightReport:
    """Per parameter tensor: relative change from the start, and (matrices) the unit spread."""

    change: dict[str, float]  # ‖w_end − w_start‖ / ‖w_start‖ (absolute when w_start = 0)
    spread: dict[str, float]  # mean distance of a row from the mean row, relative to the row scale
    trainable: dict[str, bool]

    @property
    def moved(self) -> float | None:
        """The largest relative change of any trainable weight matrix (None without a start)."""
        vals = [v for k, v in self.change.items() if self.trainable.get(k, True) and k.endswith("weight")]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "spread": self.spread, "trainable": self.trainable}


def unit_spread(w: Tensor) -> float:
    """0 when every unit (row) of the matrix is the same vector, ~1 for independent random rows;
    NaN when it cannot be told (one row, or inf/NaN weights)."""
    rows = w.detach().reshape(w.shape[0], -1).double()
    if rows.shape[0] < 2 or not bool(torch.isfinite(rows).all()):  # NaN weights are broken, not symmetric
        return math.nan
    dev = (rows - rows.mean(0)).norm(dim=1).mean()
    scale = rows.norm(dim=1).mean()
    return float(dev / scale) if scale > 0 else 0.0


def weight_changes(end: Mapping[str, Tensor], start: Mapping[str, Tensor] | None,
                   trainable: Mapping[str, bool] | None = None) -> WeightReport:
    """Relative change from `start` to `end` for every floating-point tensor both hold."""
    change: dict[str, float] = {}
    spread: dict[str, float] = {}
    for name, w in end.items():
        if not torch.is_floating_point(w) or "running_" in name:
            continue
        if w.ndim >= 2:
            spread[name] = unit_spread(w)
        if start is not None and name in start and start[name].shape == w.shape:
            w0 = start[name].double()
            d = float((w.double() - w0).norm())
            n0 = float(w0.norm())
            change[name] = d / n0 if n0 > 0 else d
    return WeightReport(change, spread, dict(trainable or {}))


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def weight_findings(w: WeightReport, config: Mapping[str, Any], *, output_layer: str | None = None) -> list[Finding]:
    """SYMMETRIC_INIT and FROZEN_PARAMETERS from the weights (and the config that explains them)."""
    out: list[Finding] = []
    init = dict(config.get("init") or {})
    rule = init.get("rule", "default")
    hidden = {k: v for k, v in w.spread.items() if k.endswith("weight") and _layer(k) != output_layer}
    twins = sorted(k for k, v in hidden.items() if math.isfinite(v) and v < 1e-6)
    if twins or rule in ("zeros", "constant"):
        ev: dict[str, Any] = {"init_rule": rule, "layers_with_identical_units": [_layer(k) for k in twins]}
        if twins:
            ev["unit_spread"] = [hidden[k] for k in twins]
        out.append(Finding(
            "SYMMETRIC_INIT", "Symmetric initialization: the units of a layer are identical copies",
            "critical" if twins else "warning", ev,
            "Units that start equal get equal gradients and stay equal, so a layer of width n acts like one unit; "
            "break the symmetry with a random, scaled init → [init] rule = \"kaiming_normal\"",
            confidence=0.95 if twins else 0.7, fix={"init.rule": "kaiming_normal"}, figure="weights"))
    frozen_cfg = list(init.get("freeze") or [])
    still = sorted(k for k, v in w.change.items() if (v == 0.0 and not k.endswith("bias")) or
                   (k in w.trainable and not w.trainable[k]))
    moving = [k for k, v in w.change.items() if v > 1e-6]
    if frozen_cfg or (still and moving):
        ev = {"frozen_in_config": frozen_cfg, "unchanged": [k for k in still][:12],
              "changed": len(moving), "unchanged_count": len(still)}
        out.append(Finding(
            "FROZEN_PARAMETERS", "Frozen parameters: some layers never changed", "warning", ev,
            "Parameters without gradient updates keep their initial (random) values"
            + ("; unfreeze them → [init] freeze = []" if frozen_cfg else
               ": check requires_grad and that the optimizer receives every parameter"),
            confidence=0.95 if frozen_cfg and still else 0.7, fix={"init.freeze": []} if frozen_cfg else {},
            figure="weights"))
    return out


def config_findings(config: Mapping[str, Any], *, world_size: int = 1,
                    thresholds: Thresholds | None = None) -> list[Finding]:
    """Problems visible in the config alone: SMALL_BATCH_NORM."""
    t = thresholds or Thresholds()
    m, tr = config.get("model") or {}, config.get("train") or {}
    bs = int(tr.get("batch_size") or 0) // max(world_size, 1)
    if m.get("norm") == "batch" and 0 < bs <= t.small_batch_norm:
        conf = 0.9 if bs <= 4 else 0.6
        return [Finding(
            "SMALL_BATCH_NORM", f"BatchNorm with tiny batches ({bs} per process)", "warning",
            {"norm": "batch", "batch_size_per_process": bs, "threshold": t.small_batch_norm},
            "Batch statistics from a handful of samples are noise, and evaluation uses running averages that "
            "disagree with them; normalize per example instead → [model] norm = \"layer\" (or batch_size ≥ 32)",
            confidence=conf, fix={"model.norm": "layer"}, figure="loss")]
    return []
