"""`watch()` on a loop that went non-finite: NaN weights are called non-finite — not
"symmetric initialization" or "dead units" (NaN rows are all equal to nothing, NaN never
fires) — and NaN validation losses the loop logged are a finding, not ignored."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import thalweg


def _run(tmp_path: Path, *, nan_weights: bool, nan_val: bool) -> set[str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
    w = thalweg.watch(model, opt, out_dir=tmp_path / "w", every=2, tensorboard=False, probe=(x[:32], y[:32]),
                      loss_fn=F.cross_entropy)
    for step in range(1, 11):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss)
        opt.step()
        if nan_weights and step == 10:
            with torch.no_grad():
                model[0].weight.fill_(float("nan"))
        w.log({"val_loss": float("nan") if nan_val and step >= 6 else 0.7}, step=step)
    return {f.code for f in w.report().findings}


def test_nan_weights_are_non_finite_not_symmetric_or_dead(tmp_path: Path) -> None:
    codes = _run(tmp_path, nan_weights=True, nan_val=False)
    assert "NONFINITE" in codes
    assert "SYMMETRIC_INIT" not in codes and "DEAD_UNITS" not in codes, codes


def test_nan_validation_losses_are_a_finding(tmp_path: Path) -> None:
    from thalweg.diagnose.curves import read_curves

    assert "NONFINITE" in _run(tmp_path, nan_weights=False, nan_val=True)
    c = read_curves([{"step": 1, "val_loss": 0.5}, {"step": 2, "val_loss": None}, {"step": 3, "val_loss": float("inf")}])
    assert c.val_nonfinite == [2, 3]
