"""A real Hugging Face Trainer run on a tiny randomly initialized BERT built here (2 layers,
hidden 16; nothing downloaded): thalweg findings and report, TensorBoard scalars read back and
checked against the Trainer's own log history, per-layer gradient norms, the curvature probe."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from thalweg.integrations.transformers import ThalwegTrainerCallback  # noqa: E402

VOCAB, LENGTH = 24, 8


class Tokens(torch.utils.data.Dataset):
    """Sequences of random tokens; the label is whether token 3 occurs (learnable by attention)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, VOCAB, (n, LENGTH), generator=g)
        hit = torch.rand(n, generator=g) < 0.5
        self.ids[hit, torch.randint(0, LENGTH, (int(hit.sum()),), generator=g)] = 3
        self.labels = hit.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def _accuracy(p: Any) -> dict[str, float]:
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}


def _run(root: Path) -> tuple[Any, ThalwegTrainerCallback]:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=LENGTH, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg)
    out = root
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=16, per_device_train_batch_size=8, per_device_eval_batch_size=32,
        learning_rate=3e-3, logging_steps=4, eval_strategy="steps", eval_steps=8, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    cb = ThalwegTrainerCallback(curvature_every=8, curvature_iters=14, end_curvature=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(256, 0),
                                   eval_dataset=Tokens(64, 1), compute_metrics=_accuracy, callbacks=[cb])
    trainer.train()
    return trainer, cb


def _events(out: Path) -> EventAccumulator:
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return ea


def _findings_and_report(run: Any) -> None:
    trainer, cb = run
    out = cb.report.out_dir
    assert out == Path(trainer.args.output_dir) / "thalweg"
    findings = json.loads((out / "findings.json").read_text())
    assert findings and findings[0]["code"] == cb.report.findings[0].code
    html = (out / "report.html").read_text()
    assert "figures/losses.png" in html and (out / "figures" / "losses.png").is_file()
    monitors = [json.loads(s) for s in (out / "monitors.jsonl").read_text().splitlines()]
    assert [m["step"] for m in monitors] == [4, 8, 12, 16]


def _tensorboard_scalars_match_the_trainers_log_history(run: Any) -> None:
    trainer, cb = run
    ea = _events(cb.report.out_dir)
    hist = trainer.state.log_history
    train = {h["step"]: h["loss"] for h in hist if "loss" in h}
    evals = {h["step"]: h["eval_loss"] for h in hist if "eval_loss" in h}
    acc = {h["step"]: h["eval_accuracy"] for h in hist if "eval_accuracy" in h}
    assert sorted(train) == [4, 8, 12, 16] and sorted(evals) == [8, 16]
    for tag, want in (("train_loss", train), ("val_loss", evals), ("val_accuracy", acc)):
        got = {e.step: e.value for e in ea.Scalars(tag)}
        assert got.keys() == want.keys(), tag
        for s in want:
            assert got[s] == pytest.approx(want[s], rel=1e-5), (tag, s)
    tags = set(ea.Tags()["scalars"])
    assert "grad_norm/bert.encoder.layer.0.attention.self.query" in tags
    assert "grad_norm/classifier" in tags and "lr" in tags


def _curvature_probe_on_the_held_batch(run: Any) -> None:
    _, cb = run
    recs = cb.watcher.curvature_records
    assert [r["step"] for r in recs] == [8, 16]
    for r in recs:
        lam, res = r["eigenvalues"][0], r["residuals"][0]
        assert lam > 0 and res <= 0.1 * abs(lam)  # a Ritz pair with its residual certificate
    got = [e.value for e in _events(cb.report.out_dir).Scalars("curvature/lambda_max")]
    assert got == pytest.approx([r["eigenvalues"][0] for r in recs], rel=1e-6)


def test_a_trainer_run_gets_thalwegs_instruments(tmp_path: Path) -> None:
    """One Trainer run (pytest-xdist's loadgroup does not group under pytest 9.2, so one test, not a
    fixture shared by several that two workers would each run): every check below on it."""
    run = _run(tmp_path)
    _findings_and_report(run)
    _tensorboard_scalars_match_the_trainers_log_history(run)
    _curvature_probe_on_the_held_batch(run)
