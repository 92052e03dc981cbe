"""CLI: `thalweg inspect PATH` (the Hessian at a run's weights: extreme eigenvalues, trace, density,
classification). `thalweg doctor` lives in `thalweg.train.treatment`.

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

    if mode not in ("train", "eval"):
        raise typer.BadParameter(f"--mode must be 'train' or 'eval', got {mode!r}")
    try:
        probe = load_target(path, max_samples=max_samples)
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
