"""CLI: `thalweg train [CONFIG.toml]`, `--resume runs/<name>`, `--print-config`.

Exit codes: 0 done, 2 a bad config or a run directory in use, 3 training blew up
(non-finite), 4 the disk refused a write (fix it, then `thalweg resume`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import typer


@contextlib.contextmanager
def exit_on_run_errors(resume_hint: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """The exit codes of a command that writes a run or a bench (train, meta, bench run): 2 bad
    config, file, checkpoint, output path, `--set` (or one of `also`: the command's own config
    errors) or a directory locked by another process; 3 non-finite; 4 the disk refused
    (`resume_hint` says how to go on) — each one message, never a traceback."""
    from thalweg.outputs import OutputError
    from thalweg.overrides import OverrideError
    from thalweg.train import ConfigError, NonFiniteError, RunLockedError
    from thalweg.train.rundir.checkpoint import CheckpointError

    try:
        yield
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    except (NonFiniteError, FloatingPointError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(3) from None
    except (RunLockedError, OutputError, OverrideError, *also) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except OSError as e:  # the disk refused: the path and the OS error, nothing lost
        typer.echo(f"error: {e}\nnothing written before this was lost; fix the disk, then {resume_hint}", err=True)
        raise typer.Exit(4) from None


SET_HELP = ("SECTION.FIELD=VALUE: change one setting of the config (repeatable), checked as "
            "if it were in the file, e.g. --set optimizer.lr=3e-3 --set model.width=256.")


def cli_overrides(sets: list[str] | None, options: dict[str, object]) -> dict[str, object]:
    """The dotted overrides of a run command: its `--set` items, then its own options
    (`--name`, `--epochs`, … where given)."""
    from thalweg import overrides

    return {**overrides.parse(sets or []), **{k: v for k, v in options.items() if v is not None}}


def _is_meta_run(run_dir: Path) -> bool:
    """A `thalweg meta` run: its config.toml has a [meta] section (a training run's never does)."""
    import tomllib

    from thalweg.train.rundir.runs import RunPaths

    try:
        return "meta" in tomllib.loads(RunPaths(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # the training path reports what is wrong with the file


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: Path | None = typer.Argument(None, help="TOML config; omit for the embedded default."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue runs/<name> from its newest good checkpoint."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the default config (TOML): every field, its value and meaning; then exit."),
        name: str | None = typer.Option(None, "--name", help="Override the run name (runs/<name>)."),
        out_dir: str | None = typer.Option(
            None, "--out", "-o", "--out-dir", help="The directory that holds runs (the run is DIR/NAME)."),
        epochs: int | None = typer.Option(None, "--epochs", help="Override train.epochs."),
        sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or messages."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace the run in runs/<name> (else a new name is picked)."),
        allow_config_change: bool = typer.Option(
            False, "--allow-config-change",
            help="Resume although config.toml differs from the checkpoint's (recorded)."),
    ) -> None:
        """Train a model from a config (MNIST-1D MLP by default); writes runs/<name>/."""
        from thalweg.train import fit, load_config
        from thalweg.train.config import DEFAULT_TOML

        if print_config:
            typer.echo(DEFAULT_TOML, nl=False)
            return
        with exit_on_run_errors("`thalweg resume` continues the run"):
            overrides = cli_overrides(sets, {"name": name, "out_dir": out_dir, "train.epochs": epochs})
            if resume is not None:
                if config is not None or overrides or overwrite:
                    raise typer.BadParameter("--resume takes the config from the run directory")
                result = fit(resume=resume, quiet=quiet, allow_config_change=allow_config_change)
            else:
                result = fit(load_config(config, overrides), quiet=quiet, overwrite=overwrite)
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
            return
        best = (f"best {result.best_metric} {result.best_value:.4f} at step {result.best_step}"
                if result.best_value is not None else f"no finite {result.best_metric}")
        typer.echo(f"run: {result.run_dir}  ({result.stopped} after {result.steps} steps, "
                   f"{result.seconds:.1f} s; {best}; report: {result.run_dir / 'report.html'})")
        if result.test_accuracy is not None:
            typer.echo(f"test accuracy: {result.test_accuracy:.4f}")
        elif result.test_loss is not None:
            typer.echo(f"test loss: {result.test_loss:.6g}")

    @app.command("resume")
    def resume_cmd(
        run_dir: Path = typer.Argument(..., help="The run directory, e.g. runs/default."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or messages."),
        allow_config_change: bool = typer.Option(
            False, "--allow-config-change",
            help="Resume although config.toml differs from the checkpoint's (recorded)."),
    ) -> None:
        """Continue an interrupted run from its newest good checkpoint (= train --resume, or
        meta --resume for a `thalweg meta` run)."""
        if _is_meta_run(run_dir):
            from thalweg.meta.run import run_meta

            if allow_config_change:
                raise typer.BadParameter("--allow-config-change is for `thalweg train` runs; this is a meta run")
            with exit_on_run_errors("`thalweg resume RUN` continues the run"):
                run_meta(resume=run_dir, quiet=quiet)
            return
        train(config=None, resume=run_dir, print_config=False, name=None, out_dir=None,
              epochs=None, sets=None, quiet=quiet, overwrite=False, allow_config_change=allow_config_change)
