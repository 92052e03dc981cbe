"""The `thalweg meta` configuration: one TOML file, validated before anything runs.

Sections: `[task]` (sinusoid or N-way K-shot), `[model]` (as `thalweg train`'s), `[inner]`
(the inner loop), `[outer]` (any registry optimizer), `[meta]` (methods, budget, evaluation,
checkpoints) and `[overrides.<method>]` (per-method inner steps / lrs / iterations). Every
error is a :class:`~thalweg.train.config.ConfigError` naming the section and field;
`build_tasks` and `make_learner` turn a config into task distributions and learners.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator

from thalweg import meta as M
from thalweg.losses import TaskLoss
from thalweg.train.config import (
    _COUNT,
    _SEED,
    ConfigError,
    ModelConfig,
    OptimizerConfig,
    Section,
    from_validation_error,
    read_config,
    safe_run_name,
    validate_optimizer,
)

__all__ = ["META_DEFAULT_TOML", "METHODS", "MetaRunConfig", "build_tasks", "dump_meta_config",
           "load_meta_config", "make_learner", "parse_meta_config"]

METHODS = ("maml", "fomaml", "reptile", "pretrained", "oracle")  # the default list
#: "scratch" is the untrained initialization, fine-tuned like the others (a floor to beat)
Method = Literal["maml", "fomaml", "reptile", "pretrained", "oracle", "scratch"]


class TaskConfig(Section):
    """The task distribution: sinusoid regression or N-way K-shot classification."""

    name: Literal["sinusoid", "fewshot"] = "sinusoid"
    k_shot: int = Field(default=10, ge=1, le=_COUNT)
    k_query: int = Field(default=10, ge=1, le=_COUNT)
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    dataset: str = "digits"
    dataset_seed: int = Field(default=0, **_SEED)
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    n_way: int = Field(default=5, ge=2, le=_COUNT)
    train_classes: list[int] = Field(default_factory=list)
    test_classes: list[int] = Field(default_factory=list)
    val_classes: list[int] = Field(default_factory=list)
    augment: Literal["none", "rotate", "reverse"] = "none"

    @field_validator("amplitude", "phase", "x_range", mode="before")
    @classmethod
    def _pair_from_list(cls, v: Any) -> Any:
        """TOML writes a pair as an array; the strict section takes only tuples."""
        return tuple(v) if isinstance(v, list) else v


class InnerConfig(Section):
    """The inner loop: steps of an elementwise optimizer (plain SGD by default) per task."""

    steps: int = Field(default=1, ge=0, le=_COUNT)
    lr: float = Field(default=0.01, gt=0.0)
    learn_lr: bool = False
    optimizer: str = "sgd"
    options: dict[str, Any] = Field(default_factory=dict)


class OverrideConfig(Section):
    """Per-method settings that replace the shared ones (Reptile wants more inner steps)."""

    inner_steps: int | None = Field(default=None, ge=0, le=_COUNT)
    inner_lr: float | None = Field(default=None, gt=0.0)
    outer_lr: float | None = Field(default=None, gt=0.0)
    iterations: int | None = Field(default=None, ge=1, le=_COUNT)


class MetaConfig(Section):
    """Which methods, how long, how evaluated, how checkpointed."""

    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1)
    iterations: int = Field(default=10000, ge=1, le=_COUNT)
    meta_batch: int = Field(default=25, ge=1, le=_COUNT)
    seed: int = Field(default=0, **_SEED)
    log_every: int = Field(default=100, ge=1, le=_COUNT)
    eval_every: int = Field(default=500, ge=1, le=_COUNT)
    val_tasks: int = Field(default=200, ge=1, le=_COUNT)
    val_steps: int = Field(default=1, ge=0, le=_COUNT)
    test_tasks: int = Field(default=600, ge=2, le=_COUNT)
    adapt_steps: int = Field(default=10, ge=0, le=_COUNT)
    checkpoint_every: int = Field(default=500, ge=1, le=_COUNT)
    keep_checkpoints: int = Field(default=3, ge=1, le=_COUNT)
    num_threads: int | None = Field(default=1, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    vectorize: Literal["auto", "vmap", "loop"] = "auto"
    fit_tasks: int = Field(default=3, ge=1, le=8)
    figures: bool = True

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a method twice")
        return v


class MetaRunConfig(Section):
    """The whole meta-learning run: `runs/<name>/` under `out_dir`."""

    name: str = "meta"
    out_dir: str = "runs"
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(width=40, depth=2, activation="relu"))
    inner: InnerConfig = Field(default_factory=InnerConfig)
    outer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3))
    meta: MetaConfig = Field(default_factory=MetaConfig)
    overrides: dict[Method, OverrideConfig] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return safe_run_name(v)

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def setting(self, method: str, key: str) -> Any:
        """`inner_steps`, `inner_lr`, `outer_lr` or `iterations` for `method` (its override or
        the shared value)."""
        o = self.overrides.get(method)  # type: ignore[call-overload]
        if o is not None and getattr(o, key) is not None:
            return getattr(o, key)
        shared = {"inner_steps": self.inner.steps, "inner_lr": self.inner.lr,
                  "outer_lr": self.outer.hyperparameters().get("lr"), "iterations": self.meta.iterations}
        return shared[key]

    def where(self, method: str, key: str) -> tuple[str, str]:
        """The (section, field) that sets `key` for `method`, for error messages."""
        o = self.overrides.get(method)  # type: ignore[call-overload]
        if o is not None and getattr(o, key, None) is not None:
            return f"overrides.{method}", key
        return {"inner_steps": ("inner", "steps"), "inner_lr": ("inner", "lr"),
                "outer_lr": ("outer", "lr"), "iterations": ("meta", "iterations")}[key]


META_DEFAULT_TOML = """\
# thalweg meta — the embedded default: the MAML paper's 10-shot sinusoid regression
# (A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[-5, 5]; MLP 1-40-40-1 ReLU), every method plus the
# pretrained baseline and an oracle; a few minutes on 2 CPU cores.
name = "meta"
out_dir = "runs"

