"""What a bench restarted after a fault starts from.

- The study database, opened with one clear error when it cannot be (a damaged or truncated
  file, a directory, a bad record, a bad `--storage` URL, a missing driver) — never a raw
  SQLAlchemy or JSON traceback.
- results.jsonl, the record of what finished: a trial it holds that the database lost
  (study.db deleted, emptied or replaced by an older copy) is written back into the database
  with its number, its parameters and its record, so it is never run again; numbers in
  between get placeholders, so the trials still to run keep their numbers.
- The samplers: trial k of a study draws its parameters from (study, k) alone — Sobol point k,
  or a random/TPE draw seeded by k — so a trial asked again after a kill, or one adopted
  half-asked, gets exactly the parameters an uninterrupted bench would have asked.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from thalweg.bench import scoring

__all__ = ["BenchError", "open_storage", "restore", "sampler", "state_value", "storage_error"]


class BenchError(RuntimeError):
    """A bench that cannot run as asked (its directory holds a different bench, its database
    cannot be read, its results disagree with its configuration)."""


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def storage_error(url: str, e: BaseException, finished: int | None = None) -> BenchError:
    """One message for a database that cannot be opened or read: the file (or the
    `--storage` URL), what is wrong, and what to do."""
    reason = str(getattr(e, "orig", None) or e).splitlines()[0]
    if isinstance(e, json.JSONDecodeError):
        reason = f"a stored value is not valid JSON ({e.msg}): a damaged record"
    path = _sqlite_path(url)
    if path is None:
        return BenchError(f"--storage {url!r}: cannot use this study database ({reason})")
    kept = "" if finished is None else f"the {finished} finished trial(s) in results.jsonl are "
    return BenchError(f"{path}: the bench's study database cannot be read ({reason}); move it away "
                      f"(e.g. `mv {path} {path}.damaged`) and run the bench again: "
                      f"{kept or 'every trial results.jsonl records is '}written back into a new one")


def _sqlite_wal(engine: Any) -> None:
    """Write-ahead log, synced at checkpoints: a commit survives the process being killed
    (SIGKILL included), at a fraction of the cost of an fsync per commit; only an OS crash
    could lose the last few trials."""
    from sqlalchemy import event

    def on_connect(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while Optuna made its tables get the pragmas too


def open_storage(url: str, finished: int | None = None) -> Any:
    """Optuna's RDB storage at `url`, or a :class:`BenchError` saying why not (`finished`: how
    many finished trials results.jsonl holds, for the message)."""
    import optuna
    import sqlalchemy.exc

    path = _sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise BenchError(f"{path}: the bench's study database is a directory; move it away and run "
                             "the bench again (results.jsonl is written back into a new database)")
        if not path.parent.is_dir():
            raise BenchError(f"--storage {url!r}: the directory {path.parent} does not exist")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            if path is not None:
                _sqlite_wal(storage.engine)
            storage.get_all_studies()  # reads every table's header: a damaged file fails here
    except ImportError as e:
        raise BenchError(f"--storage {url!r}: no database driver for this URL is installed ({e})") from None
    except sqlalchemy.exc.ArgumentError:
        raise BenchError(f"--storage {url!r}: not a database URL (e.g. sqlite:///bench.db, "
                         "postgresql://user@host/db)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as e:
        raise storage_error(url, e, finished) from None
    return storage


def state_value(rec: dict[str, Any], objective: str) -> tuple[Any, float | None]:
    """(Optuna state, value) a finished trial's record is told as."""
    from optuna.trial import TrialState

    status = rec.get("status")
    if status == "crashed":
        return TrialState.FAIL, None
    if status == "pruned":
        return TrialState.PRUNED, None
    value = scoring.objective(rec, objective)
    return TrialState.COMPLETE, 1e12 if value is None else value


def _check(plan: Any, rec: dict[str, Any], dists: dict[str, Any]) -> None:
    """A record from results.jsonl matches the study it is restored into, or a BenchError."""
    w = plan.workload
    want = {"workload": w.key, "submission": plan.submission.name, "phase": plan.phase,
            "ruleset": plan.ruleset, "step_budget": w.step_budget, "metric": w.metric}
    diff = [k for k, v in want.items() if rec.get(k) != v]
    if plan.phase == "tune" and set(rec.get("params") or {}) != set(dists):
        diff.append("params")
    if diff:
        raise BenchError(f"results.jsonl holds trial {rec.get('trial')} of study {plan.name!r} made with a "
                         f"different configuration ({', '.join(diff)} differ) and the database has no "
                         "record of it: use another --name, or move results.jsonl away to start over")


def restore(runner: Any, records: list[dict[str, Any]]) -> int:
    """Write back into the database every trial of these plans that `records` (results.jsonl)
    holds and the database has no record of; returns how many."""
    from optuna.trial import TrialState, create_trial

    by_study: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if isinstance(rec.get("trial"), int):
            by_study.setdefault(str(rec.get("study")), []).append(rec)
    restored = 0
    for plan in runner.plans:
        recs = by_study.get(plan.name)
        if not recs:
            continue
        study = runner._open(plan)
        have = {t.number: t for t in study.get_trials(deepcopy=False)}
        dists = plan.submission.distributions() if plan.phase == "tune" else {}
        for rec in sorted(recs, key=lambda r: r["trial"]):
            k, t = rec["trial"], have.get(rec["trial"])
            if t is not None and "record" in t.user_attrs:
                continue
            _check(plan, rec, dists)
            info: dict[str, Any] = {"seed": rec.get("seed"), "owner": runner.owner}
            if plan.phase != "tune":
                info.update(params=rec.get("params") or {}, plan_index=rec.get("plan_index"))
            if t is not None:  # the trial is there, its record is not: store it, then tell
                runner.storage.set_trial_user_attr(t._trial_id, "record", rec)
                if t.state == TrialState.RUNNING:
                    runner._tell(plan, k, rec)
                restored += 1
                continue
            while len(have) < k:  # numbers the database lost without a record: asked again later
                study.add_trial(create_trial(state=TrialState.WAITING))
                have[len(have)] = None
            state, value = state_value(rec, runner.objective)
            params = {n: v for n, v in (rec.get("params") or {}).items() if n in dists}
            try:
                study.add_trial(create_trial(state=state, value=value, params=params, distributions=dists,
                                             user_attrs={"record": rec, "bench": info}))
            except ValueError as e:  # a parameter outside this study's search space
                raise BenchError(f"results.jsonl: trial {k} of study {plan.name!r} does not fit this "
                                 f"bench's search space ({e}): use another --name") from None
            have[k] = None
            restored += 1
    return restored


def sampler(kind: str, index: int, number: int, distributions: dict[str, Any], n: int) -> Any:
    """The sampler that draws trial `number` of tuning study `index`: a function of the two
    alone, so the same trial asked again (after a kill) gets the same parameters."""
    import optuna

    if kind == "qmc":

        class NumberedQMC(optuna.samplers.QMCSampler):
            """Optuna's scrambled Sobol sampler told the space up front (so the first trial is a
            quasi-random point too) and drawing point `number` — not the next point of a counter
            in the database, which a trial asked again, or adopted half-asked, would advance."""

            def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
                return dict(distributions)

            def _find_sample_id(self, *args: Any, **kwargs: Any) -> int:
                return number

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return NumberedQMC(qmc_type="sobol", scramble=True, seed=index, warn_independent_sampling=False)
    seed = (index * 1_000_003 + number) % (2**31)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, n // 4))
    return optuna.samplers.RandomSampler(seed=seed)
