"""The end of a `thalweg meta` run: every method's best weights adapted on the meta-test
tasks, the adaptation table (`summary.json`), the figures and `report.html`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from thalweg import meta as M
from thalweg.meta.config import MetaRunConfig, dump_meta_config
from thalweg.train.rundir.runs import RunPaths, dumps, read_metrics, write_atomic

__all__ = ["STREAM_TEST", "Finished", "finish"]


class Finished(Protocol):
    """What the end of a run reads of it (a :class:`~thalweg.meta.run.MetaRun`, which calls
    :func:`finish`): the config, tasks and files, each method's best weights, and `begin`, which
    makes a method's learner on the run's device."""

    cfg: MetaRunConfig
    paths: RunPaths
    tasks: dict[str, M.TaskDistribution]
    device: torch.device
    regression: bool
    measure: Any
    s: dict[str, Any]
    best_weights: dict[str, Any]
    learner: M.MetaLearner | None
    opt: Any

    def begin(self, method: str, quiet: bool = False) -> None: ...

STREAM_TEST = 2  # the episode stream of the meta-test tasks (0 train, 1 validation)


def _title(cfg: MetaRunConfig) -> str:
    t = cfg.task
    if t.name == "sinusoid":
        return f"{t.k_shot}-shot sinusoid regression"
    return f"{t.n_way}-way {t.k_shot}-shot {t.dataset}, held-out classes"


def finish(run: Finished) -> dict[str, Any]:
    """Evaluate every method's best weights on the meta-test tasks; write the summary,
    figures and report."""
    from thalweg.meta import plots

    m, table, fits = run.cfg.meta, {}, {}
    test = run.tasks["test"].sample(m.test_tasks, M.episode_seed(m.seed, STREAM_TEST, 0)).to(run.device)
    grid = fit_ep = None
    if run.regression:
        lo, hi = run.cfg.task.x_range
        grid = torch.linspace(lo, hi, 200)
        few = test.select(slice(0, m.fit_tasks))
        gx = grid.view(1, -1, 1).expand(len(few), -1, -1).to(run.device)
        fit_ep = M.Episode(few.support_x, few.support_y, gx, torch.zeros_like(gx), few.info)
    fit_steps = sorted({0, min(1, m.adapt_steps), m.adapt_steps})
    for method in m.methods:
        run.s["phase"] = m.methods.index(method)
        run.begin(method, quiet=True)
        assert run.learner is not None
        run.learner.load_state_dict(run.best_weights[method])
        oracle = method == "oracle"
        ep = M.Sinusoid.with_descriptors(test) if oracle else test
        curves = run.learner.evaluate(ep, 0 if oracle else m.adapt_steps, run.measure)
        table[method] = M.adaptation_table(curves.expand(-1, m.adapt_steps + 1) if oracle else curves)
        if fit_ep is not None and not oracle:
            pred = run.learner.evaluate(fit_ep, m.adapt_steps, lambda out, y: out)
            fits[method] = pred[:, fit_steps, :, 0].cpu()
    run.s["phase"], run.learner, run.opt = len(m.methods), None, None
    metric = "query_mse" if run.regression else "query_accuracy"
    summary = {"task": run.cfg.task.name, "metric": metric, "test_tasks": m.test_tasks,
               "adaptation": table, "best": run.s["best"], "skipped_steps": run.s["skipped"],
               "seconds": {k: round(v, 2) for k, v in run.s["seconds"].items()}}
    write_atomic(run.paths.summary, dumps(summary, indent=2) + "\n")
    figs: list[Path] = []
    if m.figures:
        label = "query MSE (mean over test tasks)" if run.regression else "query accuracy"
        figs.append(plots.plot_adaptation(table, run.paths.figures / "adaptation.png", ylabel=label,
                                          logy=run.regression,
                                          title=f"{_title(run.cfg)}: {m.test_tasks} meta-test tasks"))
        key = "val_mse" if run.regression else "val_accuracy"
        p = plots.plot_meta_training(read_metrics(run.paths.metrics), key,
                                     run.paths.figures / "meta_training.png", ylabel=key,
                                     logy=run.regression)
        figs += [p] if p else []
        if fits and fit_ep is not None and grid is not None:
            few = test.select(slice(0, m.fit_tasks))
            truth = M.Sinusoid.function(grid.view(1, -1, 1), few.info["amplitude"].cpu(),
                                        few.info["phase"].cpu())[..., 0]
            figs.append(plots.plot_fits(grid, truth, (few.support_x[..., 0].cpu(), few.support_y[..., 0].cpu()),
                                        fits, fit_steps, run.paths.figures / "fits.png"))
    plots.write_report(run.paths.report, f"{_title(run.cfg)} — thalweg meta run {run.paths.root.name}", summary, figs,
                       dump_meta_config(run.cfg))
    return summary
