"""Bench configurations: the built-in suites and `bench.toml` files, validated by pydantic,
and the plan of studies they make (see :mod:`thalweg.bench.runner`).

A TOML bench names workloads (``"quadratic(condition_number=1000.0)"``), optimizers
(registry names, or the groups ``first-order``, ``second-order``, ``all``), extra named
submissions, the tuning budget (N trials × M studies, seeds for the re-runs, the
learning-rate sweep), the sampler and pruner, and optional target/budget overrides.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thalweg.bench import scoring, submissions, workloads
from thalweg.bench.runner import Plan
from thalweg.bench.submissions import Dim, Submission, SubmissionError
from thalweg.bench.workloads import Workload, WorkloadError
from thalweg.budget import MAX_SECONDS, STEP_FLOOR_S, time_problem
from thalweg.optim.registry import SearchDim
from thalweg.overrides import OverrideError
from thalweg.overrides import apply as apply_overrides

__all__ = ["SUITES", "BenchConfig", "BenchConfigError", "build_plans", "follow_up_for", "load_bench"]

SEED_PROBLEMS = ["rosenbrock", "quadratic", "linreg", "deep_linear"]
_COUNT = 10**9  # a cap on step and trial counts: finite, and far above any real bench (train's too)
#: a trial's least cost beyond its steps (ask, describe, tell, record: ~0.3 s measured with
#: `trials = 40`, `steps = 1` on 2 busy cores), a lower bound
_TRIAL_FLOOR_S = 0.05


class BenchConfigError(ValueError):
    """A bad bench configuration; the message names the file, field and value."""


class _Strict(BaseModel):
    # inf and nan (TOML has both) are no budget, target or r_max: refused naming the field
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DimSpec(_Strict):
    """One search dimension (see `thalweg.optim.registry.SearchDim`) and where it goes."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: Literal["float", "int", "choice"] = "float"
    choices: list[Any] = Field(default_factory=list)
    index: int | None = None
    one_minus: bool = False
    where: Literal["optimizer", "schedule", "config"] = "optimizer"

    def to_dim(self) -> Dim:
        return Dim(SearchDim(self.name, self.low, self.high, self.log, self.kind, tuple(self.choices),
                             self.index, self.one_minus), self.where)  # fmt: skip


class SubmissionSpec(_Strict):
    """A named submission: an optimizer, fixed hyperparameters, a space and a schedule."""

    optimizer: str
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: list[DimSpec] | None = None
    schedule: dict[str, Any] | None = None


class BudgetSpec(_Strict):
    steps: int | None = Field(default=None, ge=1, le=_COUNT)
    max_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    eval_every: int | None = Field(default=None, ge=1, le=_COUNT)


