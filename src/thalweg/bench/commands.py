"""CLI: `thalweg bench run|report|workloads|calibrate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmark optimizers as AlgoPerf does: time-to-target, "
                             "performance profiles, score; tuned or self-tuning.",
                        no_args_is_help=True)  # fmt: skip
    app.add_typer(bench, name="bench")

    @bench.callback()
    def _needs_optuna() -> None:
        """Benchmark optimizers (needs the [bench] extra: Optuna)."""
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            typer.echo("error: thalweg bench needs Optuna: pip install 'thalweg[bench]'", err=True)
            raise typer.Exit(2)

    @bench.command("run")
    def run(
        source: str = typer.Argument("quick", help="A suite (quick, standard, full, seeds, mnist1d, recipes) or a bench TOML."),
        workload: list[str] = typer.Option([], "--workload", "-w", help="Replace the suite's workloads: a registered "
                                           "name or a `thalweg train` config (my.toml); repeatable."),
        code: list[str] = typer.Option([], "--code", help="A workload of your own Python code, FILE.py:factory or "
                                       "module:factory (this RUNS that code); repeatable."),
        ruleset: str | None = typer.Option(None, "--ruleset", help="external (tuned) or self (defaults, 1.5× budget)."),
        name: str | None = typer.Option(None, "--name", help="Bench name: results go to DIR/NAME (default: the suite's)."),
        out_dir: Path = typer.Option(Path("bench"), "--out", "-o", "--dir",
                                     help="Directory holding benches (the bench is DIR/NAME)."),
        workers: int | None = typer.Option(None, "--workers", help="Worker processes (default: one per CPU; 0 = inline)."),
        threads: int = typer.Option(1, "--threads", help="torch threads per trial."),
        trials: int | None = typer.Option(None, "--trials", help="Override N, trials per study."),
        studies: int | None = typer.Option(None, "--studies", help="Override M, studies per submission."),
        seed: int | None = typer.Option(None, "--seed", help="Added to every seed: an independent run of the bench."),
        storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL of the study database (default: DIR/NAME/study.db)."),
        executor: str = typer.Option("local", "--executor", help="local or ray."),
        ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join (default: a local one)."),
        sets: list[str] | None = typer.Option(
            None, "--set", help="FIELD=VALUE: change one field of the suite or TOML (repeatable), checked "
                                "as if it were in the file, e.g. --set seeds=3 --set 'optimizers=[\"adam\"]'."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress."),
    ) -> None:
        """Run (or resume) a bench; writes DIR/NAME/{results.jsonl, report.html, study.db}."""
        from thalweg import overrides
        from thalweg.bench.api import run_bench
        from thalweg.bench.harness.runner import BenchError
        from thalweg.bench.suites import BenchConfigError
        from thalweg.train.commands import exit_on_run_errors

        if ruleset not in (None, "external", "self"):
            raise typer.BadParameter("--ruleset must be external or self")
        if executor not in ("local", "ray"):
            raise typer.BadParameter("--executor must be local or ray")
        own = {"workloads": list(workload), "code": list(code)} if workload or code else {}
        # an option left out must not undo a --set of the same field (None would restore the default)
        options = {k: v for k, v in {"ruleset": ruleset, "name": name, "trials": trials, "studies": studies,
                                     "seed": seed, **own}.items() if v is not None}  # fmt: skip
        with exit_on_run_errors("run the same `thalweg bench run` again: it resumes the bench",
                                also=(BenchConfigError, BenchError, RuntimeError, overrides.OverrideError)):
            sets_ = overrides.parse(sets or [])
            both = sorted(k for k in options if k in sets_ and sets_[k] != options[k])
            if both:
                raise BenchConfigError(f"--set {both[0]}={sets_[both[0]]!r} and --{both[0]} {options[both[0]]!r} "
                                       "disagree: give one")  # fmt: skip
            res = run_bench(source, out_dir=out_dir, workers=workers, threads=threads, storage=storage,
                            executor=executor, ray_address=ray_address, quiet=quiet, **{**sets_, **options})
        _print_scores(res, ruleset)

    def _print_scores(res: Any, ruleset: str | None) -> None:
        from thalweg.bench import scoring, uncertainty

        rs = ruleset or next((r["ruleset"] for r in res.records), "external")
        typer.echo(f"bench: {res.dir}  ({len(res.records)} trials, {res.recovered} resumed, "
                   f"{res.seconds:.0f} s); report: {res.report}")  # fmt: skip
        for title, recs in (("real workloads", scoring.real(res.records)), ("toy problems", scoring.toy(res.records))):
            if not recs:
                continue
            s = uncertainty.summarize(recs, rs, "steps")  # the report's replicates: the same intervals
            typer.echo(f"  score in steps, {title} [{rs}]: score [95 % interval], rank [interval]")
            for sub in sorted(s.score, key=lambda k: (-s.score[k], k)):
                lo, hi = s.score_ci[sub]
                rlo, rhi = s.rank_ci[sub]
                typer.echo(f"    {sub:<20} {s.score[sub]:.3f} [{lo:.3f}, {hi:.3f}]   rank {s.rank[sub]:g} "
                           f"[{rlo:g}, {rhi:g}]")  # fmt: skip
            ahead = s.ahead_of(0.95)
            if ahead:
                typer.echo("  ahead in ≥ 95 % of the bootstrap's replicates (the order a re-run is likely to repeat):")
                for a, bs in ahead.items():
                    typer.echo(f"    {a} > {', '.join(bs)}")
            if len(s.score) > 1:
                typer.echo(f"  verdict: {s.verdict()}")

    @bench.command("report")
    def report(bench_dir: Path = typer.Argument(..., help="A bench directory, e.g. bench/quick.")) -> None:
        """Rebuild report.html (and figures/, scores.json) from a bench's results.jsonl."""
        from thalweg.bench.report import write_report

        try:
            page = write_report(bench_dir)
        except (FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"report: {page}")

    @bench.command("recipe")
    def recipe_cmd(
        bench_dir: Path = typer.Argument(..., help="A bench directory."),
        workload: str = typer.Argument(..., help="A config workload of that bench, e.g. mnist1d_mlp."),
        submission: str | None = typer.Option(None, "--submission", help="Only this submission's trials."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Directory to write NAME.toml in (default: print the TOML)."),
        name: str | None = typer.Option(None, "--name", help="File name without .toml (default: the workload)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace DIR/NAME.toml (else a numbered name is picked)."),
    ) -> None:
        """The configuration the bench chose for a workload, as a `thalweg train` TOML."""
        from thalweg.bench.recipes import recipe_toml
        from thalweg.outputs import OutputError, fresh, output_dir, plain_name

        try:
            if name is not None:
                plain_name(name)
            text = recipe_toml(bench_dir, workload, submission)
            folder = None if out is None else output_dir(out)
        except (FileNotFoundError, ValueError) as e:  # OutputError is a ValueError
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        if folder is None:
            typer.echo(text, nl=False)
            return
        try:
            target, note = fresh(folder / f"{name or workload}.toml", overwrite=overwrite, taken=Path.exists,
                                 what="a recipe")
        except OutputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        if note:
            typer.echo(f"note: {note}", err=True)
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        typer.echo(f"recipe: {target}")

    @bench.command("workloads")
    def workloads_cmd(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
        """List the workloads: metric, target, budgets."""
        from rich.console import Console
        from rich.table import Table

        from thalweg.bench.tasks import workloads

        infos = workloads.infos()
        if as_json:
            typer.echo(json.dumps([w.describe() for w in infos], indent=1, default=str))
            return
        t = Table(title="thalweg bench workloads")
        for col in ("name", "group", "metric", "target", "steps", "wall s", "description"):
            t.add_column(col)
        for w in infos:
            target = "—" if w.target is None else f"{'≤' if w.mode == 'min' else '≥'} {w.target:g}"
            t.add_row(w.key, w.group, w.metric, target, str(w.step_budget), f"{w.max_seconds:g}", w.description)
        Console().print(t)

    @bench.command("calibrate")
    def calibrate_cmd(
        workload: list[str] = typer.Argument(None, help="Workloads to set targets for: registered names or "
                                             "`thalweg train` configs (my.toml)."),
        code: list[str] = typer.Option([], "--code", help="A workload of your own Python code (this RUNS it)."),
        trials: int | None = typer.Option(None, "--trials", help="Trials per study and baseline (default 20)."),
        studies: int | None = typer.Option(None, "--studies", help="Studies per baseline (default 3)."),
        seeds: int | None = typer.Option(None, "--seeds", help="Seeds the chosen configurations re-run (default 10)."),
        fraction: float | None = typer.Option(None, "--fraction", help="Share of the step budget the baselines "
                                              "train (default 0.25 = 1/r_max: submissions get 4× their steps)."),
        workers: int | None = typer.Option(None, "--workers"),
        out_dir: Path = typer.Option(Path("bench"), "--out", "-o", "--dir",
                                     help="Directory holding benches (the calibration is DIR/calibrate)."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """Set targets as AlgoPerf does: AdamW, NAdamW and Nesterov tuned (3 × 20 trials each) at
        a quarter of the step budget, the best re-run over 10 seeds, the median end-of-budget metric of the
        best baseline. `thalweg bench run` with the same -o then uses them."""
        from thalweg.bench.api import calibrate
        from thalweg.bench.harness.runner import BenchError
        from thalweg.bench.suites import BenchConfigError
        from thalweg.train.commands import exit_on_run_errors

        if not workload and not code:
            raise typer.BadParameter("name at least one workload (or --code)")
        opts = {k: v for k, v in (("trials", trials), ("studies", studies), ("seeds", seeds),
                                  ("calibration_fraction", fraction)) if v is not None}  # fmt: skip
        with exit_on_run_errors("run the same `thalweg bench calibrate` again: it resumes",
                                also=(BenchConfigError, BenchError, RuntimeError)):
            targets = calibrate(list(workload or []), code=list(code), out_dir=out_dir, workers=workers,
                                quiet=quiet, **opts)  # fmt: skip
        path = out_dir / "calibrate" / "targets.json"
        typer.echo(f"targets (in {path}; `thalweg bench run ... -o {out_dir}` uses them):")
        for key, t in targets.items():
            b = ", ".join(f"{s} {v['median']:.4g}" for s, v in t["baselines"].items() if v["median"] is not None)
            typer.echo(f"  {key}: {t['metric']} {'≤' if t['mode'] == 'min' else '≥'} {t['value']:g}  ({b})")
