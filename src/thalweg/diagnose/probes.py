"""`thalweg doctor --probe`: the short measurements that tell apart the causes a symptom could
have when nothing the doctor measured already points at one (`Finding.differential`).

- the **lr probe** trains the run's own config from its own start for a few hundred steps at
  the peak learning rate ×0.01, ×0.1, ×1, ×10 and ×100 and compares the best validation
  metric: a clearly better factor says the rate is the cause (and by how much), ×1 rules it out;
- the **capacity probe** trains the same config with a 4× wider model (MLP width, CNN
  channels) for the same steps: a clearly better fit says the model was too small.

Every probe run goes to a temporary folder and is deleted; nothing in the run is touched.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from thalweg.train.config import RunConfig, parse_config

__all__ = ["PROBE_STEPS", "capacity_probe", "lr_probe", "run_probes"]

PROBE_STEPS = 300
LR_FACTORS = (0.01, 0.1, 1.0, 10.0, 100.0)
#: a probe must beat ×1 by this much of the best metric (accuracy: absolute; loss: relative)
MARGIN = 0.03


def _short(d: dict[str, Any], out: Path, name: str, epochs: int) -> dict[str, Any]:
    """One short run of config dict `d`: its best validation metric (None if it blew up)."""
    from thalweg.train.api import fit
    from thalweg.train.guard import NonFiniteError

    d = {**d, "name": name, "out_dir": str(out)}
    d["train"] = {**d["train"], "epochs": epochs}
    d["diagnostics"] = {"monitors": False, "figures": False, "report": False, "tensorboard": False}
    d["regularization"] = {**d.get("regularization", {}), "early_stopping": {"enabled": False}}
    try:
        res = fit(parse_config(d), quiet=True, overwrite=True)
    except NonFiniteError:
        return {"best": None, "metric": None}
    return {"best": res.best_value, "metric": res.best_metric}


def _epochs(cfg: RunConfig, n_train: int, steps: int) -> int:
    per_epoch = max(1, math.ceil(n_train / cfg.train.batch_size))
    return max(1, min(cfg.train.epochs, math.ceil(steps / per_epoch)))


def _better(a: float | None, b: float | None, metric: str | None) -> float:
    """How much `a` beats `b` (accuracy: absolute difference; loss: relative); −inf if a failed."""
    if a is None or not math.isfinite(a):
        return -math.inf
    if b is None or not math.isfinite(b):
        return math.inf
    return a - b if metric == "val_accuracy" else (b - a) / max(abs(b), 1e-12)


def lr_probe(cfg: RunConfig, n_train: int, *, steps: int = PROBE_STEPS) -> dict[str, Any]:
    """The run's first `steps` steps again at the peak lr × each of LR_FACTORS (same seed, data
    and schedule shape): {factors, best values, best_factor (1.0 when none beats ×1 by MARGIN)}."""
    base = cfg.model_dump(mode="json")
    peak = float(base["optimizer"]["lr"])
    epochs = _epochs(cfg, n_train, steps)
    got: dict[float, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="thalweg-probe-") as tmp:
        for f in LR_FACTORS:
            d = {**base, "optimizer": {**base["optimizer"], "lr": peak * f}}
            got[f] = _short(d, Path(tmp), f"lr-x{f:g}", epochs)
    metric = next((g["metric"] for g in got.values() if g["metric"]), None)
    best = max(LR_FACTORS, key=lambda f: _better(got[f]["best"], got[1.0]["best"], metric) if f != 1.0 else 0.0)
    gain = _better(got[best]["best"], got[1.0]["best"], metric)
    return {"factors": list(LR_FACTORS), "best_values": [got[f]["best"] for f in LR_FACTORS], "metric": metric,
            "epochs": epochs, "best_factor": best if gain > MARGIN else 1.0, "gain": gain}


def capacity_probe(cfg: RunConfig, n_train: int, *, steps: int = PROBE_STEPS, factor: int = 4) -> dict[str, Any] | None:
    """The same steps with a `factor`× wider model: {width, best values, helps}; None for a
    model without a width (linear)."""
    d = cfg.model_dump(mode="json")
    m = d["model"]
    key = "channels" if m.get("name") == "cnn1d" else "width" if m.get("name", "mlp") == "mlp" else None
    if key is None:
        return None
    now = int(m.get(key) or (32 if key == "channels" else 128))
    epochs = _epochs(cfg, n_train, steps)
    with tempfile.TemporaryDirectory(prefix="thalweg-probe-") as tmp:
        same = _short(d, Path(tmp), "capacity-x1", epochs)
        wide = _short({**d, "model": {**m, key: now * factor}}, Path(tmp), f"capacity-x{factor}", epochs)
    gain = _better(wide["best"], same["best"], same["metric"] or wide["metric"])
    return {"field": f"model.{key}", "now": now, "probed": now * factor, "best_values": [same["best"], wide["best"]],
            "metric": same["metric"] or wide["metric"], "epochs": epochs, "gain": gain, "helps": gain > MARGIN}


def run_probes(cfg: RunConfig, n_train: int, wanted: set[str]) -> dict[str, Any]:
    """The probes in `wanted` ("lr", "capacity")."""
    out: dict[str, Any] = {}
    if "lr" in wanted:
        out["lr"] = lr_probe(cfg, n_train)
    if "capacity" in wanted:
        cap = capacity_probe(cfg, n_train)
        if cap is not None:
            out["capacity"] = cap
    return out