class BenchConfig(_Strict):
    """A whole bench; `thalweg bench run CONFIG.toml` reads one."""

    name: str = Field(default="bench", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    ruleset: Literal["external", "self", "calibrate"] = "external"
    workloads: list[str] = Field(min_length=1)
    optimizers: list[str] = Field(default_factory=lambda: ["first-order"])
    submissions: dict[str, SubmissionSpec] = Field(default_factory=dict)
    trials: int = Field(default=5, ge=1, le=_COUNT, description="N: quasi-random trials per study")
    studies: int = Field(default=2, ge=1, le=_COUNT, description="M: independent studies")
    seeds: int = Field(default=3, ge=0, le=_COUNT, description="re-runs of the best configuration")
    sensitivity_points: int = Field(default=5, ge=0, le=_COUNT)
    sensitivity_seeds: int = Field(default=2, ge=1, le=_COUNT)
    sampler: Literal["qmc", "tpe", "random"] = "qmc"
    pruner: Literal["none", "median"] = "none"
    budget_scale: float = Field(default=1.0, gt=0, le=1000.0)
    self_scale: float = Field(default=1.5, gt=0, le=1000.0, description="self-tuning budget factor")
    r_max: float = Field(default=scoring.R_MAX, gt=1)
    stop_at_target: bool = False
    #: what tuning optimizes and the chosen configuration is: time to the target (AlgoPerf),
    #: or the best metric (recipes).
    objective: Literal["time", "metric"] = "time"
    targets: dict[str, float] = Field(default_factory=dict)
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    config_space: dict[str, list[DimSpec]] = Field(default_factory=dict)
    #: calibrate: the target-setting baselines (AlgoPerf: AdamW, NadamW, Nesterov, heavy ball).
    baselines: list[str] = Field(default_factory=lambda: ["adamw", "sgd_nesterov"])

    # ----- resolution ----------------------------------------------------------------------
    def resolve_workloads(self) -> list[Workload]:
        out = []
        for ref in self.workloads:
            try:
                w = workloads.get(ref)
            except WorkloadError as e:
                raise BenchConfigError(f"bench {self.name!r}: workloads: {e}") from None
            b = self.budgets.get(w.key) or self.budgets.get(w.name)
            if self.budget_scale != 1.0:
                w = w.scaled(self.budget_scale)
            if b is not None:
                w = replace(w, step_budget=b.steps or w.step_budget,
                            max_seconds=b.max_seconds or w.max_seconds, eval_every=b.eval_every or w.eval_every)  # fmt: skip
            if w.step_budget > _COUNT:
                field = "budget_scale" if b is None or b.steps is None else f"budgets.{w.key}.steps"
                raise BenchConfigError(f"bench {self.name!r}: {field}: workload {w.key!r} would run "
                                       f"{w.step_budget:.3g} steps a trial (at most {_COUNT:.0e})")
            t = self.targets.get(w.key, self.targets.get(w.name))
            if t is not None:
                w = w.with_target(float(t), f"bench config {self.name!r}")
            if w.target is None and self.ruleset != "calibrate":
                raise BenchConfigError(
                    f"bench {self.name!r}: workload {w.key!r} has no stored target; set one under "
                    f"[targets] or compute it with `thalweg bench calibrate {w.key!r}`")  # fmt: skip
            out.append(w)
        return out

    def resolve_submissions(self) -> list[Submission]:
        names: list[str] = []
        for entry in self.optimizers if self.ruleset != "calibrate" else self.baselines:
            group = {"first-order": submissions.first_order, "second-order": submissions.second_order,
                     "all": lambda: submissions.first_order() + submissions.second_order()}.get(entry)  # fmt: skip
            for n in group() if group else [entry]:
                if n not in names:
                    names.append(n)
        out = []
        for n in names:
            try:
                if n in self.submissions:
                    s = self.submissions[n]
                    space = tuple(d.to_dim() for d in s.space) if s.space is not None else None
                    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in s.fixed.items()}
                    out.append(Submission(n, s.optimizer, fixed, space, s.schedule))
                elif n in BUILTIN_SUBMISSIONS:
                    out.append(BUILTIN_SUBMISSIONS[n]())
                else:
                    out.append(Submission(n, n))
            except SubmissionError as e:
                raise BenchConfigError(f"bench {self.name!r}: {e}") from None
        return out

    def for_workload(self, sub: Submission, w: Workload) -> Submission:
        """`sub` for workload `w`: its extra config dimensions (recipe search) added, weight
        decay dropped where the workload's objective must stay unregularized."""
        extra = tuple(d.to_dim() for d in self.config_space.get(w.key) or self.config_space.get(w.name) or ())
        self._check_config_space(w, extra)
        dims = sub.dims()
        if not w.weight_decay:
            dims = tuple(d for d in dims if not (d.where == "optimizer" and d.dim.name == "weight_decay"))
        if not extra and dims == sub.dims():
            return sub
        return replace(sub, space=dims + extra)


    def _check_config_space(self, w: Workload, dims: tuple[Dim, ...]) -> None:
        """Every config dimension of `w` applied at its ends (each choice) makes a valid
        `thalweg train` config — else every trial would crash: refused before any runs."""
        from thalweg.bench.trial import with_overrides

        for d in dims:
            if d.where != "config":
                continue
            q = d.dim
            values = list(q.choices) if q.kind == "choice" else [v for v in (q.low, q.high) if v is not None]
            for v in values:
                try:
                    with_overrides(w, {q.name: round(v) if q.kind == "int" else v})
                except ValueError as e:  # a ConfigError is a ValueError
                    raise BenchConfigError(f"bench {self.name!r}: config_space.{w.key}: {q.name} = {v!r}: {e}") from None


