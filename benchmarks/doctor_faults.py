"""The generator behind benchmarks/doctor_zoo.py: a random healthy base run and one fault drawn
into it, as two run configs (plain dicts for `thalweg.train.fit`).

A *base* is drawn from a seed: the dataset (digits, MNIST-1D, or a generated teacher-labelled
set), the model family (MLP; a 1-D CNN on MNIST-1D), width, depth, activation, optimizer and
its learning rate, schedule, batch size, a budget of a few hundred steps, early stopping on or
off, the trainer's monitors on or off. A *fault* changes what one sick run of that kind changes
(the learning rate, the init, the data, the model size, the batch, frozen layers); some faults
also set a precondition on the base (BatchNorm for the tiny-batch fault, a data file for the
data faults), so the base is always "the same run without the fault". `level` (0, 1, 2) makes
the fault harsher: the zoo retries a fault that did not hurt at the next level.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Config = dict[str, Any]

#: fault → the cause the doctor must name first
EXPECTED: dict[str, str] = {
    "lr_too_high": "LR_TOO_HIGH",
    "lr_too_low": "LR_TOO_LOW",
    "init_too_small": "BAD_INIT",
    "init_too_large": "BAD_INIT",
    "symmetric_init": "SYMMETRIC_INIT",
    "saturating_activation": "SATURATING_ACTIVATION",
    "unnormalized_inputs": "UNNORMALIZED_INPUTS",
    "label_noise": "LABEL_PROBLEMS",
    "shuffled_labels": "LABEL_PROBLEMS",
    "model_too_small": "MODEL_TOO_SMALL",
    "model_too_large": "MODEL_TOO_LARGE",
    "too_little_data": "TOO_LITTLE_DATA",
    "tiny_batch_batchnorm": "SMALL_BATCH_NORM",
    "frozen_layers": "FROZEN_PARAMETERS",
}
FAULTS = tuple(EXPECTED)
#: what the doctor before issue 25 called the same fault (it had no cause codes for these)
OLD_NAMES: dict[str, set[str]] = {
    "init_too_small": {"VANISHING_GRADIENTS", "DEAD_UNITS", "SADDLE", "SATURATED_ACTIVATIONS"},
    "init_too_large": {"EXPLODING_GRADIENTS", "SATURATED_ACTIVATIONS", "DEAD_UNITS", "NONFINITE"},
    "model_too_small": {"UNDERFITTING"},
    "model_too_large": {"OVERFITTING"},
    "too_little_data": {"OVERFITTING"},
}


@dataclass
class Case:
    """One draw: the fault, the base config and the sick one (None for a healthy case)."""

    seed: int
    fault: str | None
    level: int
    base: Config
    sick: Config | None
    note: str

    @property
    def expected(self) -> str:
        return EXPECTED[self.fault] if self.fault else "HEALTHY"


# -- data ------------------------------------------------------------------------------------
def _arrays(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All rows (train + val + test) of a built-in dataset, or the generated teacher set."""
    if name == "teacher":
        rng = np.random.default_rng(10_000 + seed)
        d, k, n = 20, int(rng.choice([4, 6, 8])), 2000
        x = rng.normal(size=(n, d))
        w1 = rng.normal(size=(d, 32)) / math.sqrt(d)
        w2 = rng.normal(size=(32, k))
        logits = np.tanh(2 * x @ w1) @ w2
        return x.astype(np.float32), logits.argmax(1)
    import torch

    from thalweg.data import load_dataset

    opts = {"num_samples": 2000} if name == "mnist1d" else {}
    s = load_dataset(name, seed=0, **opts)
    x = torch.cat([s.x_train, s.x_val, s.x_test]).numpy()
    y = torch.cat([s.y_train, s.y_val, s.y_test]).numpy()
    return x, y


def _npz(folder: Path, stem: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.npz"
    if not path.exists():
        tmp = folder / f".{stem}.tmp.npz"
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)
    return {"name": "npz", "options": {"path": str(path.resolve()), "task": "classification"}}


def _data_file(case_data: Config, folder: Path) -> tuple[np.ndarray, np.ndarray, Config]:
    """The base's data as arrays, and a data section reading the same rows from an .npz file."""
    name, seed = case_data["dataset"], case_data["data_seed"]
    x, y = _arrays(name, seed)
    stem = f"teacher-{seed}" if name == "teacher" else f"{name}-clean"
    return x, y, {**_npz(folder, stem, x, y), "seed": case_data["split_seed"]}


