"""A saved "model + data" probe: what `thalweg inspect`/`doctor` read when there is no training run.

The file is a plain dict loaded with ``torch.load(weights_only=True)``: format tag, the
`thalweg.models.build_model` spec, the state_dict, the tensors x and y, and the loss name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from thalweg.losses import LOSSES

__all__ = ["LOSSES", "Probe", "load_probe", "load_target", "probe_from_run", "save_probe"]

FORMAT = "thalweg-probe/1"  # the loss is stored by name: a key of thalweg.losses.LOSSES


@dataclass
class Probe:
    """A model with the data and loss to measure it on (from a probe file or a training run)."""

    model: nn.Module
    x: Tensor
    y: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    loss_name: str
    source: Path
    run_dir: Path | None = None
    lr: float | None = None
    optimizer: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def save_probe(
    path: str | Path, model: nn.Module, x: Tensor, y: Tensor, *, spec: Mapping[str, Any], loss: str = "cross_entropy",
    lr: float | None = None, optimizer: str | None = None,
) -> Path:
    """Save `model` (rebuilt later by ``build_model(**spec)``) with data x, y and the loss name.

    `spec` holds ``name``, ``in_shape``, ``out_features`` and any model kwargs.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    missing = {"name", "in_shape", "out_features"} - set(spec)
    if missing:
        raise ValueError(f"spec is missing {sorted(missing)} (needs name, in_shape, out_features, model kwargs)")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must be non-empty tensors with the same number of rows")
    spec_d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()}
    payload = {
        "format": FORMAT, "spec": spec_d, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "x": x.detach().cpu(), "y": y.detach().cpu(), "loss": loss,
        "lr": None if lr is None else float(lr), "optimizer": optimizer,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_probe(path: str | Path) -> Probe:
    """Load a probe file written by `save_probe` (safe: ``weights_only=True``)."""
    from thalweg.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"probe file not found: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's own message would advise weights_only=False: never repeat it
        raise ValueError(f"{path} is not a thalweg probe file: it is not a torch file of tensors and plain "
                         "values (truncated, another format, or holding code objects); it was not loaded") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path} is not a thalweg probe file (format tag {FORMAT!r} missing)")
    spec = dict(d["spec"])
    name, in_shape, out = spec.pop("name"), tuple(spec.pop("in_shape")), int(spec.pop("out_features"))
    model = build_model(name, in_shape, out, **spec)
    model.load_state_dict(d["state_dict"])
    model.eval()
    loss = d["loss"]
    if loss not in LOSSES:
        raise ValueError(f"{path}: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    return Probe(model, d["x"], d["y"], LOSSES[loss], loss, path, lr=d.get("lr"), optimizer=d.get("optimizer"))


def _find(obj: Any, keys: tuple[str, ...]) -> Any:
    """First value under any of `keys` in a nested dict / pydantic model (config lookup)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump()
    if isinstance(obj, Mapping):
        for k in keys:
            if k in obj and not isinstance(obj[k], Mapping):
                return obj[k]
        for v in obj.values():
            found = _find(v, keys)
            if found is not None:
                return found
    return None


def load_target(path: str | Path, *, max_samples: int = 2048,
                load_run: Callable[[Path], Any] | None = None) -> Probe:
    """A probe file, or a run directory / checkpoint read by `load_run`, as a `Probe`.

    `load_run` is the training layer's loader (``thalweg.train.load_run``; the CLI passes it):
    this library area never imports the trainer itself. From a run, the training split is
    used (at most `max_samples` rows, the first ones).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run directory, checkpoint or probe file at {path}")
    if path.is_file():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # not loadable as a plain dict: let the run loader try
            d = None
        if isinstance(d, dict) and d.get("format") == FORMAT:
            p = load_probe(path)
            p.x, p.y = p.x[:max_samples], p.y[:max_samples]
            return p
    if load_run is None:
        raise ValueError(f"{path} is not a probe file; to read a training run pass "
                         f"load_run=thalweg.train.load_run (as `thalweg inspect` does)")
    return probe_from_run(load_run(path), path, max_samples=max_samples)


def probe_from_run(run: Any, source: str | Path, *, max_samples: int = 2048) -> Probe:
    """A `Probe` from a loaded training run (anything with `model`, `splits`, `loss_fn`,
    `config` and `run_dir`, as `thalweg.train.load_run` returns)."""
    s = run.splits
    opt_cfg = getattr(run.config, "optimizer", None)
    lr = _find(opt_cfg, ("lr", "learning_rate")) if opt_cfg is not None else None
    momentum = _find(opt_cfg, ("momentum",)) if opt_cfg is not None else None
    opt = getattr(opt_cfg, "name", None)
    return Probe(run.model, s.x_train[:max_samples], s.y_train[:max_samples], run.loss_fn, "run", Path(source),
                 run_dir=Path(run.run_dir), lr=float(lr) if isinstance(lr, int | float) else None,
                 optimizer=opt if isinstance(opt, str) else None,
                 extras={"momentum": float(momentum) if isinstance(momentum, int | float) else None})
