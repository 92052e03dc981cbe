"""Starting and resuming a run: the lock, a fresh or replaced directory, the checkpoint to
continue from, and best.pt verified (or recovered) before training goes on.

Rules: a run directory that holds a run is replaced only with `overwrite`; resume continues
from the newest checkpoint that verifies *and* fits the model, optimizer and config (damaged
or foreign ones are skipped with a warning and moved to `checkpoints/unusable/`); a changed
config is refused with the fields listed unless `allow_config_change` (then recorded in
metrics.jsonl); best.pt always holds the best valid model known, never a worse one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from thalweg.train.config import ConfigError, dump_config
from thalweg.train.run import Run
from thalweg.train.rundir.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from thalweg.train.rundir.lock import claim_run_dir, clear_run, holds_run
from thalweg.train.rundir.resume import (
    ConfigChangedError,
    config_diff,
    config_hash,
    model_mismatch,
    state_problem,
)
from thalweg.train.rundir.runs import write_atomic

__all__ = ["check_parallel", "claim", "start"]


def check_parallel(tr: Run) -> None:
    """A closure optimizer cannot run data-parallel: refuse it before anything is written."""
    from thalweg.optim import registry

    info = registry.get(tr.cfg.optimizer.name)
    if tr.ctx.enabled and info.needs_closure:
        raise ConfigError("optimizer", "name", info.name,
                          f"cannot train data-parallel ({tr.ctx.world_size} processes): it "
                          "differentiates with torch.autograd.grad inside step(closure), which "
                          "DistributedDataParallel does not synchronize; run one process")


def claim(tr: Run, *, overwrite: bool, resume: bool) -> Path:
    """Rank 0 locks the run directory (maybe under a fresh name) and tells the other ranks."""
    answer: tuple[str, str, str | None] | None = None
    error: BaseException | None = None
    if tr.main:
        try:
            tr.lock, note = claim_run_dir(tr.cfg.run_dir(), overwrite=overwrite, resume=resume)
            answer = ("ok", str(tr.lock.root), note)
        except Exception as e:  # every rank must hear of it; rank 0 re-raises it below
            error, answer = e, ("error", str(e), None)
    answer = tr.ctx.broadcast(answer)
    if error is not None:
        raise error
    if answer[0] == "error":
        raise RuntimeError(answer[1])
    if tr.main and (took := tr.lock.takeover_note()) is not None:
        tr.view.notice(took)
    tr.claim_note = answer[2]  # said once the run is built (a refused config takes no name)
    return Path(answer[1])


def start(tr: Run, *, resume: bool, overwrite: bool, allow_config_change: bool) -> None:
    """A new run writes config.toml and empty logs; a resumed one restores its checkpoint."""
    if tr.claim_note:
        tr.warn(tr.claim_note)
    tr.view.print(f"estimate: {tr.parts.estimate.describe()}")
    for note in tr.parts.notes:
        tr.warn(note)
    if resume:
        _resume(tr, allow_config_change)
    elif tr.main:
        root = tr.paths.root
        if overwrite and holds_run(root):
            tr.view.notice(f"replacing the run in {root} (--overwrite)")
            clear_run(root)
        write_atomic(tr.paths.config, dump_config(tr.cfg))
        tr.log.open()
        tr.mon_log.open()
    tr.ctx.barrier()


def _resume(tr: Run, allow: bool) -> None:
    tr.ctx.barrier()
    if tr.main:
        tr.ckpts.remove_stale_temps()
        for tmp in tr.paths.root.glob(".best*.pt.tmp-*"):
            tmp.unlink(missing_ok=True)
    chosen, skipped = _choose(tr, allow)
    tr.ctx.barrier()  # every rank has read the checkpoints before rank 0 moves any
    for path, why, kind in skipped:
        where = path.name
        if tr.main:
            where = str(tr.ckpts.set_aside(path).relative_to(tr.paths.root))
        tr.warn(f"skipped {kind} checkpoint {path.name}: {why} (moved to {where})")
    if chosen is None:
        tr.warn(f"no usable checkpoint in {tr.paths.checkpoints}; starting from scratch")
        if tr.main:
            old = tr.paths.metrics
            if old.is_file() and old.stat().st_size:
                old.replace(old.with_name("metrics.before-restart.jsonl"))
            tr.log.open()
            tr.mon_log.open()
        _check_best(tr)
        return
    path, st, changes = chosen
    tr.view.notice(f"resumed {tr.paths.root} from {path.name} (step {tr.state.step})")
    if tr.main:
        tr.log.open(keep_lines=st["metrics_lines"])
        tr.mon_log.open(keep_lines=st.get("monitor_lines", 0))
    if changes:
        tr.log.write({"event": "config_change", "step": tr.state.step, "checkpoint": path.name,
                      "changes": {k: list(v) for k, v in changes.items()}})
        tr.warn(f"config changed since {path.name} (--allow-config-change): " +
                ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    _check_best(tr)


def _choose(tr: Run, allow: bool) -> tuple[tuple[Path, dict[str, Any], dict] | None, list]:
    """The newest checkpoint that verifies and fits, restored into `tr`; and those skipped."""
    skipped: list[tuple[Path, str, str]] = []
    foreign: tuple[Path, dict] | None = None  # the newest skipped one written with another config
    dirty = False
    want = config_hash(tr.cfg)
    for path in tr.ckpts.candidates():
        try:
            st = load_checkpoint(path, tr.ctx.device)
        except CheckpointError as e:
            skipped.append((path, str(e), "damaged"))
            continue
        why = state_problem(st, tr.model, tr.opt)
        changes = config_diff(st["config"], tr.cfg) if "config" in st and st.get("config_hash") != want else {}
        if why is None and changes and not allow:
            raise ConfigChangedError(str(tr.paths.config), path.name, changes)
        if why is None:
            try:
                tr.load_state_dict(st)
                return (path, st, changes), skipped
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
                why, dirty = f"it does not load ({str(e).splitlines()[0][:200]})", True
        skipped.append((path, why, "incompatible"))
        if changes and foreign is None:
            foreign = (path, changes)
    if foreign is not None:  # the config changed so that no checkpoint fits it any more
        hint = ("No checkpoint fits the changed config, so the run cannot go on: start a new "
                "run (another --name, or --overwrite)") if allow else None
        raise ConfigChangedError(str(tr.paths.config), foreign[0].name, foreign[1], hint=hint)
    if dirty:
        tr._build()
    return None, skipped


def _generations(tr: Run) -> list[tuple[Path, dict[str, Any]]]:
    """Valid best.pt / best.prev.pt files that fit the model and the run's best metric."""
    out = []
    for path in (tr.paths.best, tr.paths.best_prev):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = load_checkpoint(path, "cpu")
        except CheckpointError as e:
            tr.warn(f"{path.name} is damaged: {e}")
            continue
        why = model_mismatch(b.get("model"), tr.model)
        value = b.get("value")
        if why is None and (b.get("metric") != tr.best_metric or not isinstance(value, float)):
            why = f"it keeps {b.get('metric')!r}, this run {tr.best_metric!r}"
        if why is not None:
            tr.warn(f"{path.name} does not fit this run: {why}")
            continue
        out.append((path, b))
    return out