# -- the base ---------------------------------------------------------------------------------
def _steps_per_epoch(n_train: int, batch: int) -> int:
    return max(1, math.ceil(n_train / batch))


_TRAIN_ROWS = {"digits": 1257, "mnist1d": 1440, "teacher": 1400}


def _sig(v: float) -> float:
    """Two significant digits: a value a person would write in a config."""
    return float(f"{v:.2g}")


def draw_base(rng: np.random.Generator, seed: int, folder: Path) -> Config:
    """A healthy run: every choice from a range that trains well in a few hundred steps."""
    dataset = str(rng.choice(["digits", "mnist1d", "teacher"]))
    family = "cnn1d" if dataset == "mnist1d" and rng.random() < 0.5 else "mlp"
    model: Config = {"name": family, "depth": int(rng.choice([1, 2, 3])),
                     "activation": str(rng.choice(["relu", "relu", "gelu", "tanh"]))}
    if family == "cnn1d":
        model.update(channels=int(rng.choice([16, 32])), depth=int(rng.choice([2, 3])))
    else:
        model["width"] = int(rng.choice([32, 64, 128]))
    opt = str(rng.choice(["adam", "adamw", "sgd"]))
    if opt == "sgd":
        optimizer: Config = {"name": "sgd", "lr": _sig(np.exp(rng.uniform(np.log(0.02), np.log(0.08)))),
                             "momentum": 0.9}
    else:
        optimizer = {"name": opt, "lr": _sig(np.exp(rng.uniform(np.log(1e-3), np.log(4e-3))))}
        if opt == "adamw":
            optimizer["weight_decay"] = 0.01
    batch = int(rng.choice([32, 64, 128]))
    steps = int(rng.integers(250, 400))
    epochs = max(2, round(steps / _steps_per_epoch(_TRAIN_ROWS[dataset], batch)))
    data: Config = {"name": dataset, "seed": 0 if dataset == "mnist1d" else int(rng.integers(0, 100))}
    if dataset == "mnist1d":
        data["options"] = {"num_samples": 2000}
    elif dataset == "teacher":
        x, y = _arrays("teacher", seed)
        data = {**_npz(folder, f"teacher-{seed}", x, y), "seed": int(rng.integers(0, 100))}
    return {
        "name": f"base-{seed}",
        "data": data,
        "model": model,
        "init": {"rule": "default"},
        "optimizer": optimizer,
        "schedule": {"name": str(rng.choice(["constant", "cosine", "warmup_cosine"]))},
        "train": {"epochs": epochs, "batch_size": batch, "num_threads": 1, "seed": int(rng.integers(0, 1000)),
                  "log_every": int(rng.choice([5, 10]))},
        "regularization": {"early_stopping": {"enabled": bool(rng.random() < 0.3)}},
        "diagnostics": {"monitors": bool(rng.random() < 0.5), "figures": False, "report": False},
        "_dataset": dataset,
        "_data_seed": seed if dataset == "teacher" else data["seed"],
    }


def _hidden_layers(cfg: Config) -> list[str]:
    """Names of the model's weight layers except the output one, as `init.freeze` takes them."""
    from torch import nn

    from thalweg.train.build import build_run

    parts = build_run(_clean(cfg), optimizer=False, check_budget=False)
    names = [n for n, m in parts.model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d)]
    return names[:-1]


