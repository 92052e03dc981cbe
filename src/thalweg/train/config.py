"""The run configuration: one TOML file, validated by pydantic before anything runs.

Every section forbids unknown keys; any error becomes one :class:`ConfigError` that names the
section, the field and the offending value.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thalweg.train.config_errors import from_validation_error, quoted_number
from thalweg.train.config_text import (
    ConfigError,
    optimizer_lines,
    read_config,
    read_config_file,
    render,
)

__all__ = [
    "DEFAULT_RUN",
    "DEFAULT_TOML",
    "ConfigError",
    "DataConfig",
    "DiagnosticsConfig",
    "DistributedConfig",
    "EarlyStoppingConfig",
    "InitConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RegularizationConfig",
    "RunConfig",
    "ScheduleConfig",
    "Section",
    "TrainConfig",
    "config_toml",
    "dump_config",
    "from_validation_error",
    "load_config",
    "lr_notice",
    "parse_config",
    "quoted_number",
    "read_config",
    "read_config_file",
    "safe_run_name",
    "validate_optimizer",
]


class Section(BaseModel):
    """A strict config section: unknown keys, quoted numbers and inf/nan are refused."""

    # strict: a number in quotes ("64", "1e-3") is refused, never coerced; no inf/nan anywhere
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                              allow_inf_nan=False)


_SEED: dict[str, Any] = {"ge": 0, "lt": 2**63}  # torch.manual_seed's range, with room for offsets
_COUNT = 10**9  # a cap on step counts and intervals: finite, and far above any real run


def safe_run_name(v: str) -> str:
    """A run name that is one plain directory name (the `name` check of every run config)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
        raise ValueError("use letters, digits, '.', '_' or '-' (it names a directory)")
    return v


class DataConfig(Section):
    """Which dataset, split seed and input normalization (statistics from the train split)."""

    name: str = Field(default="mnist1d", description="mnist1d | digits | linreg_toy | ill_conditioned | "
                      "csv | npz (your own files: docs/data.md)")
    seed: int = Field(default=0, description="the split (and data generation) seed", **_SEED)
    standardize: bool = Field(default=True, description="input normalization with train-split statistics")
    options: dict[str, Any] = Field(default_factory=dict, description="the dataset's own options (docs/data.md)")


class ModelConfig(Section):
    """A reference model from `thalweg.models`; unset fields keep the model's own defaults."""

    name: Literal["linear", "mlp", "cnn1d", "cnn2d", "gru"] = "mlp"
    # sizes are capped loosely here; what a size costs is estimated before a run starts
    width: int | None = Field(default=None, ge=1, le=2**31, description="hidden units (mlp: unset 128; gru: per direction, unset 6)")
    depth: int | None = Field(default=None, ge=0, le=1000, description="hidden layers; unset: 2")
    activation: str | None = Field(default=None, description="relu | gelu | tanh | sigmoid; unset: relu")
    norm: str | None = Field(default=None, description="none | batch | layer | weight; unset: none")
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0, description="unset: 0")
    channels: int | None = Field(default=None, ge=1, le=2**31, description="cnn1d/cnn2d channels; unset: 32")
    kernel_size: int | None = Field(default=None, ge=1, le=2**20, description="cnn kernel; unset: 5 (cnn1d), 3 (cnn2d)")

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


class InitConfig(Section):
    """Weight initialization rule applied before training ("default" keeps torch's), the bias
    fill, and which parameters stay at their initial values (`freeze`: name prefixes)."""

    rule: Literal[
        "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
        "orthogonal", "lsuv", "normal", "zeros", "constant",
    ] = "default"
    std: float = Field(default=0.01, gt=0.0, description="for rule = normal")
    value: float = Field(default=0.0, description="for rule = constant")
    bias: float = Field(default=0.0, description="every bias starts at this value")
    freeze: list[str] = Field(default_factory=list, description="parameter-name prefixes kept at their init")


class OptimizerConfig(BaseModel):
    """Any registry optimizer by name; the other keys are its hyperparameters, except
    `state_dtype`: how a flat optimizer stores its state (docs/memory.md)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(default="adamw", description="any name from `thalweg optimizers`")
    state_dtype: Literal["fp32", "bf16", "int8"] = Field(
        default="fp32", description="how a flat optimizer stores its state (docs/memory.md)")

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def memory_options(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer besides its hyperparameters."""
        return {} if self.state_dtype == "fp32" else {"state_dtype": self.state_dtype}


class ScheduleConfig(Section):
    """Learning-rate schedule over optimizer steps; its peak is the optimizer's `lr`."""

    name: Literal["constant", "cosine", "warmup_cosine", "step", "exponential", "polynomial"] = (
        "warmup_cosine"
    )
    warmup_fraction: float = Field(default=0.05, ge=0.0, lt=1.0, description="share of the steps warming up")
    final_factor: float = Field(default=0.01, ge=0.0, le=1.0, description="last lr / peak lr (cosine, polynomial)")
    step_epochs: int = Field(default=10, ge=1, le=_COUNT, description="epochs between decays (step)")
    gamma: float = Field(default=0.5, gt=0.0, le=1.0, description="decay factor (step, exponential)")
    power: float = Field(default=1.0, gt=0.0, le=100.0, description="exponent (polynomial)")