def _rederive(tr: Run) -> list[tuple[Path, dict[str, Any]]]:
    """best.pt rebuilt from the checkpoint written at the best step, if there is one (an
    evaluation at an epoch's end and that epoch's checkpoint hold the same weights)."""
    s = tr.state
    path = tr.ckpts.path_for(s.best_step)
    if s.best_step < 0 or s.best_value is None or not path.is_file():
        return []
    try:
        st = load_checkpoint(path, "cpu")
    except CheckpointError:
        return []
    if model_mismatch(st.get("model"), tr.model) is not None or st["trainer"]["best_step"] != s.best_step:
        return []
    best = {"model": st["model"], "step": s.best_step, "metric": tr.best_metric,
            "value": s.best_value, "config": st["config"], "config_hash": st["config_hash"]}
    if tr.main:
        save_checkpoint(best, tr.paths.best)
    tr.warn(f"rebuilt best.pt from {path.name}, which holds the same weights")
    return [(tr.paths.best, best)]


def _check_best(tr: Run) -> None:
    """Make best.pt the best valid model known and the trainer's best agree with it."""
    s, gens = tr.state, _generations(tr)
    matched = any(b["step"] == s.best_step and b["value"] == s.best_value for _, b in gens)
    if s.best_step >= 0 and not matched and not any(tr.better(b["value"], s.best_value) for _, b in gens):
        gens = _rederive(tr) + gens
    if not gens:
        if s.best_step >= 0:
            tr.warn(f"best.pt (step {s.best_step}) is missing or damaged and best.prev.pt cannot "
                    "replace it; the next finite validation result becomes the best model")
        s.best_value, s.best_step = None, -1
        return
    top_path, top = gens[0]
    for path, b in gens[1:]:
        if tr.better(b["value"], top["value"]):
            top_path, top = path, b
    matches = top["step"] == s.best_step and top["value"] == s.best_value
    if s.best_step >= 0 and not matches and not tr.better(top["value"], s.best_value):
        tr.warn(f"the best model (step {s.best_step}, {tr.best_metric} {s.best_value:.4g}) is "
                f"lost: best.pt is damaged; keeping {top_path.name} (step {top['step']}, "
                f"{top['value']:.4g}) instead")
    s.best_value, s.best_step = top["value"], top["step"]
    if top_path != tr.paths.best and tr.main:
        save_checkpoint(top, tr.paths.best)
        tr.warn(f"restored best.pt from {top_path.name} (step {top['step']})")
    tr.best_ok = True
