"""What the model is fed: feature scales, class balance and the chance level — and the two
findings that live in the data, UNNORMALIZED_INPUTS and LABEL_PROBLEMS.

The chance level is the loss of a model that learned nothing but the label distribution:
for classification the cross-entropy of predicting the training class frequencies (ln K when
balanced), for regression the mean squared error of predicting the training mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from thalweg.diagnose.findings import Finding, Thresholds

__all__ = ["DataStats", "data_findings", "data_statistics", "label_fit", "label_signal"]


@dataclass
class DataStats:
    """Summary statistics of the inputs and labels as the model sees them (after any
    standardization the run applied)."""

    task: str
    num_train: int
    num_features: int
    standardized: bool
    feature_rms: list[float]  # sqrt(mean² + std²) per feature, training split
    feature_std: list[float]
    constant_features: int
    scale_orders: float  # decades between the 95th and 5th percentile of non-constant feature RMS
    max_rms: float
    chance_loss: float  # on the validation split, predicting the training label distribution
    chance_accuracy: float | None = None  # majority class share on the validation split
    num_classes: int | None = None
    class_counts: list[int] = field(default_factory=list)
    majority_fraction: float | None = None
    target_std: float | None = None  # regression
    label_signal: float | None = None  # nearest-neighbour label agreement above chance (0 = none, 1 = all)
    sample: bool = False  # computed from a batch, not the training split: num_train is not the data's size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if len(d["feature_rms"]) > 64:  # keep JSON small for wide inputs
            d["feature_rms"] = d["feature_rms"][:64]
            d["feature_std"] = d["feature_std"][:64]
        return d


def _quantile(values: Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q)) if values.numel() else math.nan


def data_statistics(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, *, task: str,
                    num_classes: int | None, standardized: bool) -> DataStats:
    """Feature scales, class balance and the chance level of a split dataset."""
    x = x_train.reshape(len(x_train), -1).double()
    mean, std = x.mean(0), x.std(0, unbiased=False) if len(x) > 1 else torch.zeros(x.shape[1], dtype=x.dtype)
    rms = (mean.square() + std.square()).sqrt()
    live = rms[std > 1e-12 * (1 + mean.abs())]
    lo, hi = _quantile(live, 0.05), _quantile(live, 0.95)
    orders = math.log10(hi / lo) if live.numel() and lo > 0 else 0.0
    common: dict[str, Any] = dict(
        task=task, num_train=len(x_train), num_features=x.shape[1], standardized=standardized,
        feature_rms=rms.tolist(), feature_std=std.tolist(), constant_features=int(x.shape[1] - live.numel()),
        scale_orders=orders, max_rms=float(rms.max()) if rms.numel() else 0.0)
    if task == "classification":
        k = int(num_classes or int(y_train.max()) + 1)
        counts = torch.bincount(y_train.reshape(-1), minlength=k)[:k]
        prior = counts.double() / counts.sum()
        val_counts = torch.bincount(y_val.reshape(-1), minlength=k)[:k].double()
        val_freq = val_counts / val_counts.sum()
        with torch.no_grad():  # a class absent from training costs −ln(ε): effectively a wrong guess
            chance = float(-(val_freq * prior.clamp_min(1e-12).log()).sum())
        return DataStats(**common, chance_loss=chance, chance_accuracy=float(val_freq[int(prior.argmax())]),
                         num_classes=k, class_counts=counts.tolist(), majority_fraction=float(prior.max()),
                         label_signal=label_signal(x, y_train.reshape(-1)))
    yt, yv = y_train.reshape(len(y_train), -1).double(), y_val.reshape(len(y_val), -1).double()
    chance = float((yv - yt.mean(0)).square().mean())
    return DataStats(**common, chance_loss=chance, target_std=float(yt.std(0, unbiased=False).mean()))


def _neighbours(x: Tensor, k: int) -> Tensor:
    """Indices of each row's `k` nearest other rows (standardized features)."""
    x = x.reshape(len(x), -1).double()
    std = x.std(0)
    live = std > 0
    x = (x[:, live] - x[:, live].mean(0)) / std[live]
    d = torch.cdist(x, x)
    d.fill_diagonal_(math.inf)
    return d.topk(k, largest=False).indices


def label_signal(x: Tensor, y: Tensor, *, max_rows: int = 2000) -> float | None:
    """How much more often a training example's nearest neighbour (standardized inputs) has the
    same label than two random examples do: (agree − chance) / (1 − chance). Labels that depend
    on the inputs score well above 0 (digits ≈ 0.97); labels independent of them (shuffled)
    ≈ 0; a fraction q of random labels scales it by about (1 − q)². No model is involved."""
    n = min(len(x), max_rows)
    if n < 100 or x[:n].reshape(n, -1).std(0).max() <= 0:  # a batch says too little about the labels
        return None
    y = y[:n]
    agree = float((y[_neighbours(x[:n], 1)[:, 0]] == y).double().mean())
    p = torch.bincount(y).double() / n
    chance = float(p.square().sum())
    return (agree - chance) / (1 - chance) if chance < 1 else None


