"""What a resume checks before it trusts a checkpoint: the config it was written with (a hash
in every checkpoint; differing fields listed) and that its contents fit the model and the
optimizer built now. A checkpoint that fails is skipped like a corrupt one."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from thalweg.train.config import ConfigError, RunConfig

__all__ = [
    "ConfigChangedError",
    "config_diff",
    "config_fields",
    "config_hash",
    "model_mismatch",
    "state_problem",
]

#: keys every trainer checkpoint holds (format 2)
STATE_KEYS = ("model", "optimizer", "loader", "ranks", "trainer", "early_stopping",
              "metrics_lines", "monitor_lines", "world_size", "config", "config_hash")


# where a run lives, and where else it reports, is not what it computes
_LOCATION = ("name", "out_dir", "diagnostics.tensorboard", "diagnostics.mlflow")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_fields(cfg: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved config as flat `section.key -> value` (JSON values), without its location."""
    d = cfg.model_dump(mode="json") if isinstance(cfg, RunConfig) else dict(cfg)
    return {k: v for k, v in _flatten(d).items() if k not in _LOCATION}


def config_hash(cfg: RunConfig | dict[str, Any]) -> str:
    """SHA-256 of what the config computes (moving or renaming a run keeps its hash)."""
    text = json.dumps(config_fields(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_diff(old: RunConfig | dict[str, Any], new: RunConfig | dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{"section.key": (old, new)}` for every field that differs (absent = None)."""
    a, b = config_fields(old), config_fields(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


class ConfigChangedError(ConfigError):
    """The config differs from the one the checkpoint was written with (`changes` lists how)."""

    def __init__(self, where: str, checkpoint: str, changes: dict[str, tuple[Any, Any]], *,
                 hint: str | None = None) -> None:
        self.changes = changes
        listed = "; ".join(f"{_field(k)}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:8])
        more = f" (and {len(changes) - 8} more)" if len(changes) > 8 else ""
        hint = hint or ("Resume with --allow-config-change to go on with the new values "
                        "(recorded in metrics.jsonl), or put the old values back")
        ValueError.__init__(
            self, f"config error: {where} differs from the config of checkpoint {checkpoint} in "
            f"{len(changes)} field(s): {listed}{more}. {hint}")
        self.section, self.field, self.value = "", "config", where
        self.problem = "differs from the checkpoint's config"


def _field(key: str) -> str:
    *section, leaf = key.split(".")
    return f"[{'.'.join(section)}] {leaf}" if section else leaf


def model_mismatch(saved: Any, model: nn.Module) -> str | None:
    """Why the state dict `saved` cannot load into `model` (keys, shapes), or None."""
    if not isinstance(saved, dict):
        return "it holds no model weights"
    want = model.state_dict()
    missing = [k for k in want if k not in saved]
    extra = [k for k in saved if k not in want]
    if missing or extra:
        return (f"its model has other layers (missing {missing[:3]}, unexpected {extra[:3]}): "
                "it was written for another model")
    for k, v in want.items():
        s = saved[k]
        if not isinstance(s, torch.Tensor) or s.shape != v.shape:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            return f"its {k} is {got}, the model's is {tuple(v.shape)}: it was written for another model"
    return None


def _optimizer_mismatch(saved: Any, opt: torch.optim.Optimizer) -> str | None:
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        return "its optimizer state is not a torch optimizer state_dict"
    groups = saved["param_groups"]
    if [len(g.get("params", ())) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
        return "its optimizer has other parameter groups: it was written for another optimizer"
    return None


def state_problem(state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> str | None:
    """Why a verified checkpoint cannot resume this run (missing keys, another model or
    optimizer), or None when it can."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return f"it lacks {missing}"
    return model_mismatch(state["model"], model) or _optimizer_mismatch(state["optimizer"], opt)
