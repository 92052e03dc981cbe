"""The learning curves of a run (metrics.jsonl) → findings: NO_LEARNING, LR_TOO_HIGH,
LR_TOO_LOW, OVERFITTING, UNDERFITTING, PLATEAU, NONFINITE and RECOVERED.

Only the surviving history counts as the present: a rollback to step s abandons the records
written after s, and the learning rate is the one logged (scheduled × any rollback factor).
What happened before a rollback is reported as history, not as the state of the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from thalweg.diagnose.findings import Finding, Thresholds

__all__ = ["Curves", "curve_findings", "overfit_fix", "read_curves", "surviving"]


def surviving(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric records of the surviving history: a rollback to step s abandons the records
    written before it with step > s (that branch was undone); events are left out."""
    kept: list[dict[str, Any]] = []
    for r in records:
        if r.get("event") == "rollback":
            kept = [k for k in kept if k["step"] <= r["step"]]
        elif "event" not in r:
            kept.append(r)
    return kept


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Curves:
    """The series a diagnosis reads, already cut to the surviving history."""

    train: list[tuple[int, float]]  # (step, train objective)
    val: list[tuple[int, float, float | None]]  # (step, val loss, val accuracy)
    train_acc: list[tuple[int, float]]
    lr: list[tuple[int, float]]  # the lr actually used at that step
    nonfinite: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    nonfinite_since_rollback: list[dict[str, Any]] = field(default_factory=list)  # logged after the last one
    val_nonfinite: list[int] = field(default_factory=list)  # steps whose validation loss was inf/NaN (or null)

    @property
    def lr_now(self) -> float | None:
        return self.lr[-1][1] if self.lr else None

    def best_val(self, key: int = 1, lower: bool = True) -> tuple[int, float] | None:
        pts = [(s, v[key - 1]) for s, *v in self.val if v[key - 1] is not None and _finite(v[key - 1])]
        if not pts:
            return None
        return (min if lower else max)(pts, key=lambda p: p[1])

    def val_rise(self) -> tuple[float, int] | None:
        """How far the last validation loss is above the best one (relative), and how many
        validations came after the best; None without a finite one."""
        best = self.best_val(1)
        if best is None:
            return None
        return (self.val[-1][1] - best[1]) / max(best[1], 1e-12), sum(s > best[0] for s, *_ in self.val)


def read_curves(records: Sequence[dict[str, Any]]) -> Curves:
    """Split metrics.jsonl records into the surviving series and the events."""
    kept = surviving(records)
    events = [r for r in records if "event" in r]
    last_rb = max((i for i, e in enumerate(events) if e["event"] == "rollback"), default=-1)
    return Curves(
        train=[(r["step"], float(r["train_loss"])) for r in kept if _finite(r.get("train_loss"))],
        val=[(r["step"], float(r["val_loss"]), r.get("val_accuracy")) for r in kept if "val_loss" in r
             and isinstance(r["val_loss"], int | float)],
        train_acc=[(r["step"], float(r["train_accuracy"])) for r in kept if _finite(r.get("train_accuracy"))],
        lr=[(r["step"], float(r["lr"])) for r in kept if _finite(r.get("lr"))],
        nonfinite=[e for e in events if e["event"] == "nonfinite"],
        rollbacks=[e for e in events if e["event"] == "rollback"],
        stopped=next((e for e in events if e["event"] == "stopped"), None),
        final=next((e for e in events if e["event"] == "final"), None),
        nonfinite_since_rollback=[e for e in events[last_rb + 1:] if e["event"] == "nonfinite"],
        val_nonfinite=[r["step"] for r in kept if "val_loss" in r and not _finite(r["val_loss"])],
    )


def _smooth(v: list[float], k: int = 3) -> list[float]:
    return [sum(v[max(0, i - k + 1): i + 1]) / len(v[max(0, i - k + 1): i + 1]) for i in range(len(v))]


def _floor(config: dict[str, Any], num_classes: int | None) -> float:
    """The smallest value the training objective can take (label smoothing keeps it above 0)."""
    eps = float((config.get("regularization") or {}).get("label_smoothing") or 0.0)
    if not num_classes or eps <= 0 or num_classes < 2:
        return 0.0
    hi, lo = 1 - eps + eps / num_classes, eps / num_classes
    return -(hi * math.log(hi) + (num_classes - 1) * lo * math.log(lo))


