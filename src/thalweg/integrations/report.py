"""The end of a watched run: the doctor's evidence from what the watcher saw, the ranked
findings, and the same files a `thalweg train` run leaves — `findings.json`, `report.html`,
`figures/`, `metrics.jsonl`, `monitors.jsonl`, `summary.json` — plus `curvature.jsonl`
(the probe's eigenvalue trace)."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from thalweg.integrations.held import HeldBatch, LossModule, as_loss, measure

if TYPE_CHECKING:
    from thalweg.diagnose import Finding, RunEvidence

__all__ = ["Report", "Watched", "claim", "evidence", "write_report"]


class Watched(Protocol):
    """What the report reads of a watched run (a :class:`~thalweg.integrations.watcher.Watcher`,
    which calls it)."""

    name: str
    model: nn.Module
    step: int
    records: list[dict[str, Any]]
    monitor_records: list[dict[str, Any]]
    curvature_records: list[dict[str, Any]]
    skipped: int
    should_stop: bool
    held: HeldBatch | None
    data: Any
    user_config: dict[str, Any]
    initial: dict[str, Tensor] | None
    init_measurement: dict[str, Any] | None
    out_dir: Path | None
    lock: Any
    board: Any

    def lr(self) -> float | None: ...

    def optimizer_config(self) -> dict[str, Any]: ...

_OURS = ("findings.json", "curvature.jsonl", "monitors.jsonl", "report.html", "summary.json", "metrics.jsonl")


@dataclass
class Report:
    """What `Watcher.report` wrote: the ranked findings and where the files are."""

    out_dir: Path
    findings: list[Finding]
    report: Path
    findings_json: Path
    figures: list[Path] = field(default_factory=list)
    evidence: RunEvidence | None = None

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    def __str__(self) -> str:
        from thalweg.diagnose import format_findings

        return f"{format_findings(self.findings)}\nreport: {self.report}"


def claim(root: Path, *, overwrite: bool = False) -> tuple[Any, str | None]:
    """Lock `root` for this process; a directory holding an earlier run or report is never
    replaced unless `overwrite`: the first free `root-2`, `root-3`, … is used and the note says so."""
    from thalweg.train.rundir.lock import claim_run_dir, clear_run, holds_run

    lock, note = claim_run_dir(root, overwrite=overwrite)
    if note:
        note = f"{root} holds an earlier run or report, so this one goes to {lock.root} (overwrite=True replaces it)"
    if overwrite and (holds_run(lock.root) or (lock.root / "findings.json").exists()):
        clear_run(lock.root)
        for name in _OURS:
            (lock.root / name).unlink(missing_ok=True)
        shutil.rmtree(lock.root / "tensorboard", ignore_errors=True)
    return lock, note


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def _data_stats(w: Watched) -> Any:
    from thalweg.diagnose import data_statistics

    d = w.data
    if d is None and w.held is not None and w.held.labels() is not None:
        x, y = w.held.labels()  # type: ignore[misc]
        d = (x, y, x, y)
    if d is None:
        return None
    if hasattr(d, "x_train"):
        xt, yt, xv, yv, task, k = d.x_train, d.y_train, d.x_val, d.y_val, d.task, d.num_classes
    else:
        xt, yt, xv, yv = (*d, *d)[:4] if len(d) == 2 else d
        task = "regression" if yt.is_floating_point() else "classification"
        k = None
    standardized = bool((w.user_config.get("data") or {}).get("standardize", False))
    return data_statistics(xt.cpu(), yt.cpu(), xv.cpu(), yv.cpu(), task=task, num_classes=k, standardized=standardized)


def _output_layer(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
    return names[-1] if names else None


def evidence(w: Watched, *, curvature: bool = True) -> RunEvidence:
    """Everything the watcher saw, as the doctor's `RunEvidence` (end measurement and curvature
    need the held batch)."""
    from thalweg.diagnose import RunEvidence, weight_changes

    opt = w.optimizer_config()
    cfg = _merge({"optimizer": opt} if opt else {}, w.user_config)
    summary = {"event": "final", "step": w.step, "stopped": "nonfinite" if w.should_stop else "completed",
               "skipped_steps": w.skipped, "monitor_records": len(w.monitor_records),
               "curvature_probes": len(w.curvature_records)}
    ev = RunEvidence(config=cfg, records=[*w.records, summary], summary=summary, data=_data_stats(w),
                     monitors=w.monitor_records, output_layer=_output_layer(w.model))
    model = w.model
    if w.held is not None:
        ev.end = measure(model, w.held)
        ev.end.update(lr=w.lr(), optimizer=opt.get("name"), momentum=opt.get("momentum"))
        ev.init = w.init_measurement
        if curvature:
            from thalweg.curvature.critical import classify_loss

            z = torch.zeros(1)
            c = classify_loss(LossModule(model, w.held), as_loss, z, z, mode="eval")
            if c is not None:
                ev.end["curvature"] = c
    if w.initial is not None:
        end = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        ev.weights = weight_changes(end, w.initial, trainable)
    return ev


def write_report(w: Watched, target: Path, *, overwrite: bool = False, curvature: bool = True) -> Report:
    """The doctor over what `w` saw, and every file of the report, into `target` (claimed)."""
    from thalweg.diagnose import diagnose_run, to_html, to_json
    from thalweg.diagnose.plots import FIGURE_OF, figure_for, plot_evidence
    from thalweg.train.report import plot_curvature, plot_curves, render_page
    from thalweg.train.rundir.runs import dumps, write_atomic

    own = w.out_dir is not None and target.resolve() == w.out_dir.resolve() and w.lock is not None
    lock, note = (None, None) if own else claim(target, overwrite=overwrite)
    root = target if own else lock.root
    try:
        if note:
            warnings.warn(note, stacklevel=3)
        ev = evidence(w, curvature=curvature)
        findings = diagnose_run(ev)
        for name, recs in (("metrics.jsonl", ev.records), ("monitors.jsonl", w.monitor_records),
                           ("curvature.jsonl", w.curvature_records)):
            if recs or name == "metrics.jsonl":
                write_atomic(root / name, "".join(dumps(r) + "\n" for r in recs))
        write_atomic(root / "summary.json", dumps(ev.summary, indent=2) + "\n")
        write_atomic(root / "findings.json", to_json(findings) + "\n")
        figdir = root / "figures"
        x = "epoch" if ev.records and all("epoch" in r for r in ev.records if "train_loss" in r or "val_loss" in r) \
            and any("epoch" in r for r in ev.records) else "step"
        chance = ev.data.chance_loss if ev.data is not None else None
        per_step = None
        if x == "step" and len(w.step_losses) > 1:
            per_step = ([float(k) for k, _ in w.step_losses], [v for _, v in w.step_losses])
        pngs = plot_curves(ev.records, figdir, w.name, chance=chance, x=x, step_losses=per_step)
        o = ev.config.get("optimizer", {})
        trace = plot_curvature(w.curvature_records, figdir / "curvature_trace.png",
                               momentum=float(o.get("momentum") or 0.0), edge=o.get("name") == "sgd")
        pngs += [trace] if trace else []
        kinds = {f.figure or FIGURE_OF.get(f.code) or "loss" for f in findings if f.severity != "info"} - {"loss"}
        made = {"loss": figdir / "losses.png", **plot_evidence(ev, figdir, kinds=kinds)}
        figs = {i: figure_for(f, made) for i, f in enumerate(findings)}
        doctor = to_html(findings, figures=figs, base=root,
                         note="From the learning curves, the monitors, the weights and (with a held batch) "
                              "gradients, activations and curvature at the end.")
        page = render_page(f"thalweg report {w.name}", doctor=doctor, summary=ev.summary, figures=pngs,
                           records=ev.records, config=dumps(ev.config, indent=2))
        write_atomic(root / "report.html", page)
        if w.board is not None:
            w.board.figures(pngs, w.step)
            w.board.artifact(root / "report.html")
            w.board.artifact(root / "findings.json")
            w.board.flush()
        return Report(root, findings, root / "report.html", root / "findings.json", pngs, ev)
    finally:
        if lock is not None:
            lock.release()
