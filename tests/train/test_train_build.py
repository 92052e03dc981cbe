"""One assembly of a run (`build_run`), the trainer's state as a dataclass, the guard's
actions, and closure optimizers getting what the config asks (or a refusal naming the field)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from thalweg.train import ConfigError, build_run, fit, parse_config, read_metrics
from thalweg.train.guard import Action, on_nonfinite
from thalweg.train.loop import Trainer
from thalweg.train.rundir.state import TrainState


def tiny(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "b", "out_dir": str(tmp_path / "runs"), "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 16, "depth": 1}, "init": {"rule": "orthogonal"},
        "optimizer": {"name": "adamw", "lr": 0.01}, "schedule": {"name": "constant"},
        "regularization": {"label_smoothing": 0.2},
        "train": {"epochs": 1, "batch_size": 256, "num_threads": 1},
        "diagnostics": {"figures": False, "report": False},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def test_build_run_is_what_the_trainer_trains(tmp_path: Path) -> None:
    cfg = parse_config(tiny(tmp_path))
    parts = build_run(cfg)
    x, y = parts.splits.x_train[:50], parts.splits.y_train[:50]
    out = parts.model(x)
    assert torch.allclose(parts.loss_fn(out, y), F.cross_entropy(out, y, label_smoothing=0.2))
    assert torch.allclose(parts.eval_loss_fn(out, y), F.cross_entropy(out, y))
    assert parts.loss_fn.per_sample(out, y).shape == (50,)
    assert parts.best_metric == "val_accuracy" and parts.steps_per_epoch == len(parts.loader)
    assert parts.total_steps == parts.steps_per_epoch and parts.schedule(0) == pytest.approx(0.01)
    mean, std = parts.standardization  # train-split statistics: the standardized mean is 0
    assert mean.shape == std.shape == (64,)
    assert torch.allclose(parts.splits.x_train.mean(0)[std > 1e-6], torch.zeros(()), atol=1e-5)
    assert parts.estimate.parameters == sum(p.numel() for p in parts.model.parameters())
    tr = Trainer(cfg, quiet=True)  # the trainer starts from exactly these weights
    try:
        for a, b in zip(tr.model.parameters(), parts.model.parameters(), strict=True):
            assert torch.equal(a, b)
    finally:
        tr.close()


def test_lr_find_applies_the_configs_init_rule(tmp_path: Path) -> None:
    """Regression: `thalweg lr-find CONFIG` ignored [init] rule (torch's default init)."""
    from thalweg.landscape.commands import _lr_setup

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "digits"\n[model]\nname = "linear"\n[init]\nrule = "orthogonal"\n'
                   '[optimizer]\nname = "adam"\nlr = 0.001\n[regularization]\nlabel_smoothing = 0.3\n')
    net, _, loss_fn, (x, y), _, _ = _lr_setup(cfg, "digits", "mlp", "adam", 64, 0)
    w = next(p for p in net.parameters() if p.dim() == 2)  # (10, 64): orthonormal rows
    assert torch.allclose(w @ w.T, torch.eye(10), atol=1e-5)
    out = net(x[:20])
    assert torch.allclose(loss_fn(out, y[:20]), F.cross_entropy(out, y[:20], label_smoothing=0.3))


def test_train_state_round_trips_and_refuses_foreign_keys() -> None:
    s = TrainState(step=7, best_value=0.5, best_step=5, stopped="completed")
    t = TrainState()
    t.load_state_dict(s.state_dict())
    assert t == s
    with pytest.raises(ValueError, match=r"missing \['streak'\], unknown \['x'\]"):
        t.load_state_dict({**{k: v for k, v in s.state_dict().items() if k != "streak"}, "x": 1})
    assert t == s  # nothing was set


def test_guard_returns_skip_rollback_stop_and_fitting_advice(tmp_path: Path) -> None:
    cfg = parse_config(tiny(tmp_path, train={"nonfinite_patience": 2, "max_rollbacks": 1}))
    s = TrainState(step=3)
    assert on_nonfinite(s, cfg, "loss").action is Action.SKIP and s.streak == 1
    assert on_nonfinite(s, cfg, "loss").action is Action.ROLLBACK and s.skipped == 2
    s.rollbacks, s.streak = 1, 1
    d = on_nonfinite(s, cfg, "loss")
    assert d.action is Action.STOP and "set [regularization] clip_norm" in d.message
    clipped = parse_config(tiny(tmp_path, regularization={"clip_norm": 2.0}))
    d = on_nonfinite(TrainState(streak=5, rollbacks=9), clipped, "loss")
    assert d.action is Action.STOP and "set [regularization] clip_norm" not in d.message
    assert "already clipped at clip_norm = 2" in d.message


@pytest.mark.parametrize("name", ["newton", "lbfgs", "adahessian"])
@pytest.mark.parametrize("key", ["clip_norm", "clip_value"])
def test_closure_optimizers_refuse_clipping_naming_the_field(tmp_path: Path, name: str, key: str) -> None:
    """Regression: the config accepted clip_norm with newton and the loop ignored it."""
    with pytest.raises(ConfigError) as e:
        parse_config(tiny(tmp_path, optimizer={"name": name, "lr": 0.1}, regularization={key: 1.0}))
    assert (e.value.section, e.value.field) == ("regularization", key)
    assert "step(closure)" in str(e.value)


def test_closure_optimizers_record_monitors(tmp_path: Path) -> None:
    """Regression: with a closure optimizer the loop skipped the monitors."""
    res = fit(tiny(tmp_path, optimizer={"name": "lbfgs", "max_iter": 2}, init={"rule": "default"},
                   diagnostics={"monitors": True}, train={"log_every": 2, "batch_size": 512}),
              quiet=True)
    mons = read_metrics(res.run_dir / "monitors.jsonl")
    assert [m["step"] for m in mons] == [2]  # digits: 1257 rows / 512 → 3 steps
    assert all(e["grad_norm"] > 0 and math.isfinite(e["update_ratio"]) for e in mons[0]["layers"])


def test_closure_optimizers_are_refused_data_parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: under DDP the closure path skipped the ranks' agreement on whether to step."""
    from thalweg.train import distributed

    monkeypatch.setattr(distributed, "setup", lambda device="auto": distributed.DistContext(
        rank=0, world_size=2))
    with pytest.raises(ConfigError, match="cannot train data-parallel") as e:
        Trainer(parse_config(tiny(tmp_path, optimizer={"name": "newton"})), quiet=True)
    assert (e.value.section, e.value.field) == ("optimizer", "name")
    assert not (tmp_path / "runs").exists()  # refused before anything was written