def _sgd_nesterov() -> Submission:
    from thalweg.bench.submissions import WARMUP, WEIGHT_DECAY

    space = (Dim(SearchDim("lr", 1e-3, 3.0, log=True)),
             Dim(SearchDim("momentum", 1e-3, 0.5, log=True, one_minus=True)),
             Dim(WEIGHT_DECAY), WARMUP)  # fmt: skip
    return Submission("sgd_nesterov", "sgd", {"nesterov": True, "momentum": 0.9}, space)


BUILTIN_SUBMISSIONS = {"sgd_nesterov": _sgd_nesterov}


def _cfg(name: str, low: float | None = None, high: float | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "low": low, "high": high, "where": "config", **kw}

SUITES: dict[str, dict[str, Any]] = {
    # every first-order optimizer on the seeds' problems, digits and the MNIST-1D MLP
    "quick": {"name": "quick", "workloads": [*SEED_PROBLEMS, "digits_logreg", "mnist1d_mlp"],
              "optimizers": ["first-order"], "trials": 6, "studies": 2, "seeds": 2,
              "sensitivity_points": 4, "sensitivity_seeds": 1},
    # the seeds' problems with every optimizer, second order included
    "seeds": {"name": "seeds", "workloads": SEED_PROBLEMS, "optimizers": ["all"], "trials": 8,
              "studies": 3, "seeds": 3},
    # MNIST-1D on the paper's protocol, MLP and CNN
    "mnist1d": {"name": "mnist1d", "workloads": ["mnist1d_mlp", "mnist1d_cnn"],
                "optimizers": ["first-order", "sgd_nesterov"], "trials": 10, "studies": 2, "seeds": 3},
    # recipe search on MNIST-1D (paper protocol): the model's width/channels, dropout, label
    # smoothing and norm searched with the optimizer, by TPE with median pruning, for accuracy
    "recipes": {"name": "recipes", "workloads": ["mnist1d_mlp", "mnist1d_cnn"], "optimizers": ["adamw"],
                "trials": 24, "studies": 1, "seeds": 3, "sensitivity_points": 0, "sampler": "tpe",
                "pruner": "median", "objective": "metric",
                "budgets": {"mnist1d_mlp": {"steps": 3600, "eval_every": 36},
                            "mnist1d_cnn": {"steps": 6120, "eval_every": 72}},
                "config_space": {
                    "mnist1d_mlp": [_cfg("model.width", 100, 512, log=True, kind="int"),
                                    _cfg("model.dropout", 0.0, 0.5),
                                    _cfg("regularization.label_smoothing", 0.0, 0.2)],
                    "mnist1d_cnn": [_cfg("model.channels", 25, 64, log=True, kind="int"),
                                    _cfg("model.dropout", 0.0, 0.3),
                                    _cfg("regularization.label_smoothing", 0.0, 0.15),
                                    _cfg("model.norm", kind="choice", choices=["none", "batch"])]}},
    "full": {"name": "full", "workloads": [*SEED_PROBLEMS, "digits_logreg", "mnist1d_mlp", "mnist1d_cnn"],
             "optimizers": ["all", "sgd_nesterov"], "trials": 10, "studies": 3, "seeds": 5},
}  # fmt: skip


def _error(where: str, err: ValidationError) -> BenchConfigError:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "?"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    return BenchConfigError(f"{where}: {loc} = {e.get('input')!r}: {msg}")


