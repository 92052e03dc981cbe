"""Causes, from their own evidence — not only from the symptoms they produce.

A symptom (dead units, vanishing gradients, a plateau, no learning) has several possible
causes; the doctor names one only when something points at the cause itself:

- BAD_INIT: the initial weights, rebuilt from the config's seed, multiply the signal by far
  less or far more than a variance-preserving init (RMS·√fan_in against the activation's
  Kaiming gain), or the biases start negative so no ReLU fires;
- SATURATING_ACTIVATION: sigmoid/tanh layers whose small derivatives shrink the gradient
  layer by layer, measured at the start (with a sane init scale);
- MODEL_TOO_SMALL / OVER_REGULARIZED: a representation narrower than the number of classes,
  or penalties that hold the weights down, in a run that cannot fit its training data;
- MODEL_TOO_LARGE / TOO_LITTLE_DATA: a run that overfits, told apart by how many training
  examples each class has;
- LABEL_PROBLEMS (noise): labels that nearest neighbours in input space do not share more
  than chance does, or that the best weights contradict for many training rows;
- LR_TOO_HIGH / LR_TOO_LOW: the configured peak rate against the LR range test's loss
  minimum, ReLUs that were alive at the start and died during training, the probes.

`differential` says, for a symptom no evidenced cause explains, which causes the doctor
could not rule out and which measurement (`thalweg doctor --probe`) would tell them apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from thalweg.diagnose.curves import overfit_fix
from thalweg.diagnose.findings import ROOT_CAUSES, Finding, Thresholds, reach
from thalweg.diagnose.labels import label_findings, memorization, train_val_gap, val_skill

__all__ = ["cause_findings", "differential", "kaiming_gains", "probes_wanted"]

#: symptoms that show a run in trouble (warning level), which a cause must produce to be named
TROUBLE = ("NO_LEARNING", "PLATEAU", "UNDERFITTING", "VANISHING_GRADIENTS", "EXPLODING_GRADIENTS",
           "SATURATED_ACTIVATIONS", "DEAD_UNITS", "NONFINITE", "SADDLE", "LR_TOO_LOW", "LR_TOO_HIGH",
           "UPDATE_TOO_LARGE", "LR_BEYOND_STABILITY")
_SQUASHING = ("sigmoid", "tanh")


def kaiming_gains(activation: str) -> float:
    """The gain a variance-preserving init gives a layer followed by `activation`."""
    from thalweg.init import gain

    try:
        return gain(activation)
    except ValueError:
        return 1.0


def _cfg(ev: Any, section: str) -> Mapping[str, Any]:
    return ev.config.get(section) or {}


def _activation(ev: Any) -> str:
    return str(_cfg(ev, "model").get("activation") or "relu")


def _troubled(found: Mapping[str, Finding], *codes: str) -> list[str]:
    want = codes or TROUBLE
    return [c for c in want if c in found and found[c].severity != "info"]


def _layer_means(m: Mapping[str, Any] | None, key: str) -> list[float]:
    return [float(a[key]) for a in (m or {}).get("activations", []) if isinstance(a.get(key), int | float)]


def _grad_ratio(m: Mapping[str, Any] | None) -> float | None:
    """First / last weight layer's gradient norm in one measurement."""
    g = [float(x["grad_norm"]) for x in (m or {}).get("layers", [])
         if x.get("matrix") and isinstance(x.get("grad_norm"), int | float)]
    if len(g) < 2 or not all(math.isfinite(v) for v in g) or g[-1] <= 0:
        return None
    return g[0] / g[-1]


def _init_scale(ev: Any, t: Thresholds) -> tuple[list[tuple[str, float]], float | None]:
    """(layer, gain ÷ the variance-preserving gain) for layers far off it, and the product over
    the hidden layers (how much the signal grows or shrinks at the start)."""
    w = ev.weights
    gains = dict(getattr(w, "init_gain", {}) or {}) if w is not None else {}
    if not gains or _cfg(ev, "init").get("rule") in ("zeros", "constant"):
        return [], None  # symmetric starts are SYMMETRIC_INIT's
    ideal = kaiming_gains(_activation(ev))
    names = list(gains)
    out_name = f"{ev.output_layer}.weight" if ev.output_layer else names[-1]
    ratios = [(n, gains[n] / (1.0 if n == out_name else ideal)) for n in names]
    off = [(n.rsplit(".", 1)[0], r) for n, r in ratios if r < t.init_gain_low or r > t.init_gain_high]
    hidden = [r for n, r in ratios if n != out_name]
    prod = math.prod(hidden) if hidden else None
    return off, prod


