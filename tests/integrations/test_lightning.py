"""A real Lightning run (tiny MLP, CPU) with ThalwegCallback: thalweg findings and report, the
TensorBoard scalars read back with tensorboard's EventAccumulator against the losses the module
itself saw, the curvature probe against a dense Hessian, a registry optimizer and a thalweg
schedule from configure_optimizers, and the guard stopping a run that blows up."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning.pytorch")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from thalweg.integrations.lightning import ThalwegCallback, optimizers  # noqa: E402
from thalweg.schedules import Cosine, warmup  # noqa: E402

STEPS_PER_EPOCH, EPOCHS, EVERY = 8, 3, 4
SCHEDULE = warmup(Cosine(0.2, STEPS_PER_EPOCH * EPOCHS), 4)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(STEPS_PER_EPOCH * 16, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


class Tiny(L.LightningModule):
    def __init__(self, lr: float | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
        self.loss_fn = F.cross_entropy
        self.lr, self.seen = lr, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.seen.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: Any, idx: int) -> None:
        out = self(batch[0])
        self.log("val_loss", F.cross_entropy(out, batch[1]))
        self.log("val_accuracy", (out.argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self) -> Any:
        if self.lr is not None:
            return optimizers(self.parameters(), "sgd", lr=self.lr)
        return optimizers(self.parameters(), "sgd", lr=0.2, momentum=0.9, schedule=SCHEDULE)


def _fit(root: Path, module: Tiny, cb: ThalwegCallback, epochs: int = EPOCHS) -> Any:
    x, y = _data()
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    val = torch.utils.data.DataLoader(ds, batch_size=64)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(root), callbacks=[cb])
    trainer.fit(module, train, val)
    return trainer


def _run(root: Path) -> tuple[Tiny, ThalwegCallback, Any]:
    x, y = _data(1)
    cb = ThalwegCallback(every=EVERY, curvature_every=STEPS_PER_EPOCH, probe=(x[:48], y[:48]))
    module = Tiny()
    trainer = _fit(root, module, cb)
    return module, cb, trainer


def _scalars(run_dir: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return ea


def _findings_and_report_written(run: Any) -> None:
    _, cb, _ = run
    out = cb.report.out_dir
    findings = json.loads((out / "findings.json").read_text())
    assert findings and {"code", "severity", "evidence", "action"} <= set(findings[0])
    assert [f["code"] for f in findings] == [f.code for f in cb.report.findings]
    html = (out / "report.html").read_text()
    assert findings[0]["code"] in html
    for name in ("losses", "lr", "grad_norm", "curvature_trace"):
        assert (out / "figures" / f"{name}.png").is_file()
        assert f"figures/{name}.png" in html
    metrics = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in r for r in metrics)
    assert metrics[-1]["event"] == "final" and metrics[-1]["step"] == STEPS_PER_EPOCH * EPOCHS


def _tensorboard_scalars_are_the_losses_the_module_saw(run: Any) -> None:
    module, cb, _ = run
    ea = _scalars(cb.report.out_dir)
    tags = set(ea.Tags()["scalars"])
    assert {"train_loss", "grad_norm", "lr", "val_loss", "val_accuracy", "curvature/lambda_max"} <= tags
    assert {"grad_norm/net.0", "grad_norm/net.2", "update_ratio/net.0", "weight_norm/net.2"} <= tags
    got = [(e.step, e.value) for e in ea.Scalars("train_loss")]
    seen = module.seen
    want = [(s, sum(seen[s - EVERY:s]) / EVERY) for s in range(EVERY, len(seen) + 1, EVERY)]
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-6)


def _lr_follows_the_thalweg_schedule(run: Any) -> None:
    _, cb, trainer = run
    opt = trainer.optimizers[0]
    from thalweg.optim.engine.core import FlatOptimizer

    assert isinstance(opt, FlatOptimizer)
    total = STEPS_PER_EPOCH * EPOCHS
    assert opt.param_groups[0]["lr"] == pytest.approx(SCHEDULE(total))
    lrs = {e.step: e.value for e in _scalars(cb.report.out_dir).Scalars("lr")}
    for step, lr in lrs.items():  # read after the step, before Lightning steps the scheduler
        assert lr == pytest.approx(SCHEDULE(step - 1), rel=1e-6), step


def _curvature_probe_matches_a_dense_hessian(run: Any) -> None:
    module, cb, _ = run
    x, y = _data(1)
    x, y = x[:48], y[:48]
    params = list(module.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params]).double()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        ps, i = [], 0
        for s in shapes:
            n = math.prod(s)
            ps.append(flat[i:i + n].reshape(s).float())
            i += n
        names = [n for n, _ in module.named_parameters()]
        return F.cross_entropy(torch.func.functional_call(module, dict(zip(names, ps, strict=True)), (x,)), y)

    dense = torch.autograd.functional.hessian(loss_of, flat0)
    top = float(torch.linalg.eigvalsh(dense.double()).max())
    last = cb.watcher.curvature_records[-1]
    assert last["step"] == STEPS_PER_EPOCH * EPOCHS  # taken at the final weights
    assert last["eigenvalues"][0] == pytest.approx(top, rel=2e-3)
    tb = _scalars(cb.report.out_dir).Scalars("curvature/lambda_max")
    assert [e.step for e in tb] == [r["step"] for r in cb.watcher.curvature_records]


def test_the_guard_stops_a_run_that_blows_up(tmp_path: Path) -> None:
    cb = ThalwegCallback(every=2, patience=3, tensorboard=False)
    module = Tiny(lr=1e6)
    with torch.no_grad():  # logits near float32's limit: the first steps overflow
        module.net[2].weight.mul_(1e37)
    trainer = _fit(tmp_path, module, cb, epochs=5)
    assert trainer.global_step < STEPS_PER_EPOCH * 5  # stopped early
    codes = {f.code: f for f in cb.report.findings}
    assert "NONFINITE" in codes and codes["NONFINITE"].severity == "critical"
    events = [r for r in cb.watcher.records if r.get("event") == "nonfinite"]
    assert len(events) >= 3
    assert events[0]["what"] == "loss" or events[0]["what"].startswith("gradient")
    assert not (cb.report.out_dir / "tensorboard").exists()


def test_a_lightning_run_gets_thalwegs_instruments(tmp_path: Path) -> None:
    """One fit (pytest-xdist's loadgroup does not group under pytest 9.2, so one test, not a fixture
    shared by several that two workers would each fit): every check below on the same run."""
    run = _run(tmp_path)
    _findings_and_report_written(run)
    _tensorboard_scalars_are_the_losses_the_module_saw(run)
    _lr_follows_the_thalweg_schedule(run)
    _curvature_probe_matches_a_dense_hessian(run)
