"""Every picture the product draws, checked as a reader would be let down by it: a title or
label cut at the figure's edge, a legend over another panel, a title or its own axes' data,
notes drawn over each other (tests/figcheck.py) — plus what each fix was for: the bench's
profile legend, curves not stretched by a diverged run, "too small" and "good" panels that
differ, coinciding paths both visible, watch()'s loss curve of every step.

Each test drives the real commands and functions; every `savefig` they make is checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from figcheck import checking_savefig, problems
from thalweg.cli import app


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def _clean(seen: list[tuple[str, list[str]]], at_least: int) -> None:
    assert len(seen) >= at_least, [f for f, _ in seen]
    bad = {Path(f).name: p for f, p in seen if p}
    assert not bad, json.dumps(bad, indent=1)


@pytest.mark.slow
def test_a_run_its_inspect_doctor_landscape_and_lr_find(tmp_path: Path) -> None:
    """train → losses/accuracy/lr/grad_norm; inspect → the Hessian density (its long title
    wraps, never runs off both edges); doctor → the evidence figures; landscape; lr-find."""
    from thalweg.train import fit

    cfg = {"name": "tiny", "out_dir": str(tmp_path), "data": {"name": "digits"},
           "model": {"name": "mlp", "width": 16, "depth": 2},
           "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "warmup_cosine"},
           "train": {"epochs": 3, "batch_size": 64, "num_threads": 1}}
    with checking_savefig() as seen:
        run = fit(cfg, quiet=True).run_dir
        _ok(["inspect", str(run)])
        _ok(["doctor", str(run)])
        _ok(["landscape", str(run), "--dim", "1", "--resolution", "9", "-o", str(tmp_path / "land")])
        _ok(["lr-find", "--dataset", "digits", "--model", "mlp", "--steps", "60", "-o", str(tmp_path / "lr")])
    names = {Path(f).name for f, _ in seen}
    assert {"losses.png", "lr.png", "hessian_density.png", "landscape_1d.png", "lr_find.png"} <= names, names
    _clean(seen, 7)


@pytest.mark.slow
def test_trajectory_pictures(tmp_path: Path) -> None:
    from thalweg.landscape import plots as P
    from thalweg.landscape.gallery import write_gallery
    from thalweg.landscape.trajectories import trajectories

    with checking_savefig() as seen:
        write_gallery(tmp_path)
        # two paths that leave the window at the same spot: their notes are stacked, not overlaid
        sad = trajectories("saddle", ["newton:mode='saddle_free'", "newton:mode='saddle_free',damping=0.01",
                                      "adam:lr=0.05"], start=[-1.5, 0.01], steps=80)
        P.save(P.figure_trajectories("saddle", sad), tmp_path / "two_escapes.png")
        # Shampoo on a vector is Adam: both paths stay visible and the legend says they coincide
        rav = trajectories("ravine", ["adam:lr=0.1", "shampoo:lr=0.1"], steps=30)
        fig = P.figure_trajectories("ravine", rav)
        labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert any("same path as adam (lr=0.1)" in s for s in labels), labels
        styles = {(ln.get_linestyle(), ln.get_marker()) for ln in fig.axes[0].lines[-2:]}
        assert len(styles) == 2  # a dash pattern and a marker of its own
        P.save(fig, tmp_path / "coincide.png")
    _clean(seen, 8)


def test_the_learning_rate_panels_differ() -> None:
    """x², η = 0.05 (too small) and 0.4 (good) over 40 steps: each panel is zoomed to its own
    path (a window shared with the diverging η = 1.05 squashed both into the bowl's bottom)
    and says what the path reached."""
    from thalweg.landscape import plots as P
    from thalweg.landscape.trajectories import trajectories

    r = trajectories("x2", ["sgd:lr=0.05", "sgd:lr=0.4", "sgd:lr=1.05"], start=[-1.8], steps=40)
    fig = P.figure_lr_panel([("x2", r)])
    small, good, big = fig.axes[:3]
    assert small.get_ylim()[1] < 10 and good.get_ylim()[1] < 10 < big.get_ylim()[1]
    assert "after 40 steps: f − f* = 0.00071" in small.get_title()
    assert "e-56" in good.get_title()
    assert problems(fig) == []
    plt.close(fig)


def test_bench_report_figures_and_tables(tmp_path: Path) -> None:
    """19 submissions: the profile's one legend sits beside the panels; a run that blew up to
    1e35 does not stretch the curves' axis; no interval of a count or an accuracy goes
    negative; the wide tables scroll."""
    from fake_records import records
    from thalweg.bench.report import write_report

    recs = records()
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with checking_savefig() as seen:
        page = write_report(tmp_path).read_text()
    _clean(seen, 3)
    import re

    assert not re.search(r"\[-\d", page)  # "390 [-2583, 3363]" was a step count's interval
    assert "2 seeds: t-interval" in page
    assert "display:block;overflow-x:auto" in page  # a wide table scrolls inside the page
    # the pairwise verdict: a matrix per score table, 19 × 19 (the diagonal "—")
    assert "Who is ahead — external" in page
    block = page.split("Who is ahead — external", 1)[1].split("</table>", 1)[0]
    assert block.count("<tr") == 20 and block.count("—") >= 19 and "%" in block
    assert "<b>Verdict:</b> the first, " in page and "of the worst 7 (" in page  # 19 submissions: a third is 7


def test_curves_axis_is_not_stretched_by_a_diverged_run() -> None:
    from thalweg.bench import figures

    good = {"metric": "excess_loss", "target": 1e-6,
            "curve": {"step": list(range(0, 500, 10)), "metric": [10 * 0.8 ** i for i in range(50)]}}
    blew = {"metric": "excess_loss", "target": 1e-6,
            "curve": {"step": [0, 10, 20, 30], "metric": [10.0, 1e3, 1e20, 1e35]}}
    captured = []
    orig = plt.Figure.savefig

    def keep(self, *a, **k):
        captured.append(self)
        return orig(self, *a, **k)

    plt.Figure.savefig = keep
    try:
        figures.plot_curves({("quadratic", "adam"): good, ("quadratic", "lion"): blew}, Path("/dev/null"))
    finally:
        plt.Figure.savefig = orig
    ax = captured[0].axes[0]
    assert ax.get_ylim()[1] <= 100  # 10× the start, not 1e35
    labels = [t.get_text() for t in captured[0].legends[0].get_texts()]
    assert "lion (diverged: ×)" in labels and "adam" in labels


def test_meta_pictures_and_report(tmp_path: Path) -> None:
    """The meta report is titled by its task (not "thalweg meta meta") and shows the best
    weights as a table, not a JSON dump."""
    from thalweg.meta import plots

    steps = list(range(11))
    table = {m: {"steps": steps, "mean": [3.0 / (1 + k * s) for s in steps], "ci95": [0.1] * 11}
             for k, m in enumerate(["maml", "fomaml", "reptile", "pretrained", "oracle"], 1)}
    recs = [{"method": m, "iteration": i, "val_mse": 1.0 / i} for m in table for i in range(500, 5001, 500)]
    g = torch.linspace(-5, 5, 50)
    truth = torch.sin(g).expand(3, -1)
    preds = {m: torch.sin(g).expand(3, 3, -1) for m in ("maml", "reptile")}
    with checking_savefig() as seen:
        figs = [plots.plot_adaptation(table, tmp_path / "adaptation.png", ylabel="query MSE", logy=True,
                                      title="10-shot sinusoid regression: 600 meta-test tasks"),
                plots.plot_meta_training(recs, "val_mse", tmp_path / "meta_training.png", ylabel="val_mse", logy=True),
                plots.plot_fits(g, truth, (torch.zeros(3, 5), torch.zeros(3, 5)), preds, [0, 1, 10],
                                tmp_path / "fits.png")]
    _clean(seen, 3)
    summary = {"metric": "query_mse", "test_tasks": 600, "adaptation": table,
               "best": {"maml": {"value": 0.42, "iteration": 9500, "metric": "val_mse"}}}
    page = plots.write_report(tmp_path / "report.html", "10-shot sinusoid regression — thalweg meta run meta",
                              summary, figs, "").read_text()
    assert "<td>9500</td>" in page and '{"maml"' not in page and "MAML (second order)" in page


def test_schedule_pictures(tmp_path: Path) -> None:
    from thalweg import schedules as S

    with checking_savefig() as seen:
        S.plot({"warm-up + cosine": S.warmup(S.cosine(0.1, total_steps=900, final=1e-3), warmup_steps=100),
                "SGDR": S.warm_restarts(0.1, 100, mult=2)},
               1000, tmp_path / "lr.png")
    _clean(seen, 1)


@pytest.mark.slow
def test_watch_report_draws_every_step(tmp_path: Path) -> None:
    """A 150-step loop with the default every=50 used to get a 3-point loss curve."""
    import thalweg

    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.functional.cross_entropy
    with checking_savefig() as seen:
        w = thalweg.watch(model, opt, out_dir=tmp_path / "mine", probe=(x[:64], y[:64]), loss_fn=loss_fn,
                          tensorboard=False)
        for i in range(150):
            xb, yb = x[i % 4 * 64:(i % 4 + 1) * 64], y[i % 4 * 64:(i % 4 + 1) * 64]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if w.step(loss):
                opt.step()
        w.report()
        w.close()
    _clean(seen, 1)
    assert len(w.watcher.step_losses) == 150 and all(math.isfinite(v) for _, v in w.watcher.step_losses)
    losses = next(f for f, _ in seen if f.endswith("losses.png"))
    assert Path(losses).is_file()


def test_the_checker_sees_what_was_wrong() -> None:
    """The old performance-profile layout — a 19-entry legend inside the right-hand panel,
    over its title and curves — and a title wider than its figure are both reported."""
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.8))
    for ax in axes:
        for i in range(19):
            ax.step(np.linspace(1, 4, 50), np.clip(np.linspace(0, 1, 50) + i / 40, 0, 1), label=f"opt{i} (0.{i:02d})")
        ax.set_title("external tuning: performance profile")
        ax.legend(fontsize=7, loc="lower right")
    assert any("legend" in p for p in problems(fig))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([0, 1], [0, 1])
    ax.set_title("Hessian spectral density of the plain cross-entropy (1482 parameters, SLQ 40 steps × 3 probes)")
    assert any("cut at the figure's edge" in p for p in problems(fig))
    plt.close(fig)
