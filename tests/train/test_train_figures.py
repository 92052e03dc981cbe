"""A run's figures read right: lr.png draws the learning rate each step actually used (the
schedule × the rollback factor, on a log axis), and report.html shows figures at full width."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from thalweg.train.report import lr_used, plot_curves, render_page


def test_lr_used_follows_the_rollbacks() -> None:
    records = [{"step": 5, "epoch": 0.5, "lr": 1.0}, {"event": "rollback", "step": 3, "lr_scale": 0.1},
               {"step": 10, "epoch": 1.0, "lr": 0.1}, {"event": "rollback", "step": 12, "lr_scale": 0.01},
               {"step": 20, "epoch": 2.0, "lr": 0.01}]
    xs, ys = lr_used(records, lambda t: 1.0, 20, 10.0)
    assert len(xs) == 20 and xs[0] == pytest.approx(0.1) and xs[-1] == pytest.approx(2.0)
    assert ys[:3] == [1.0] * 3 and ys[3:12] == pytest.approx([0.1] * 9) and ys[12:] == pytest.approx([0.01] * 8)


def test_lr_figure_is_logarithmic_and_draws_the_used_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"step": 10, "epoch": 1.0, "lr": 1.0, "train_loss": 1.0},
               {"event": "rollback", "step": 10, "lr_scale": 0.1},
               {"step": 20, "epoch": 2.0, "lr": 0.1, "train_loss": 0.5}]
    curve = lr_used(records, lambda t: 1.0, 20, 10.0)
    seen = {}
    real = plt.Figure.savefig

    def keep(fig, path, *a, **k):
        if Path(path).stem == "lr":
            ax = fig.axes[0]
            seen["scale"] = ax.get_yscale()
            seen["lines"] = {ln.get_label(): list(ln.get_ydata()) for ln in ax.lines}
        return real(fig, path, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    paths = plot_curves(records, tmp_path, "t", schedule=curve)
    assert tmp_path / "lr.png" in paths and seen["scale"] == "log"
    used = next(v for k, v in seen["lines"].items() if k.startswith("lr used"))
    assert min(used) == pytest.approx(0.1) and max(used) == pytest.approx(1.0)


def test_report_figures_are_not_capped(tmp_path: Path) -> None:
    page = render_page("t", doctor="", summary={"step": 1}, figures=[tmp_path / "figures" / "losses.png"],
                       records=[], config="")
    assert "460px" not in page and "max-width:100%" in page
    from thalweg.diagnose.html import _img

    assert "460px" not in _img(tmp_path / "x.png", tmp_path)