@dataclass
class _Ctx:
    c: Curves
    config: dict[str, Any]
    chance: float | None
    chance_acc: float | None
    floor: float
    t: Thresholds
    moved: float | None  # largest relative weight change of any layer over the run
    lr_edge_ratio: float | None  # lr·λ_max / edge at the end

    @property
    def span(self) -> float | None:
        return None if self.chance is None else max(self.chance - self.floor, 1e-12)


def _nonfinite(x: _Ctx) -> list[Finding]:
    c = x.c
    if not c.nonfinite and c.val_nonfinite:  # training went on, the model it evaluates is broken
        ev = {"val_nonfinite": len(c.val_nonfinite), "first_step": c.val_nonfinite[0], "last_step": c.val_nonfinite[-1]}
        return [Finding("NONFINITE", "The validation loss became inf/NaN", "critical", ev,
                        "The model evaluates to inf/NaN (overflowed weights or activations): lower the learning rate, "
                        "clip the gradient norm, and check the validation data for inf/NaN", confidence=0.9,
                        fix={"regularization.clip_norm": 1.0}, figure="loss")]
    if not c.nonfinite:
        return []
    first, last = c.nonfinite[0], c.nonfinite[-1]
    lr_bad = min(float(e["lr"]) for e in c.nonfinite if _finite(e.get("lr"))) if any(
        _finite(e.get("lr")) for e in c.nonfinite) else None
    ev: dict[str, Any] = {"nonfinite_steps": len(c.nonfinite), "first_step": first["step"], "what": last.get("what"),
                          "lr_at_blowup": lr_bad, "rollbacks": len(c.rollbacks)}
    fix = {"optimizer.lr": lr_bad / 10} if lr_bad else {}
    if (x.config.get("optimizer") or {}).get("eps") == 0:  # 0/0 where a gradient is zero, at any lr
        ev["eps"] = 0.0
        return [Finding("NONFINITE", "Non-finite updates: eps = 0 divides by zero", "critical", ev,
                        "With eps = 0 an adaptive update divides by √v + 0, which is 0 wherever a gradient is zero "
                        "(an input that is always 0, a dead unit): 0/0 = NaN at any learning rate; set eps above 0",
                        confidence=0.95, fix={"optimizer.eps": 1e-8}, figure="loss")]
    if c.stopped is not None:
        ev["stopped_at_step"] = c.stopped["step"]
        return [Finding("NONFINITE", "Training stopped: the loss or gradients became inf/NaN", "critical", ev,
                        "The run blew up and could not go on; lower the learning rate"
                        + (f" below the {lr_bad:.3g} that overflowed" if lr_bad else "")
                        + " (and clip the gradient norm)", confidence=1.0, fix=fix, figure="loss")]
    late = c.nonfinite_since_rollback
    if c.rollbacks and not late:
        ev.update(rolled_back_to_step=c.rollbacks[-1]["step"], lr_now=c.lr_now)
        best = c.best_val(2, lower=False) or c.best_val(1)
        if best is not None:
            ev["best_val"] = best[1]
        return [Finding("RECOVERED", "Recovered from a blow-up (history, not the present state)", "info", ev,
                        f"The guard skipped {len(c.nonfinite)} non-finite steps and rolled back"
                        + (f"; the run went on at lr {c.lr_now:.3g} and ended finite" if c.lr_now else "")
                        + ": start there so the run does not depend on the guard",
                        confidence=0.9, fix={"optimizer.lr": c.lr_now} if c.lr_now else {}, figure="loss")]
    ev["skipped_recently"] = len(late)
    return [Finding("NONFINITE", "Non-finite steps were skipped", "warning", ev,
                    "Some steps overflowed and were skipped: lower the learning rate or clip the gradient norm",
                    confidence=0.8, fix=fix or {"regularization.clip_norm": 1.0}, figure="loss")]


