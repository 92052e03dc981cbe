"""`thalweg meta [CONFIG.toml]`: meta-train each method of a config on one task distribution,
keep each method's best weights on meta-validation tasks, and write the adaptation table.

The run directory is the trainer's: `config.toml`, `metrics.jsonl`, `checkpoints/` (atomic,
checksummed, via :mod:`thalweg.train.checkpoint`), `best.pt` (every method's best weights so
far), `figures/`, `report.html`, `summary.json`. Methods train one after another from the
same initialization on the same episodes (each a pure function of (seed, iteration)); a
checkpoint holds the phase, the learner, the outer optimizer, every RNG and the metrics
position, so a run killed at any moment resumes bitwise identically.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thalweg import meta as M
from thalweg.train.checkpoint import (
    BackgroundWriter,
    CheckpointManager,
    kill_point,
    save_checkpoint,
    snapshot,
)
from thalweg.train.config import ConfigError
from thalweg.train.meta_config import (
    MetaRunConfig,
    build_tasks,
    dump_meta_config,
    load_meta_config,
    make_learner,
    parse_meta_config,
)
from thalweg.train.progress import ProgressView
from thalweg.train.runs import MetricsLog, RunPaths, read_metrics, write_atomic
from thalweg.train.state import capture_rng, restore_rng, seed_everything

__all__ = ["MetaResult", "MetaRun", "register", "run_meta"]

_STREAM_TRAIN, _STREAM_VAL, _STREAM_TEST = 0, 1, 2
@dataclass
class MetaResult:
    """Where the run is, and its summary (the adaptation table)."""

    run_dir: Path
    summary: dict[str, Any]


class MetaRun:
    """One `thalweg meta` run: its phases (one per method), checkpoints and report."""

    def __init__(self, cfg: MetaRunConfig, *, resume: bool = False, quiet: bool = False,
                 overwrite: bool = False) -> None:
        self.cfg, m = cfg, cfg.meta
        self.paths = RunPaths(cfg.run_dir())
        self.view = ProgressView(enabled=not quiet)
        dev = m.device if m.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda" and not torch.cuda.is_available():
            raise ConfigError("meta", "device", "cuda", "no CUDA device is available")
        self.device = torch.device(dev)
        self.tasks = build_tasks(cfg)
        for method in m.methods:  # every bad setting is reported before anything is written
            make_learner(cfg, method, self.tasks)
        self.regression = self.tasks["train"].task == "regression"
        self.measure = None if self.regression else M.accuracy
        self.val = self.tasks["val"].sample(m.val_tasks, M.episode_seed(m.seed, _STREAM_VAL, 0)).to(dev)
        self.ckpts = CheckpointManager(self.paths.checkpoints, keep=m.keep_checkpoints)
        self.writer = BackgroundWriter()
        self.log = MetricsLog(self.paths.metrics)
        self.s: dict[str, Any] = {"phase": 0, "iteration": 0, "step": 0, "best": {}, "window": [0.0, 0],
                                  "skipped": 0, "streak": 0, "seconds": {}}
        self.best_weights: dict[str, Any] = {}
        self.final_weights: dict[str, Any] = {}
        self.learner: M.MetaLearner | None = None
        self.opt: Any = None
        if resume:
            self._resume()
        else:
            self._fresh(overwrite)

    # ----- run directory -----------------------------------------------------------------
    def _fresh(self, overwrite: bool) -> None:
        root = self.paths.root
        held = [p for p in (self.paths.checkpoints, self.paths.metrics, self.paths.summary) if p.exists()]
        if held and not overwrite:
            raise FileExistsError(f"{root} already holds a run ({held[0].name}); `--resume {root}` "
                                  "continues it, `--overwrite` replaces it")
        if held:
            self.view.notice(f"replacing the run in {root} (--overwrite)")
            shutil.rmtree(self.paths.checkpoints, ignore_errors=True)
            for p in (self.paths.best, self.paths.summary, self.paths.report):
                p.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.paths.config, dump_meta_config(self.cfg))
        self.log.open()

    def _resume(self) -> None:
        self.ckpts.remove_stale_temps()
        for tmp in self.paths.root.glob(".best.pt.tmp-*"):  # a best.pt write that was killed
            tmp.unlink(missing_ok=True)
        latest = self.ckpts.load_latest()
        for path, why in self.ckpts.skipped:
            self.view.notice(f"[yellow]warning:[/] skipped damaged checkpoint {path.name}: {why}")
        if latest is None:
            self.view.notice(f"[yellow]warning:[/] no usable checkpoint in {self.paths.checkpoints}; "
                             "starting from scratch")
            self.log.open()
            return
        path, st = latest
        self.s, self.best_weights = dict(st["meta"]), dict(st["best_weights"])
        self.final_weights = dict(st["final_weights"])
        if st["learner"] is not None:
            self._begin(self.method(), quiet=True)
            assert self.learner is not None
            self.learner.load_state_dict(st["learner"])
            self.opt.load_state_dict(st["optimizer"])
        restore_rng(st["rng"])
        self.log.open(keep_lines=st["metrics_lines"])
        self.view.notice(f"resumed {self.paths.root} from {path.name} (step {self.s['step']})")

    def _state(self) -> dict[str, Any]:
        lr = self.learner
        return {"meta": self.s, "learner": lr.state_dict() if lr is not None else None,
                "optimizer": self.opt.state_dict() if lr is not None else None,
                "best_weights": self.best_weights, "final_weights": self.final_weights, "rng": capture_rng(),
                "metrics_lines": self.log.lines, "config": self.cfg.model_dump(mode="json")}

    def _save(self) -> None:
        self.log.sync()
        self.writer.submit(self.ckpts.save, snapshot(self._state()), self.s["step"])

    # ----- phases ------------------------------------------------------------------------
    def method(self) -> str:
        return self.cfg.meta.methods[self.s["phase"]]

    def iterations(self, method: str) -> int:
        return 0 if method == "scratch" else int(self.cfg.setting(method, "iterations"))

    def _begin(self, method: str, quiet: bool = False) -> None:
        """Fresh learner and outer optimizer for `method`, from the run's one initialization."""
        from thalweg.optim import registry

        seed_everything(self.cfg.meta.seed)
        self.learner = make_learner(self.cfg, method, self.tasks)
        self.learner.model.to(self.device)
        if self.learner.inner_lrs is not None:
            self.learner.inner_lrs.to(self.device)
        hp = {**self.cfg.outer.hyperparameters(), "lr": self.cfg.setting(method, "outer_lr")}
        hp = {k: v for k, v in hp.items() if v is not None}
        try:
            self.opt = registry.create(self.cfg.outer.name, self.learner.parameters(), **hp)
        except (ValueError, TypeError) as e:
            raise ConfigError("outer", "name", self.cfg.outer.name, str(e)) from None
        if not quiet:
            n = len(self.cfg.meta.methods)
            self.view.print(f"meta-training {method} ({self.s['phase'] + 1}/{n}): "
                            f"{self.iterations(method)} meta-updates of {self.cfg.meta.meta_batch} tasks")

    def _episode(self, split: str, method: str, n: int, seed: int) -> M.Episode:
        ep = self.tasks[split].sample(n, seed, shuffle_labels=method != "pretrained" or split != "train")
        return (M.Sinusoid.with_descriptors(ep) if method == "oracle" else ep).to(self.device)

    def _val_metric(self, method: str) -> float:
        assert self.learner is not None
        ep = M.Sinusoid.with_descriptors(self.val) if method == "oracle" else self.val
        steps = 0 if method == "oracle" else self.cfg.meta.val_steps
        return float(self.learner.evaluate(ep, steps, self.measure)[:, -1].mean())

    def _finite(self, loss: torch.Tensor) -> bool:
        grads = [p.grad for p in self.learner.parameters() if p.grad is not None]  # type: ignore[union-attr]
        return bool(torch.isfinite(loss)) and bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    def _iteration(self, method: str, n: int) -> None:
        m, s = self.cfg.meta, self.s
        assert self.learner is not None
        t0 = time.perf_counter()
        i = s["iteration"]
        ep = self._episode("train", method, m.meta_batch, M.episode_seed(m.seed, _STREAM_TRAIN, i))
        self.opt.zero_grad()
        loss = self.learner.meta_backward(ep)
        if self._finite(loss):
            self.opt.step()
            s["streak"] = 0
            s["window"] = [s["window"][0] + float(loss), s["window"][1] + 1]
        else:
            s["skipped"] += 1
            s["streak"] += 1
            self.log.write({"event": "nonfinite", "method": method, "iteration": i + 1, "step": s["step"] + 1})
            if s["streak"] >= 10:
                raise FloatingPointError(f"{method}: the meta-loss or meta-gradient was non-finite 10 "
                                         f"times in a row (iteration {i + 1}); lower [outer] lr or [inner] lr")
        s["iteration"], s["step"] = i + 1, s["step"] + 1
        it = i + 1
        rec: dict[str, Any] | None = None
        if it % m.log_every == 0 or it % m.eval_every == 0 or it == n:
            total, count = s["window"]
            rec = {"method": method, "iteration": it, "step": s["step"],
                   "meta_loss": total / count if count else None}
            s["window"] = [0.0, 0]
        if it % m.eval_every == 0 or it == n:
            assert rec is not None
            value = self._val_metric(method)
            key = "val_mse" if self.regression else "val_accuracy"
            rec[key] = value
            best = s["best"].get(method)
            better = best is None or (value < best["value"] if self.regression else value > best["value"])
            if math.isfinite(value) and better:
                s["best"] = {**s["best"], method: {"value": value, "iteration": it, "metric": key}}
                self.best_weights = {**self.best_weights, method: snapshot(self.learner.state_dict())}
                self.writer.submit(save_checkpoint, snapshot({"methods": self.best_weights, "best": s["best"],
                                                              "config": self.cfg.model_dump(mode="json")}),
                                   self.paths.best)
        s["seconds"] = {**s["seconds"], method: s["seconds"].get(method, 0.0) + time.perf_counter() - t0}
        if rec is not None:
            rec["seconds"] = round(sum(s["seconds"].values()), 3)
            self.log.write(rec)
            lr = self.opt.param_groups[0]["lr"]
            self.view.update({"step": s["step"], "lr": float(lr) if not callable(lr) else lr(i),
                              "train_loss": rec["meta_loss"] if rec["meta_loss"] is not None else float("nan"),
                              **({"val_accuracy": rec["val_accuracy"]} if "val_accuracy" in rec else {})})
        else:
            self.view.advance()
        if it == n:  # the phase is over: its checkpoint keeps the final weights, starts the next
            self.final_weights = {**self.final_weights, method: snapshot(self.learner.state_dict())}
            s["phase"], s["iteration"] = s["phase"] + 1, 0
            self.learner = self.opt = None
            self._save()
        elif it % m.checkpoint_every == 0:
            self._save()
        kill_point(s["step"], self.writer)

    def train(self) -> None:
        methods = self.cfg.meta.methods
        total = sum(self.iterations(x) for x in methods)
        self.view.start(total, self.s["step"], len(methods))
        try:
            if self.s["step"] == 0 and not self.ckpts.paths():
                self._save()
            while self.s["phase"] < len(methods):
                method = self.method()
                if self.learner is None:
                    self._begin(method)
                n = self.iterations(method)
                if n == 0:  # scratch: the initialization is its best and final weights
                    assert self.learner is not None
                    w = snapshot(self.learner.state_dict())
                    self.best_weights = {**self.best_weights, method: w}
                    self.final_weights = {**self.final_weights, method: w}
                    self.s["phase"], self.learner, self.opt = self.s["phase"] + 1, None, None
                    self._save()
                while self.learner is not None:
                    self._iteration(method, n)
            self.writer.wait()
        finally:
            self.view.stop()

    # ----- the adaptation table ----------------------------------------------------------
    def _title(self) -> str:
        t = self.cfg.task
        if t.name == "sinusoid":
            return f"{t.k_shot}-shot sinusoid regression"
        return f"{t.n_way}-way {t.k_shot}-shot {t.dataset}, held-out classes"

    def finish(self) -> dict[str, Any]:
        """Evaluate every method's best weights on the meta-test tasks; write the summary,
        figures and report."""
        from thalweg.meta import plots

        m, table, fits = self.cfg.meta, {}, {}
        test = self.tasks["test"].sample(m.test_tasks, M.episode_seed(m.seed, _STREAM_TEST, 0)).to(self.device)
        grid = fit_ep = None
        if self.regression:
            lo, hi = self.cfg.task.x_range
            grid = torch.linspace(lo, hi, 200)
            few = test.select(slice(0, m.fit_tasks))
            gx = grid.view(1, -1, 1).expand(len(few), -1, -1).to(self.device)
            fit_ep = M.Episode(few.support_x, few.support_y, gx, torch.zeros_like(gx), few.info)
        fit_steps = sorted({0, min(1, m.adapt_steps), m.adapt_steps})
        for method in m.methods:
            self.s["phase"] = m.methods.index(method)
            self._begin(method, quiet=True)
            assert self.learner is not None
            self.learner.load_state_dict(self.best_weights[method])
            oracle = method == "oracle"
            ep = M.Sinusoid.with_descriptors(test) if oracle else test
            curves = self.learner.evaluate(ep, 0 if oracle else m.adapt_steps, self.measure)
            table[method] = M.adaptation_table(curves.expand(-1, m.adapt_steps + 1) if oracle else curves)
            if fit_ep is not None and not oracle:
                pred = self.learner.evaluate(fit_ep, m.adapt_steps, lambda out, y: out)
                fits[method] = pred[:, fit_steps, :, 0].cpu()
        self.s["phase"], self.learner, self.opt = len(m.methods), None, None
        metric = "query_mse" if self.regression else "query_accuracy"
        summary = {"task": self.cfg.task.name, "metric": metric, "test_tasks": m.test_tasks,
                   "adaptation": table, "best": self.s["best"], "skipped_steps": self.s["skipped"],
                   "seconds": {k: round(v, 2) for k, v in self.s["seconds"].items()}}
        write_atomic(self.paths.summary, json.dumps(summary, indent=2) + "\n")
        figs: list[Path] = []
        if m.figures:
            label = "query MSE (mean over test tasks)" if self.regression else "query accuracy"
            figs.append(plots.plot_adaptation(table, self.paths.figures / "adaptation.png", ylabel=label,
                                              logy=self.regression,
                                              title=f"{self._title()}: {m.test_tasks} meta-test tasks"))
            key = "val_mse" if self.regression else "val_accuracy"
            p = plots.plot_meta_training(read_metrics(self.paths.metrics), key,
                                         self.paths.figures / "meta_training.png", ylabel=key,
                                         logy=self.regression)
            figs += [p] if p else []
            if fits and fit_ep is not None and grid is not None:
                few = test.select(slice(0, m.fit_tasks))
                truth = M.Sinusoid.function(grid.view(1, -1, 1), few.info["amplitude"].cpu(),
                                            few.info["phase"].cpu())[..., 0]
                figs.append(plots.plot_fits(grid, truth, (few.support_x[..., 0].cpu(), few.support_y[..., 0].cpu()),
                                            fits, fit_steps, self.paths.figures / "fits.png"))
        plots.write_report(self.paths.report, f"thalweg meta {self.cfg.name}", summary, figs,
                           dump_meta_config(self.cfg))
        return summary


