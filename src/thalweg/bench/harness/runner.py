"""Run a bench: studies in an Optuna database, trials on an executor, records to results.jsonl.

Each (ruleset, phase, workload, submission, study index) is one Optuna study. External
tuning: M `tune` studies of N quasi-random trials each, one `defaults` trial, each study's
chosen configuration on fresh seeds (`confirm`, as soon as that study is done), then the best
configuration re-run over seeds (`rerun`) and swept over its learning rate (`sensitivity`).
Self-tuning: M `self` studies of one default trial with 1.5× the budget. Calibration: `tune`
and `rerun` with no target (the AlgoPerf target-setting procedure).

Only this process touches the database (the bench directory's lock, `thalweg.train.rundir.lock`, keeps a
second `bench run` out). A trial's record is stored on the trial before it is told finished,
and appended to results.jsonl after, so a bench killed at any moment (SIGKILL included) and
started again re-runs no finished trial and loses none: finished trials are read back (those
the database lost, from results.jsonl: :mod:`thalweg.bench.harness.recovery`), trials left running by a
dead process are run again with the same parameters and seed, and trial k of a study always
draws the parameters of its number k.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thalweg.bench.harness import recovery
from thalweg.bench.harness.recovery import BenchError
from thalweg.bench.results import ResultsFile, jsonable
from thalweg.bench.submissions import Submission
from thalweg.bench.tasks.workloads import Workload

__all__ = ["BenchError", "Plan", "Runner", "sqlite_url"]

HOST = socket.gethostname()
STALE_AFTER = 600.0  # s without a heartbeat: another machine's trial is abandoned
HEARTBEAT_EVERY = 60.0


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@dataclass
class Plan:
    """One study: what it runs and, at run time, what it has done."""

    name: str
    phase: str
    ruleset: str
    workload: Workload
    submission: Submission
    index: int
    n: int
    sampler: str = "random"
    #: added to every trial's seed and the sampler's (an independent run of the same bench)
    seed: int = 0
    #: (params, seed) per trial for fixed phases; None until the tuning it depends on is done.
    items: list[tuple[dict[str, Any], int]] | None = None
    study: Any = None
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    present: set[int] = field(default_factory=set)  # plan indices (fixed phases) with a trial
    running: set[int] = field(default_factory=set)  # trial numbers in flight here
    others: int = 0  # trials running on another live machine
    queued: list[tuple[int, int, dict[str, Any], int, int | None]] = field(default_factory=list)
    #: trials of a fixed phase asked before a kill and never described (the next items reuse them)
    orphans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def pair(self) -> tuple[str, str, str]:
        return (self.ruleset, self.workload.key, self.submission.name)

    @property
    def complete(self) -> bool:
        return len(self.done) >= self.n and not self.running and not self.queued

    def spec_attr(self) -> dict[str, Any]:
        """What a resumed study must match."""
        w = self.workload.describe()
        for k in ("target_source", "description"):
            w.pop(k, None)
        return {"phase": self.phase, "ruleset": self.ruleset, "index": self.index, "n": self.n,
                "sampler": self.sampler, "seed": self.seed, "workload": w,
                "submission": self.submission.describe()}  # fmt: skip

    def trial_seed(self, number: int) -> int:
        """The seed of tuning trial `number` of this study."""
        return self.seed + self.index * 100_003 + number

    @property
    def sample_seed(self) -> int:
        """The seed of this study's sampler (the study index in the bench's first run)."""
        return self.seed * 1009 + self.index


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """Drive `plans` to completion on `executor`, storing studies at `storage`."""

    def __init__(self, plans: list[Plan], storage: str, results: ResultsFile, executor: Any, *,
                 threads: int = 1, pruner: str = "none", stop_at_target: bool = False,
                 objective: str = "time",
                 follow_up: Callable[[Plan, list[Plan]], list[tuple[dict[str, Any], int]]] | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.plans, self.results, self.executor = plans, results, executor
        self.threads, self.pruner, self.stop_at_target = threads, pruner, stop_at_target
        self.objective = objective
        self.follow_up, self.on_record = follow_up, on_record
        self.url = storage
        self.storage = recovery.open_storage(storage, len(results.read()[0]))
        self.token = uuid.uuid4().hex
        self.owner = {"host": HOST, "pid": os.getpid(), "token": self.token}
        self.inflight: dict[int, tuple[Plan, int, int, int | None]] = {}
        self._tuning: dict[tuple[str, str, str], list[Plan]] = {}
        for p in plans:  # the tuning studies each follow-up (re-runs, lr sweep) waits for
            self._tuning.setdefault(p.pair, [])
            if p.phase == "tune":
                self._tuning[p.pair].append(p)
        self._next_task = 0
        self._beat = time.monotonic()
        self.recovered = 0  # trials left running by a dead process, run again
        self.restored = 0  # finished trials written back into the database from results.jsonl
        self.notes: list[str] = []
        self._recovered: list[dict[str, Any]] | None = None

    # ----- studies -----------------------------------------------------------------------
    def _open(self, plan: Plan) -> Any:
        import optuna

        if plan.study is None:
            dists = plan.submission.distributions() if plan.phase == "tune" else {}
            plan.study = optuna.create_study(
                storage=self.storage, study_name=plan.name, direction="minimize",
                sampler=recovery.sampler(plan.sampler, plan.sample_seed, 0, dists, plan.n),
                load_if_exists=True)  # fmt: skip
            want = json.loads(json.dumps(jsonable(plan.spec_attr())))
            have = plan.study.user_attrs.get("bench")
            if have is None:
                plan.study.set_user_attr("bench", want)
            elif have != want:
                diff = sorted(k for k in want if want.get(k) != have.get(k))
                raise BenchError(f"study {plan.name!r} in this bench's database was made with a different "
                                 f"configuration ({', '.join(diff)} differ): use another --name, or delete "
                                 "the bench directory to start over")  # fmt: skip
        return plan.study

    def recover(self) -> list[dict[str, Any]]:
        """Read back every existing study: finished records (those the database lost written
        back from results.jsonl first), trials to run again, orphans."""
        if self._recovered is not None:
            return self._recovered
        import sqlalchemy.exc

        ledger, rejected = self.results.read()
        if rejected:
            self.notes.append(f"{self.results.path}: {len(rejected)} line(s) were not records (e.g. line "
                              f"{rejected[0][0]}: {rejected[0][1]}); kept in {self.results.rejected_path}")
            self.results.reject(rejected)
        try:
            self.restored = recovery.restore(self, ledger)
            self._read_back()
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
            raise recovery.storage_error(self.url, e, len(ledger)) from None
        if self.restored:
            self.notes.append(f"the study database had no record of {self.restored} finished trial(s) "
                              f"that {self.results.path} holds: written back, they are not run again")
        self._recovered = self.records()
        return self._recovered

    def _read_back(self) -> None:
        from optuna.trial import TrialState

        existing = {s.study_name for s in self.storage.get_all_studies()}
        for plan in self.plans:
            if plan.name not in existing:
                continue
            study = self._open(plan)
            for t in study.get_trials(deepcopy=False):
                rec = t.user_attrs.get("record")
                info = t.user_attrs.get("bench") or {}
                pi = info.get("plan_index")
                if rec is not None:
                    if t.state == TrialState.RUNNING:  # killed between storing and telling
                        self._tell(plan, t.number, rec)
                    plan.done[t.number] = rec
                    if pi is not None:
                        plan.present.add(int(pi))
                    continue
                if t.state != TrialState.RUNNING:
                    continue
                if not self._stale(t, info):
                    plan.others += 1
                    if pi is not None:
                        plan.present.add(int(pi))
                    continue
                if "seed" not in info:  # asked, killed before it was described: adopt it
                    self._adopt(plan, study, t)
                    continue
                params = info.get("params", t.params)
                plan.queued.append((t.number, t._trial_id, dict(params), int(info["seed"]), pi))
                if pi is not None:
                    plan.present.add(int(pi))
                self.recovered += 1

    def _adopt(self, plan: Plan, study: Any, t: Any) -> None:
        """A trial asked but never described (killed in between) runs as what it was asked to be:
        a tuning trial with its params (those the kill cut short sampled now, as `study.ask`
        would have) and its number's seed; a fixed-phase trial takes the next free item."""
        import optuna

        if plan.phase != "tune":
            plan.orphans.append((t.number, t._trial_id))
            return
        params = self._suggest(plan, study, optuna.Trial(study, t._trial_id))
        seed = plan.trial_seed(t.number)
        self._describe(t._trial_id, seed, None, None)
        plan.queued.append((t.number, t._trial_id, params, seed, None))
        self.recovered += 1

    def _stale(self, t: Any, info: dict[str, Any]) -> bool:
        owner = info.get("owner")
        if not owner:
            return True
        if owner.get("host") == HOST:
            return owner.get("token") != self.token and not _pid_alive(int(owner.get("pid", -1)))
        beat = t.system_attrs.get("bench_heartbeat") or (t.datetime_start.timestamp() if t.datetime_start else 0)
        return time.time() - float(beat) > STALE_AFTER

    # ----- dispatch ----------------------------------------------------------------------
    def _unlock(self, plan: Plan) -> bool:
        if plan.items is None:
            if self.follow_up is None:
                return False
            deps = self._tuning[plan.pair]
            if plan.phase == "confirm":  # a study's own chosen configuration: only that study
                deps = [p for p in deps if p.index == plan.index]
            if not all(p.complete for p in deps):
                return False
            plan.items = self.follow_up(plan, deps)
            plan.n = len(plan.items)
        for rec in plan.done.values():  # records written back without their item's index
            item = (rec.get("params") or {}, rec.get("seed"))
            if rec.get("plan_index") is None and item in plan.items:
                plan.present.add(plan.items.index(item))
        return True

    def _next(self, plan: Plan) -> tuple[int, int, dict[str, Any], int, int | None] | None:
        if plan.queued:
            return plan.queued.pop(0)
        if plan.phase == "tune":
            if len(plan.done) + len(plan.running) + plan.others >= plan.n:
                return None
            study = self._open(plan)
            trial = study.ask()
            params = self._suggest(plan, study, trial)
            seed = plan.trial_seed(trial.number)
            self._describe(trial._trial_id, seed, None, None)
            return (trial.number, trial._trial_id, params, seed, None)
        if not self._unlock(plan):
            return None
        assert plan.items is not None
        free = [i for i in range(len(plan.items)) if i not in plan.present]
        if not free:
            return None
        i = free[0]
        params, seed = plan.items[i]
        if plan.orphans:  # a trial asked for this phase before a kill, never described
            number, trial_id = plan.orphans.pop(0)
        else:
            trial = self._open(plan).ask()
            number, trial_id = trial.number, trial._trial_id
        self._describe(trial_id, seed, params, i)
        plan.present.add(i)
        return (number, trial_id, dict(params), seed, i)

    @staticmethod
    def _suggest(plan: Plan, study: Any, trial: Any) -> dict[str, Any]:
        """A tuning trial's parameters, drawn for its number alone (`recovery.sampler`); those
        stored before a kill are kept as they are."""
        dists = plan.submission.distributions()
        study.sampler = recovery.sampler(plan.sampler, plan.sample_seed, trial.number, dists, plan.n)
        return {name: trial._suggest(name, dist) for name, dist in dists.items()}

    def _describe(self, trial_id: int, seed: int, params: dict[str, Any] | None, index: int | None) -> None:
        """One attribute (one commit): seed, owner, and for fixed phases params and index."""
        info: dict[str, Any] = {"seed": seed, "owner": self.owner}
        if params is not None:
            info.update(params=params, plan_index=index)
        self.storage.set_trial_user_attr(trial_id, "bench", info)

    def spec(self, plan: Plan, number: int, params: dict[str, Any], seed: int) -> dict[str, Any]:
        """The trial spec a worker runs (see `thalweg.bench.harness.trial`)."""
        w, sub = plan.workload, plan.submission
        prune = None
        if self.pruner == "median" and plan.phase == "tune":
            refs = [r["curve"] for r in plan.done.values() if r.get("curve", {}).get("step")]
            prune = {"reference": refs, "startup": 3, "warmup": w.step_budget // 4}
        return {
            "study": plan.name, "trial": number, "phase": plan.phase, "ruleset": plan.ruleset,
            "workload": w.key, "workload_ref": w.ref or w.key, "group": w.group, "submission": sub.name,
            "study_index": plan.index, "seed": seed, "params": params,
            "config": sub.configure(params),
            "target": None if plan.ruleset == "calibrate" else w.target,
            "metric": w.metric, "mode": w.mode, "steps": w.step_budget,
            "eval_every": w.eval_every, "max_seconds": w.max_seconds, "threads": self.threads,
            "prune": prune,
            "stop_at_target": self.stop_at_target and plan.phase in ("tune", "confirm", "defaults", "self", "sweep"),
        }  # fmt: skip

    def _fill(self) -> None:
        for plan in self.plans:
            while len(self.inflight) < self.executor.capacity:
                nxt = self._next(plan)
                if nxt is None:
                    break
                number, trial_id, params, seed, index = nxt
                task = self._next_task
                self._next_task += 1
                self.inflight[task] = (plan, number, trial_id, index)
                plan.running.add(number)
                self.executor.submit(task, self.spec(plan, number, params, seed))
            if len(self.inflight) >= self.executor.capacity:
                return

    # ----- results -----------------------------------------------------------------------
    def _tell(self, plan: Plan, number: int, rec: dict[str, Any]) -> None:
        state, value = recovery.state_value(rec, self.objective)
        self._open(plan).tell(number, value, state=state, skip_if_finished=True)

    def _finish(self, task: int, rec: dict[str, Any]) -> None:
        plan, number, trial_id, index = self.inflight.pop(task)
        rec = jsonable({**rec, "plan_index": index} if index is not None else rec)
        self.storage.set_trial_user_attr(trial_id, "record", rec)  # first the record ...
        self._tell(plan, number, rec)  # ... then finished: a kill in between loses nothing
        plan.running.discard(number)
        plan.done[number] = rec
        self.results.append(rec)
        if self.on_record is not None:
            self.on_record(rec)

    def _heartbeat(self) -> None:
        if time.monotonic() - self._beat < HEARTBEAT_EVERY:
            return
        self._beat = time.monotonic()
        for _, _, trial_id, _ in self.inflight.values():
            self.storage.set_trial_system_attr(trial_id, "bench_heartbeat", time.time())

    def run(self) -> list[dict[str, Any]]:
        """Run until every plan is complete; returns all records in plan order."""
        self.results.rewrite(self.recover(), {p.name for p in self.plans})
        try:
            while True:
                self._fill()
                if not self.inflight:
                    break
                for task, rec in self.executor.poll(0.5):
                    self._finish(task, rec)
                self._heartbeat()
        finally:
            self.executor.close()
        records = self.records()
        self.results.rewrite(records, {p.name for p in self.plans})
        return records

    def records(self) -> list[dict[str, Any]]:
        return [r for p in self.plans for _, r in sorted(p.done.items())]

    def pending_elsewhere(self) -> int:
        """Trials other machines are still running (their results join when they finish)."""
        return sum(p.others for p in self.plans)
