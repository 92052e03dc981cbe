"""Curve facts the causes read (how far the run generalized, how much it memorized) and the
label cause — labels that do not follow the inputs (diagnose/causes.py ranks them with the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thalweg.diagnose.curves import read_curves
from thalweg.diagnose.findings import Finding, Thresholds

__all__ = ["label_findings", "memorization", "train_val_gap", "val_skill"]


def memorization(ev: Any) -> tuple[bool, float]:
    """Whether the run ended fitting (nearly) every training row, and how far its validation
    loss rose from its best by the end (0 without two validations after the best)."""
    c = read_curves(ev.records)
    rise = c.val_rise()
    if rise is None or not c.train_acc or c.train_acc[-1][1] < 0.99:
        return False, 0.0
    return True, rise[0] if rise[1] >= 2 else 0.0


def val_skill(ev: Any) -> float | None:
    """Best validation accuracy as the share of the way from chance to perfect."""
    acc = read_curves(ev.records).best_val(2, lower=False)
    ch = ev.data.chance_accuracy if ev.data is not None else None
    return None if acc is None or ch is None or ch >= 1 else (acc[1] - ch) / (1 - ch)


def train_val_gap(ev: Any) -> float | None:
    """Training accuracy at the end minus the best validation accuracy."""
    c = read_curves(ev.records)
    acc = c.best_val(2, lower=False)
    return c.train_acc[-1][1] - acc[1] if c.train_acc and acc is not None else None


def label_findings(ev: Any, found: Mapping[str, Finding], t: Thresholds) -> list[Finding]:
    """Labels that do not follow the inputs: shuffled (nearest neighbours share a label no more
    than chance, nothing generalizes) or noisy (the best weights side with the neighbourhood
    against the label for many rows)."""
    d = ev.data
    if d is None or d.task != "classification":
        return []
    signal = getattr(d, "label_signal", None)
    fit = getattr(ev, "label_fit", None) or {}
    skill = val_skill(ev)
    stuck = "NO_LEARNING" in found or "UNDERFITTING" in found or (
        # a plateau, or little generalized, on enough rows per class that the neighbour signal holds
        d.num_classes and d.num_train / d.num_classes >= t.little_data_per_class
        and ("PLATEAU" in found or (skill is not None and skill < 0.5)))
    if signal is not None and signal < t.label_signal_weak and stuck:
        return [Finding("LABEL_PROBLEMS", "The labels look unrelated to the inputs", "critical",
                        {"nearest_neighbour_label_signal": signal, "threshold": t.label_signal_weak},
                        "An example's nearest neighbour shares its label hardly more often than two random "
                        "examples do, and the model learns nothing that generalizes: check that the labels belong "
                        "to their rows (a shuffle, a join on the wrong key)",
                        confidence=min(0.9, 0.6 + 2 * (t.label_signal_weak - signal)), figure="data")]
    outvoted, sides = fit.get("outvoted"), fit.get("model_agrees_with_neighbours")
    if outvoted is None or sides is None:
        return []
    lean = sides - fit["neighbours_agree"]  # the model follows the neighbourhood more than the labels do
    if outvoted < t.outvoted or lean < t.outvoted_lean:
        return []
    return [Finding("LABEL_PROBLEMS", f"Noisy labels: {outvoted:.0%} of the training labels are outvoted",
                    "warning", {"outvoted_training_labels": outvoted, "model_leans_to_neighbours": lean,
                                "nearest_neighbour_label_signal": signal,
                                "train_accuracy_of_best_weights": fit.get("train_accuracy")},
                    "For that share of training rows the best weights predict another class and so do most of the "
                    "row's nearest neighbours: the label is the odd one out — the pattern of wrong labels, which "
                    "a model learns around before it memorizes them; clean or relabel the data (no config "
                    "change fixes it)", confidence=min(0.9, 0.5 + lean + outvoted / 2), figure="data")]