def label_fit(logits: Tensor, y: Tensor, x: Tensor | None = None, *, k: int = 10) -> dict[str, float]:
    """How a trained model's predictions on training rows sit with their labels: its accuracy,
    and (with the inputs `x`) the share of rows whose label is *outvoted* — the model predicts
    another class and the majority of the row's `k` nearest neighbours carries that same other
    class. A wrong label looks like that (the model and the neighbourhood learned the pattern,
    the label does not follow it); a hard example rarely does, a model too weak to learn the
    pattern hardly ever agrees with the neighbours against the label."""
    y = y.reshape(-1)
    pred = logits.detach().argmax(1)
    out = {"train_accuracy": float((pred == y).double().mean()), "rows": float(len(y))}
    if x is not None and len(y) > k:
        votes = y[_neighbours(x, k)]
        kk = int(max(int(y.max()), int(pred.max())) + 1)
        counts = torch.zeros(len(y), kk, dtype=torch.long).scatter_add_(1, votes, torch.ones_like(votes))
        majority = counts.argmax(1)
        out["outvoted"] = float(((pred == majority) & (pred != y)).double().mean())
        out["neighbours_agree"] = float((majority == y).double().mean())
        out["model_agrees_with_neighbours"] = float((majority == pred).double().mean())
    return out


def _unnormalized(d: DataStats, config: dict[str, Any], t: Thresholds) -> list[Finding]:
    if d.standardized or d.num_features == 0:
        return []
    wide, big = d.scale_orders >= t.scale_orders, d.max_rms >= t.scale_max
    if not (wide or big):
        return []
    conf = min(0.95, 0.6 + 0.1 * max(d.scale_orders - t.scale_orders, math.log10(max(d.max_rms, 1) / t.scale_max)))
    order = sorted(range(d.num_features), key=lambda j: d.feature_rms[j])
    ev = {"standardize": False, "scale_decades": d.scale_orders, "largest_feature_rms": d.max_rms,
          "smallest_feature_rms": d.feature_rms[order[0]] if order else None,
          "largest_feature": order[-1] if order else None}
    return [Finding(
        "UNNORMALIZED_INPUTS", "Input features on very different scales (not standardized)",
        "critical" if d.scale_orders >= t.scale_orders + 2 or d.max_rms >= 100 * t.scale_max else "warning", ev,
        "The largest features dominate the first layer's pre-activations and the gradient (and the Hessian's "
        "condition number), the smallest are ignored: standardize with training-split statistics → "
        "[data] standardize = true", confidence=conf, fix={"data.standardize": True}, figure="data")]


def _labels(d: DataStats, best_accuracy: float | None, t: Thresholds) -> list[Finding]:
    if d.task != "classification":
        if d.target_std is not None and d.target_std <= 1e-8:
            return [Finding("LABEL_PROBLEMS", "Constant regression target", "critical",
                            {"target_std": d.target_std}, "Every target is the same: there is nothing to learn — "
                            "check the target column ([data] options)", confidence=1.0, figure="data")]
        return []
    counts = d.class_counts
    present = [c for c in counts if c > 0]
    ev: dict[str, Any] = {"class_counts": counts, "num_classes": d.num_classes}
    if len(present) <= 1:
        return [Finding("LABEL_PROBLEMS", "Only one class in the training labels", "critical", ev,
                        "Every training label is the same class: the model can only learn to predict it — "
                        "check the label column and the split ([data] options)", confidence=1.0, figure="data")]
    problems, conf = [], 0.0
    if (d.majority_fraction or 0) >= t.imbalance:
        problems.append(f"the majority class holds {d.majority_fraction:.0%} of the training labels")
        ev["majority_fraction"] = d.majority_fraction
        conf = 0.7
        if best_accuracy is not None and d.chance_accuracy is not None and best_accuracy <= d.chance_accuracy + 0.01:
            problems.append(f"validation accuracy {best_accuracy:.3f} is what always predicting it scores "
                            f"({d.chance_accuracy:.3f})")
            ev["best_val_accuracy"], ev["majority_baseline"] = best_accuracy, d.chance_accuracy
            conf = 0.95
    rare = [k for k, c in enumerate(counts) if 0 < c < t.min_class_count]
    missing = [k for k, c in enumerate(counts) if c == 0]
    # uniformly little data is TOO_LITTLE_DATA's; under min_class_count rows per class on average the
    # labels themselves are suspect (an ID or a measured value read as classes)
    small = t.min_class_count * len(present) <= d.num_train < t.little_data_per_class * len(present)
    if (rare or len(present) * t.min_class_count > d.num_train) and not small:
        problems.append(f"{len(rare)} class(es) have fewer than {t.min_class_count} training examples")
        ev["rare_classes"] = rare
        conf = max(conf, 0.6)
    if missing:
        problems.append(f"{len(missing)} declared class(es) never occur in the training split")
        ev["missing_classes"] = missing
        conf = max(conf, 0.5)
    if not problems:
        return []
    return [Finding("LABEL_PROBLEMS", "Label distribution problem: " + "; ".join(problems[:2]), "warning", ev,
                    "No config change fixes the labels: rebalance or collect data, weight the loss by inverse "
                    "class frequency, and judge the run by balanced accuracy, not accuracy",
                    confidence=conf, figure="data")]


def data_findings(d: DataStats, config: dict[str, Any], *, best_accuracy: float | None = None,
                  thresholds: Thresholds | None = None) -> list[Finding]:
    """UNNORMALIZED_INPUTS and LABEL_PROBLEMS from the data statistics."""
    t = thresholds or Thresholds()
    return _unnormalized(d, config, t) + _labels(d, best_accuracy, t)