def _no_learning(x: _Ctx) -> list[Finding]:
    best = x.c.best_val(1)
    if best is None or x.chance is None or x.chance <= 0:
        return []
    skill = 1 - best[1] / x.chance
    acc = x.c.best_val(2, lower=False)
    acc_skill = None
    if acc is not None and x.chance_acc is not None and x.chance_acc < 1:
        acc_skill = (acc[1] - x.chance_acc) / (1 - x.chance_acc)
    if skill >= x.t.no_learning_skill or (acc_skill is not None and acc_skill >= x.t.no_learning_accuracy):
        return []
    ev = {"best_val_loss": best[1], "chance_loss": x.chance, "skill": skill}
    if acc is not None:
        ev.update(best_val_accuracy=acc[1], chance_accuracy=x.chance_acc)
    sure = skill < x.t.no_learning_skill / 2 and (acc_skill is None or acc_skill < x.t.no_learning_accuracy / 2)
    return [Finding("NO_LEARNING", "No learning: the validation loss never left the chance level", "critical", ev,
                    "The model does no better than predicting the label frequencies; the cause is the finding "
                    "that explains this one (explained_by), or else look at init, learning rate and data", confidence=0.9 if sure else 0.7, figure="loss")]


def _spikes(v: list[float], x: _Ctx) -> list[int]:
    """Records far above the lowest *smoothed* level so far: one lucky minibatch sets no record
    that every ordinary batch after it then "spikes" above."""
    add = 0.1 * (x.span or 1.0)
    sm = _smooth(v, 5)
    out, m = [], sm[0]
    for i in range(1, len(v)):
        if v[i] > x.t.spike_factor * m and v[i] > m + add:
            out.append(i)
        m = min(m, sm[i])
    return out


def _lr_too_high(x: _Ctx) -> list[Finding]:
    steps, v = [s for s, _ in x.c.train], [y for _, y in x.c.train]
    if len(v) < 4:
        return []
    spikes = _spikes(v, x)
    sm = _smooth(v, 5)  # minibatch noise is not divergence: compare smoothed levels
    tail, lo = sm[-1], min(sm)
    add = 0.2 * (x.span or 1.0)
    diverged = tail > x.t.diverged_factor * lo and tail > lo + add and sm.index(lo) < len(sm) - 3
    collapsed = (x.chance is not None and x.span is not None and tail >= x.chance - 0.05 * x.span
                 and lo <= x.chance - 0.15 * x.span)  # learned something, then fell back to chance
    beyond = x.lr_edge_ratio is not None and x.lr_edge_ratio > 1
    if not (spikes or diverged or collapsed) and not (beyond and tail > lo + add):
        return []
    conf = 0.55 if spikes else 0.0
    conf = max(conf, 0.8 if diverged or collapsed else 0.0) + (0.1 if beyond else 0.0)
    conf = max(conf, 0.5)
    diverged = diverged or collapsed
    lr = x.c.lr_now
    ev: dict[str, Any] = {"lr": lr, "loss_spikes": len(spikes), "min_train_loss": lo, "end_train_loss": tail}
    if spikes:
        ev["first_spike_step"] = steps[spikes[0]]
        ev["spike_loss"] = v[spikes[0]]
    if x.lr_edge_ratio is not None:
        ev["lr_x_lambda_max_over_edge"] = x.lr_edge_ratio
    what = "the loss ended far above its minimum" if diverged else "the loss spiked"
    learned = x.chance is None or lo < x.chance  # its best was better than predicting the label frequencies
    recovered = not diverged and not beyond and tail <= lo + add and learned  # spiked, came back to its best
    if recovered:
        ev["recovered"] = True
        conf = 0.4
    return [Finding("LR_TOO_HIGH", f"Learning rate too high: {what}" + (" (and recovered)" if recovered else ""),
                    "critical" if diverged else "info" if recovered else "warning", ev,
                    "Steps overshoot (oscillation, spikes, divergence); lower the learning rate",
                    confidence=min(conf, 0.95), fix={"optimizer.lr": lr / 10} if lr else {}, figure="loss")]


