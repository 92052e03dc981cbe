"""The run configuration: one TOML file, validated by pydantic before anything runs.

Every section forbids unknown keys; any error becomes one :class:`ConfigError` that names the
section, the field and the offending value.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DEFAULT_TOML",
    "ConfigError",
    "DataConfig",
    "DiagnosticsConfig",
    "EarlyStoppingConfig",
    "InitConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RegularizationConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
    "parse_config",
    "quoted_number",
    "read_config_file",
]


class ConfigError(ValueError):
    """A bad configuration: `section`, `field` and `value` say exactly what is wrong."""

    def __init__(self, section: str, field: str, value: Any, problem: str) -> None:
        self.section, self.field, self.value, self.problem = section, field, value, problem
        where = f"[{section}] {field}" if section else field
        super().__init__(f"config error: {where} = {value!r}: {problem}")


class _Section(BaseModel):
    # strict: a number in quotes ("64", "1e-3") is refused, never coerced; no inf/nan anywhere
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                              allow_inf_nan=False)


_SEED: dict[str, Any] = {"ge": 0, "lt": 2**63}  # torch.manual_seed's range, with room for offsets
_COUNT = 10**9  # a cap on step counts and intervals: finite, and far above any real run


class DataConfig(_Section):
    """Which dataset, split seed and input normalization (statistics from the train split)."""

    name: str = "mnist1d"
    seed: int = Field(default=0, **_SEED)
    standardize: bool = True
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(_Section):
    """A reference model from `thalweg.models`; unset fields keep the model's own defaults."""

    name: Literal["linear", "mlp", "cnn1d"] = "mlp"
    # sizes are capped loosely here; what a size costs is estimated before a run starts
    width: int | None = Field(default=None, ge=1, le=2**31)
    depth: int | None = Field(default=None, ge=0, le=1000)
    activation: str | None = None
    norm: str | None = None
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    channels: int | None = Field(default=None, ge=1, le=2**31)
    kernel_size: int | None = Field(default=None, ge=1, le=2**20)

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


class InitConfig(_Section):
    """Weight initialization rule applied before training ("default" keeps torch's), the bias
    fill, and which parameters stay at their initial values (`freeze`: name prefixes)."""

    rule: Literal[
        "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
        "orthogonal", "lsuv", "normal", "zeros", "constant",
    ] = "default"
    std: float = Field(default=0.01, gt=0.0, description="for rule = normal")
    value: float = Field(default=0.0, description="for rule = constant")
    bias: float = 0.0
    freeze: list[str] = Field(default_factory=list)


