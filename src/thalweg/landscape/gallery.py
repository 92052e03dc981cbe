"""The seeds' pictures in one call (LR effects, the ravine, saddles, Rosenbrock), and a briefly
trained model for landscape slices when no run is at hand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from thalweg.losses import TaskLoss

__all__ = ["train_briefly", "write_gallery"]


def write_gallery(folder: str | Path, *, animate: bool = False) -> list[Path]:
    """Write the trajectory figures of the seeds into ``folder``; return the paths written."""
    from thalweg.landscape import plots as P
    from thalweg.landscape.trajectories import trajectories

    folder = Path(folder)
    out: list[Path] = []
    r1 = trajectories("x2", ["sgd:lr=0.05", "sgd:lr=0.4", "sgd:lr=1.05"], start=[-1.8], steps=40)
    r2 = trajectories("xcos", ["sgd:lr=0.02", "sgd:lr=0.15", "sgd:lr=0.5"], start=[-0.9], steps=15)
    fig = P.figure_lr_panel(
        [("x2", r1), ("xcos", r2)],
        verdicts=[["too small: slow", "good", f"too large: diverged at step {r1[2].diverged_at}"],
                  ["too small: slow", "good (but a local minimum)", "too large: bounces around"]])
    out.append(P.save(fig, folder / "traj_lr_panel.png"))

    loc = trajectories("xcos", ["sgd:lr=0.1"], start=[-0.9], steps=20)
    glob = trajectories("xcos", [("sgd", {"lr": 0.1})], start=[0.6], steps=20)
    glob[0].label = "sgd (lr=0.1) from x=0.6"
    cube = trajectories("x3", ["sgd:lr=0.05"], start=[1.5], steps=40)
    unb = trajectories("neg_x3_plus_3x", ["sgd:lr=0.05"], start=[0.9], steps=40)
    run = trajectories("neg_x3_plus_3x", ["sgd:lr=0.05"], start=[1.2], steps=40)
    run[0].label = "sgd (lr=0.05) from x=1.2"
    out.append(P.save(P.figure_panels(
        [("xcos", loc + glob, "local minima: where GD ends depends on the start"),
         ("x3", cube, f"x³: GD crawls to the flat saddle (x={cube[0].final[0]:.2f} after 40)"),
         ("neg_x3_plus_3x", unb + run, "−x³ + 3x is unbounded: GD can run off")],
        "hazards in one dimension"), folder / "traj_1d_hazards.png"))

    rav = trajectories("ravine", ["sgd:lr=0.4", "sgd:lr=0.6", "sgd:lr=0.6,momentum=0.5"],
                       start=[-5.0, -2.0], steps=20)
    out.append(P.save(P.figure_trajectories(
        "ravine", rav, "the ravine 0.1x² + 2y²: GD zig-zags across (and diverges at η=0.6); "
        "momentum damps the oscillation"), folder / "traj_ravine.png"))

    ros = trajectories("rosenbrock", ["sgd:lr=0.001", "sgd:lr=0.001,momentum=0.9", "adam:lr=0.05",
                                      "newton"], start=[-1.2, 1.0], steps=600)
    out.append(P.save(P.figure_trajectories("rosenbrock", ros), folder / "traj_rosenbrock.png"))
    if animate:
        out.append(P.animate_trajectories("rosenbrock", ros[:3], folder / "traj_rosenbrock.gif",
                                          max_frames=16, dpi=64, fps=4,
                                          loss_panel=False))

    sad = trajectories("saddle", ["sgd:lr=0.05", "newton", "newton:mode='saddle_free'",
                                  "adam:lr=0.05"], start=[-1.5, 0.01], steps=40)
    out.append(P.save(P.figure_trajectories(
        "saddle", sad, "the saddle x² − y²: GD lingers near it, Newton walks into it, "
        "saddle-free Newton (|H|) escapes"), folder / "traj_saddle.png"))
    out.append(P.save(P.figure_surface("saddle", sad),
                      folder / "traj_saddle_surface.png"))
    return out


def train_briefly(dataset: str = "digits", model: str = "mlp", *, epochs: int = 30,
                  seed: int = 0, **model_kwargs: Any) -> tuple[torch.nn.Module, Any, TaskLoss]:
    """Full-batch Adam for a few epochs on a small dataset: (model, splits, loss_fn), the loss
    being the plain :class:`~thalweg.losses.TaskLoss` of the dataset's task."""
    from thalweg.data import load_dataset, standardize
    from thalweg.losses import TaskLoss
    from thalweg.models import build_model

    splits, _ = standardize(load_dataset(dataset, seed=seed))
    torch.manual_seed(seed)
    net = build_model(model, tuple(splits.in_shape), splits.out_features, **model_kwargs)
    loss_fn = TaskLoss(splits.task)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn(net(splits.x_train), splits.y_train).backward()
        opt.step()
    net.eval()
    return net, splits, loss_fn
