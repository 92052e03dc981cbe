"""Optimizer paths on the test surfaces: closed-form GD, divergence, closures, figures."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from thalweg.landscape import plots as P
from thalweg.landscape.trajectories import (
    default_optimizers,
    parse_spec,
    resolve,
    trajectories,
)


@pytest.mark.parametrize("lr", [0.05, 0.4, 0.9])
def test_gd_on_x2_matches_closed_form(lr: float) -> None:
    # x_k = (1 − 2η)^k x_0 for f = x²
    (t,) = trajectories("x2", [f"sgd:lr={lr}"], start=[-1.8], steps=15)
    expected = -1.8 * (1 - 2 * lr) ** np.arange(16)
    np.testing.assert_allclose(t.points[:, 0], expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.losses, expected**2, rtol=1e-12, atol=1e-15)
    assert not t.diverged


def test_registry_name_torch_class_and_factory_give_the_same_path() -> None:
    a, b, c = trajectories(
        "rosenbrock",
        [("sgd", {"lr": 1e-3, "momentum": 0.9}),
         (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
         ("mine", lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9))],
        start=[-1.2, 1.0], steps=50)
    np.testing.assert_allclose(a.points, b.points, rtol=1e-10)
    np.testing.assert_allclose(a.points, c.points, rtol=1e-10)
    assert c.label == "mine" and "momentum=0.9" in a.label


def test_adam_matches_torch_adam() -> None:
    a, b = trajectories("beale", ["adam:lr=0.05", (torch.optim.Adam, {"lr": 0.05})], steps=40)
    np.testing.assert_allclose(a.points, b.points, rtol=1e-6, atol=1e-9)


def test_too_large_lr_on_x2_diverges_and_is_drawn(tmp_path) -> None:
    ts = trajectories("x2", ["sgd:lr=0.05", "sgd:lr=0.4", "sgd:lr=1.05"], start=[-1.8], steps=60)
    small, good, big = ts
    assert not small.diverged and not good.diverged
    assert good.losses[-1] < small.losses[-1]
    # |x_k| = 1.8·1.1^k leaves the box |x| ≤ 2 + 10·4 = 42 first at k = 34
    assert big.diverged and big.diverged_at == 34 == math.ceil(math.log(42 / 1.8) / math.log(1.1))
    assert big.steps == 34 and np.all(np.isfinite(big.points))
    fig = P.figure_lr_panel([("x2", ts)])
    titles = [ax.get_title() for ax in fig.axes]
    assert any("diverged at step 34" in t for t in titles), titles
    assert any("good" in t for t in titles) and any("too small" in t for t in titles)
    path = P.save(fig, tmp_path / "lr.png", dpi=40)
    assert mpimg.imread(path).ndim == 3


def test_nan_and_breakdown_are_marked_not_raised() -> None:
    (t,) = trajectories("bowl", [("nan", lambda ps: torch.optim.SGD(ps, lr=float("nan")))],
                        start=[1.0, 1.0], steps=5)
    assert t.diverged and t.diverged_at == 1 and len(t.points) == 1


def test_newton_closure_one_step_to_the_minimum_and_into_the_saddle() -> None:
    bowl, = trajectories("bowl", ["newton"], start=[1.3, -0.7], steps=1)
    np.testing.assert_allclose(bowl.final, [0.0, 0.0], atol=1e-12)
    saddle, free = trajectories("saddle", ["newton:line_search=False",
                                           "newton:mode='saddle_free',line_search=False"],
                                start=[-1.5, 0.5], steps=1)
    np.testing.assert_allclose(saddle.final, [0.0, 0.0], atol=1e-12)  # Newton walks to a saddle
    np.testing.assert_allclose(free.final, [0.0, 1.0], atol=1e-12)    # |H| moves away in y


def test_torch_lbfgs_gets_a_closure() -> None:
    (t,) = trajectories("rosenbrock", [(torch.optim.LBFGS, {"line_search_fn": "strong_wolfe"})],
                        start=[-1.2, 1.0], steps=5)
    np.testing.assert_allclose(t.final, [1.0, 1.0], atol=1e-4)


def test_default_optimizers_run_everywhere() -> None:
    for name in ["rosenbrock", "ravine", "xcos", "sinsin"]:
        ts = trajectories(name, default_optimizers(name), steps=5)
        assert len(ts) == 3 and all(t.points.shape[1] in (1, 2) for t in ts)


def test_bad_input_is_named() -> None:
    assert parse_spec("adam:lr=0.1,betas=(0.9,0.99)") == ("adam", {"lr": 0.1, "betas": (0.9, 0.99)})
    with pytest.raises(ValueError, match="'lr'"):
        parse_spec("adam:lr=fast")
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("adam:0.1")
    with pytest.raises(TypeError, match="cannot read optimizer"):
        resolve(42)
    with pytest.raises(ValueError, match="nosuch"):
        resolve("nosuch")
    with pytest.raises(ValueError, match="start must have 2"):
        trajectories("bowl", ["sgd:lr=0.1"], start=[1.0], steps=3)
    with pytest.raises(ValueError, match="steps"):
        trajectories("bowl", ["sgd:lr=0.1"], steps=-1)


@pytest.mark.slow
def test_figures_and_gif(tmp_path) -> None:
    ts = trajectories("saddle", ["sgd:lr=0.1", "adam:lr=0.1"], start=[-1.5, 0.01], steps=8)
    p1 = P.save(P.figure_trajectories("saddle", ts, resolution=40), tmp_path / "t.png", dpi=40)
    p2 = P.save(P.figure_surface("saddle", ts, resolution=15), tmp_path / "s.png", dpi=40)
    gif = P.animate_trajectories("saddle", ts, tmp_path / "t.gif", max_frames=3, dpi=30)
    assert mpimg.imread(p1).shape[0] > 50 and mpimg.imread(p2).shape[0] > 50
    from PIL import Image

    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 3
    with pytest.raises(ValueError, match="2-D"):
        P.figure_surface("x2")