class OptimizerConfig(BaseModel):
    """Any registry optimizer by name; the other keys are its hyperparameters, except
    `state_dtype`: how a flat optimizer stores its state (docs/memory.md)."""

    model_config = ConfigDict(extra="allow")
    name: str = "adamw"
    state_dtype: Literal["fp32", "bf16", "int8"] = "fp32"

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def memory_options(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer besides its hyperparameters."""
        return {} if self.state_dtype == "fp32" else {"state_dtype": self.state_dtype}


class ScheduleConfig(_Section):
    """Learning-rate schedule over optimizer steps; its peak is the optimizer's `lr`."""

    name: Literal["constant", "cosine", "warmup_cosine", "step", "exponential", "polynomial"] = (
        "warmup_cosine"
    )
    warmup_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    final_factor: float = Field(default=0.01, ge=0.0, le=1.0)
    step_epochs: int = Field(default=10, ge=1, le=_COUNT)
    gamma: float = Field(default=0.5, gt=0.0, le=1.0)
    power: float = Field(default=1.0, gt=0.0, le=100.0)


class EarlyStoppingConfig(_Section):
    """Stop when the best-metric has not improved for `patience` evaluations."""

    enabled: bool = True
    patience: int = Field(default=5, ge=1, le=_COUNT)
    min_delta: float = Field(default=0.0, ge=0.0)


class RegularizationConfig(_Section):
    """Explicit penalties, label smoothing, mixup, gradient clipping and early stopping."""

    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    l1: float = Field(default=0.0, ge=0.0)
    l2: float = Field(default=0.0, ge=0.0)
    mixup_alpha: float = Field(default=0.0, ge=0.0, le=1000.0)
    clip_norm: float | None = Field(default=None, gt=0.0)
    clip_value: float | None = Field(default=None, gt=0.0)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class TrainConfig(_Section):
    """Epochs, batching, seeds, evaluation/checkpoint intervals and the non-finite guard."""

    epochs: int = Field(default=20, ge=1, le=10**6)
    batch_size: int = Field(default=128, ge=1, le=2**31)
    eval_batch_size: int = Field(default=1024, ge=1, le=2**31)
    seed: int = Field(default=0, **_SEED)
    eval_every: int = Field(default=0, ge=0, le=_COUNT, description="steps; 0 = once per epoch")
    log_every: int = Field(default=50, ge=1, le=_COUNT)
    checkpoint_every: int = Field(default=0, ge=0, le=_COUNT, description="steps; 0 = once per epoch")
    keep_checkpoints: int = Field(default=3, ge=1, le=10**4)
    best_metric: Literal["auto", "val_loss", "val_accuracy"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, le=4096)
    nonfinite_patience: int = Field(default=3, ge=1, le=_COUNT)
    rollback_lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)
    max_rollbacks: int = Field(default=1, ge=0, le=10**4)


class DiagnosticsConfig(_Section):
    """What to record beyond losses: per-layer monitors (if available), figures, report."""

    monitors: bool = False
    figures: bool = True
    report: bool = True


class RunConfig(_Section):
    """The whole run: `runs/<name>/` under `out_dir`, and one section per pipeline stage."""

    name: str = "default"
    out_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("use letters, digits, '.', '_' or '-' (it names a directory)")
        return v

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


DEFAULT_TOML = """\
# thalweg train — the embedded default: an MLP on MNIST-1D with AdamW, linear warm-up +
# cosine decay, label smoothing and early stopping (about a minute on 2 CPU cores;
# ~90 % test accuracy).
name = "default"
out_dir = "runs"

[data]
name = "mnist1d"          # mnist1d | digits | linreg_toy | ill_conditioned | csv | npz
seed = 0
standardize = true        # input normalization with train-split statistics
options = { num_samples = 20000 }

[model]
name = "mlp"              # linear | mlp | cnn1d
width = 512
depth = 2
activation = "relu"
norm = "none"
dropout = 0.2

[init]
rule = "kaiming_uniform"

[optimizer]               # any name from `thalweg optimizers`, plus its hyperparameters
name = "adamw"
lr = 0.005
weight_decay = 0.05
state_dtype = "fp32"      # fp32 | bf16 | int8: how the optimizer stores its state (docs/memory.md)

[schedule]
name = "warmup_cosine"    # constant | cosine | warmup_cosine | step | exponential | polynomial
warmup_fraction = 0.05
final_factor = 0.01

[regularization]
label_smoothing = 0.1
clip_norm = 5.0

[regularization.early_stopping]
enabled = true
patience = 8

[train]
epochs = 40
batch_size = 256
seed = 0
num_threads = 1           # small models train fastest single-threaded
eval_every = 0            # steps between validations; 0 = once per epoch
checkpoint_every = 0      # steps between checkpoints; 0 = once per epoch
keep_checkpoints = 3
best_metric = "auto"      # val_accuracy for classification, val_loss for regression
nonfinite_patience = 3
rollback_lr_factor = 0.1

[diagnostics]
figures = true
report = true
"""


