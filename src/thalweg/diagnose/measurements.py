"""Monitor measurements → findings: gradients, activations, non-finite values and curvature.

`diagnose` reads a `Monitor.measure()` dict plus optional keys: ``lr``, ``optimizer``,
``momentum`` and ``curvature`` (``lambda_max``, ``lambda_min``, ``residual_min``,
``grad_norm``, ``kind``, ``condition_number``, ``zero_tol``), and ``loss_history``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from thalweg.diagnose.findings import SEVERITY_ORDER, Finding, Thresholds

__all__ = ["diagnose"]

_ADAPTIVE = ("adam", "adamw", "rmsprop", "adagrad", "adadelta", "adahessian")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _gradient_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    layers = [L for L in m.get("layers", []) if L.get("matrix") and _num(L.get("grad_norm")) is not None]
    norms = [float(L["grad_norm"]) for L in layers]
    if any(math.isfinite(g) and g > t.exploding_norm for g in norms):
        worst = max(range(len(norms)), key=lambda i: norms[i])
        out.append(Finding("EXPLODING_GRADIENTS", "Exploding gradients", "critical",
                           {"layer": layers[worst]["name"], "grad_norm": norms[worst], "threshold": t.exploding_norm},
                           "Clip the gradient norm, lower the learning rate, use a smaller init (Xavier/Kaiming) "
                           "or add normalization (BatchNorm/LayerNorm)."))
    elif len(norms) >= 2 and all(math.isfinite(g) for g in norms) and norms[-1] > 0:
        ratio = norms[0] / norms[-1]
        ev = {"first_layer": layers[0]["name"], "last_layer": layers[-1]["name"], "ratio_first_to_last": ratio,
              "grad_norms": norms}
        if ratio < t.vanishing_ratio:
            out.append(Finding("VANISHING_GRADIENTS", "Vanishing gradients toward the input", "warning",
                               {**ev, "threshold": t.vanishing_ratio},
                               "Early layers barely learn: use ReLU-family activations instead of sigmoid/tanh, "
                               "Kaiming/Xavier initialization, BatchNorm/LayerNorm or residual connections."))
        elif ratio > t.exploding_ratio:
            out.append(Finding("EXPLODING_GRADIENTS", "Gradients grow toward the input", "warning",
                               {**ev, "threshold": t.exploding_ratio},
                               "Products of large layer Jacobians: clip gradients, shrink the init scale, add normalization."))
    ratios = [(L["name"], float(L["update_ratio"])) for L in m.get("layers", []) if _num(L.get("update_ratio")) is not None]
    high = [(n, r) for n, r in ratios if r > t.update_ratio_high]
    if high:
        out.append(Finding("UPDATE_TOO_LARGE", "Updates are large relative to the weights", "warning",
                           {"layers": [n for n, _ in high], "update_ratios": [r for _, r in high],
                            "threshold": t.update_ratio_high},
                           "Each step rewrites >10% of the weights: lower the learning rate or add warm-up "
                           "(a healthy ratio is around 1e-3)."))
    elif ratios and max(r for _, r in ratios) < t.update_ratio_low:
        out.append(Finding("UPDATE_TOO_SMALL", "Updates are tiny relative to the weights", "info",
                           {"max_update_ratio": max(r for _, r in ratios), "threshold": t.update_ratio_low},
                           "Training will crawl: raise the learning rate (try an LR range test) or check the schedule."))
    return out


def _activation_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    for a in m.get("activations", []):
        dead, sat = _num(a.get("dead_fraction")), _num(a.get("saturation"))
        if dead is not None and dead >= t.dead_warning:
            out.append(Finding("DEAD_UNITS", f"Dead ReLU units in {a['name']}",
                               "critical" if dead >= t.dead_critical else "warning",
                               {"layer": a["name"], "dead_fraction": dead, "units": a.get("units"),
                                "threshold": t.dead_warning},
                               "Units that never fire get no gradient: lower the learning rate, use Kaiming init "
                               "with zero/positive bias, or LeakyReLU/GELU."))
        if sat is not None and sat >= t.saturation:
            out.append(Finding("SATURATED_ACTIVATIONS", f"Saturated {a['type']} units in {a['name']}", "warning",
                               {"layer": a["name"], "saturated_fraction": sat, "threshold": t.saturation},
                               "Saturated tanh/sigmoid have near-zero derivatives (vanishing gradients): normalize "
                               "inputs, use Xavier init or BatchNorm, or switch to ReLU."))
    return out


def _signal_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    """Signal propagation through depth: activation RMS shrinking (or growing) layer after layer —
    the forward face of vanishing (exploding) gradients, which a per-layer gradient ratio can miss
    when every layer's gradient is small alike."""
    acts = [a for a in m.get("activations", []) if _num(a.get("rms")) is not None]
    if len(acts) < 2:
        return []
    rms = [float(a["rms"]) for a in acts]
    ref = _num(m.get("input_rms")) or 1.0
    overall = rms[-1] / rms[0] if rms[0] > 0 else math.inf
    ev = {"activation_rms": rms, "input_rms": ref, "first_to_last": overall, "layers": [a["name"] for a in acts]}
    if rms[-1] < t.signal_vanish * ref and overall < 0.3:
        return [Finding("VANISHING_GRADIENTS", "The signal vanishes through depth (activations shrink layer by layer)",
                        "warning", ev, "Each layer multiplies the signal by less than one, so the output and every "
                        "gradient are tiny: use a variance-preserving init (Kaiming/Xavier) or normalization.",
                        confidence=0.7)]
    if rms[-1] > t.signal_explode * ref and overall > 3:
        return [Finding("EXPLODING_GRADIENTS", "The signal explodes through depth (activations grow layer by layer)",
                        "warning", ev, "Each layer multiplies the signal by more than one: use a variance-preserving "
                        "init (Kaiming/Xavier), normalization or gradient clipping.", confidence=0.7)]
    return []


