"""The `thalweg` command line: one typer app; each area registers its own commands.

Command modules keep heavy imports (matplotlib, scipy, models) inside the command bodies so
that `thalweg --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="thalweg",
    help="Optimizers for deep learning, and instruments that show why training is slow or stuck.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module here defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES: list[str] = [
    "thalweg.bench.commands",
    "thalweg.curvature.commands",
    "thalweg.landscape.commands",
    "thalweg.optim.commands",
    "thalweg.train.commands",
    "thalweg.meta.commands",
    "thalweg.diagnose.commands",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)




def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from thalweg import __version__

        try:
            torch = version("torch")  # read from the installed metadata: no torch import
        except PackageNotFoundError:
            torch = "not installed"
        typer.echo(f"thalweg {__version__} (torch {torch})")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print thalweg's version (and torch's) and exit."),
) -> None:
    """Optimizers for deep learning, and instruments that show why training is slow or stuck."""


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
