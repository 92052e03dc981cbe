"""CLI: `thalweg trajectories` (optimizer paths on test surfaces), `thalweg landscape` (loss
slices of a trained model) and `thalweg lr-find` (the learning-rate range test)."""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _out_dir(out: Path) -> Path:
    from thalweg.outputs import OutputError, output_dir

    try:
        return output_dir(out)
    except OutputError as err:
        _fail(str(err))
    raise AssertionError  # _fail exits


def _say(note: str | None) -> None:
    if note:
        typer.echo(f"note: {note}", err=True)


def _parse_start(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        _fail(f"--start must be comma-separated numbers like '-1.5,2', got {text!r}")
    return None


def register(app: typer.Typer) -> None:
    @app.command("trajectories")
    def trajectories_cmd(
        function: str = typer.Argument("rosenbrock", help="Test surface (see --list)."),
        optimizer: list[str] = typer.Option(
            [], "--optimizer", "-O",
            help="Optimizer as name[:key=value,...], e.g. 'sgd:lr=0.01,momentum=0.9'. Repeatable.",
        ),
        lr: list[float] = typer.Option(
            [], "--lr", help="Learning rates for an LR panel of the first optimizer (repeatable)."),
        start: str | None = typer.Option(None, help="Start point, e.g. '-1.5,2'."),
        steps: int = typer.Option(100, min=0, help="Steps per optimizer."),
        out: Path = typer.Option(Path("trajectories"), "--out", "-o",
                                 help="Directory the PNG (and GIF, surface plot) go in."),
        out_name: str | None = typer.Option(
            None, "--name", help="File name without suffix (default: the function; FN_lr for an LR panel)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace files of that name (else a numbered name is picked)."),
        animate: bool = typer.Option(False, help="Also write an animated GIF next to the PNG."),
        surface: bool = typer.Option(False, help="Also write a 3-D surface plot (2-D functions)."),
        list_functions: bool = typer.Option(False, "--list", help="List the test surfaces."),
        gallery: bool = typer.Option(
            False, "--gallery", help="Write the seeds' gallery (LR effects, ravine, saddle, …) into -o."),
    ) -> None:
        """Draw optimizer paths on a test surface, side by side with loss against step; writes
        DIR/NAME.png (a numbered NAME-2 … when that exists, unless --overwrite)."""
        from thalweg.landscape import functions as F
        from thalweg.outputs import OutputError, fresh, holds_any, plain_name

        if list_functions:
            for name in F.names():
                fn = F.get(name)
                typer.echo(f"{name:16s} {fn.dim}-D  {fn.description}")
            return
        from thalweg.landscape import plots as P
        from thalweg.landscape.trajectories import default_optimizers, parse_spec, trajectories

        out = _out_dir(out)
        if gallery:
            from thalweg.landscape.gallery import write_gallery

            folder, note = fresh(out, overwrite=overwrite, taken=holds_any(["traj_*"]), what="a gallery")
            _say(note)
            for p in write_gallery(folder, animate=animate):
                typer.echo(f"wrote {p}")
            return
        try:
            fn = F.get(function)
            x0 = _parse_start(start)
            specs = list(optimizer) or default_optimizers(fn, x0)
            if lr:
                name, hp = parse_spec(specs[0])
                specs = [(name, {**hp, "lr": v}) for v in lr]
            trajs = trajectories(fn, specs, start=x0, steps=steps)
        except (ValueError, TypeError) as err:
            _fail(str(err))
            return
        exts = (".png", ".gif", "_surface.png")
        if out_name is not None:
            try:
                plain_name(out_name)
            except OutputError as err:
                _fail(str(err))
        stem, note = fresh(out / (out_name or (f"{fn.name}_lr" if lr else fn.name)), overwrite=overwrite,
                           taken=lambda s: any(s.with_name(s.name + e).exists() for e in exts),
                           what="a picture of that name")
        _say(note)
        png = stem.with_name(stem.name + ".png")
        fig = P.figure_lr_panel([(fn, trajs)]) if lr else P.figure_trajectories(fn, trajs)
        typer.echo(f"wrote {P.save(fig, png)}")
        for t in trajs:
            state = f"diverged at step {t.diverged_at}" if t.diverged else \
                f"f = {t.losses[-1]:.4g} at {[round(float(v), 4) for v in t.final]}"
            typer.echo(f"  {t.label}: {state}")
        if animate:
            gif = P.animate_trajectories(fn, trajs, stem.with_name(stem.name + ".gif"))
            typer.echo(f"wrote {gif}")
        if surface:
            if fn.dim != 2:
                _fail(f"--surface needs a 2-D function; {fn.name!r} is {fn.dim}-D")
            typer.echo(f"wrote {P.save(P.figure_surface(fn, trajs), stem.with_name(stem.name + '_surface.png'))}")

    @app.command("landscape")
    def landscape_cmd(
        paths: list[Path] | None = typer.Argument(
            None, help="Run directories or checkpoint files (several: compared)."),
        dim: int = typer.Option(2, min=1, max=2, help="1-D line or 2-D plane."),
        span: float = typer.Option(1.0, help="Coordinates run over [-span, span]."),
        resolution: int = typer.Option(21, min=3, help="Points per axis."),
        norm: str = typer.Option("filter", help="Direction normalization: filter, layer or none."),
        include_bias_norm: bool = typer.Option(
            False, help="Also perturb biases and normalization parameters."),
        mode: str = typer.Option("eval", help="Evaluate in 'eval' (default) or 'train' mode."),
        split: str = typer.Option("train", help="Data split to evaluate: train, val or test."),
        samples: int = typer.Option(1024, min=1, help="At most this many examples per point."),
        seed: int = typer.Option(0, help="Seed of the random directions."),
        log: bool = typer.Option(False, help="Plot log10 of the loss."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Directory for the files (default: RUN/landscape; without PATH: landscape)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace earlier slices there (else a numbered directory is picked)."),
        dataset: str = typer.Option("digits", help="Without PATH: dataset to train on briefly."),
        model: str = typer.Option("mlp", help="Without PATH: model to train briefly."),
        epochs: int = typer.Option(30, min=1, help="Without PATH: full-batch Adam epochs."),
        loss: str = typer.Option("plain", help="plain (the validation loss) or objective (what a run "
                                               "trained on, e.g. label-smoothed)."),
    ) -> None:
        """Slice the loss landscape around trained models (filter-normalized directions); writes
        landscape_{1,2}d.{png,npz} into RUN/landscape (a numbered one if that holds slices)."""
        from thalweg.landscape import plots as P
        from thalweg.landscape import slices as S
        from thalweg.outputs import fresh, holds_any

        try:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split must be train, val or test, got {split!r}")
            if loss not in ("plain", "objective"):
                raise ValueError(f"loss must be plain or objective, got {loss!r}")
            models = _landscape_models(paths or [], dataset, model, epochs, loss)
            kw = dict(span=span, resolution=resolution, norm=norm, seed=seed, mode=mode,
                      ignore_bias_and_norm=not include_bias_norm)
            found = []
            for net, splits, loss_fn, title, *_ in models:
                x = getattr(splits, f"x_{split}")[:samples]
                y = getattr(splits, f"y_{split}")[:samples]
                fn = S.slice_1d if dim == 1 else S.slice_2d
                found.append((fn(net, loss_fn, (x, y), **kw), title))  # type: ignore[arg-type]
        except (ValueError, TypeError, FileNotFoundError) as err:
            _fail(str(err))
            return
        default = Path(models[0][5]) / "landscape" if models[0][5] is not None else Path("landscape")
        out, note = fresh(_out_dir(out or default), overwrite=overwrite, taken=holds_any(["landscape_*"]),
                          what="earlier slices")
        _say(note)
        for k, ((s, title), label) in enumerate(zip(found, [m[4] for m in models], strict=True)):
            stem = out / (f"landscape_{dim}d" + (f"_{k}" if len(found) > 1 else ""))
            typer.echo(f"wrote {s.save(stem.with_suffix('.npz'))}")
            fig = S.figure_slice(s, f"{label} landscape ({split} split): {title}", log=log)
            typer.echo(f"wrote {P.save(fig, stem.with_suffix('.png'))}")
            typer.echo(f"  {title}: {label} at the trained weights {s.center_loss:.4g}; {s.describe()}")
        if len(found) > 1 and dim == 1:
            fig = S.figure_compare([s for s, _ in found], [t for _, t in found], log=log)
            typer.echo(f"wrote {P.save(fig, out / 'landscape_1d_compare.png')}")

    @app.command("lr-find")
    def lr_find_cmd(
        config: Path | None = typer.Argument(None, help="Training config (TOML), optional."),
        dataset: str = typer.Option("mnist1d", help="Without CONFIG: dataset."),
        model: str = typer.Option("mlp", help="Without CONFIG: model (linear, mlp, cnn1d)."),
        optimizer: str = typer.Option("adam", help="Without CONFIG: optimizer name[:key=value]."),
        batch_size: int = typer.Option(64, min=1, help="Minibatch size (CONFIG: its own)."),
        start_lr: float = typer.Option(1e-6, help="First learning rate."),
        end_lr: float = typer.Option(10.0, help="Last learning rate."),
        steps: int = typer.Option(100, min=3, help="Number of minibatches in the sweep."),
        rule: str = typer.Option("min/10", help="Suggestion rule: min/10 (stable across --steps) or steepest."),
        diverge_factor: float = typer.Option(4.0, help="Stop when loss > this × best."),
        seed: int = typer.Option(0, help="Seed for the model and the batches."),
        out: Path = typer.Option(Path("lr_find"), "--out", "-o", help="Directory for lr_find.png and lr_find.npz."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an earlier test there (else a numbered directory is picked)."),
    ) -> None:
        """The learning-rate range test: sweep the LR up exponentially and suggest one; writes
        DIR/lr_find.{png,npz} (a numbered DIR-2 … if DIR holds an earlier test)."""
        from thalweg.landscape import lr_finder as L
        from thalweg.landscape import plots as P
        from thalweg.outputs import fresh, holds_any

        out = _out_dir(out)

        try:
            net, opt, loss_fn, data, bs, what = _lr_setup(
                config, dataset, model, optimizer, batch_size, seed)
            res = L.lr_find(net, opt, loss_fn, data, start_lr=start_lr, end_lr=end_lr,
                            num_steps=steps, batch_size=bs, rule=rule,
                            diverge_factor=diverge_factor, seed=seed)
        except (ValueError, TypeError, FileNotFoundError) as err:
            _fail(str(err))
            return
        out, note = fresh(out, overwrite=overwrite, taken=holds_any(["lr_find.*"]), what="an earlier range test")
        _say(note)
        typer.echo(f"range test: {what}, lr {start_lr:g} → {end_lr:g} over {len(res.lrs)} batches")
        typer.echo(f"wrote {res.save(out / 'lr_find.npz')}")
        fig = L.figure_lr_find(res, f"learning-rate range test: {what}")
        typer.echo(f"wrote {P.save(fig, out / 'lr_find.png')}")
        sug = "none (sweep too short)" if res.suggestion is None else f"{res.suggestion:.3g}"
        typer.echo(f"suggested lr: {sug}  (rule: {L.RULES[rule]})")
        if res.diverged:
            typer.echo(f"  stopped at lr {res.lrs[-1]:.3g}: smoothed loss > {diverge_factor:g}× best")


def _landscape_models(paths: list[Path], dataset: str, model: str, epochs: int,
                      loss: str = "plain") -> list[tuple]:
    """(model, splits, loss_fn, title, loss label, run dir) for each run path, or one briefly trained
    model; `loss` "plain" is the validation loss, "objective" what the run trained on."""
    if not paths:
        from thalweg.landscape.gallery import train_briefly

        net, splits, loss_fn = train_briefly(dataset, model, epochs=epochs)
        return [(net, splits, loss_fn, f"{model} on {dataset} ({epochs} epochs of Adam)", "loss", None)]
    from thalweg.train import load_run

    out = []
    for path in paths:
        run = load_run(path)
        fn = run.eval_loss_fn if loss == "plain" else run.loss_fn
        label = fn.label
        out.append((run.model, run.splits, fn, f"{Path(run.run_dir).name} ({Path(run.checkpoint).name})", label,
                    run.run_dir))
    return out


def _lr_setup(config: Path | None, dataset: str, model: str, optimizer: str, batch_size: int,
              seed: int) -> tuple:
    """Model, optimizer, loss and data for lr-find through `thalweg.train.build_run` (so the
    config's data, standardization, [init] rule and training loss apply), from a training
    config or from the options."""
    from thalweg.train import build_run, load_config, parse_config

    if config is not None:
        cfg = load_config(config)
        what = f"{cfg.model.name} on {cfg.data.name}, {cfg.optimizer.name}"
        batch_size = cfg.train.batch_size
    else:
        from thalweg.landscape.trajectories import parse_spec, resolve

        name, hp = parse_spec(optimizer)
        what = f"{model} on {dataset}, {resolve(optimizer).label}"
        cfg = parse_config({"data": {"name": dataset, "seed": seed}, "model": {"name": model},
                            "optimizer": {"name": name, **hp},
                            "train": {"seed": seed, "batch_size": batch_size}})
    parts = build_run(cfg, device="cpu")
    if parts.info.needs_closure:
        raise ValueError(f"lr-find needs a first-order optimizer, {cfg.optimizer.name!r} needs a closure")
    return (parts.model, parts.optimizer, parts.loss_fn, (parts.splits.x_train, parts.splits.y_train),
            batch_size, what)