def _bad_init(ev: Any, found: Mapping[str, Finding], t: Thresholds) -> list[Finding]:
    init = _cfg(ev, "init")
    off, prod = _init_scale(ev, t)
    bias = float(init.get("bias") or 0.0)
    dead0 = max(_layer_means(ev.init, "dead_fraction"), default=0.0)
    trouble = _troubled(found)
    ev_: dict[str, Any] = {"init_rule": init.get("rule", "default")}
    if init.get("rule") == "normal":
        ev_["init_std"] = init.get("std", 0.01)
    fix: dict[str, Any] = {"init.rule": "kaiming_normal"}
    if off:
        ev_["layers_off_scale"] = [n for n, _ in off]
        ev_["gain_over_variance_preserving"] = [r for _, r in off]
        if prod is not None:
            ev_["signal_factor_through_depth"] = prod
        small = all(r < 1 for _, r in off)
        title = (f"Initialization too {'small' if small else 'large'}: the layers multiply the signal by "
                 f"{'far less' if small else 'far more'} than a variance-preserving init")
    elif bias < 0 and dead0 >= t.dead_warning:
        ev_.update(init_bias=bias, dead_fraction_at_start=dead0)
        fix = {"init.bias": 0.0}
        title = "Negative initial biases: most ReLUs never fire from the start"
    else:
        return []
    if not trouble:
        return [Finding("BAD_INIT", title, "warning", ev_, "Far from a variance-preserving init, the run starts "
                        "at a disadvantage it may not make up: use Kaiming (ReLU) or Xavier (tanh) scaling",
                        confidence=0.65, fix=fix, figure="gradients")]
    ev_["signs"] = trouble
    return [Finding("BAD_INIT", title, "critical" if "NO_LEARNING" in trouble else "warning", ev_,
                    "Each layer should keep the signal's scale (Kaiming for ReLU, Xavier/Kaiming-tanh for "
                    "tanh); an init far off it vanishes or explodes geometrically with depth",
                    confidence=0.9, fix=fix, figure="gradients")]


def _saturating(ev: Any, found: Mapping[str, Finding], t: Thresholds) -> list[Finding]:
    act = _activation(ev)
    if act not in _SQUASHING or _init_scale(ev, t)[0]:
        return []
    ratio = _grad_ratio(ev.init)
    sat = max(_layer_means(ev.init, "saturation") + _layer_means(ev.end, "saturation"), default=0.0)
    trouble = _troubled(found)
    depth = int(_cfg(ev, "model").get("depth") or 2)
    vanishing = ratio is not None and ratio < t.extras.get("saturating_grad_ratio", 0.1)
    if not trouble and not vanishing:
        return []
    if act == "tanh" and not (vanishing or sat >= t.saturation):
        return []
    ev_: dict[str, Any] = {"activation": act, "hidden_layers": depth, "saturated_fraction": sat}
    if ratio is not None:
        ev_["first_to_last_gradient_at_start"] = ratio
    if trouble:
        ev_["signs"] = trouble
    conf = 0.85 if vanishing and trouble else 0.7 if vanishing or act == "sigmoid" else 0.55
    return [Finding("SATURATING_ACTIVATION", f"{act} layers squash the gradient",
                    "warning", ev_, f"The {act} derivative is at most {'1/4' if act == 'sigmoid' else '1'} and "
                    "small wherever a unit saturates, so each layer shrinks the gradient on its way back; "
                    "a ReLU-family activation keeps it", confidence=conf, fix={"model.activation": "relu"},
                    figure="gradients")]


def _representation(ev: Any) -> int | None:
    """The narrowest hidden layer, in features per position (an MLP's width, a CNN's channels):
    measured (the doctor's forward pass), else an MLP's configured width."""
    b = getattr(ev, "bottleneck", None)
    m = _cfg(ev, "model")
    if b is None and m.get("name", "mlp") == "mlp" and (m.get("depth") is None or m.get("depth") > 0):
        b = m.get("width") or 128
    return b


