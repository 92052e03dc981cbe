"""`thalweg doctor RUN [--treat] [--verify] [--json]`: the ranked findings, `treated.toml` (the
run's config with the top finding's fix), and its verification — the original and the treated
config trained for the same short budget on the same data, before/after compared.

Nothing is overwritten: treated.toml gets a numbered name if one exists, the treated config is
named `<run>-treated`, and verification runs go to fresh folders under `<run>/doctor/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from thalweg.diagnose import (
    Finding,
    Verification,
    apply_fix,
    choose_treatment,
    compare,
    describe_fix,
)
from thalweg.diagnose.examine import Examination, examine, write_findings
from thalweg.diagnose.findings import clean
from thalweg.outputs import fresh
from thalweg.train.config import ConfigError, RunConfig, dump_config, parse_config

__all__ = ["register", "treat", "verify"]


def _fresh(folder: Path, stem: str, suffix: str = "") -> Path:
    """`folder/stem+suffix`, or the first `stem-N+suffix` that does not exist yet."""
    return fresh(folder / f"{stem}{suffix}", taken=Path.exists)[0]


def treat(ex: Examination) -> tuple[Finding, RunConfig, Path] | None:
    """Write the treated config next to the run; None when there is nothing to treat."""
    f = choose_treatment(ex.findings)
    if f is None or ex.config is None or ex.run_dir is None:
        return None
    base = ex.config.model_dump(mode="json")
    fixed = apply_fix(base, f.fix)
    fixed["name"] = f"{ex.config.name}-treated"
    try:
        cfg = parse_config(fixed)
    except ConfigError as e:  # a fix the registry refuses (e.g. momentum for Adam) is a doctor bug: say so
        raise ConfigError(e.section, e.field, e.value, f"the treatment for {f.code} is not valid: {e.problem}") from None
    text = f"# thalweg doctor: {f.code} — {describe_fix(f.fix)}\n# from {ex.run_dir / 'config.toml'}\n"
    text += dump_config(cfg)
    target = ex.run_dir / "treated.toml"
    if target.exists() and target.read_text(encoding="utf-8") != text:
        target = _fresh(ex.run_dir, "treated", ".toml")
    target.write_text(text, encoding="utf-8")
    return f, cfg, target


def _outcome(result: Any, metric: str) -> float | None:
    if result is None:
        return None
    if metric == "final_val_loss":
        from thalweg.train.rundir.runs import read_metrics

        vals = [r["val_loss"] for r in read_metrics(result.run_dir) if "val_loss" in r and "event" not in r]
        return float(vals[-1]) if vals else None
    return None if result.best_value is None else float(result.best_value)


def _short(cfg: RunConfig, out: Path, epochs: int) -> tuple[Any, str | None]:
    from thalweg.train import NonFiniteError, fit

    d = cfg.model_dump(mode="json")
    run_dir = _fresh(out, d["name"])
    d.update(name=run_dir.name, out_dir=str(out))
    d["train"]["epochs"] = epochs
    d["diagnostics"] = {"monitors": False, "figures": False, "report": False}
    try:
        result = fit(parse_config(d), quiet=True)
    except NonFiniteError:
        return None, str(run_dir)
    return result, str(result.run_dir)


def _reuse(ex: Examination, epochs: int) -> tuple[Any, str | None]:
    """The run itself as the "before", when it trained exactly this budget to its end (the trainer
    is deterministic, so retraining it would repeat it): (result-like, run dir) or (None, None)."""
    from types import SimpleNamespace

    assert ex.config is not None and ex.run_dir is not None
    if ex.config.train.epochs != epochs:
        return None, None
    recs = ex.evidence.records if ex.evidence is not None else []
    final = next((r for r in recs if r.get("event") == "final"), None)
    if final is not None and final.get("stopped") == "completed":
        return SimpleNamespace(run_dir=ex.run_dir, best_value=final.get("best_value"),
                               best_metric=final.get("best_metric")), str(ex.run_dir)
    if any(r.get("event") == "stopped" for r in recs):  # the guard stopped it: the "before" failed
        return None, str(ex.run_dir)
    return None, None


def verify(ex: Examination, finding: Finding, treated: RunConfig, *, epochs: int | None = None,
           rediagnose: bool = True) -> Verification:
    """Train the original and the treated config for the same `epochs` (default: the run's own,
    at most 20) on the same data, and compare the finding's metric."""
    assert ex.config is not None and ex.run_dir is not None
    n = epochs or min(ex.config.train.epochs, 20)
    out = ex.run_dir / "doctor"
    out.mkdir(parents=True, exist_ok=True)
    before, before_dir = _reuse(ex, n)
    if before_dir is None:
        orig = ex.config.model_copy(update={"name": f"{ex.config.name}-before"})
        before, before_dir = _short(orig, out, n)
    after, after_dir = _short(treated.model_copy(update={"name": f"{ex.config.name}-after"}), out, n)
    classify_task = (before or after) is not None and (before or after).best_metric == "val_accuracy"
    if finding.metric == "final_val_loss":
        metric, higher = "final val_loss", False
    else:
        metric, higher = ("best val_accuracy", True) if classify_task else ("best val_loss", False)
    key = "final_val_loss" if finding.metric == "final_val_loss" else "best"
    b, a = _outcome(before, key), _outcome(after, key)
    tops: list[str | None] = [None, None]
    if rediagnose:
        for i, d in enumerate((before_dir, after_dir)):
            try:
                tops[i] = examine(d, with_curvature=False, lr_finder=False).findings[0].code
            except (FileNotFoundError, ValueError):
                tops[i] = None
    return Verification(finding.code, finding.fix, metric, higher, b, a, compare(b, a, higher_is_better=higher),
                        before_dir, after_dir, n, tops[0], tops[1])


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_cmd(
        path: Path = typer.Argument(..., help="Run directory, checkpoint, or probe file (save_probe)."),
        treat_: bool = typer.Option(False, "--treat", help="Write treated.toml: the config with the top fix."),
        verify_: bool = typer.Option(False, "--verify", help="Also train original and treated briefly; compare."),
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Verification budget (default: the run's epochs, at most 20)."),
        mode: str = typer.Option("eval", help="Model mode for the Hessian: eval or train."),
        max_samples: int = typer.Option(512, min=1, help="Training rows measured (the first ones)."),
        grad_tol: float = typer.Option(1e-3, help="Gradient norm below which training counts as stopped."),
        no_curvature: bool = typer.Option(False, "--no-curvature", help="Skip the Hessian probe."),
        no_figures: bool = typer.Option(False, "--no-figures", help="Write the report without evidence plots."),
        report: Path | None = typer.Option(None, help="HTML file to write (default: the run's report.html)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON: the ranked findings and more."),
    ) -> None:
        """Why a run is sick, most likely cause first — learning curves, data, config, gradients,
        activations, curvature — each finding with evidence, confidence and a config change to try;
        written at the top of report.html. --treat writes treated.toml, --verify checks it."""
        try:
            ex = examine(path, max_samples=max_samples, mode=mode, grad_tol=grad_tol,
                         with_curvature=not no_curvature)
        except (FileNotFoundError, ValueError) as e:
            raise typer.BadParameter(str(e), param_hint="PATH") from None
        out: dict[str, Any] = {"findings": [f.to_dict() for f in ex.findings], "measurements": ex.measurements}
        lines = [f"thalweg doctor {path}", *(str(f) for f in ex.findings)] if ex.findings else [
            f"thalweg doctor {path}", "No findings: gradients, activations and curvature look healthy."]
        note = ""
        if treat_ or verify_:
            done = treat(ex) if ex.run_dir is not None else None
            if done is None:
                top = ex.findings[0] if ex.findings else None
                why = ("healthy: nothing to treat" if top is None or top.severity == "info" else
                       f"{top.code} has no config treatment" if ex.run_dir is not None else "a probe file has no config")
                lines.append(f"treatment: none ({why})")
                out["treatment"] = None
            else:
                f, cfg, target = done
                lines.append(f"treatment for {f.code}: {describe_fix(f.fix)} → {target}")
                out["treatment"] = {"code": f.code, "fix": f.fix, "path": str(target)}
                note = f"Treatment for {f.code}: {describe_fix(f.fix)} (written to {target.name})"
                if verify_:
                    v = verify(ex, f, cfg, epochs=epochs)
                    lines.append(str(v))
                    out["verification"] = v.to_dict()
                    note += f"; verified: {v.metric} {v.before} → {v.after} ({'improved' if v.improved else 'not improved'})"
        rep = write_findings(ex, report, figures=not no_figures, note=note)
        out["report"] = str(rep)
        lines.append(f"report: {rep}")
        typer.echo(json.dumps(clean(out), indent=2) if as_json else "\n".join(lines))