def run_meta(config: MetaRunConfig | dict[str, Any] | str | Path | None = None, *,
             resume: str | Path | None = None, quiet: bool = False, overwrite: bool = False) -> MetaResult:
    """Run `thalweg meta` from a config (object, dict, TOML path or None for the default), or
    continue the run directory `resume` from its newest good checkpoint."""
    if resume is not None:
        run_dir = Path(resume)
        cfg_path = RunPaths(run_dir).config
        if not cfg_path.is_file():
            raise FileNotFoundError(f"cannot resume {run_dir}: no config.toml there")
        cfg = parse_meta_config(tomllib.loads(cfg_path.read_text()))
        cfg = cfg.model_copy(update={"out_dir": str(run_dir.parent), "name": run_dir.name})
    elif isinstance(config, MetaRunConfig):
        cfg = config
    else:
        cfg = parse_meta_config(config) if isinstance(config, dict) else load_meta_config(config)
    threads = torch.get_num_threads()
    if cfg.meta.num_threads:
        torch.set_num_threads(cfg.meta.num_threads)
    run = None
    try:
        run = MetaRun(cfg, resume=resume is not None, quiet=quiet, overwrite=overwrite)
        run.train()
        summary = run.finish()
        return MetaResult(run.paths.root, summary)
    finally:
        if run is not None:
            run.writer.close()
            run.log.close()
        torch.set_num_threads(threads)