def _clean(cfg: Config) -> Config:
    """The config as the trainer takes it (the generator's private keys removed)."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


# -- the faults -------------------------------------------------------------------------------
def _lr(base: Config, factor: float) -> Config:
    sick = copy.deepcopy(base)
    sick["optimizer"]["lr"] = _sig(base["optimizer"]["lr"] * factor)
    return sick


def _lr_too_high(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    f = float(np.exp(rng.uniform(np.log(30), np.log(300)))) * 3 ** level
    if base["optimizer"]["name"] == "sgd":
        f /= 5  # momentum SGD blows up sooner
    return base, _lr(base, f), f"lr ×{f:.0f}"


def _lr_too_low(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    f = float(np.exp(rng.uniform(np.log(1 / 1000), np.log(1 / 100)))) / 3 ** level
    return base, _lr(base, f), f"lr ×{f:.2g}"


def _init(base: Config, init: Config, model: Config | None = None) -> Config:
    sick = copy.deepcopy(base)
    sick["init"] = {**sick["init"], **init}
    sick["model"].update(model or {})
    return sick


def _init_too_small(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    std = float(f"{10 ** rng.uniform(-3.3, -2.3) / 3 ** level:.2g}")
    deeper = {"depth": max(2, base["model"]["depth"]) + level}
    base = _init(base, {}, deeper)
    return base, _init(base, {"rule": "normal", "std": std}), f"N(0, {std:g}²) weights, depth {deeper['depth']}"


def _init_too_large(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    std = float(f"{rng.uniform(0.5, 1.5) * 2 ** level:.2g}")
    return base, _init(base, {"rule": "normal", "std": std}), f"N(0, {std:g}²) weights"


def _symmetric(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    if rng.random() < 0.3 or level == 2:
        return base, _init(base, {"rule": "zeros"}), "all weights 0"
    v = float(f"{rng.uniform(0.01, 0.1):.2g}")
    return base, _init(base, {"rule": "constant", "value": v}), f"all weights {v:g}"


def _saturating(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    depth = max(base["model"]["depth"], 3) + level
    base = _init(base, {}, {"depth": depth})
    return base, _init(base, {}, {"activation": "sigmoid"}), f"sigmoid, depth {depth}"


def _data_fault(base: Config, folder: Path, stem: str,
                change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[Config, Config]:
    x, y, clean = _data_file({"dataset": base["_dataset"], "data_seed": base["_data_seed"],
                              "split_seed": base["data"]["seed"]}, folder)
    b = copy.deepcopy(base)
    b["data"] = clean
    xs, ys = change(x, y)
    s = copy.deepcopy(b)
    s["data"] = {**_npz(folder, stem, xs, ys), "seed": clean["seed"]}
    return b, s


def _unnormalized(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    hi = 3 + level
    seed = int(rng.integers(0, 2**31))

    def change(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        scales = 10.0 ** r.uniform(-2, hi, x.shape[1])
        offsets = 10.0 ** r.uniform(-1, hi - 1, x.shape[1]) * r.choice([-1, 1], x.shape[1])
        return (x * scales + offsets).astype(np.float32), y

    _, s = _data_fault(base, folder, f"unnorm-{base['name']}-{level}", change)
    s["data"]["standardize"] = False
    b = copy.deepcopy(s)  # the same file, standardized with training-split statistics
    b["data"]["standardize"] = True
    return b, s, f"features scaled 1e-2…1e{hi}, standardize = false"


def _noisy(fraction: float, rng: np.random.Generator) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    seed = int(rng.integers(0, 2**31))

    def change(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        k = int(y.max()) + 1
        y2 = y.copy()
        if fraction >= 1:
            y2 = r.permutation(y)
        else:
            m = r.random(len(y)) < fraction
            y2[m] = r.integers(0, k, int(m.sum()))
        return x, y2

    return change


def _label_noise(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    frac = min(0.9, float(f"{rng.uniform(0.35, 0.6) + 0.15 * level:.2f}"))
    b, s = _data_fault(base, folder, f"noise-{base['name']}-{level}", _noisy(frac, rng))
    return b, s, f"{frac:.0%} of the labels random"


def _shuffled(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    b, s = _data_fault(base, folder, f"shuffled-{base['name']}", _noisy(1.0, rng))
    return b, s, "labels permuted"


def _too_small(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    sick = copy.deepcopy(base)
    if base["model"]["name"] == "cnn1d":
        sick["model"]["channels"] = int(rng.choice([1, 2])) if level < 2 else 1
        return base, sick, f"{sick['model']['channels']} channel(s)"
    sick["model"]["width"] = int(rng.choice([2, 3])) if level < 2 else 1
    return base, sick, f"width {sick['model']['width']}"


def _too_large(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    """A model far wider and deeper than the base, on a base trained long enough to overfit
    (constant rate, twice the epochs) — the precondition applies to the base too. An MLP on
    MNIST-1D is too small at any width these runs afford (bigger is simply better there), so
    that base takes digits instead."""
    b = copy.deepcopy(base)
    if b["model"]["name"] != "mlp":
        b["model"] = {"name": "mlp", "width": 64, "depth": 2, "activation": b["model"]["activation"]}
    if b["_dataset"] == "mnist1d":
        b["data"], b["_dataset"], b["_data_seed"] = {"name": "digits", "seed": 0}, "digits", 0
        b["train"]["epochs"] = max(2, round(b["train"]["epochs"] * 1257 / 1440))
    b["schedule"] = {"name": "constant"}
    b["train"]["epochs"] *= 2
    sick = copy.deepcopy(b)
    sick["model"].update(width=256 * (1 + min(level, 1)), depth=min(4, b["model"]["depth"] + 1 + level))
    return b, sick, f"width {sick['model']['width']}, depth {sick['model']['depth']}"


def _too_little_data(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    frac = float(f"{rng.uniform(0.05, 0.1) / (1 + level):.3f}")
    seed = int(rng.integers(0, 2**31))

    def change(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        keep = r.permutation(len(y))[: max(40, int(frac * len(y)))]
        return x[keep], y[keep]

    b, s = _data_fault(base, folder, f"little-{base['name']}-{level}", change)
    rows = max(40, int(frac * len(_arrays(base["_dataset"], base["_data_seed"])[1])))
    # the same number of steps: a user with less data trains more epochs
    spe_base = _steps_per_epoch(_TRAIN_ROWS[base["_dataset"]], base["train"]["batch_size"])
    spe = _steps_per_epoch(int(0.7 * rows), base["train"]["batch_size"])
    s["train"]["epochs"] = min(200, max(1, round(base["train"]["epochs"] * spe_base / spe)))
    return b, s, f"{rows} rows ({frac:.1%})"


def _tiny_batch(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    b = copy.deepcopy(base)
    b["model"]["norm"] = "batch"
    s = copy.deepcopy(b)
    bs = int(rng.choice([2, 3, 4])) if level == 0 else 2
    s["train"]["batch_size"] = bs
    s["train"]["epochs"] = 1
    return b, s, f"BatchNorm, batch size {bs}"


def _frozen(base: Config, rng: np.random.Generator, level: int, folder: Path) -> tuple[Config, Config, str]:
    hidden = _hidden_layers(base)
    k = len(hidden) if level > 0 or len(hidden) == 1 else int(rng.integers(max(1, len(hidden) // 2), len(hidden) + 1))
    chosen = sorted(rng.choice(hidden, size=k, replace=False).tolist())
    return base, _init(base, {"freeze": chosen}), f"frozen {', '.join(chosen)}"


_APPLY: dict[str, Callable[[Config, np.random.Generator, int, Path], tuple[Config, Config, str]]] = {
    "lr_too_high": _lr_too_high, "lr_too_low": _lr_too_low, "init_too_small": _init_too_small,
    "init_too_large": _init_too_large, "symmetric_init": _symmetric, "saturating_activation": _saturating,
    "unnormalized_inputs": _unnormalized, "label_noise": _label_noise, "shuffled_labels": _shuffled,
    "model_too_small": _too_small, "model_too_large": _too_large, "too_little_data": _too_little_data,
    "tiny_batch_batchnorm": _tiny_batch, "frozen_layers": _frozen,
}


def draw(seed: int, folder: Path, *, healthy: bool = False, level: int = 0, attempt: int = 0) -> Case:
    """The case of generator seed `seed`: its fault is FAULTS[seed % len(FAULTS)] (so every
    run of consecutive seeds covers the faults evenly), or none when `healthy`. `attempt` > 0
    draws another base for the same seed and fault (the zoo redraws a base that is not healthy)."""
    rng = np.random.default_rng(seed if attempt == 0 else [seed, 1000 + attempt])
    base = draw_base(rng, seed, folder / "data")
    if healthy:
        return Case(seed, None, 0, _clean(base), None, "healthy")
    fault = FAULTS[seed % len(FAULTS)]
    frng = np.random.default_rng([seed, level])
    b, s, note = _APPLY[fault](base, frng, level, folder / "data")
    b = _clean(b)
    s = _clean(s)
    s["name"] = f"sick-{seed}-{level}" + (f"-a{attempt}" if attempt else "")
    b["name"] = f"base-{seed}-{fault}" + (f"-a{attempt}" if attempt else "")
    return Case(seed, fault, level, b, s, note)
