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


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