def _lr_too_low(x: _Ctx) -> list[Finding]:
    v = _smooth([y for _, y in x.c.train])
    if len(v) < 6 or x.span is None:
        return []
    total = v[0] - v[-1]
    q = v[int(0.75 * (len(v) - 1))]
    late = (q - v[-1]) / total if total > 0.02 * x.span else 0.0
    skill_end = (x.chance - v[-1]) / x.span if x.chance is not None else 0.0
    steady = not _spikes([y for _, y in x.c.train], x)
    little = x.moved is not None and x.moved < x.t.moved_little
    tiny_step = x.lr_edge_ratio is not None and x.lr_edge_ratio < 0.02
    slow = late >= x.t.slow_late_fraction and skill_end < 0.8
    if not steady or not (slow or little) or skill_end >= 0.9:
        return []
    if not (little or tiny_step):  # still improving, but nothing says the steps are too small
        return [Finding("LR_TOO_LOW", "Still improving at the end of the budget", "info",
                        {"lr": x.c.lr_now, "share_of_decrease_in_last_quarter": late, "train_skill_at_end": skill_end},
                        "The loss was still falling steadily when the run ended: train longer, or try a higher "
                        "learning rate (the LR range test)", confidence=0.35, figure="loss")]
    conf = (0.55 if slow else 0.0) + (0.3 if little else 0.0)
    conf += 0.2 if x.moved is not None and x.moved < x.t.moved_little / 5 else 0.0
    best = x.c.best_val(2, lower=False) or x.c.best_val(1)
    still = best is not None and x.c.val and best[0] == x.c.val[-1][0]
    conf += 0.1 if still else 0.0
    if x.lr_edge_ratio is not None and x.lr_edge_ratio < 0.02:
        conf += 0.1 if x.lr_edge_ratio > 1e-3 else 0.2
    ev: dict[str, Any] = {"lr": x.c.lr_now, "share_of_decrease_in_last_quarter": late, "train_skill_at_end": skill_end,
                          "still_improving_at_end": bool(still)}
    if x.moved is not None:
        ev["max_relative_weight_change"] = x.moved
    if x.lr_edge_ratio is not None:
        ev["lr_x_lambda_max_over_edge"] = x.lr_edge_ratio
    lr = x.c.lr_now
    return [Finding("LR_TOO_LOW", "Learning rate too low: slow, steady progress", "warning", ev,
                    "The loss falls steadily but slowly and the weights barely move; raise the learning rate",
                    confidence=min(max(conf, 0.5), 0.95), fix={"optimizer.lr": lr * 10} if lr else {}, figure="loss")]


def _takes(optimizer: str, hp: str) -> bool:
    """Whether the registry's optimizer accepts hyperparameter `hp` (False when unknown)."""
    try:
        from thalweg.optim import registry

        registry.get(optimizer).hyperparameter(hp)
    except (KeyError, ValueError):
        return False
    return True


def overfit_fix(config: dict[str, Any]) -> dict[str, Any]:
    """Weight decay where the optimizer takes it (decoupled AdamW needs ~10× more), else dropout."""
    o, m = config.get("optimizer") or {}, config.get("model") or {}
    name = str(o.get("name", ""))
    if _takes(name, "weight_decay"):
        base = 0.1 if name.lower() == "adamw" else 0.01
        return {"optimizer.weight_decay": max(base, 3 * float(o.get("weight_decay") or 0.0))}
    if (m.get("name") or "mlp") in ("mlp", "cnn1d"):
        return {"model.dropout": min(0.5, max(0.3, float(m.get("dropout") or 0.0) + 0.2))}
    return {}


def _overfitting(x: _Ctx) -> list[Finding]:
    c = x.c
    best = c.best_val(1)
    if best is None or len(c.val) < 3:
        return []
    end = c.val[-1][1]
    rise, n_after = c.val_rise() or (0.0, 0)
    tr_at = [y for s, y in c.train if s <= best[0]]
    falling = bool(tr_at) and c.train[-1][1] < tr_at[-1]
    gap = None
    acc_best = c.best_val(2, lower=False)
    if c.train_acc and acc_best is not None:
        gap = c.train_acc[-1][1] - acc_best[1]
    by_rise = rise > x.t.overfit_rise and n_after >= 2 and falling
    steep = rise > x.t.overfit_rise_alone and n_after >= 2 and falling  # accuracy held, loss far up
    by_gap = gap is not None and gap > x.t.overfit_gap and c.train_acc[-1][1] > 0.9 and rise > x.t.overfit_rise / 3
    if not (by_rise or by_gap or (rise > x.t.overfit_rise / 3 and n_after >= 2 and falling)):
        return []
    ev: dict[str, Any] = {"best_val_loss": best[1], "best_step": best[0], "end_val_loss": end, "rise": rise}
    if gap is not None:
        ev["train_minus_val_accuracy"] = gap
    wide = gap is not None and gap > x.t.overfit_gap / 3
    if gap is None and c.train:  # regression: compare the two losses
        wide = end > 2 * max(c.train[-1][1], 1e-12)
    if by_gap or (by_rise and wide) or steep:
        conf = max(min(rise / 0.3, 0.9) if by_rise else 0.0, min(0.5 + (gap or 0.0), 0.9) if by_gap else 0.0)
        return [Finding("OVERFITTING", "Overfitting: validation loss rises after its best while training loss falls",
                        "warning", ev, "The model memorizes the training set (best.pt keeps the weights from the "
                        "best validation step); regularize", confidence=max(conf, 0.5), fix=overfit_fix(x.config),
                        figure="loss", metric="final_val_loss")]
    return [Finding("OVERFITTING", "Mild overfitting: validation loss rose after its best, accuracy held", "info", ev,
                    "The model grows overconfident on held-out data while its accuracy stays; best.pt has the best "
                    "weights, early stopping would end the run sooner", confidence=0.4, figure="loss",
                    metric="final_val_loss")]


