"""The trainer's own counters (:class:`TrainState`) and everything random a run depends on,
captured and restored in `weights_only`-safe form.

torch (CPU and CUDA), numpy's legacy global generator, Python's `random`, and any extra
`torch.Generator`s the loop owns. Restoring all of them is what makes a resumed run bitwise
identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["TrainState", "capture_rng", "restore_rng", "seed_everything"]


@dataclass
class TrainState:
    """The loop's counters: where the run is, how the guard has acted, what is best so far."""

    step: int = 0
    lr_scale: float = 1.0  # the non-finite guard's cumulative lr factor (rollbacks)
    rollbacks: int = 0
    streak: int = 0  # non-finite steps in a row
    skipped: int = 0
    best_value: float | None = None  # the metric of the model in best.pt
    best_step: int = -1
    stopped: str | None = None  # None while training; "completed" | "early_stopping"
    elapsed: float = 0.0  # training seconds before this process
    last_eval_step: int = -1

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take every field from `state`; a missing or unknown key is a ValueError (nothing set)."""
        names = {f.name for f in dataclasses.fields(self)}
        missing, unknown = sorted(names - state.keys()), sorted(state.keys() - names)
        if missing or unknown:
            raise ValueError(f"trainer state does not match: missing {missing}, unknown {unknown}")
        for name in names:
            setattr(self, name, state[name])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's `random` from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Tensors, ints and tuples only, so `torch.load(weights_only=True)` can read it back."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": _python_state(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {
        "version": int(version),
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put every generator back exactly where :func:`capture_rng` found it."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