class EarlyStoppingConfig(Section):
    """Stop when the best-metric has not improved for `patience` evaluations."""

    enabled: bool = True
    patience: int = Field(default=5, ge=1, le=_COUNT, description="evaluations without improvement")
    min_delta: float = Field(default=0.0, ge=0.0, description="the least change that counts as one")


class RegularizationConfig(Section):
    """Explicit penalties, label smoothing, mixup, gradient clipping and early stopping."""

    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="classification only")
    l1: float = Field(default=0.0, ge=0.0, description="L1 penalty on the weights (not biases)")
    l2: float = Field(default=0.0, ge=0.0, description="L2 penalty in the loss (not decoupled weight decay)")
    mixup_alpha: float = Field(default=0.0, ge=0.0, le=1000.0, description="Beta(α, α) mixup; 0 = off")
    clip_norm: float | None = Field(default=None, gt=0.0, description="clip the global gradient norm; unset: off")
    clip_value: float | None = Field(default=None, gt=0.0, description="clip each gradient entry; unset: off")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class TrainConfig(Section):
    """Epochs, batching, seeds, evaluation/checkpoint intervals and the non-finite guard."""

    epochs: int = Field(default=20, ge=1, le=10**6)
    batch_size: int = Field(default=128, ge=1, le=2**31)
    eval_batch_size: int = Field(default=1024, ge=1, le=2**31)
    seed: int = Field(default=0, description="weights, batch order, dropout", **_SEED)
    eval_every: int = Field(default=0, ge=0, le=_COUNT, description="steps between validations; 0 = once per epoch")
    log_every: int = Field(default=50, ge=1, le=_COUNT, description="steps per metrics.jsonl record")
    checkpoint_every: int = Field(default=0, ge=0, le=_COUNT, description="steps between checkpoints; 0 = once per epoch")
    keep_checkpoints: int = Field(default=3, ge=1, le=10**4, description="newest checkpoints kept")
    best_metric: Literal["auto", "val_loss", "val_accuracy"] = Field(
        default="auto", description="auto: val_accuracy for classification, val_loss for regression")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, le=4096, description="torch threads; unset: torch's choice")
    nonfinite_patience: int = Field(default=3, ge=1, le=_COUNT, description="NaN/inf steps in a row before a rollback")
    rollback_lr_factor: float = Field(default=0.1, gt=0.0, le=1.0, description="lr × this after a rollback")
    max_rollbacks: int = Field(default=1, ge=0, le=10**4, description="then the run stops (exit code 3)")


class DistributedConfig(Section):
    """How `torchrun` ranks split the model (one process ignores this section)."""

    strategy: Literal["ddp", "fsdp2"] = Field(
        default="ddp", description="ddp: every rank holds the model, gradients all-reduced (matrix rules: one "
        "owner rank per matrix); fsdp2: parameters, gradients and optimizer state sharded (fully_shard), "
        "checkpoints through torch.distributed.checkpoint")
    timeout_s: float = Field(default=600.0, gt=0.0, le=86400.0, description="a collective (all-reduce, "
                             "checkpoint barrier) waiting longer than this fails the run instead of hanging on "
                             "a lost rank")


class DiagnosticsConfig(Section):
    """What to record beyond losses: monitors, curvature, figures, report, TensorBoard, MLflow."""

    monitors: bool = Field(default=False, description="per-layer gradient norms, dead units → monitors.jsonl")
    curvature_every: int = Field(default=0, ge=0, le=_COUNT, description="steps between λ_max probes (a "
                                 "multiple of log_every; 512 training rows); 0 = off")
    figures: bool = Field(default=True, description="figures/*.png")
    report: bool = Field(default=True, description="report.html, the quick diagnosis first")
    tensorboard: Literal["auto", True, False] = Field(default="auto", description="event files in tensorboard/; auto: "
                                                "on when the tensorboard package is installed")
    mlflow: str = Field(default="", description='an MLflow tracking URI ("sqlite:///mlflow.db", '
                        '"http://host:5000"); empty: off')

    @field_validator("tensorboard", mode="before")
    @classmethod
    def _on_off_auto(cls, v: Any) -> Any:
        if v != "auto" and not isinstance(v, bool):
            raise ValueError('expected true, false or "auto"')
        return v


class RunConfig(Section):
    """The whole run: `runs/<name>/` under `out_dir`, and one section per pipeline stage."""

    name: str = Field(default="default", description="the run directory runs/<name>/")
    out_dir: str = Field(default="runs", description="where run directories go")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return safe_run_name(v)

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


_HEADER = """\
# thalweg train — the embedded default: an MLP on MNIST-1D with AdamW, linear warm-up +
# cosine decay, label smoothing and early stopping (about a minute on 2 CPU cores;
# ~90 % test accuracy). Every field is listed with what it means; unset ones are comments.
"""