def _underfitting(x: _Ctx) -> list[Finding]:
    v = _smooth([y for _, y in x.c.train])
    if len(v) < 4 or x.span is None or x.chance is None:
        return []
    skill = (x.chance - v[-1]) / x.span
    acc = x.c.train_acc[-1][1] if x.c.train_acc else None
    poor = skill < 0.6 or (acc is not None and acc < 0.9)
    total = v[0] - v[-1]
    late = (v[int(0.75 * (len(v) - 1))] - v[-1]) / total if total > 0 else 0.0
    if not poor or skill < x.t.no_learning_skill or late >= x.t.slow_late_fraction:
        return []  # fits well, learned nothing (NO_LEARNING), or still descending (not a plateau yet)
    ev: dict[str, Any] = {"train_skill_at_end": skill, "end_train_loss": v[-1], "chance_loss": x.chance}
    if acc is not None:
        ev["end_train_accuracy"] = acc
    return [Finding("UNDERFITTING", "Underfitting: the training loss stays high", "info", ev,
                    "The model cannot fit even the training data: its cause (a model too small, penalties too "
                    "strong, a rate too low) leads when the doctor finds one; else a bigger model, longer training "
                    "or a higher learning rate may help", confidence=0.4, figure="loss")]


def _plateau(x: _Ctx) -> list[Finding]:
    steps, v = [s for s, _ in x.c.train], _smooth([y for _, y in x.c.train])
    if len(v) < 6 or x.span is None or x.chance is None:
        return []
    tol = x.t.plateau_tolerance * x.span
    best_len, best_start, i = 0, 0, 0
    for j in range(len(v)):
        while abs(v[j] - v[i]) > tol or max(v[i:j + 1]) - min(v[i:j + 1]) > 2 * tol:
            i += 1
        if j - i + 1 > best_len:
            best_len, best_start = j - i + 1, i
    level = sum(v[best_start:best_start + best_len]) / best_len
    skill = (x.chance - level) / x.span
    if best_len < x.t.plateau_fraction * len(v) or skill > 0.5:
        return []
    end = best_start + best_len - 1
    present = end >= len(v) - 2
    ev = {"from_step": steps[best_start], "to_step": steps[end], "level": level, "chance_loss": x.chance,
          "present": present}
    if present:
        return [Finding("PLATEAU", "Stuck on a plateau: the training loss has stopped moving", "warning", ev,
                        "A flat region (often a saddle near a symmetric or tiny initialization): give it momentum "
                        "or a better-scaled init", confidence=0.6 if skill > 0.1 else 0.7, figure="loss")]
    return [Finding("PLATEAU", "Crossed a plateau (history)", "info", ev,
                    "The loss sat on a plateau before escaping it; a better-scaled init or momentum crosses it sooner",
                    confidence=0.5, figure="loss")]


def curve_findings(curves: Curves, config: dict[str, Any], *, chance_loss: float | None, chance_accuracy: float | None,
                   num_classes: int | None, moved: float | None = None, lr_edge_ratio: float | None = None,
                   thresholds: Thresholds | None = None) -> list[Finding]:
    """Every curve rule on the surviving history (NONFINITE/RECOVERED also read the events)."""
    x = _Ctx(curves, config, chance_loss, chance_accuracy, _floor(config, num_classes), thresholds or Thresholds(),
             moved, lr_edge_ratio)
    found = _nonfinite(x) + _no_learning(x) + _lr_too_high(x) + _overfitting(x) + _plateau(x)
    codes = {f.code for f in found}
    found += _lr_too_low(x) if "LR_TOO_HIGH" not in codes else []
    found += _underfitting(x) if "NO_LEARNING" not in codes else []
    return found