[task]
name = "sinusoid"         # sinusoid | fewshot
k_shot = 10               # support points per task
k_query = 10              # query points per task

[model]
name = "mlp"
width = 40
depth = 2
activation = "relu"

[inner]                   # adapt to one task: `steps` updates on its support set
steps = 1
lr = 0.01
learn_lr = false          # true: learn a step size per weight (Meta-SGD)
optimizer = "sgd"         # or any elementwise registry optimizer, e.g. "adam"

[outer]                   # any name from `thalweg optimizers`, plus its hyperparameters
name = "adam"
lr = 0.001

[meta]
methods = ["maml", "fomaml", "reptile", "pretrained", "oracle"]
iterations = 10000        # meta-updates per method
meta_batch = 25           # tasks per meta-update
seed = 0
eval_every = 500          # meta-validation (best weights kept per method)
val_tasks = 200
val_steps = 1             # inner steps before the validation query loss
test_tasks = 600          # the adaptation table: mean over these tasks
adapt_steps = 10          # table and figure: 0 … adapt_steps inner steps
checkpoint_every = 500
num_threads = 1

[overrides.reptile]       # Reptile needs several inner steps to differ from joint training
inner_steps = 5
"""


def parse_meta_config(data: dict[str, Any]) -> MetaRunConfig:
    """Validate a config dict (as read from TOML) into a :class:`MetaRunConfig`."""
    try:
        cfg = MetaRunConfig.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e) from None
    from thalweg.optim import registry

    validate_optimizer(cfg.outer, "outer")  # the trainer's optimizer check, under [outer]
    info = registry.get(cfg.outer.name)
    if info.needs_closure or info.needs_model:
        raise ConfigError("outer", "name", cfg.outer.name, "the outer optimizer must take plain "
                          "gradient steps (no closure, no model)")
    if "oracle" in cfg.meta.methods and cfg.task.name != "sinusoid":
        raise ConfigError("meta", "methods", cfg.meta.methods,
                          "the oracle (which is given the task's parameters) exists for sinusoid only")
    return cfg


def load_meta_config(path: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> MetaRunConfig:
    """Read a TOML config (or the embedded default when `path` is None) and validate it."""
    return parse_meta_config(read_config(path, META_DEFAULT_TOML, overrides))


def dump_meta_config(cfg: MetaRunConfig) -> str:
    """The resolved config as TOML (unset fields left out)."""
    d = cfg.model_dump(mode="json")
    d["model"] = {k: v for k, v in d["model"].items() if v is not None}
    d["meta"] = {k: v for k, v in d["meta"].items() if v is not None}
    d["overrides"] = {m: {k: v for k, v in o.items() if v is not None} for m, o in d["overrides"].items()}
    return tomli_w.dumps(d)


_FIELDS = {"k_shot": ("task", "k_shot"), "k_query": ("task", "k_query"), "n_way": ("task", "n_way"),
           "classes": ("task", "train_classes"), "train_classes": ("task", "train_classes"),
           "test_classes": ("task", "test_classes"), "val_classes": ("task", "val_classes"),
           "augment": ("task", "augment"), "amplitude": ("task", "amplitude"),
           "phase": ("task", "phase"), "x_range": ("task", "x_range"),
           "learn_inner_lr": ("inner", "learn_lr"), "inner.optimizer": ("inner", "optimizer"),
           "inner": ("inner", "optimizer"), "vectorize": ("meta", "vectorize")}


def _config_error(e: M.MetaError, cfg: MetaRunConfig, method: str | None = None) -> ConfigError:
    """A library MetaError re-addressed to the config section and field that caused it."""
    if e.field in ("inner_steps", "inner_lr") and method:
        section, field = cfg.where(method, e.field)
    else:
        section, field = _FIELDS.get(e.field, ("", e.field))
    return ConfigError(section, field, e.value, e.problem + (f" (method {method})" if method else ""))


def build_tasks(cfg: MetaRunConfig) -> dict[str, Any]:
    """The meta-train, meta-validation and meta-test distributions of `[task]`."""
    t = cfg.task
    try:
        if t.name == "sinusoid":
            d = M.Sinusoid(t.k_shot, t.k_query, t.amplitude, t.phase, t.x_range)
            return {"train": d, "val": d, "test": d}
        from thalweg.data import load_dataset

        try:
            splits = load_dataset(t.dataset, seed=t.dataset_seed, **t.dataset_options)
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise ConfigError("task", "dataset", t.dataset, str(e)) from None
        if splits.task != "classification":
            raise ConfigError("task", "dataset", t.dataset, "few-shot tasks need a classification dataset")
        n = splits.num_classes
        train = t.train_classes or [c for c in range(n // 2) if c not in t.test_classes + t.val_classes]
        test = t.test_classes or [c for c in range(n) if c not in train + t.val_classes]
        return M.fewshot_distributions(splits, n_way=t.n_way, k_shot=t.k_shot, k_query=t.k_query,
                                       train_classes=train, test_classes=test,
                                       val_classes=t.val_classes, augment=t.augment)
    except M.MetaError as e:
        raise _config_error(e, cfg) from None


def make_learner(cfg: MetaRunConfig, method: str, tasks: dict[str, Any]) -> M.MetaLearner:
    """A fresh model and learner for `method` (the oracle's model also sees A and φ)."""
    from thalweg.models import build_model

    d = tasks["train"]
    in_shape = (d.in_shape[0] + 2,) if method == "oracle" else d.in_shape
    try:
        model = build_model(cfg.model.name, in_shape, d.out_features, **cfg.model.kwargs())
    except (ValueError, TypeError) as e:
        raise ConfigError("model", cfg.model.name, cfg.model.kwargs(), str(e)) from None
    loss = TaskLoss(d.task)
    inner = cfg.inner.optimizer if (cfg.inner.optimizer != "sgd" or cfg.inner.options) else None
    kw: dict[str, Any] = {"inner_steps": cfg.setting(method, "inner_steps"),
                          "inner_lr": cfg.setting(method, "inner_lr"),
                          "vectorize": {"auto": "auto", "vmap": True, "loop": False}[cfg.meta.vectorize]}
    try:
        if inner is not None:
            kw["inner"] = M.inner_optimizer(inner, kw["inner_lr"], **cfg.inner.options)
        if method in ("maml", "fomaml"):
            return M.MAML(model, loss, first_order=method == "fomaml",
                          learn_inner_lr=cfg.inner.learn_lr, **kw)
        if method == "reptile":
            return M.Reptile(model, loss, **kw)
        return M.Pretrained(model, loss, **kw)
    except M.MetaError as e:
        raise _config_error(e, cfg, method) from None