def load_bench(source: str | Path, **overrides: Any) -> BenchConfig:
    """A built-in suite by name, or a TOML file; `overrides` replace keys (dotted ones reach
    into tables: "targets.quadratic" — `thalweg bench run --set`); None leaves a key alone."""
    src = str(source)
    if src in SUITES:
        data, where = copy.deepcopy(SUITES[src]), f"suite {src!r}"
    else:
        p = Path(src)
        if not p.is_file():
            raise BenchConfigError(f"{src!r} is neither a suite ({', '.join(SUITES)}) nor a TOML file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise BenchConfigError(f"{p}: not valid TOML: {e}") from None
        data.setdefault("name", p.stem)
        where = str(p)
    try:
        apply_overrides(data, {k: v for k, v in overrides.items() if v is not None})
    except OverrideError as e:
        raise BenchConfigError(f"{where}: --set {e.section + '.' if e.section else ''}{e.field}: {e}") from None
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as e:
        raise _error(where, e) from None


def build_plans(cfg: BenchConfig) -> list[Plan]:
    """Every study of the bench, pair by pair (so follow-ups unlock early)."""
    plans: list[Plan] = []
    rs = cfg.ruleset
    for w in cfg.resolve_workloads():
        for base in cfg.resolve_submissions():
            sub = cfg.for_workload(base, w)

            def plan(phase: str, index: int, n: int, wl: Workload = w, sub: Submission = sub,
                     **kw: Any) -> Plan:  # fmt: skip
                name = f"{rs}/{phase}/{wl.key}/{sub.name}/{index}"
                return Plan(name, phase, rs, wl, sub, index, n, **kw)

            if rs == "self":
                scaled = w.scaled(cfg.self_scale)
                plans += [plan("self", k, 1, scaled, items=[({}, k)]) for k in range(cfg.studies)]
                continue
            plans += [plan("tune", k, cfg.trials, sampler=cfg.sampler) for k in range(cfg.studies)]
            if rs == "external":
                plans.append(plan("defaults", 0, 1, items=[({}, 0)]))
            if cfg.seeds:
                plans.append(plan("rerun", 0, cfg.seeds))
            dim = sub.sensitivity_dim()
            if rs == "external" and dim is not None and cfg.sensitivity_points:
                plans.append(plan("sensitivity", 0, cfg.sensitivity_points * cfg.sensitivity_seeds))
    _check_time(cfg, plans)
    return plans


def _check_time(cfg: BenchConfig, plans: list[Plan]) -> None:
    """Refuse, naming the field, a bench whose trials cannot all run in a year even at the
    loop's least per-step cost (`thalweg.budget`'s cap, as every command)."""
    by_phase: dict[str, float] = {}
    for p in plans:
        by_phase[p.phase] = by_phase.get(p.phase, 0.0) + p.n * (p.workload.step_budget * STEP_FLOOR_S + _TRIAL_FLOOR_S)
    phase = max(by_phase, key=by_phase.__getitem__)
    field = {"rerun": "seeds", "sensitivity": "sensitivity_points", "self": "studies",
             "defaults": "workloads"}.get(phase, "studies" if cfg.studies > cfg.trials else "trials")
    why = time_problem(sum(by_phase.values()), f"bench {cfg.name!r}", f"{field} = {getattr(cfg, field)!r}")
    if why is not None:
        raise BenchConfigError(f"bench {cfg.name!r}: {field}: {why}")


def follow_up_for(cfg: BenchConfig) -> Any:
    """The function that turns a pair's finished tuning into its re-runs and LR sweep."""

    def follow_up(plan: Plan, tuned: list[Plan]) -> list[tuple[dict[str, Any], int]]:
        best = scoring.best_record([r for p in tuned for r in p.done.values()], cfg.objective)
        if best is None:
            return []
        params = dict(best.get("params") or {})
        if plan.phase == "rerun":
            return [(params, 1000 + s) for s in range(cfg.seeds)]
        dim = plan.submission.sensitivity_dim()
        assert dim is not None
        lo, hi, k = dim.dim.low, dim.dim.high, cfg.sensitivity_points
        assert lo is not None and hi is not None
        grid = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / max(1, k - 1)) for i in range(k)]
        return [({**params, dim.param: v}, 2000 + s) for v in grid for s in range(cfg.sensitivity_seeds)]

    return follow_up