def _validate_optimizer(cfg: RunConfig) -> None:
    """Check optimizer name and hyperparameters against the registry schema."""
    from thalweg.optim import registry

    opt = cfg.optimizer
    try:
        info = registry.get(opt.name)
    except ValueError as e:
        raise ConfigError("optimizer", "name", opt.name, str(e)) from None
    for key, value in opt.hyperparameters().items():
        try:
            hp = info.hyperparameter(key)
        except KeyError:
            known = ", ".join(h.name for h in info.hyperparameters)
            raise ConfigError(
                "optimizer", key, value, f"{info.name} has no such hyperparameter; it takes: {known}"
            ) from None
        problem = _check_hparam(hp, value)
        if problem:
            raise ConfigError("optimizer", key, value, problem)


def _check_hparam(hp: Any, value: Any) -> str | None:
    """The registry's own check (`Hyperparameter.check`), worded for a TOML file."""
    from thalweg.optim.registry import HyperparameterError

    try:
        hp.check(value)
    except HyperparameterError as e:
        problem = e.problem + (f" ({e.note})" if e.note else "") if e.where == hp.name else str(e)
        return problem.replace("≥", ">=").replace("≤", "<=")
    return None


def quoted_number(value: Any) -> bool:
    """True for a string that spells a number ("64", "1e-3"): the config refuses those
    everywhere rather than guessing whether the quotes were meant."""
    if not isinstance(value, str):
        return False
    try:
        float(value.strip())
    except ValueError:
        return False
    return bool(value.strip())


def _from_validation_error(err: ValidationError, raw: dict[str, Any]) -> ConfigError:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    section = ".".join(loc[:-1])
    field = loc[-1] if loc else "?"
    value = first.get("input")
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    elif first["type"] == "missing":
        value = None
    elif quoted_number(value):
        problem = f"a number in quotes; write a number: {field} = {value.strip()}"
    elif isinstance(value, bool) and first["type"] in ("int_type", "float_type"):
        problem = f"expected a number, not {str(value).lower()}"
    more = len(err.errors()) - 1
    if more:
        problem += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(section, field, value, problem)


def parse_config(data: dict[str, Any], *, check_optimizer: bool = True) -> RunConfig:
    """Validate a config dict (as read from TOML) into a :class:`RunConfig`."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise _from_validation_error(e, data) from None
    if check_optimizer:
        _validate_optimizer(cfg)
        _validate_combinations(cfg)
    return cfg


def _validate_combinations(cfg: RunConfig) -> None:
    """Settings the loop could not honour together are refused, never silently ignored."""
    from thalweg.optim import registry

    info = registry.get(cfg.optimizer.name)
    if cfg.optimizer.state_dtype != "fp32" and "state_dtype" not in info.options:
        raise ConfigError("optimizer", "state_dtype", cfg.optimizer.state_dtype,
                          f"{info.name} keeps its own state layout; low-precision state is for the "
                          "flat optimizers (sgd, adam, adamw, rmsprop, adagrad, adadelta, …)")
    if info.needs_closure:
        for key in ("clip_norm", "clip_value"):
            value = getattr(cfg.regularization, key)
            if value is not None:
                raise ConfigError(
                    "regularization", key, value,
                    f"{info.name} computes its own gradients inside step(closure), so the loop "
                    "cannot clip them; remove it (or use a first-order optimizer)")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing, non-UTF-8 or malformed file is one ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", "config", str(p), "no such file" if not p.exists() else "not a file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError("", "config", str(p), f"not UTF-8 text (byte 0x{raw[e.start]:02x} on "
                          f"line {line}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", "config", str(p), f"not valid TOML: {e}") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML config (or the embedded default when `path` is None) and validate it."""
    data = tomllib.loads(DEFAULT_TOML) if path is None else read_config_file(path)
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as TOML (unset model fields are left out)."""
    d = cfg.model_dump(mode="json")
    d["model"] = {k: v for k, v in d["model"].items() if v is not None}
    d["regularization"] = {k: v for k, v in d["regularization"].items() if v is not None}
    d["train"] = {k: v for k, v in d["train"].items() if v is not None}
    return tomli_w.dumps(d)

