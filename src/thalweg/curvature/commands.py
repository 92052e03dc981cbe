"""CLI: `thalweg inspect PATH` (the Hessian at a run's weights: extreme eigenvalues, trace, density,
classification). `thalweg doctor` lives in `thalweg.diagnose.commands`.

PATH is a run directory or checkpoint (via `thalweg.train.load_run`) or a probe file written
by `thalweg.curvature.save_probe`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer


def _run_config(probe: Any) -> dict[str, Any]:
    """The run's resolved config.toml as a dict ({} for a probe file or an unreadable file)."""
    import tomllib

    if probe.run_dir is None:
        return {}
    try:
        return tomllib.loads((Path(probe.run_dir) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _operator(path: Path, mode: str, max_samples: int, loss: str = "plain") -> tuple[Any, Any, str]:
    from thalweg.curvature.hvp import HessianOperator
    from thalweg.curvature.probe import load_target
    from thalweg.train import load_run  # the CLI layer wires the trainer's loader in

    if mode not in ("train", "eval"):
        raise typer.BadParameter(f"--mode must be 'train' or 'eval', got {mode!r}")
    if loss not in ("plain", "objective"):
        raise typer.BadParameter(f"--loss must be 'plain' or 'objective', got {loss!r}")
    runs: list[Any] = []

    def load(p: Path) -> Any:  # keep the run: its losses say what they are
        runs.append(load_run(p))
        return runs[-1]

    try:
        probe = load_target(path, max_samples=max_samples, load_run=load)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="PATH") from e
    if runs:
        fn = runs[-1].eval_loss_fn if loss == "plain" else runs[-1].loss_fn
        label = fn.label
    else:  # a probe file carries one loss
        name = probe.loss_name.replace("_", "-")
        fn, label = probe.loss_fn, f"plain {name}" if loss == "plain" else f"training objective ({name})"
    return probe, HessianOperator(probe.model, fn, (probe.x, probe.y), mode=mode), label  # type: ignore[arg-type]


def _figure_dir(probe: Any, out: Path | None) -> Path:
    if out is not None:
        return out
    if probe.run_dir is not None:
        return Path(probe.run_dir) / "figures"
    return Path(probe.source).parent


def _verdict(grad_norm: float, grad_tol: float, lmax: float, rmax: float, lmin: float, rmin: float,
             sign: str) -> tuple[str, float, list[str]]:
    """The second-derivative test on the estimates inspect prints (the rules of
    `curvature.classify`, so the verdict and the numbers above it agree): kind, zero tolerance,
    reasons."""
    zero = max(1e-6, 1e-4 * max(abs(lmin), abs(lmax)))
    neg = sign == "negative"
    pos_some = lmax - rmax > zero
    all_pos = sign == "positive" and lmin - rmin > zero
    if not math.isfinite(grad_norm) or grad_norm > grad_tol:
        return "not_critical", zero, [f"‖∇L‖ = {grad_norm:.3g} > grad_tol {grad_tol:.3g}: not a critical point; "
                                      "the curvature describes the local shape only"]
    if neg and pos_some:
        return "saddle", zero, ["eigenvalues of both signs: a descent direction exists along the λ_min eigenvector"]
    if all_pos:
        return "minimum", zero, ["every eigenvalue > 0: a strict local minimum"]
    if lmax + rmax < -zero:
        return "maximum", zero, ["every eigenvalue < 0: a strict local maximum"]
    return "flat", zero, ["an eigenvalue is zero within tolerance: the second-derivative test is inconclusive"]


def _min_eigenvalue(op: Any, *, full: bool, budget: int, tol: float) -> dict[str, Any]:
    """λ_min: one estimate θ with its residual r (an eigenvalue lies in [θ − r, θ + r]) and the
    sign it certifies. Fast: stop as soon as the sign is certified; full: converge to `tol`."""
    from thalweg.curvature.critical import certify_min_sign
    from thalweg.curvature.lanczos import eigs

    if not full:
        c = certify_min_sign(op, max_hvps=min(op.dim, budget))
        theta, r, n, converged = c.theta, c.residual, c.num_hvps, c.sign == "positive"
        sign = c.sign
    else:
        e = eigs(op, k=1, which="smallest", tol=tol, max_iter=min(op.dim, 4 * budget))
        theta, r, n = float(e.eigenvalues[0]), float(e.residuals[0]), e.num_hvps
        converged = bool(e.converged[0])
        sign = "negative" if theta + r < 0 else "positive" if theta - r > 0 and converged else "undecided"
    if sign == "negative":
        cert = (f"negative, certified: an eigenvalue lies in [{theta - r:.3g}, {theta + r:.3g}], so "
                f"λ_min ≤ {theta + r:.3g} < 0")
    elif sign == "positive":
        cert = (f"positive: the smallest Ritz pair converged at {theta:.3g} ± {r:.2g} (a smaller eigenvalue missed "
                "by the Krylov space is unlikely but not excluded)")
    else:
        cert = f"undecided after {n} HVPs: θ = {theta:.3g} ± {r:.2g} straddles 0"
    return {"eigenvalue": theta, "residual": r, "converged": converged, "sign": sign, "certificate": cert,
            "num_hvps": n, "stopped_early": not full and sign == "negative"}


def inspect_target(path: Path, *, k: int = 5, mode: str = "eval", max_samples: int = 512, out: Path | None = None,
                   grad_tol: float = 1e-3, density_plot: bool = True, loss: str = "plain", full: bool = False,
                   progress: Any = None, report: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Everything `thalweg inspect` reports, as a JSON-ready dict. The default is fast: at most
    `max_samples` training rows, top eigenvalues to 1e-3, λ_min only until its sign is certified,
    a 30-HVP trace; `full` converges everything (1e-6) and spends 90 HVPs on the trace. The density
    plot is `out/hessian_density.png` (default: the run's figures/), or a numbered
    `hessian_density-2.png` … when one exists (unless `overwrite`); `note` in the result says so."""
    import time

    import torch

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()

    def step(msg: str, start: float, hvps: int | None = None) -> None:
        extra = f", {hvps} HVPs" if hvps is not None else ""
        say(f"inspect: {msg} ({time.perf_counter() - start:.1f} s{extra})")

    probe, op, label = _operator(path, mode, max_samples, loss)
    step(f"loaded {op.dim} parameters, {op.num_samples} samples", t0)
    threads = torch.get_num_threads()
    n = (_run_config(probe).get("train") or {}).get("num_threads")
    if isinstance(n, int) and n > 0:  # the run's own setting: small models run fastest single-threaded
        torch.set_num_threads(n)
    try:
        return _measure(probe, op, label, path=path, k=k, mode=mode, out=out, grad_tol=grad_tol,
                        density_plot=density_plot, full=full, step=step, t0=t0, report=report, overwrite=overwrite)
    finally:
        torch.set_num_threads(threads)


def _measure(probe: Any, op: Any, label: str, *, path: Path, k: int, mode: str, out: Path | None, grad_tol: float,
             density_plot: bool, full: bool, step: Any, t0: float, report: bool, overwrite: bool) -> dict[str, Any]:
    import time

    from thalweg.curvature.density import density, plot_density
    from thalweg.curvature.lanczos import eigs
    from thalweg.curvature.trace import trace

    t = time.perf_counter()
    g = op.gradient()
    gnorm, value = float(g.norm()), op.loss()
    step("gradient and loss", t)
    tol, budget = (1e-6, 200) if full else (1e-3, 80)
    t = time.perf_counter()
    top = eigs(op, k=min(k, op.dim), which="largest", tol=tol, max_iter=min(op.dim, budget))
    step(f"top {min(k, op.dim)} eigenvalues", t, top.num_hvps)
    t = time.perf_counter()
    low = _min_eigenvalue(op, full=full, budget=budget, tol=tol)
    step(f"λ_min ({low['sign']})", t, low["num_hvps"])
    t = time.perf_counter()
    tr = trace(op, "hutch++", max(3, min(90 if full else 30, 3 * op.dim)))
    step("trace", t, tr.num_hvps)
    lmax, rmax = float(top.eigenvalues[0]), float(top.residuals[0])
    kind, zero, reasons = _verdict(gnorm, grad_tol, lmax, rmax, low["eigenvalue"], low["residual"], low["sign"])
    result: dict[str, Any] = {
        "source": str(path), "mode": mode, "num_params": op.dim, "num_samples": op.num_samples,
        "loss": value, "loss_label": label, "grad_norm": gnorm, "backend": op.backend, "full": full,
        "top": top.to_dict(),
        "bottom": {"eigenvalues": [low["eigenvalue"]], "residuals": [low["residual"]], "converged": [low["converged"]],
                   "num_hvps": low["num_hvps"]},
        "min_sign": {k2: low[k2] for k2 in ("sign", "certificate", "num_hvps", "stopped_early")},
        "trace": tr.to_dict(),
        "classification": {"kind": kind, "grad_norm": gnorm, "grad_tol": grad_tol, "lambda_max": lmax,
                           "residual_max": rmax, "lambda_min": low["eigenvalue"], "residual_min": low["residual"],
                           "zero_tol": zero, "reasons": reasons},
    }
    if density_plot:
        t = time.perf_counter()
        dens = density(op, steps=min(80 if full else 40, op.dim))
        from thalweg.outputs import fresh

        target, note = fresh(_figure_dir(probe, out) / "hessian_density.png", overwrite=overwrite,
                             taken=Path.exists, what="an earlier density plot")
        if note:
            result["note"] = note
        png = plot_density(dens, target,
                           title=f"Hessian spectral density of the {label} ({op.dim} parameters, SLQ {dens.steps} "
                                 "steps)")
        result["density_png"] = str(png)
        step("spectral density", t, dens.num_hvps)
    result["total_hvps"] = op.num_matvecs
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if report and probe.run_dir is not None:
        result["report"] = str(_write_report_section(Path(probe.run_dir), result))
    return result


_VERDICTS = {
    "minimum": "a local minimum (every curvature direction points up)",
    "maximum": "a local maximum (every curvature direction points down)",
    "saddle": "a saddle point (curvature up in some directions, down in others)",
    "flat": "a flat / degenerate critical point (the second-derivative test is inconclusive)",
    "not_critical": "not a critical point (the gradient is not zero)",
}


def _inspect_text(r: dict[str, Any]) -> str:
    top, low, tr, c = r["top"], r["bottom"], r["trace"], r["classification"]
    sign = r["min_sign"]
    note = "" if low["converged"][0] else ("   (not converged: stopped once the sign was certified; --full converges "
                                           "it)" if sign["stopped_early"] else "   (not converged)")
    lines = [
        f"thalweg inspect {r['source']}  ({r['num_params']} parameters, {r['num_samples']} training samples, "
        f"mode={r['mode']})",
        f"loss = {r['loss']:.6g}  [{r['loss_label']}; the Hessian below is of this loss]   ‖∇L‖ = {r['grad_norm']:.3g}",
        "eigenvalues (Lanczos): estimate θ and residual r = ‖Hy − θy‖, so an eigenvalue lies in [θ − r, θ + r]",
        *(f"  λ{i + 1} = {v:12.6g}   r = {res:.2g}{'' if ok else '   (not converged)'}"
          for i, (v, res, ok) in enumerate(zip(top["eigenvalues"], top["residuals"], top["converged"], strict=True))),
        f"  λ_min = {low['eigenvalues'][0]:10.6g}   r = {low['residuals'][0]:.2g}{note}",
        f"sign of λ_min: {sign['certificate']} ({sign['num_hvps']} HVPs)",
        f"trace (Hutch++): {tr['estimate']:.6g} ± {tr['stderr']:.2g} (standard error, {tr['num_hvps']} HVPs)",
        f"Verdict: {_VERDICTS[c['kind']]}.",
        *(f"  - {x}" for x in c["reasons"]),
    ]
    if "density_png" in r:
        lines.append(f"density plot: {r['density_png']}")
    if "report" in r:
        lines.append(f"report: {r['report']}")
    lines.append(f"total Hessian-vector products: {r['total_hvps']} ({r['seconds']:.1f} s)")
    return "\n".join(lines)


def _write_report_section(run_dir: Path, r: dict[str, Any]) -> Path:
    """The curvature summary and the density plot, into the run's report.html (after the doctor)."""
    from thalweg.diagnose import write_html_section
    from thalweg.diagnose.html import markers
    from thalweg.page import Markup, html

    start, end = markers("inspect")
    img = Markup("")
    png = Path(r["density_png"]) if "density_png" in r else run_dir / "figures" / "hessian_density.png"
    if png.is_file():  # computed now, or by an earlier inspect of this run
        import os

        rel = os.path.relpath(png, run_dir)
        img = html('<img src="{}" alt="Hessian spectral density" style="max-width:600px">', rel)
    section = html('{}\n<section id="thalweg-inspect"><h2>Curvature (thalweg inspect)</h2><pre>{}</pre>{}'
                   "</section>\n{}", Markup(start), _inspect_text({k: v for k, v in r.items() if k != "report"}),
                   img, Markup(end))
    return write_html_section(run_dir / "report.html", section, name="inspect", after="doctor")


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_cmd(
        path: Path = typer.Argument(..., help="Run directory, checkpoint, or probe file (save_probe)."),
        k: int = typer.Option(5, "--k", min=1, help="How many top eigenvalues."),
        mode: str = typer.Option("eval", help="Model mode for the Hessian: eval or train (fixed dropout mask)."),
        max_samples: int = typer.Option(512, min=1, help="Training rows used (the first ones)."),
        loss: str = typer.Option("plain", help="plain (the validation loss) or objective (what training "
                                               "minimized, e.g. label-smoothed)."),
        full: bool = typer.Option(False, "--full", help="Converge every estimate (slower); default: fast."),
        out: Path | None = typer.Option(None, "--out", "-o",
                                        help="Directory for hessian_density.png (default: the run's figures/)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an earlier hessian_density.png (else a numbered name is picked)."),
        grad_tol: float = typer.Option(1e-3, help="Gradient norm below which the point counts as critical."),
        no_density: bool = typer.Option(False, "--no-density", help="Skip the SLQ density plot."),
        progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                             help="Progress on stderr (default: when stderr is a terminal)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    ) -> None:
        """The Hessian at a run's weights: top eigenvalues and λ_min with residual bounds, the sign of
        λ_min certified, trace, density plot, verdict; the density also goes into report.html."""
        import sys

        from thalweg.outputs import OutputError, output_dir

        show = sys.stderr.isatty() if progress is None else progress
        try:
            out = None if out is None else output_dir(out)
        except OutputError as e:
            raise typer.BadParameter(str(e), param_hint="-o/--out") from None
        r = inspect_target(path, k=k, mode=mode, max_samples=max_samples, out=out, grad_tol=grad_tol, overwrite=overwrite,
                           density_plot=not no_density, loss=loss, full=full,
                           progress=(lambda m: typer.echo(m, err=True)) if show else None)
        from thalweg.diagnose.findings import clean

        if "note" in r:
            typer.echo(f"note: {r['note']}", err=True)
        typer.echo(json.dumps(clean(r), indent=2) if as_json else _inspect_text(r))