def _nonfinite_rules(m: Mapping[str, Any]) -> list[Finding]:
    nf = dict(m.get("nonfinite", {}) or {})
    hist = [x for x in m.get("loss_history", []) or [] if _num(x) is not None]
    bad_hist = sum(1 for x in hist if not math.isfinite(float(x)))
    loss = _num(m.get("loss"))
    if loss is not None and not math.isfinite(loss):
        nf["loss"] = True
    counts = {k: v for k, v in nf.items() if v}
    if bad_hist:
        counts["loss_history"] = bad_hist
    if not counts:
        return []
    return [Finding("NONFINITE", "Overflow: inf/NaN in training", "critical", counts,
                    "Lower the learning rate, clip gradients, and use stable formulas (log-sum-exp: subtract "
                    "max(x) before exp, e.g. softmax([1000, 990, 980]); cross_entropy on logits)." )]


def _curvature_rules(m: Mapping[str, Any], t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    c = m.get("curvature") or {}
    if hasattr(c, "to_dict"):
        c = c.to_dict()
    lmax, lmin = _num(c.get("lambda_max")), _num(c.get("lambda_min"))
    rmin = _num(c.get("residual_min")) or 0.0
    gnorm = _num(c.get("grad_norm"))
    if gnorm is None:
        gnorm = _num(m.get("grad_norm"))
    zero = _num(c.get("zero_tol")) or 0.0
    kind = c.get("kind")
    lr, opt = _num(m.get("lr")), str(m.get("optimizer") or "sgd").lower()
    beta = _num(m.get("momentum")) or 0.0
    if lr is not None and lmax is not None and lmax > 0:
        edge = t.stability_edge * (1 + beta)
        sharp = lr * lmax
        adaptive = any(opt.startswith(a) for a in _ADAPTIVE)
        ev = {"lr": lr, "lambda_max": lmax, "lr_x_lambda_max": sharp, "edge": edge, "optimizer": opt}
        if sharp > edge:
            out.append(Finding("LR_BEYOND_STABILITY", "Learning rate beyond the stability edge",
                               "warning" if adaptive else "critical", ev,
                               f"Gradient descent diverges along the top eigenvector when η·λ_max > {edge:g}: use "
                               f"η < {edge / lmax:.3g}, add warm-up, or decay the rate"
                               + (" (for adaptive methods the preconditioned sharpness decides)." if adaptive else ".")))
        elif sharp > edge / 2:
            out.append(Finding("LR_NEAR_EDGE", "Learning rate near the stability edge", "info", ev,
                               "Steps overshoot across the steepest direction (oscillation): fine if loss falls; "
                               "otherwise lower η or add momentum."))
    if kind == "saddle" or (lmin is not None and lmin + rmin < -zero and gnorm is not None and gnorm <= t.grad_tol
                            and (lmax or 0) > zero):
        out.append(Finding("SADDLE", "Stuck near a saddle point", "warning",
                           {"lambda_min": lmin, "lambda_max": lmax, "residual_min": rmin, "grad_norm": gnorm},
                           "A descent direction exists (λ_min < 0) but the gradient is tiny: add momentum or "
                           "gradient noise (smaller batches), or use saddle-free Newton (|H|) / a step along the "
                           "λ_min eigenvector."))
    elif kind == "minimum":
        out.append(Finding("AT_MINIMUM", "At a local minimum", "info",
                           {"lambda_min": lmin, "lambda_max": lmax, "grad_norm": gnorm},
                           "Training has converged here; to generalize better, regularize (weight decay, dropout, "
                           "early stopping on validation) rather than optimize harder."))
    elif kind == "flat":
        out.append(Finding("FLAT_REGION", "Flat (degenerate) critical region", "info",
                           {"lambda_min": lmin, "lambda_max": lmax, "grad_norm": gnorm, "zero_tol": zero},
                           "Near-zero curvature: the second-derivative test is inconclusive; if the loss is still "
                           "high this is a plateau — momentum or adaptive methods cross it faster."))
    elif kind == "not_critical" and gnorm is not None:
        out.append(Finding("NOT_CRITICAL", "Not at a critical point", "info", {"grad_norm": gnorm},
                           "The gradient is not zero: training has not stopped at a minimum or saddle and can continue."))
    kappa = _num(c.get("condition_number"))
    if kappa is None and lmin is not None and lmax is not None and lmin - rmin > 0:
        kappa = lmax / lmin
    if kappa is not None and math.isfinite(kappa) and kappa > t.ill_conditioned:
        out.append(Finding("ILL_CONDITIONED", "Ill-conditioned curvature (a ravine)", "warning",
                           {"condition_number": kappa, "lambda_max": lmax, "lambda_min": lmin,
                            "threshold": t.ill_conditioned},
                           "GD oscillates across the steep walls and crawls along the floor: use momentum or an "
                           "adaptive method (Adam/RMSProp), normalize inputs/BatchNorm, or precondition (Newton, K-FAC)."))
    return out


def diagnose(measurements: Mapping[str, Any], thresholds: Thresholds | None = None) -> list[Finding]:
    """Apply every rule to `measurements`; findings come back most severe first."""
    if not isinstance(measurements, Mapping):
        raise TypeError(f"measurements must be a mapping (e.g. Monitor.measure() output), got {type(measurements).__name__}")
    t = thresholds or Thresholds()
    found = (_nonfinite_rules(measurements) + _gradient_rules(measurements, t)
             + _activation_rules(measurements, t) + _curvature_rules(measurements, t))
    codes = {f.code for f in found}
    found += [f for f in _signal_rules(measurements, t) if f.code not in codes]
    return sorted(found, key=lambda f: SEVERITY_ORDER[f.severity])