#: the embedded default run (`thalweg train` with no config); everything else is the models' default
DEFAULT_RUN: dict[str, Any] = {
    "data": {"name": "mnist1d", "options": {"num_samples": 20000}},
    "model": {"name": "mlp", "width": 512, "depth": 2, "activation": "relu", "norm": "none", "dropout": 0.2},
    "init": {"rule": "kaiming_uniform"},
    "optimizer": {"name": "adamw", "lr": 0.005, "weight_decay": 0.05},
    "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.05, "final_factor": 0.01},
    "regularization": {"label_smoothing": 0.1, "clip_norm": 5.0, "early_stopping": {"patience": 8}},
    "train": {"epochs": 40, "batch_size": 256, "num_threads": 1},
}


def config_toml(values: dict[str, Any] | None = None) -> str:
    """`values` (default: the embedded default run) as commented TOML listing every field."""
    return render(RunConfig, DEFAULT_RUN if values is None else values, header=_HEADER,
                  extra=optimizer_lines)


def validate_optimizer(opt: OptimizerConfig, section: str = "optimizer") -> None:
    """Check an optimizer section's name and hyperparameters against the registry schema
    (errors name `section`: `[optimizer]` for the trainer, `[outer]` for meta runs)."""
    from thalweg.optim import registry

    try:
        info = registry.get(opt.name)
    except ValueError as e:
        raise ConfigError(section, "name", opt.name, str(e)) from None
    for key, value in opt.hyperparameters().items():
        try:
            hp = info.hyperparameter(key)
        except KeyError:
            known = ", ".join(h.name for h in info.hyperparameters)
            raise ConfigError(
                section, key, value, f"{info.name} has no such hyperparameter; it takes: {known}"
            ) from None
        problem = _check_hparam(hp, value)
        if problem:
            raise ConfigError(section, key, value, problem)


def _check_hparam(hp: Any, value: Any) -> str | None:
    """The registry's own check (`Hyperparameter.check`), worded for a TOML file."""
    from thalweg.optim.registry import HyperparameterError

    try:
        hp.check(value)
    except HyperparameterError as e:
        problem = e.problem + (f" ({e.note})" if e.note else "") if e.where == hp.name else str(e)
        return problem.replace("≥", ">=").replace("≤", "<=")
    return None


def parse_config(data: dict[str, Any], *, check_optimizer: bool = True) -> RunConfig:
    """Validate a config dict (as read from TOML) into a :class:`RunConfig`."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e) from None
    if check_optimizer:
        validate_optimizer(cfg.optimizer)
        _validate_combinations(cfg)
        _default_lr(cfg.optimizer)
    return cfg


def _default_lr(opt: OptimizerConfig) -> None:
    """A config that names no lr gets the rule's default lr (its registry entry's), written
    into the resolved config so config.toml says what the run used."""
    from thalweg.optim import registry

    info = registry.get(opt.name)
    extra = opt.model_extra
    if extra is not None and "lr" not in extra and info.default_lr is not None:
        extra["lr"] = info.default_lr


def lr_notice(opt: OptimizerConfig) -> str | None:
    """One line when [optimizer] lr looks carried over from another rule (e.g. name = "muon"
    with AdamW's 1e-3 or the default run's 0.005), pointing at `thalweg lr-find`."""
    from thalweg.optim import registry

    tuned = {DEFAULT_RUN["optimizer"]["lr"]: f"the default run's, tuned for {DEFAULT_RUN['optimizer']['name']}"}
    note = registry.lr_notice(opt.name, opt.hyperparameters().get("lr"), tuned)
    return None if note is None else f"[optimizer] {note}"


def _validate_combinations(cfg: RunConfig) -> None:
    """Settings the loop could not honour together are refused, never silently ignored."""
    from thalweg.optim import registry

    d = cfg.diagnostics
    if d.curvature_every and d.curvature_every % cfg.train.log_every:
        raise ConfigError("diagnostics", "curvature_every", d.curvature_every,
                          f"must be a multiple of [train] log_every = {cfg.train.log_every} (the probe "
                          "runs when a metrics record is written)")
    for key, pkg, on in (("tensorboard", "tensorboard", d.tensorboard is True), ("mlflow", "mlflow", bool(d.mlflow))):
        if on and importlib.util.find_spec(pkg) is None:
            raise ConfigError("diagnostics", key, getattr(d, key), f"the {pkg} package is not installed: "
                              f"pip install {pkg} (or turn it off)")
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


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML config (or the embedded default when `path` is None) and validate it."""
    return parse_config(read_config(path, DEFAULT_TOML, overrides))


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as TOML (unset model fields are left out)."""
    d = cfg.model_dump(mode="json")
    d["model"] = {k: v for k, v in d["model"].items() if v is not None}
    d["regularization"] = {k: v for k, v in d["regularization"].items() if v is not None}
    d["train"] = {k: v for k, v in d["train"].items() if v is not None}
    return tomli_w.dumps(d)


#: `thalweg train --print-config`: the default run with every field (generated from the models)
DEFAULT_TOML = config_toml()
