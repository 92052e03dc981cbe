"""Bench configurations: the built-in suites and `bench.toml` files, validated by pydantic,
and the plan of studies they make (see :mod:`thalweg.bench.harness.runner`).

A TOML bench names workloads (registered ones, ``"quadratic(condition_number=1000.0)"``, and
`thalweg train` configs, ``"my.toml"``), code of the user's own (`code`, which the bench runs),
optimizers (registry names, the built-in submissions ``nadamw``, ``sgd_nesterov``,
``adamw_constant``, or the groups ``first-order``, ``second-order``, ``all``), extra named
submissions, the tuning budget (N trials × M studies as AlgoPerf: 5 × 3; per study its chosen
configuration confirmed on fresh seeds; re-runs; the learning-rate sweep), the sampler and
pruner, and optional target/budget overrides.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thalweg.bench import scoring, submissions
from thalweg.bench.harness.runner import Plan
from thalweg.bench.submissions import Dim, Submission, SubmissionError
from thalweg.bench.tasks.workloads import Workload, WorkloadError
from thalweg.budget import MAX_SECONDS, STEP_FLOOR_S, time_problem
from thalweg.optim.registry import SearchDim
from thalweg.overrides import OverrideError
from thalweg.overrides import apply as apply_overrides

__all__ = ["SUITES", "BenchConfig", "BenchConfigError", "build_plans", "follow_up_for", "load_bench"]

SEED_PROBLEMS = ["rosenbrock", "quadratic", "linreg", "deep_linear"]
REAL = ["char_lm", "mnist1d_cnn", "mnist1d_gru", "digits_cnn"]
#: the target-setting baselines (AlgoPerf's AdamW, NAdamW and Nesterov)
BASELINES = ["adamw", "nadamw", "sgd_nesterov"]
#: the standard suite's optimizers: the baselines, RAdam (the Adam family), Lion, schedule-free
#: AdamW, two matrix rules, and AdamW under a constant lr (what the decay is worth) — what the
#: literature table needs, within an hour of two cores
STANDARD = [*BASELINES, "radam", "lion", "schedulefree_adamw", "muon", "soap", "adamw_constant"]
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
    workloads: list[str] = Field(default_factory=list)
    #: workloads of the user's own Python code ("my_bench.py:factory", "pkg.mod:factory"):
    #: imported and run by the bench (and its workers), exactly as named
    code: list[str] = Field(default_factory=list)
    optimizers: list[str] = Field(default_factory=lambda: ["first-order"])
    submissions: dict[str, SubmissionSpec] = Field(default_factory=dict)
    trials: int = Field(default=5, ge=1, le=_COUNT, description="N: quasi-random trials per study (AlgoPerf: 5)")
    studies: int = Field(default=3, ge=1, le=_COUNT, description="M: independent studies (AlgoPerf: 3)")
    confirm_seeds: int = Field(default=2, ge=0, le=_COUNT, description="fresh seeds per study's chosen configuration")
    seeds: int = Field(default=0, ge=0, le=_COUNT, description="re-runs of the overall chosen configuration")
    sensitivity_points: int = Field(default=0, ge=0, le=_COUNT)
    sensitivity_seeds: int = Field(default=1, ge=1, le=_COUNT)
    #: added to every seed (trials, samplers): an independent run of the same bench
    seed: int = Field(default=0, ge=0, le=10**6)
    sampler: Literal["qmc", "tpe", "random"] = "qmc"
    pruner: Literal["none", "median"] = "none"
    budget_scale: float = Field(default=1.0, gt=0, le=1000.0)
    self_scale: float = Field(default=1.5, gt=0, le=1000.0, description="self-tuning budget factor")
    r_max: float = Field(default=scoring.R_MAX, gt=1)
    #: a trial that reaches the target stops there (scoring needs nothing after it)
    stop_at_target: bool = True
    #: what tuning optimizes and the chosen configuration is: time to the target (AlgoPerf),
    #: the best metric (recipes), or the end-of-budget metric (calibration).
    objective: Literal["time", "metric", "final"] = "time"
    targets: dict[str, float] = Field(default_factory=dict)
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    config_space: dict[str, list[DimSpec]] = Field(default_factory=dict)
    #: calibrate: the target-setting baselines and the share of the step budget they train
    baselines: list[str] = Field(default_factory=lambda: list(BASELINES))
    calibration_fraction: float = Field(default=0.25, gt=0, le=1)

    # ----- resolution ----------------------------------------------------------------------
    def resolve_workloads(self, base: Path | None = None, calibrated: dict[str, Any] | None = None) -> list[Workload]:
        """The workloads with budgets and targets; `calibrated`: targets from a calibration
        record (`thalweg bench calibrate`) for workloads without a stored one."""
        from thalweg.bench.tasks import loader

        if not self.workloads and not self.code:
            raise BenchConfigError(f"bench {self.name!r}: no workloads (set `workloads`, `code`, or --workload)")
        out = []
        refs = [(r, False) for r in self.workloads] + [(r, True) for r in self.code]
        for ref, code in refs:
            try:
                w = loader.load_code(ref, base) if code else loader.load(ref, base)
            except WorkloadError as e:
                raise BenchConfigError(f"bench {self.name!r}: {'code' if code else 'workloads'}: {e}") from None
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
            elif w.target is None and calibrated and w.key in calibrated:
                w = w.with_target(float(calibrated[w.key]["value"]), calibrated[w.key].get("source", ""))
            if w.target is None and self.ruleset != "calibrate" and self.objective == "time":
                raise BenchConfigError(
                    f"bench {self.name!r}: workload {w.key!r} has no target; compute it with "
                    f"`thalweg bench calibrate {_quote(ref, code)}` (same -o), or set [targets] \"{w.key}\" = VALUE")  # fmt: skip
            if self.ruleset == "calibrate":
                w = w.scaled(self.calibration_fraction)
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
                else:
                    out.append(submissions.builtin(n) or Submission(n, n))
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
        from thalweg.bench.harness.trial import with_overrides

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


def _quote(ref: str, code: bool) -> str:
    import shlex

    return f"--code {shlex.quote(ref)}" if code else shlex.quote(ref)


def _cfg(name: str, low: float | None = None, high: float | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "low": low, "high": high, "where": "config", **kw}

SUITES: dict[str, dict[str, Any]] = {
    # the default: the target-setting baselines, Muon, Lion and schedule-free AdamW on the two
    # CNNs (real: digits and MNIST-1D) — fewer optimizers and workloads than `standard`, not
    # fewer trials; the toy problems are `seeds`'. AlgoPerf's studies of 5 trials, but 8 of them
    # (7.4 min on 2 cores): at AlgoPerf's 3 a run's best is ahead of each of its worst third in
    # about 4 runs of 10, at 8 in about 8 (benchmarks/bench_replicates.py, docs/bench.md) — the
    # same quantity (what 5 tuning trials reach) measured more precisely. Four cheap workloads
    # (the MNIST-1D MLP and digits logistic regression added) were measured and not kept: runs
    # agreed less (Kendall τ 0.34 on average, 0.63 with these two).
    "quick": {"name": "quick", "workloads": ["digits_cnn", "mnist1d_cnn"],
              "optimizers": [*BASELINES, "muon", "lion", "schedulefree_adamw"], "studies": 8,
              "sensitivity_points": 4},
    # the README's suite: every real workload (the character transformer included), nine
    # optimizers (the toy problems are `seeds`')
    "standard": {"name": "standard", "workloads": REAL, "optimizers": STANDARD},
    # every first-order rule, the built-in submissions, every workload
    "full": {"name": "full", "workloads": [*REAL, "digits_logreg", "mnist1d_mlp", *SEED_PROBLEMS],
             "optimizers": [*BASELINES, "adamw_constant", "first-order"], "sensitivity_points": 5},
    # the seeds' problems with every optimizer, second order included
    "seeds": {"name": "seeds", "workloads": SEED_PROBLEMS, "optimizers": ["all"]},
    # MNIST-1D on the paper's protocol: MLP, CNN and GRU
    "mnist1d": {"name": "mnist1d", "workloads": ["mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru"],
                "optimizers": [*BASELINES, "first-order"]},
    # recipe search on MNIST-1D (paper protocol): the model's width/channels, dropout, label
    # smoothing and norm searched with the optimizer, by TPE with median pruning, for accuracy
    "recipes": {"name": "recipes", "workloads": ["mnist1d_mlp", "mnist1d_cnn"], "optimizers": ["adamw"],
                "trials": 24, "studies": 1, "confirm_seeds": 0, "seeds": 3, "sampler": "tpe",
                "pruner": "median", "objective": "metric", "stop_at_target": False,
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
}  # fmt: skip

#: `thalweg bench calibrate`: each baseline tuned with 3 studies × 20 trials (4× a submission's
#: 15) at a quarter of the step budget (1 / r_max: a submission r_max times slower than the
#: tuned baselines still reaches the target), its best configuration re-run over 10 seeds
CALIBRATION = {"trials": 20, "studies": 3, "seeds": 10, "confirm_seeds": 0, "objective": "final",
               "stop_at_target": False}


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


def build_plans(cfg: BenchConfig, base: Path | None = None, calibrated: dict[str, Any] | None = None) -> list[Plan]:
    """Every study of the bench, pair by pair (so follow-ups unlock early)."""
    plans: list[Plan] = []
    rs = cfg.ruleset
    subs = cfg.resolve_submissions()
    for w in cfg.resolve_workloads(base, calibrated):
        for base_sub in subs:
            sub = cfg.for_workload(base_sub, w)

            def plan(phase: str, index: int, n: int, wl: Workload = w, sub: Submission = sub,
                     **kw: Any) -> Plan:  # fmt: skip
                name = f"{rs}/{phase}/{wl.key}/{sub.name}/{index}"
                return Plan(name, phase, rs, wl, sub, index, n, seed=cfg.seed, **kw)

            if rs == "self":
                scaled = w.scaled(cfg.self_scale)
                plans += [plan("self", k, 1, scaled, items=[({}, cfg.seed + k)]) for k in range(cfg.studies)]
                continue
            plans += [plan("tune", k, cfg.trials, sampler=cfg.sampler) for k in range(cfg.studies)]
            if rs == "external":
                plans.append(plan("defaults", 0, 1, items=[({}, cfg.seed)]))
                if cfg.confirm_seeds:
                    plans += [plan("confirm", k, cfg.confirm_seeds) for k in range(cfg.studies)]
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
    if not by_phase:
        return
    phase = max(by_phase, key=by_phase.__getitem__)
    field = {"rerun": "seeds", "sensitivity": "sensitivity_points", "self": "studies", "confirm": "confirm_seeds",
             "defaults": "workloads"}.get(phase, "studies" if cfg.studies > cfg.trials else "trials")  # fmt: skip
    why = time_problem(sum(by_phase.values()), f"bench {cfg.name!r}", f"{field} = {getattr(cfg, field)!r}")
    if why is not None:
        raise BenchConfigError(f"bench {cfg.name!r}: {field}: {why}")


def follow_up_for(cfg: BenchConfig) -> Any:
    """The function that turns a pair's finished tuning into its confirmations (each study's
    chosen configuration on fresh seeds), re-runs and LR sweep."""

    def follow_up(plan: Plan, tuned: list[Plan]) -> list[tuple[dict[str, Any], int]]:
        if plan.phase == "confirm":
            tuned = [p for p in tuned if p.index == plan.index]
        best = scoring.best_record([r for p in tuned for r in p.done.values()], cfg.objective)
        if best is None:
            return []
        params = dict(best.get("params") or {})
        if plan.phase == "confirm":
            return [(params, cfg.seed + 5000 + 100 * plan.index + j) for j in range(cfg.confirm_seeds)]
        if plan.phase == "rerun":
            return [(params, cfg.seed + 1000 + s) for s in range(cfg.seeds)]
        dim = plan.submission.sensitivity_dim()
        assert dim is not None
        lo, hi, k = dim.dim.low, dim.dim.high, cfg.sensitivity_points
        assert lo is not None and hi is not None
        grid = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / max(1, k - 1)) for i in range(k)]
        return [({**params, dim.param: v}, cfg.seed + 2000 + s) for v in grid for s in range(cfg.sensitivity_seeds)]

    return follow_up
