"""The loss for a task is written once (`thalweg.losses.TaskLoss`): it matches torch's own losses,
and the trainer, the briefly trained landscape model, the meta-learners and the curvature probes
all take it from there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from thalweg.losses import LOSSES, TaskLoss, named_loss


def test_classification_is_torch_cross_entropy_with_or_without_smoothing() -> None:
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    plain, smooth = TaskLoss("classification"), TaskLoss("classification", 0.1)
    torch.testing.assert_close(plain(out, y), F.cross_entropy(out, y))
    torch.testing.assert_close(plain.per_sample(out, y), F.cross_entropy(out, y, reduction="none"))
    torch.testing.assert_close(smooth(out, y), F.cross_entropy(out, y, label_smoothing=0.1))
    assert plain.name == "cross_entropy" and "label smoothing 0.1" in smooth.label


def test_regression_is_mean_squared_error_and_never_broadcasts() -> None:
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(8, 1, generator=g), torch.randn(8, generator=g)
    mse = TaskLoss("regression")
    torch.testing.assert_close(mse(out, y), F.mse_loss(out[:, 0], y))  # (8, 1) vs (8,): not (8, 8)
    out3, y3 = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    torch.testing.assert_close(mse.per_sample(out3, y3), (out3 - y3).pow(2).mean(dim=1))
    torch.testing.assert_close(mse(out3, y3), F.mse_loss(out3, y3))
    assert mse.name == "mse" and named_loss("mse") == mse and LOSSES["cross_entropy"] == TaskLoss("classification")


def test_a_bad_task_or_name_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"task must be one of \['classification', 'regression'\]"):
        TaskLoss("ranking")
    with pytest.raises(ValueError, match="label smoothing applies to classification only"):
        TaskLoss("regression", 0.1)
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; expected one of \['cross_entropy', 'mse'\]"):
        named_loss("hinge")


def test_every_area_takes_its_loss_from_here(tmp_path: Path) -> None:
    from thalweg.curvature.probe import load_probe, save_probe
    from thalweg.landscape.gallery import train_briefly
    from thalweg.meta import MAML, loss_function
    from thalweg.meta.config import build_tasks, make_learner, parse_meta_config
    from thalweg.train import build_run

    _, splits, fn = train_briefly("digits", epochs=1)
    assert fn == TaskLoss(splits.task) == TaskLoss("classification")
    parts = build_run({"data": {"name": "linreg_toy"}, "model": {"name": "linear"}}, check_budget=False)
    assert parts.loss_fn == parts.eval_loss_fn == TaskLoss("regression")
    cfg = parse_meta_config({"meta": {"methods": ["maml"]}})
    assert make_learner(cfg, "maml", build_tasks(cfg)).loss == TaskLoss("regression")
    assert loss_function("cross_entropy") == TaskLoss("classification")
    assert MAML(torch.nn.Linear(1, 1), "mse").loss == TaskLoss("regression")
    # a probe of a regression model with (n,) targets: the squared error per row, not (n, n)
    from thalweg.models import build_model

    torch.manual_seed(0)
    model = build_model("linear", (2,), 1)
    x, y = torch.randn(6, 2), torch.randn(6)
    spec = {"name": "linear", "in_shape": [2], "out_features": 1}
    p = load_probe(save_probe(tmp_path / "p.pt", model, x, y, spec=spec, loss="mse"))
    with torch.no_grad():
        out = p.model(x)
        torch.testing.assert_close(p.loss_fn(out, y), (out[:, 0] - y).pow(2).mean())
