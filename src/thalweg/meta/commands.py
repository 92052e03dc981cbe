"""CLI: `thalweg meta` (a meta-learning run: :func:`thalweg.meta.run.run_meta`), with the
trainer's exit codes and messages (`thalweg.train.commands.exit_on_run_errors`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thalweg.meta.config import load_meta_config
from thalweg.meta.run import run_meta
from thalweg.train.commands import SET_HELP, cli_overrides, exit_on_run_errors
from thalweg.train.config import ConfigError

__all__ = ["register"]


def register(app: Any) -> None:
    """`thalweg meta [CONFIG] [--resume RUN] [--print-config] …`; exit codes as `thalweg train`:
    2 a bad config or a run in use, 3 a non-finite meta-loss, 4 the disk refused a write."""
    import typer

    @app.command("meta")
    def meta_cmd(
        config: Path | None = typer.Argument(None, help="TOML config; omit for the embedded default."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue runs/<name> from its newest good checkpoint."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the default config (TOML) and exit."),
        name: str | None = typer.Option(None, "--name", help="Override the run name (runs/<name>)."),
        out_dir: str | None = typer.Option(
            None, "--out", "-o", "--out-dir", help="The directory that holds runs (the run is DIR/NAME)."),
        iterations: int | None = typer.Option(None, "--iterations", help="Override meta.iterations."),
        sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace the run in runs/<name> (else a new name is picked)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or messages."),
    ) -> None:
        """Meta-learning: MAML, first-order MAML, Reptile vs a pretrained baseline (10-shot
        sinusoid by default); writes runs/<name>/ with the adaptation table and figures."""
        from thalweg.meta.config import META_DEFAULT_TOML

        if print_config:
            typer.echo(META_DEFAULT_TOML, nl=False)
            return
        with exit_on_run_errors("`thalweg meta --resume RUN` continues the run"):
            overrides = cli_overrides(sets, {"name": name, "out_dir": out_dir, "meta.iterations": iterations})
            if resume is not None:
                if config is not None or overrides or overwrite:
                    raise ConfigError("", "--resume", str(resume), "takes the config from the run directory")
                result = run_meta(resume=resume, quiet=quiet)
            else:
                result = run_meta(load_meta_config(config, overrides), quiet=quiet, overwrite=overwrite)
        s = result.summary
        typer.echo(f"run: {result.run_dir}  (report: {result.run_dir / 'report.html'})")
        steps = next(iter(s["adaptation"].values()))["steps"]
        show = sorted({0, min(1, steps[-1]), steps[-1]})
        typer.echo(f"{s['metric']} after k inner steps, mean ± 95% CI over {s['test_tasks']} meta-test tasks:")
        typer.echo("  " + f"{'method':<12}" + "".join(f"{'k=' + str(k):>18}" for k in show))
        for method, row in s["adaptation"].items():
            cells = "".join(f"{row['mean'][k]:>11.4f} ± {row['ci95'][k]:<5.3f}" for k in show)
            typer.echo(f"  {method:<12}{cells}")