def register(app: Any) -> None:
    """`thalweg meta [CONFIG] [--resume RUN] [--print-config] …`."""
    import typer

    @app.command("meta")
    def meta_cmd(
        config: Path | None = typer.Argument(None, help="TOML config; omit for the embedded default."),
        resume: Path | None = typer.Option(None, "--resume", help="Continue runs/<name> from its newest good checkpoint."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the default config (TOML) and exit."),
        name: str | None = typer.Option(None, "--name", help="Override the run name (runs/<name>)."),
        out_dir: str | None = typer.Option(None, "--out-dir", help="Override the directory that holds runs."),
        iterations: int | None = typer.Option(None, "--iterations", help="Override meta.iterations."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in runs/<name>."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or messages."),
    ) -> None:
        """Meta-learning: MAML, first-order MAML, Reptile vs a pretrained baseline (10-shot
        sinusoid by default); writes runs/<name>/ with the adaptation table and figures."""
        from thalweg.train.meta_config import META_DEFAULT_TOML

        if print_config:
            typer.echo(META_DEFAULT_TOML, nl=False)
            return
        overrides = {k: v for k, v in {"name": name, "out_dir": out_dir,
                                       "meta.iterations": iterations}.items() if v is not None}
        try:
            if resume is not None:
                if config is not None or overrides:
                    raise ConfigError("", "--resume", str(resume), "takes the config from the run directory")
                result = run_meta(resume=resume, quiet=quiet)
            else:
                result = run_meta(load_meta_config(config, overrides), quiet=quiet, overwrite=overwrite)
        except (ConfigError, FileNotFoundError, FileExistsError) as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from None
        except FloatingPointError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(3) from None
        s = result.summary
        typer.echo(f"run: {result.run_dir}  (report: {result.run_dir / 'report.html'})")
        steps = next(iter(s["adaptation"].values()))["steps"]
        show = sorted({0, min(1, steps[-1]), steps[-1]})
        typer.echo(f"{s['metric']} after k inner steps, mean ± 95% CI over {s['test_tasks']} meta-test tasks:")
        typer.echo("  " + f"{'method':<12}" + "".join(f"{'k=' + str(k):>18}" for k in show))
        for method, row in s["adaptation"].items():
            cells = "".join(f"{row['mean'][k]:>11.4f} ± {row['ci95'][k]:<5.3f}" for k in show)
            typer.echo(f"  {method:<12}{cells}")