def _capacity(ev: Any, found: Mapping[str, Finding], t: Thresholds) -> list[Finding]:
    """MODEL_TOO_SMALL and OVER_REGULARIZED for a run that cannot fit its data; MODEL_TOO_LARGE
    and TOO_LITTLE_DATA for one that overfits."""
    d = ev.data
    k = d.num_classes if d is not None else None
    out: list[Finding] = []
    under = _troubled(found, "UNDERFITTING", "NO_LEARNING", "PLATEAU") or (
        "UNDERFITTING" in found and found["UNDERFITTING"].severity == "info")
    m, o, r = _cfg(ev, "model"), _cfg(ev, "optimizer"), _cfg(ev, "regularization")
    cap = (getattr(ev, "probes", None) or {}).get("capacity")
    if under and cap and cap.get("helps"):
        out.append(Finding("MODEL_TOO_SMALL", f"Too little capacity: a {cap['probed']}-unit model fits far better",
                           "warning", {"capacity_probe": cap}, "Trained from the same start for the same short "
                           "budget, a wider model reached a clearly better validation metric; widen the model",
                           confidence=0.85, fix={cap["field"]: cap["probed"]}, figure="loss"))
    elif k:
        narrow = _representation(ev)
        fit = (getattr(ev, "label_fit", None) or {}).get("train_accuracy")
        poor = under or (fit is not None and fit < 0.9)
        if poor and narrow is not None and narrow < k and m.get("name") != "linear":
            width = m.get("width") if m.get("name") != "cnn1d" else m.get("channels")
            key = "model.channels" if m.get("name") == "cnn1d" else "model.width"
            fix = {key: max(64 if key == "model.width" else 32, 8 * int(width or 1))}
            out.append(Finding("MODEL_TOO_SMALL", "Too little capacity: a layer narrower than the number of classes",
                               "warning", {"narrowest_layer_features": narrow, "num_classes": k,
                                           "parameters": getattr(ev, "parameters", None)},
                               "Every prediction passes through fewer features than there are classes to tell apart, "
                               "so the model cannot fit even its training data; widen it", confidence=0.85, fix=fix,
                               figure="loss"))
    if under and k:
        reg: dict[str, Any] = {}
        fix = {}
        wd = float(o.get("weight_decay") or 0.0)
        if wd >= (0.5 if str(o.get("name", "")).lower() == "adamw" else 0.05):
            reg["weight_decay"], fix["optimizer.weight_decay"] = wd, wd / 100
        for key, lim in (("l2", 0.01), ("l1", 1e-3)):
            if float(r.get(key) or 0.0) >= lim:
                reg[key], fix[f"regularization.{key}"] = r[key], 0.0
        if float(m.get("dropout") or 0.0) >= 0.5:
            reg["dropout"], fix["model.dropout"] = m["dropout"], 0.1
        if reg:
            out.append(Finding("OVER_REGULARIZED", "Regularized too hard: the penalties hold the weights down",
                               "warning", reg, "The training loss cannot fall: reduce the constraint named in the "
                               "evidence", confidence=0.8, fix=fix, figure="loss"))
    over = found.get("OVERFITTING")
    if d is None or not k or getattr(d, "sample", False):
        return out
    per_class = d.num_train / k
    params = getattr(ev, "parameters", None)
    gap = train_val_gap(ev)
    skill = val_skill(ev)
    if per_class < t.little_data_per_class and (over is not None or _troubled(found) or (gap or 0) > 0.1
                                                or (skill is not None and skill < 0.8)):
        ev_ = {"training_examples": d.num_train, "num_classes": k, "examples_per_class": per_class,
               "parameters": params}
        if gap is not None:
            ev_["train_minus_val_accuracy"] = gap
        out.append(Finding("TOO_LITTLE_DATA", f"Too little data: {per_class:.0f} training examples per class",
                           "warning", ev_, "A training set this small cannot pin the pattern down: the model "
                           "memorizes it or stays unsure; more data is the cure — meanwhile regularize and stop "
                           "early (best.pt)", confidence=0.85, fix=overfit_fix(ev.config), figure="loss",
                           metric="final_val_loss" if over is not None else "best"))
    elif over is not None and params and d.num_train and params / d.num_train >= t.many_parameters and (
            over.severity != "info" or float(over.evidence.get("rise") or 0.0) >= t.overfit_rise_large):
        # an overfitting model with many parameters per example; with few, overfitting has other
        # causes (a rate too high makes a small model overconfident) and stays a symptom
        ev_ = {"parameters": params, "training_examples": d.num_train,
               "parameters_per_example": params / d.num_train, "val_loss_rise": over.evidence.get("rise")}
        out.append(Finding("MODEL_TOO_LARGE", "Too much capacity for the data: the model memorizes it",
                           "warning", ev_, f"{params / d.num_train:.0f} parameters per training example give the "
                           "model room to fit the training set's noise; regularize (weight decay, dropout), use a "
                           "smaller model or stop early (best.pt)", confidence=0.7,
                           fix=over.fix or overfit_fix(ev.config), figure="loss", metric="final_val_loss"))
    elif params and d.num_train and params / d.num_train >= t.many_parameters:
        memorized, rise = memorization(ev)
        if memorized and rise >= t.overfit_rise_large / 4:
            out.append(Finding("MODEL_TOO_LARGE", "More capacity than the data needs: the training set is "
                               "memorized", "info", {"parameters_per_example": params / d.num_train,
                                                     "val_loss_rise": rise},
                               f"{params / d.num_train:.0f} parameters per training example, every training row "
                               "fitted, and the validation loss has begun to rise from its best: a narrower or "
                               "more regularized model may reach a lower held-out loss", confidence=0.4,
                               figure="loss", metric="final_val_loss"))
    return out


