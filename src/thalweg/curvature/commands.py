"""CLI: `thalweg inspect PATH` (the Hessian at a run's weights: extreme eigenvalues, trace, density,
classification) and `thalweg doctor PATH` (every finding, as text/JSON and into report.html).

PATH is a run directory or checkpoint (via `thalweg.train.load_run`) or a probe file written
by `thalweg.curvature.save_probe`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _operator(path: Path, mode: str, max_samples: int) -> tuple[Any, Any]:
    from thalweg.curvature.hvp import HessianOperator
    from thalweg.curvature.probe import load_target
    from thalweg.train import load_run  # the CLI layer wires the trainer's loader in

    if mode not in ("train", "eval"):
        raise typer.BadParameter(f"--mode must be 'train' or 'eval', got {mode!r}")
    try:
        probe = load_target(path, max_samples=max_samples, load_run=load_run)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="PATH") from e
    return probe, HessianOperator(probe.model, probe.loss_fn, (probe.x, probe.y), mode=mode)  # type: ignore[arg-type]


def _figure_dir(probe: Any, out: Path | None) -> Path:
    if out is not None:
        return out
    if probe.run_dir is not None:
        return Path(probe.run_dir) / "figures"
    return Path(probe.source).parent


def inspect_target(path: Path, *, k: int = 5, mode: str = "eval", max_samples: int = 2048, out: Path | None = None,
                   grad_tol: float = 1e-3, density_plot: bool = True) -> dict[str, Any]:
    """Everything `thalweg inspect` reports, as a JSON-ready dict."""
    from thalweg.curvature.critical import certify_min_sign, classify
    from thalweg.curvature.density import density, plot_density
    from thalweg.curvature.lanczos import eigs
    from thalweg.curvature.trace import trace

    probe, op = _operator(path, mode, max_samples)
    top = eigs(op, k=min(k, op.dim), which="largest", tol=1e-4, max_iter=min(op.dim, 200))
    bottom = eigs(op, k=1, which="smallest", tol=1e-4, max_iter=min(op.dim, 150))
    cert = certify_min_sign(op, max_hvps=min(op.dim, 150))
    tr = trace(op, "hutch++", min(90, 3 * op.dim))
    cls = classify(op, grad_tol=grad_tol, max_hvps=150, dense_max=0)
    result: dict[str, Any] = {
        "source": str(path), "mode": mode, "num_params": op.dim, "num_samples": op.num_samples,
        "loss": cls.loss, "grad_norm": cls.grad_norm, "backend": op.backend,
        "top": top.to_dict(), "bottom": bottom.to_dict(), "min_sign": cert.to_dict(), "trace": tr.to_dict(),
        "classification": cls.to_dict(), "explain": cls.explain(),
    }
    if density_plot:
        dens = density(op, steps=min(80, op.dim))
        png = plot_density(dens, _figure_dir(probe, out) / "hessian_density.png",
                           title=f"Hessian spectral density ({op.dim} parameters, SLQ {dens.steps} steps)")
        result["density_png"] = str(png)
    result["total_hvps"] = op.num_matvecs
    return result


def _inspect_text(r: dict[str, Any]) -> str:
    top, bottom, tr = r["top"], r["bottom"], r["trace"]
    lines = [
        f"thalweg inspect {r['source']}  ({r['num_params']} parameters, {r['num_samples']} samples, mode={r['mode']})",
        f"loss = {r['loss']:.6g}   ‖∇L‖ = {r['grad_norm']:.3g}",
        "top eigenvalues (Lanczos, residual ‖Hy−θy‖):",
        *(f"  λ{i + 1} = {v:12.6g}   ± {res:.2g}{'' if ok else '  (not converged)'}"
          for i, (v, res, ok) in enumerate(zip(top["eigenvalues"], top["residuals"], top["converged"], strict=True))),
        f"smallest eigenvalue: {bottom['eigenvalues'][0]:.6g} ± {bottom['residuals'][0]:.2g}",
        f"sign of λ_min: {r['min_sign']['sign']} — {r['min_sign']['certificate']} ({r['min_sign']['num_hvps']} HVPs)",
        f"trace (Hutch++): {tr['estimate']:.6g} ± {tr['stderr']:.2g}  ({tr['num_hvps']} HVPs)",
        r["explain"],
    ]
    if "density_png" in r:
        lines.append(f"density plot: {r['density_png']}")
    lines.append(f"total Hessian-vector products: {r['total_hvps']}")
    return "\n".join(lines)


def doctor_target(path: Path, *, mode: str = "eval", max_samples: int = 2048, grad_tol: float = 1e-3,
                  report: Path | None = None) -> tuple[list[Any], dict[str, Any], Path]:
    """Measure (monitors + curvature + run history), diagnose, and write the report section."""
    import torch

    from thalweg.curvature.critical import classify
    from thalweg.diagnose import Thresholds, diagnose, to_html, write_html_section
    from thalweg.monitors import Monitor

    probe, op = _operator(path, mode, max_samples)
    model = probe.model
    with Monitor(model) as mon:  # one training-mode forward/backward on the probe data
        was = model.training
        model.train()
        model.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            loss = probe.loss_fn(model(probe.x), probe.y)
        loss.backward()
        meas = mon.measure(loss=float(loss.detach()))
        model.zero_grad()
        model.train(was)
    cls = classify(op, grad_tol=grad_tol, max_hvps=150, dense_max=0)
    meas["curvature"] = cls.to_dict()
    meas["lr"], meas["optimizer"] = probe.lr, probe.optimizer
    meas["momentum"] = probe.extras.get("momentum")
    if probe.run_dir is not None:
        mfile = Path(probe.run_dir) / "metrics.jsonl"
        if mfile.is_file():
            recs = [json.loads(ln) for ln in mfile.read_text().splitlines() if ln.strip()]
            meas["loss_history"] = [r["train_loss"] for r in recs if isinstance(r.get("train_loss"), int | float)]
            events = sum(1 for r in recs if r.get("event") == "nonfinite")
            if events:
                meas["nonfinite"]["training_events"] = events
    findings = diagnose(meas, Thresholds(grad_tol=grad_tol))
    if probe.run_dir is not None:
        findings += _training_history_findings(Path(probe.run_dir) / "monitors.jsonl", {f.code for f in findings})
        findings.sort(key=lambda f: {"critical": 0, "warning": 1, "info": 2}[f.severity])
    if report is None:
        report = (Path(probe.run_dir) / "report.html") if probe.run_dir is not None else \
            Path(probe.source).with_suffix(".report.html")
    extra = f"<pre>{_html_escape(cls.explain())}</pre>"
    write_html_section(report, to_html(findings, extra=extra))
    return findings, meas, report


def _training_history_findings(path: Path, seen: set[str]) -> list[Any]:
    """Findings from the trainer's last `Monitor.measure()` record (monitors.jsonl), for codes the
    fresh measurement did not already raise; non-finite counts are summed over the whole run."""
    from thalweg.diagnose import diagnose

    if not path.is_file():
        return []
    recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    recs = [r for r in recs if isinstance(r, dict) and "layers" in r]
    if not recs:
        return []
    last = dict(recs[-1])
    totals: dict[str, int] = {}
    for r in recs:
        for k, v in (r.get("nonfinite") or {}).items():
            totals[k] = totals.get(k, 0) + int(bool(v) if isinstance(v, bool) else v)
    last["nonfinite"] = totals
    out = []
    for f in diagnose(last):
        if f.code not in seen and f.code not in ("AT_MINIMUM", "FLAT_REGION", "NOT_CRITICAL"):
            f.evidence = {"from": f"monitors.jsonl (step {last.get('step')}, {len(recs)} records)", **f.evidence}
            out.append(f)
    return out


def _html_escape(s: str) -> str:
    import html

    return html.escape(s)


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        path: Path = typer.Argument(..., help="Run directory, checkpoint, or probe file (save_probe)."),
        k: int = typer.Option(5, "--k", min=1, help="How many top eigenvalues."),
        mode: str = typer.Option("eval", help="Model mode for the Hessian: eval or train (fixed dropout mask)."),
        max_samples: int = typer.Option(2048, min=1, help="Training rows used (the first ones)."),
        out: Path | None = typer.Option(None, help="Folder for hessian_density.png (default: run figures/)."),
        grad_tol: float = typer.Option(1e-3, help="Gradient norm below which the point counts as critical."),
        no_density: bool = typer.Option(False, "--no-density", help="Skip the SLQ density plot."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    ) -> None:
        """The Hessian at a run's weights: top/bottom eigenvalues, trace, density plot, classification."""
        r = inspect_target(path, k=k, mode=mode, max_samples=max_samples, out=out, grad_tol=grad_tol,
                           density_plot=not no_density)
        typer.echo(json.dumps(_clean(r), indent=2) if as_json else _inspect_text(r))

    @app.command("doctor")
    def doctor_cmd(
        path: Path = typer.Argument(..., help="Run directory, checkpoint, or probe file (save_probe)."),
        mode: str = typer.Option("eval", help="Model mode for the Hessian: eval or train."),
        max_samples: int = typer.Option(2048, min=1, help="Training rows used (the first ones)."),
        grad_tol: float = typer.Option(1e-3, help="Gradient norm below which training counts as stopped."),
        report: Path | None = typer.Option(None, help="HTML file to write (default: the run's report.html)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    ) -> None:
        """Every finding for a run — saddles, unstable LR, vanishing/exploding gradients, dead units,
        overflow — with evidence and a suggested action; also written into report.html."""
        from thalweg.diagnose import format_findings

        findings, meas, rep = doctor_target(path, mode=mode, max_samples=max_samples, grad_tol=grad_tol,
                                            report=report)
        if as_json:
            typer.echo(json.dumps(_clean({"findings": [f.to_dict() for f in findings], "measurements": meas,
                                          "report": str(rep)}), indent=2))
        else:
            typer.echo(f"thalweg doctor {path}\n{format_findings(findings)}\nreport: {rep}")
