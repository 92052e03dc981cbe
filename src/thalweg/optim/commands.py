"""CLI: `thalweg optimizers` lists the registry with each optimizer's hyperparameters and the
lr a `thalweg train` config that names none starts from (the entry's `default_lr`)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("optimizers")
    def optimizers(as_json: bool = typer.Option(False, "--json", help="Print the schema as JSON.")) -> None:
        """List every optimizer thalweg knows, with its hyperparameters and defaults."""
        from rich.console import Console
        from rich.table import Table

        from thalweg.optim import registry

        if as_json:
            out = {i.name: [h.to_dict() for h in i.hyperparameters] for i in registry.infos()}
            typer.echo(json.dumps(out, indent=2, default=str))
            return
        table = Table(title="thalweg optimizers")
        table.add_column("name")
        table.add_column("order")
        table.add_column("run lr")
        table.add_column("hyperparameters (default)")
        table.add_column("aliases (presets)")
        for info in registry.infos():
            hp = ", ".join(f"{h.name}={h.default!r}" for h in info.hyperparameters)
            presets = "; ".join(
                a + (" (" + ", ".join(f"{k}={v!r}" for k, v in p.items()) + ")" if p else "")
                for a, p in info.aliases.items()
            )
            lr = "—" if info.default_lr is None else f"{info.default_lr:g}"
            table.add_row(info.name, info.order, lr, hp, presets)
        Console().print(table)