def _lr(ev: Any, found: Mapping[str, Finding], t: Thresholds, peak: float | None) -> list[Finding]:
    """LR_TOO_HIGH / LR_TOO_LOW from the range test, units killed during training and the probe."""
    out: list[Finding] = []
    trouble = _troubled(found)
    # a run that cannot fit, or one whose held-out loss a too-large step drove up (overconfidence)
    poor = trouble or (["UNDERFITTING"] if "UNDERFITTING" in found else []) or _troubled(found, "OVERFITTING")
    sugg = getattr(ev, "lr_suggestion", None)
    if peak and sugg and poor:
        edge = 10 * sugg  # the range test's loss minimum (the suggestion is a tenth of it)
        if peak >= t.lr_above_range * edge:
            out.append(Finding("LR_TOO_HIGH", "Learning rate too high: beyond the range test's loss minimum",
                               "warning", {"lr": peak, "range_test_loss_minimum_at": edge, "signs": poor},
                               "At this rate the range test's loss was already rising; lower it",
                               confidence=0.75 if peak >= 3 * edge else 0.6, figure="loss"))
        elif peak <= edge / t.lr_below_range and trouble:  # a slow but fitting run may just need time
            out.append(Finding("LR_TOO_LOW", "Learning rate too low: far below the range test's loss minimum",
                               "warning", {"lr": peak, "range_test_loss_minimum_at": edge, "signs": trouble},
                               "The range test kept improving for orders of magnitude above this rate; raise it",
                               confidence=0.7, figure="loss"))
    dead0 = max(_layer_means(ev.init, "dead_fraction"), default=0.0)
    dead1 = max(_layer_means(ev.end, "dead_fraction"), default=0.0)
    if dead1 >= t.dead_warning and dead0 < 0.2 and float(_cfg(ev, "init").get("bias") or 0.0) >= 0:
        out.append(Finding("LR_TOO_HIGH", "Learning rate too high: the steps killed the ReLUs", "warning",
                           {"dead_fraction_at_start": dead0, "dead_fraction_at_end": dead1, "lr": peak},
                           "Units alive at the start died during training: a step large enough to push a unit's "
                           "bias and weights below every input's reach; lower the learning rate",
                           confidence=0.75, figure="activations"))
    moved = ev.weights.moved if ev.weights is not None else None
    if moved is not None and moved >= t.weights_grew and trouble:
        out.append(Finding("LR_TOO_HIGH", f"Learning rate too high: the weights grew {moved:.0f}× their initial size",
                           "warning", {"max_relative_weight_change": moved, "lr": peak, "signs": trouble},
                           "Steps this large throw the weights far from where they started without the loss "
                           "improving; lower the learning rate", confidence=0.7, figure="weights"))
    probe = (getattr(ev, "probes", None) or {}).get("lr")
    if probe and probe.get("best_factor") not in (None, 1.0):
        f = float(probe["best_factor"])
        code = "LR_TOO_HIGH" if f < 1 else "LR_TOO_LOW"
        out.append(Finding(code, f"Learning rate too {'high' if f < 1 else 'low'}: the lr probe did best at ×{f:g}",
                           "warning", {"lr_probe": probe}, "Trained from the same start for the same short budget, "
                           f"the rate ×{f:g} reached a lower loss", confidence=0.9, figure="loss"))
    return out


