"""The contenders through the trainer: Muon gets the model (so it splits by name), and a
schedule-free run validates, keeps (best.pt), tests and hands back the averaged weights x,
while its checkpoints hold the training point y with z (so resume stays exact) and `load_run`
of a checkpoint turns them into x; the LR finder and the trajectories handle the modes too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from thalweg.train import build_run, fit, load_run, parse_config, read_metrics
from thalweg.train.components import evaluate
from thalweg.train.rundir.checkpoint import load_checkpoint


def tiny(tmp_path: Path, optimizer: dict[str, Any], **train: Any) -> dict[str, Any]:
    return {
        "name": "c", "out_dir": str(tmp_path / "runs"), "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 16, "depth": 1}, "optimizer": optimizer,
        "schedule": {"name": "constant"},
        "train": {"epochs": 3, "batch_size": 128, "num_threads": 1, **train},
        "diagnostics": {"figures": False, "report": False},
    }


def test_thalweg_train_gives_muon_the_names_so_the_head_takes_adamw(tmp_path):
    parts = build_run(parse_config(tiny(tmp_path, {"name": "muon", "lr": 0.02})))
    opt, model = parts.optimizer, parts.model
    weights = [p for p in model.parameters() if p.ndim == 2]
    adamw = {id(p) for p in opt.adamw_params}
    assert id(weights[-1]) in adamw  # the output head, known by its place among named parameters
    assert id(weights[0]) not in adamw  # a hidden matrix stays Muon's
    assert all(id(p) in adamw for p in model.parameters() if p.ndim == 1)  # biases


def _x_from(ckpt: dict[str, Any], names: list[str], beta: float) -> dict[str, torch.Tensor]:
    """x = (y − (1 − β)z)/β from a checkpoint's weights y and optimizer state z, in float64."""
    state = ckpt["optimizer"]["state"]
    ids = ckpt["optimizer"]["param_groups"][0]["params"]
    assert ckpt["optimizer"]["param_groups"][0]["train_mode"] is True  # saved at y
    out = {}
    for name, pid in zip(names, ids, strict=True):
        y, z = ckpt["model"][name].double(), state[pid]["z"].double()
        out[name] = ((y - (1 - beta) * z) / beta).float()
    return out


def test_schedule_free_run_validates_keeps_and_returns_the_averaged_weights(tmp_path):
    beta = 0.9
    res = fit(tiny(tmp_path, {"name": "schedulefree_adamw", "lr": 0.01, "betas": [beta, 0.999]}), quiet=True)
    run = res.run_dir
    parts = build_run(res.config, optimizer=False, check_budget=False)
    names = [n for n, _ in parts.model.named_parameters()]
    last = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    ckpt = load_checkpoint(last)
    x = _x_from(ckpt, names, beta)
    y = {n: ckpt["model"][n] for n in names}

    def val(weights):
        parts.model.load_state_dict(weights, strict=False)
        return evaluate(parts.model, parts.splits.x_val, parts.splits.y_val, parts.eval_loss_fn.per_sample, True)

    logged = [r for r in read_metrics(run) if "val_loss" in r and r.get("step") == ckpt["trainer"]["step"]]
    at_x, at_y = val(x), val(y)
    assert abs(at_x["loss"] - at_y["loss"]) > 1e-4  # the two points differ: the test can tell them apart
    assert logged[-1]["val_loss"] == pytest.approx(at_x["loss"], rel=1e-5)
    assert logged[-1]["val_accuracy"] == pytest.approx(at_x["accuracy"])
    for n in names:  # RunResult.model: the final x
        torch.testing.assert_close(res.model.state_dict()[n], x[n], rtol=1e-5, atol=1e-6)
    best = load_checkpoint(run / "best.pt")
    best_ckpt = load_checkpoint(run / "checkpoints" / f"step_{best['step']:08d}.pt")
    for n, t in _x_from(best_ckpt, names, beta).items():  # best.pt: the x validation saw
        torch.testing.assert_close(best["model"][n], t, rtol=1e-5, atol=1e-6)
    loaded = load_run(last)  # a training checkpoint: load_run rebuilds the optimizer to get x
    for n in names:
        torch.testing.assert_close(loaded.model.state_dict()[n], x[n], rtol=1e-5, atol=1e-6)


def test_lr_find_steps_a_schedule_free_optimizer_in_train_mode_and_restores_it(tmp_path):
    from thalweg.landscape.lr_finder import lr_find

    parts = build_run(parse_config(tiny(tmp_path, {"name": "schedulefree_sgd", "lr": 0.1})))
    model, opt = parts.model, parts.optimizer
    x, y = parts.splits.x_train, parts.splits.y_train
    for _ in range(3):
        opt.zero_grad()
        parts.loss_fn(model(x[:64]), y[:64]).backward()
        opt.step()
    opt.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_find(model, opt, parts.loss_fn, (x, y), num_steps=10, batch_size=64)
    assert len(res.lrs) > 3 and not opt.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert opt.param_groups[0]["k"] == 3


def test_trajectories_show_the_schedule_free_average():
    import schedulefree

    from thalweg.landscape.functions import get
    from thalweg.landscape.trajectories import trajectories

    fn = get("ravine")
    (ours,) = trajectories(fn, ["schedulefree_sgd:lr=0.1"], start=[-1.5, 1.0], steps=20)
    p = torch.tensor([-1.5, 1.0], dtype=torch.float64, requires_grad=True)
    opt = schedulefree.SGDScheduleFree([p], lr=0.1)
    opt.train()
    xs = [p.detach().numpy().copy()]
    for _ in range(20):
        opt.zero_grad()
        fn(p).backward()
        opt.step()
        opt.eval()
        xs.append(p.detach().numpy().copy())
        opt.train()
    assert (ours.points == np.array(xs)).all()  # bitwise: the reference's own steps and switches


def test_a_resumed_schedule_free_run_ends_bitwise_identical(tmp_path):
    import shutil

    cfg = tiny(tmp_path, {"name": "schedulefree_adamw", "lr": 0.01}, keep_checkpoints=5)
    whole = fit(cfg, quiet=True)
    cut = whole.run_dir.parent / "cut"
    shutil.copytree(whole.run_dir, cut)
    for ckpt in sorted((cut / "checkpoints").glob("step_*.pt"))[-2:]:  # back to the end of epoch 1
        ckpt.unlink()
    resumed = fit(resume=cut, quiet=True)
    assert resumed.steps == whole.steps and resumed.best_value == whole.best_value
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)
