"""Pictures people read right: a path that escapes downhill is not called diverged, and no
legend hides a start, a critical point or a note."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from thalweg.landscape import legible as L
from thalweg.landscape import plots as P
from thalweg.landscape.trajectories import trajectories


def test_saddle_free_newton_leaves_the_window_it_does_not_diverge() -> None:
    sad = trajectories("saddle", ["newton:mode='saddle_free'", "sgd:lr=0.05"], start=[-1.5, 0.01], steps=40)
    sfn, gd = sad
    assert sfn.diverged and sfn.escaped and sfn.losses[-1] < sfn.losses[0]
    assert not gd.escaped
    big = trajectories("x2", ["sgd:lr=1.05"], start=[-1.8], steps=40)[0]
    assert big.diverged and not big.escaped  # the loss grew: that is a divergence
    fig = P.figure_trajectories("saddle", sad)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("left the plotted window at step" in s for s in labels)
    assert not any("diverged" in s for s in labels)
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert notes == ["leaves the window"]
    plt.close(fig)


def _covered(fig) -> list[tuple[int, tuple[float, float]]]:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [leg.get_window_extent(r) for leg in fig.legends]
    boxes += [ax.get_legend().get_window_extent(r) for ax in fig.axes if ax.get_legend() is not None]
    hits = []
    for i, ax in enumerate(fig.axes):
        for x, y in L._marked_points(ax):
            if any(b.contains(x, y) for b in boxes):
                hits.append((i, (float(x), float(y))))
    return hits


def test_no_legend_covers_a_critical_point() -> None:
    figs = [
        P.figure_trajectories("sinsin", trajectories(
            "sinsin", ["newton", "newton:mode='saddle_free'", "lbfgs:max_iter=1", "adahessian:lr=0.3",
                       "sgd:lr=0.1,momentum=0.9"], start=[0.3, 0.2], steps=40)),
        P.figure_lr_panel([("xcos", trajectories("xcos", ["sgd:lr=0.02", "sgd:lr=0.15", "sgd:lr=0.5"],
                                                 start=[-0.9], steps=15))]),
        P.figure_panels([("neg_x3_plus_3x", trajectories("neg_x3_plus_3x", ["sgd:lr=0.05"], start=[1.2],
                                                         steps=40), "runs off")], "hazards", ncols=1),
    ]
    for fig in figs:
        assert all(len(L._marked_points(ax)) for ax in fig.axes if ax.get_title().startswith("paths"))
        assert _covered(fig) == []
        plt.close(fig)
    one = plt.figure()
    ax = one.add_subplot()
    P.plot_paths("sinsin", trajectories("sinsin", ["sgd:lr=0.1"], start=[0.3, 0.2], steps=10), ax)
    assert len(L._marked_points(ax)) >= 5 and _covered(one) == []
    assert np.isfinite(ax.get_xlim()).all()
    plt.close(one)