def cause_findings(ev: Any, found: list[Finding], t: Thresholds, *, peak_lr: float | None) -> list[Finding]:
    """Every cause with evidence of its own (see the module docstring)."""
    by = {}
    for f in found:
        if f.code not in by or f.severity != "info":
            by[f.code] = f
    return (_bad_init(ev, by, t) + _saturating(ev, by, t) + _capacity(ev, by, t) + label_findings(ev, by, t)
            + _lr(ev, by, t, peak_lr))


#: which measurement tells a cause apart, for the causes the always-on measurements cannot rule out
_TELLS = {"LR_TOO_HIGH": "lr", "LR_TOO_LOW": "lr", "MODEL_TOO_SMALL": "capacity", "MODEL_TOO_LARGE": "capacity"}
_PROBE_TEXT = {"lr": "an lr probe (the first steps again at lr ×0.1, ×1 and ×10)",
               "capacity": "a capacity probe (the first steps again with a 4× wider model)"}


def _ruled_out(code: str, ev: Any, t: Thresholds) -> bool:
    """Whether what the doctor measured already excludes `code` as a cause."""
    c = ev.config
    m, init, data = c.get("model") or {}, c.get("init") or {}, c.get("data") or {}
    d = ev.data
    probes = getattr(ev, "probes", None) or {}
    if code == "UNNORMALIZED_INPUTS":
        return bool(data.get("standardize", True)) or (d is not None and d.scale_orders < t.scale_orders
                                                        and d.max_rms < t.scale_max)
    if code == "SYMMETRIC_INIT":
        return init.get("rule") not in ("zeros", "constant")
    if code == "BAD_INIT":
        return not _init_scale(ev, t)[0] and float(init.get("bias") or 0.0) >= 0
    if code == "SATURATING_ACTIVATION":
        return (m.get("activation") or "relu") not in _SQUASHING
    if code == "FROZEN_PARAMETERS":
        return not init.get("freeze")
    if code == "SMALL_BATCH_NORM":
        return m.get("norm") != "batch"
    if code == "TOO_LITTLE_DATA":
        return d is None or not d.num_classes or getattr(d, "sample", False) \
            or d.num_train / d.num_classes >= t.little_data_per_class
    if code == "OVER_REGULARIZED":
        return True  # the config shows it, or not: _capacity names it when it does
    if code == "MODEL_TOO_SMALL":
        narrow = _representation(ev)
        cap = probes.get("capacity")
        return (cap is not None and not cap.get("helps")) or (
            narrow is not None and d is not None and bool(d.num_classes) and narrow >= 4 * d.num_classes)
    if code in ("LR_TOO_HIGH", "LR_TOO_LOW"):
        lr = probes.get("lr")
        return lr is not None and lr.get("best_factor") == 1.0
    if code == "LABEL_PROBLEMS":
        fit = getattr(ev, "label_fit", None) or {}
        sig = getattr(d, "label_signal", None) if d is not None else None
        return (sig is not None and sig >= 2 * t.label_signal_weak) and fit.get("outvoted", 0.0) < t.outvoted / 2
    return False


def probes_wanted(findings: list[Finding]) -> set[str]:
    """The probes ("lr", "capacity") that would tell apart the causes the findings left open."""
    return {_TELLS[c] for f in findings for c in f.differential if c in _TELLS}


def differential(f: Finding, ev: Any, t: Thresholds) -> None:
    """For a symptom no evidenced cause explains: the causes not ruled out, and what would tell."""
    if f.code in ROOT_CAUSES or f.severity == "info":
        return
    closure = reach()
    could = [c for c in ROOT_CAUSES if f.code in closure.get(c, set()) and not _ruled_out(c, ev, t)]
    f.differential = could
    probes = sorted({_TELLS[c] for c in could if c in _TELLS} - set(getattr(ev, "probes", None) or {}))
    if probes:
        f.tell_apart = "thalweg doctor --probe runs " + " and ".join(_PROBE_TEXT[p] for p in probes)
