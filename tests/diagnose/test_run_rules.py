"""Every run-level code fires on a constructed case (curves, data, weights, config) and stays
quiet on a healthy one; the differential puts the cause before its symptoms."""

from __future__ import annotations

import math

import pytest
import torch

from thalweg.diagnose import (
    CAUSES,
    DataStats,
    Finding,
    RunEvidence,
    apply_fix,
    choose_treatment,
    compare,
    data_statistics,
    describe_fix,
    diagnose_run,
    flatten,
    rank,
    read_curves,
    surviving,
    weight_changes,
)

LN10 = math.log(10)
SGD = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "model": {"name": "mlp", "width": 64},
       "init": {"rule": "kaiming_uniform"}, "data": {"standardize": True}, "train": {"batch_size": 64}}


def _records(train: list[float], val: list[tuple[float, float]] | None = None, acc: float | None = None,
             lr: float = 0.1, every: int = 10) -> list[dict]:
    """Train-loss records every `every` steps, validations spread evenly over them."""
    recs = [{"step": (i + 1) * every, "epoch": (i + 1) / 10, "lr": lr, "train_loss": v,
             **({"train_accuracy": acc} if acc is not None else {})} for i, v in enumerate(train)]
    if val:
        k = max(1, len(train) // len(val))
        for j, (vl, va) in enumerate(val):
            recs[min(len(recs) - 1, (j + 1) * k - 1)].update(val_loss=vl, val_accuracy=va)
    return recs


def _data(chance: float = LN10, chance_acc: float = 0.1, **kw) -> DataStats:
    base = dict(task="classification", num_train=1000, num_features=8, standardized=True, feature_rms=[1.0] * 8,
                feature_std=[1.0] * 8, constant_features=0, scale_orders=0.0, max_rms=1.0, chance_loss=chance,
                chance_accuracy=chance_acc, num_classes=10, class_counts=[100] * 10, majority_fraction=0.1)
    base.update(kw)
    return DataStats(**base)


def _codes(found: list[Finding], warnings_only: bool = True) -> list[str]:
    return [f.code for f in found if f.severity != "info" or not warnings_only]


def _run(records: list[dict], config: dict | None = None, **kw) -> list[Finding]:
    """The ranked findings, each cause followed by the symptoms listed under it."""
    return flatten(diagnose_run(RunEvidence(config=config or SGD, records=records, data=kw.pop("data", _data()), **kw)))


def _healthy_curve(n: int = 30) -> list[float]:
    return [2.3 * math.exp(-i / 4) + 0.05 for i in range(n)]


def test_a_healthy_run_says_so() -> None:
    tr = _healthy_curve()
    found = _run(_records(tr, [(0.6, 0.8), (0.3, 0.9), (0.2, 0.95), (0.19, 0.96)], acc=0.99))
    assert _codes(found) == [] and found[0].code == "HEALTHY" and found[0].severity == "info"


def test_no_learning_at_the_chance_level() -> None:
    found = _run(_records([2.303] * 20, [(2.302, 0.1), (2.303, 0.11), (2.302, 0.1)], acc=0.1))
    f = next(f for f in found if f.code == "NO_LEARNING")
    assert f.severity == "critical" and f.evidence["chance_loss"] == pytest.approx(LN10)
    assert f.evidence["skill"] < 0.01
    # a slowly learning run is not "no learning": its accuracy has left chance
    slow = _run(_records([2.3 - 0.01 * i for i in range(20)], [(2.28, 0.25), (2.25, 0.3)], acc=0.3))
    assert "NO_LEARNING" not in _codes(slow)


def test_lr_too_high_from_spikes_and_a_collapse_to_chance() -> None:
    tr = [1.9, 1.7, 40.0, 2.5, 2.4, 2.35, 2.36, 2.34, 2.35, 2.36, 2.35, 2.34]
    cfg = {**SGD, "optimizer": {"name": "sgd", "lr": 1.5, "momentum": 0.9}}
    found = _run(_records(tr, [(2.34, 0.1), (2.35, 0.1)], lr=1.5), cfg)
    top = found[0]
    assert top.code == "LR_TOO_HIGH" and top.evidence["loss_spikes"] >= 1 and top.confidence >= 0.8
    assert top.fix == {"optimizer.lr": pytest.approx(0.15)} and "[optimizer] lr = 0.15" in top.action
    # with the LR range test's suggestion (lower than the lr in use) the fix takes it
    found = _run(_records(tr, [(2.34, 0.1), (2.35, 0.1)], lr=1.5), cfg, lr_suggestion=0.2)
    assert found[0].fix == {"optimizer.lr": 0.2} and found[0].evidence["lr_finder_suggestion"] == 0.2
    # a decaying schedule: the run ended at 1/1000 of its peak; the fix scales the peak, not that
    decayed = [{**r, "lr": 1.5 * 0.001 ** (i / 11)} for i, r in enumerate(_records(tr, [(2.34, 0.1), (2.35, 0.1)]))]
    top = _run(decayed, cfg)[0]
    assert top.code == "LR_TOO_HIGH" and top.fix == {"optimizer.lr": pytest.approx(0.15)}
    assert top.evidence["peak_lr"] == 1.5 and top.evidence["lr_at_end"] == pytest.approx(0.0015)
    # minibatch noise around a low loss is no spike
    noisy = [0.02, 0.03, 0.015, 0.04, 0.02, 0.03, 0.02, 0.025]
    assert "LR_TOO_HIGH" not in _codes(_run(_records(noisy, [(0.1, 0.97)], acc=1.0)))


def test_lr_too_low_slow_steady_and_weights_that_barely_moved() -> None:
    tr = [2.30 - 0.004 * i for i in range(30)]
    g = torch.Generator().manual_seed(0)
    w0 = {"net.1.weight": torch.randn(4, 4, generator=g), "net.3.weight": torch.randn(3, 4, generator=g)}
    w1 = {k: v * 1.001 for k, v in w0.items()}
    cfg = {**SGD, "optimizer": {"name": "sgd", "lr": 5e-4, "momentum": 0.9}}
    found = _run(_records(tr, [(2.29, 0.2), (2.25, 0.3), (2.2, 0.35)], acc=0.35, lr=5e-4), cfg,
                 weights=weight_changes(w1, w0), lr_suggestion=0.2)
    f = found[0]
    assert f.code == "LR_TOO_LOW" and f.fix == {"optimizer.lr": 0.2}
    assert f.evidence["max_relative_weight_change"] == pytest.approx(1e-3, rel=1e-3)
    assert f.evidence["still_improving_at_end"] is True


def test_overfitting_warning_and_the_mild_kind() -> None:
    tr = [2.0 * math.exp(-i / 3) for i in range(30)]
    val = [(1.5, 0.4), (1.3, 0.5), (1.4, 0.5), (1.6, 0.5), (1.8, 0.5), (1.9, 0.5)]
    cfg = {**SGD, "optimizer": {"name": "adam", "lr": 1e-3}}
    f = next(f for f in _run(_records(tr, val, acc=1.0), cfg) if f.code == "OVERFITTING")
    assert f.severity == "warning" and f.metric == "final_val_loss"
    assert f.fix == {"optimizer.weight_decay": 0.01} and f.evidence["train_minus_val_accuracy"] == pytest.approx(0.5)
    # val loss up but accuracy close to train: a note, not a warning (the healthy control's case)
    mild = [(0.3, 0.95), (0.19, 0.96), (0.22, 0.97), (0.25, 0.97), (0.26, 0.97)]
    f = next(f for f in _run(_records(tr, mild, acc=1.0)) if f.code == "OVERFITTING")
    assert f.severity == "info"


def test_an_overfitting_model_is_too_large_only_with_many_parameters_per_example() -> None:
    """Validation loss 25 % above its best while training loss falls, accuracy held: with 60
    parameters per training example the doctor names the capacity (a model memorizing
    what 1000 rows cannot pin down); with 5 per example it does not — overfitting then has
    other causes, and the mild rise stays a note."""
    tr = [2.0 * math.exp(-i / 3) for i in range(30)]
    val = [(0.4, 0.9), (0.2, 0.95), (0.21, 0.95), (0.23, 0.95), (0.25, 0.95)]
    recs = _records(tr, val, acc=1.0)
    big = _run(recs, parameters=60_000)
    assert big[0].code == "MODEL_TOO_LARGE" and big[0].severity == "warning"
    assert big[0].evidence["parameters_per_example"] == pytest.approx(60.0)
    assert big[0].fix == {"optimizer.weight_decay": 0.01}  # SGD: coupled decay
    small = _run(recs, parameters=5_000)
    assert "MODEL_TOO_LARGE" not in _codes(small, warnings_only=False)
    assert next(f for f in small if f.code == "OVERFITTING").severity == "info"
    # memorized (train accuracy 1) with a rise of 8 %: below every overfitting rule, a note
    slight = _records(tr, [(0.4, 0.9), (0.2, 0.95), (0.21, 0.95), (0.215, 0.95), (0.216, 0.95)], acc=1.0)
    note = next(f for f in _run(slight, parameters=60_000) if f.code == "MODEL_TOO_LARGE")
    assert note.severity == "info" and not note.fix
    assert "MODEL_TOO_LARGE" not in _codes(_run(slight, parameters=5_000), warnings_only=False)
    unfit = _records(tr, [(0.4, 0.9), (0.2, 0.95), (0.21, 0.95), (0.215, 0.95), (0.216, 0.95)], acc=0.9)
    assert "MODEL_TOO_LARGE" not in _codes(_run(unfit, parameters=60_000), warnings_only=False)


def test_a_rate_beyond_the_range_test_that_drives_the_held_out_loss_up_is_too_high() -> None:
    """A small model (2 parameters per example) whose validation loss climbs far above its best
    at a peak rate 20× the range test's loss minimum: LR_TOO_HIGH leads, overfitting under it."""
    tr = [2.0 * math.exp(-i / 3) for i in range(30)]
    val = [(1.5, 0.5), (1.2, 0.55), (1.5, 0.55), (2.0, 0.55), (2.6, 0.55)]
    cfg = {**SGD, "optimizer": {"name": "adam", "lr": 0.2}}
    found = diagnose_run(RunEvidence(config=cfg, records=_records(tr, val, acc=1.0), data=_data(),
                                     parameters=2_000, lr_suggestion=0.001))
    assert found[0].code == "LR_TOO_HIGH" and "OVERFITTING" in [f.code for f in found[0].symptoms]
    assert "MODEL_TOO_LARGE" not in _codes(flatten(found))


def test_weak_label_signal_on_a_plateau_is_a_label_problem_with_enough_rows() -> None:
    """Nearest neighbours that share a label hardly more than chance, and a run that generalizes
    little (a fifth of the way from chance): the labels — unless there are too few rows per class
    for the neighbour signal to mean anything."""
    tr = [2.3 - 0.01 * i for i in range(30)]
    val = [(2.25, 0.17), (2.2, 0.2), (2.19, 0.2), (2.19, 0.19)]
    recs = _records(tr, val, acc=0.25)
    found = _run(recs, data=_data(label_signal=0.08))
    assert found[0].code == "LABEL_PROBLEMS"
    few = _run(recs, data=_data(label_signal=0.08, num_train=200, class_counts=[20] * 10))
    assert "LABEL_PROBLEMS" not in _codes(few, warnings_only=False)


def test_underfitting_is_a_symptom_whose_cause_leads() -> None:
    tr = [2.3 * math.exp(-i / 3) * 0.5 + 1.05 for i in range(20)]
    cfg = {**SGD, "model": {"name": "mlp", "width": 2, "depth": 1}}
    f = diagnose_run(RunEvidence(config=cfg, records=_records(tr, [(1.3, 0.45), (1.2, 0.5)], acc=0.6), data=_data()))[0]
    assert f.code == "MODEL_TOO_SMALL" and f.evidence["narrowest_layer_features"] == 2 and f.fix == {"model.width": 64}
    assert [s.code for s in f.symptoms] == ["UNDERFITTING"]  # shown under its cause, not ranked on its own
    heavy = {**SGD, "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 30.0}}
    f = _run(_records(tr, [(1.3, 0.45), (1.2, 0.5)], acc=0.6), heavy)[0]
    assert f.code == "OVER_REGULARIZED" and f.fix == {"optimizer.weight_decay": pytest.approx(0.3)}
    # no cause in sight: the symptom alone is a note, and names what it could not tell apart
    f = next(f for f in _run(_records(tr, [(1.3, 0.45), (1.2, 0.5)], acc=0.6)) if f.code == "UNDERFITTING")
    assert f.severity == "info"


def test_plateau_present_and_as_history() -> None:
    flat = [2.30] * 25
    f = next(f for f in _run(_records(flat, [(2.3, 0.1)], acc=0.1)) if f.code == "PLATEAU")
    assert f.evidence["present"] and f.severity == "warning"
    escaped = [2.30] * 15 + [2.3 * math.exp(-i / 2) + 0.05 for i in range(1, 16)]
    f = next(f for f in _run(_records(escaped, [(0.3, 0.9)], acc=0.97), ) if f.code == "PLATEAU")
    assert not f.evidence["present"] and f.severity == "info"


def test_a_saddle_is_a_plateau_with_certified_negative_curvature() -> None:
    end = {"layers": [], "activations": [],
           "curvature": {"lambda_max": 0.8, "lambda_min": -0.7, "residual_min": 1e-4, "residual_max": 1e-6,
                         "grad_norm": 0.05, "kind": "not_critical"}}
    cfg = {**SGD, "init": {"rule": "normal", "std": 1e-3}, "optimizer": {"name": "sgd", "lr": 0.01}}
    found = _run(_records([2.30] * 25, [(2.3, 0.06)], acc=0.1, lr=0.01), cfg, end=end)
    assert found[0].code == "SADDLE" and found[0].fix == {"init.rule": "kaiming_normal"}
    plateau = next(f for f in found if f.code == "PLATEAU")
    assert "SADDLE" in plateau.evidence["explained_by"]


def test_nonfinite_stopped_versus_recovered() -> None:
    recs = [*_records([2.1, 1.9], lr=50.0),
            {"event": "nonfinite", "step": 7, "what": "loss", "loss": math.inf, "lr": 50.0, "streak": 1},
            {"event": "nonfinite", "step": 8, "what": "loss", "loss": math.inf, "lr": 50.0, "streak": 2},
            {"event": "stopped", "step": 8, "reason": "..."}]
    f = _run(recs, {**SGD, "optimizer": {"name": "sgd", "lr": 50.0, "momentum": 0.9}})[0]
    assert f.code == "NONFINITE" and f.severity == "critical" and f.fix == {"optimizer.lr": 5.0}
    # the diverge-and-recover shape: blow-up, rollback to step 0 with lr x 0.001, then healthy
    rec = [{"step": 5, "epoch": 0.2, "lr": 100.0, "train_loss": 1e4},
           {"event": "nonfinite", "step": 6, "what": "loss", "loss": math.nan, "lr": 100.0, "streak": 1},
           {"event": "nonfinite", "step": 7, "what": "loss", "loss": math.nan, "lr": 100.0, "streak": 2},
           {"event": "rollback", "step": 0, "what": "loss", "lr_scale": 0.001}]
    rec += _records(_healthy_curve(), [(0.5, 0.85), (0.2, 0.95), (0.15, 0.97)], acc=0.99, lr=0.1)
    found = _run(rec, {**SGD, "optimizer": {"name": "sgd", "lr": 100.0, "momentum": 0.9}})
    assert _codes(found) == [] and found[0].code == "RECOVERED"
    assert found[0].evidence["lr_at_blowup"] == 100.0 and found[0].fix == {"optimizer.lr": 0.1}
    assert next(r["step"] for r in surviving(rec)) == 10  # the undone branch (step 5) is gone
    assert read_curves(rec).lr_now == 0.1


def test_data_findings_unnormalized_and_label_problems() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 6, generator=g) * torch.logspace(-2, 5, 6)
    y = torch.randint(0, 3, (600,), generator=g)
    d = data_statistics(x, y, x, y, task="classification", num_classes=3, standardized=False)
    assert d.scale_orders > 5 and d.chance_loss == pytest.approx(math.log(3), abs=0.02)
    f = _run(_records(_healthy_curve()), data=d)[0]
    assert f.code == "UNNORMALIZED_INPUTS" and f.fix == {"data.standardize": True}
    # the same inputs standardized are fine
    d_ok = data_statistics(x, y, x, y, task="classification", num_classes=3, standardized=True)
    assert "UNNORMALIZED_INPUTS" not in _codes(_run(_records(_healthy_curve()), data=d_ok))
    yi = torch.cat([torch.zeros(960), torch.ones(30), torch.full((10,), 2)]).long()
    xi = torch.randn(1000, 4, generator=g)
    d = data_statistics(xi, yi, xi, yi, task="classification", num_classes=3, standardized=True)
    f = _run(_records([0.3, 0.2, 0.18, 0.17] * 3, [(0.17, 0.96)], acc=0.96), data=d)[0]
    assert f.code == "LABEL_PROBLEMS" and f.confidence >= 0.9 and not f.fix
    assert choose_treatment([f]) is None  # no config treats labels
    one = data_statistics(xi, torch.zeros(1000).long(), xi, yi, task="classification", num_classes=3,
                          standardized=True)
    assert next(f for f in _run([], data=one) if f.code == "LABEL_PROBLEMS").severity == "critical"
    flat = data_statistics(xi, torch.ones(1000, 1), xi, torch.ones(1000, 1), task="regression",
                           num_classes=None, standardized=True)
    assert "LABEL_PROBLEMS" in _codes(_run([], data=flat))


def test_symmetric_init_and_frozen_parameters_from_the_weights() -> None:
    w_start = {"net.1.weight": torch.full((8, 4), 0.05), "net.1.bias": torch.zeros(8),
               "net.3.weight": torch.full((3, 8), 0.05)}
    w_end = {"net.1.weight": torch.full((8, 4), 0.07), "net.1.bias": torch.full((8,), 0.01),
             "net.3.weight": torch.randn(3, 8)}
    cfg = {**SGD, "init": {"rule": "constant", "value": 0.05}}
    f = _run(_records(_healthy_curve()), cfg, weights=weight_changes(w_end, w_start), output_layer="net.3")[0]
    assert f.code == "SYMMETRIC_INIT" and f.evidence["layers_with_identical_units"] == ["net.1"]
    assert f.fix == {"init.rule": "kaiming_normal"} and f.severity == "critical"
    g = torch.Generator().manual_seed(1)
    w0 = {"net.1.weight": torch.randn(8, 4, generator=g), "net.3.weight": torch.randn(3, 8, generator=g)}
    w1 = {"net.1.weight": w0["net.1.weight"].clone(), "net.3.weight": w0["net.3.weight"] + 0.5}
    frozen = {**SGD, "init": {"rule": "kaiming_uniform", "freeze": ["net.1"]}}
    f = _run(_records(_healthy_curve()), frozen, weights=weight_changes(w1, w0), output_layer="net.3")[0]
    assert f.code == "FROZEN_PARAMETERS" and f.evidence["unchanged"] == ["net.1.weight"]
    assert f.fix == {"init.freeze": []}


def test_small_batch_norm_from_the_config() -> None:
    cfg = {**SGD, "model": {"name": "mlp", "norm": "batch"}, "train": {"batch_size": 3}}
    f = _run(_records(_healthy_curve()), cfg)[0]
    assert f.code == "SMALL_BATCH_NORM" and f.fix == {"model.norm": "layer"}
    assert "SMALL_BATCH_NORM" not in _codes(_run(_records(_healthy_curve()),
                                                 {**cfg, "train": {"batch_size": 128}}))


def test_measurements_get_config_fixes_and_init_time_evidence() -> None:
    # the tanh/normal case: the signal shrinks through depth at init and at the end
    acts = [{"name": "net.2", "type": "tanh", "rms": 0.06, "saturation": 0.0, "dead_fraction": None},
            {"name": "net.4", "type": "tanh", "rms": 0.01, "saturation": 0.0, "dead_fraction": None}]
    m = {"layers": [], "activations": acts, "input_rms": 1.0}
    cfg = {**SGD, "init": {"rule": "normal", "std": 0.01}, "model": {"name": "mlp", "activation": "tanh"}}
    found = _run(_records([2.303] * 20, [(2.302, 0.1)], acc=0.1), cfg, end=m, init=m)
    assert found[0].code == "VANISHING_GRADIENTS" and found[0].fix == {"init.rule": "kaiming_normal"}
    assert found[0].evidence["init_std"] == 0.01 and found[0].evidence["also_seen"] == ["initialization"]
    nl = next(f for f in found if f.code == "NO_LEARNING")
    assert "VANISHING_GRADIENTS" in nl.evidence["explained_by"]
    grow = [{**a, "rms": r} for a, r in zip(acts, (3.0, 60.0), strict=True)]
    f = _run(_records([2.3] * 12), {**SGD, "init": {"rule": "normal", "std": 0.4}},
             init={"layers": [], "activations": grow, "input_rms": 1.0})[0]
    assert f.code == "EXPLODING_GRADIENTS" and f.evidence["at"] == "initialization" and f.severity == "warning"
    # a run that trained past its start: the same start is a note
    f = next(f for f in _run(_records(_healthy_curve()), {**SGD, "init": {"rule": "normal", "std": 0.4}},
                             init={"layers": [], "activations": grow, "input_rms": 1.0})
             if f.code == "EXPLODING_GRADIENTS")
    assert f.severity == "info" and "trained past it" in f.evidence["note"]
    dead = {"layers": [], "activations": [{"name": "net.2", "type": "relu", "dead_fraction": 1.0, "units": 64}]}
    f = _run(_records([2.3] * 10), {**SGD, "init": {"rule": "kaiming_uniform", "bias": -10.0}}, end=dead)[0]
    assert f.code == "DEAD_UNITS" and f.fix == {"init.bias": 0.0}


def test_causes_form_an_acyclic_graph_and_rank_puts_causes_first() -> None:
    seen: dict[str, int] = {}

    def visit(c: str) -> None:
        assert seen.get(c) != 1, f"cycle through {c}"
        if seen.get(c) == 2:
            return
        seen[c] = 1
        for s in CAUSES.get(c, ()):
            visit(s)
        seen[c] = 2

    for c in CAUSES:
        visit(c)
    symptom = Finding("NO_LEARNING", "t", "critical", {}, "a", confidence=0.95)
    cause = Finding("SYMMETRIC_INIT", "t", "warning", {}, "a", confidence=0.6)
    note = Finding("AT_MINIMUM", "t", "info", {}, "a", confidence=1.0)
    ranked = rank([note, symptom, cause])
    assert [f.code for f in ranked] == ["SYMMETRIC_INIT", "AT_MINIMUM"]  # the symptom is under its cause
    assert [s.code for s in ranked[0].symptoms] == ["NO_LEARNING"]
    assert symptom.evidence["explained_by"] == ["SYMMETRIC_INIT"] and "↳ symptom NO_LEARNING" in str(ranked[0])
    unsure = Finding("SYMMETRIC_INIT", "t", "warning", {}, "a", confidence=0.3)
    symptom = Finding("NO_LEARNING", "t", "critical", {}, "a", confidence=0.95)
    assert [f.code for f in rank([unsure, symptom])] == ["NO_LEARNING", "SYMMETRIC_INIT"]  # a hunch explains nothing
    assert rank([unsure, symptom])[0].symptoms == []


def test_fixes_apply_to_a_config_and_treatments_compare() -> None:
    cfg = {"optimizer": {"name": "sgd", "lr": 0.1}, "init": {"rule": "normal"}}
    out = apply_fix(cfg, {"optimizer.lr": 0.01, "init.rule": "kaiming_normal", "data.standardize": True})
    assert out["optimizer"] == {"name": "sgd", "lr": 0.01} and out["data"] == {"standardize": True}
    assert cfg["optimizer"]["lr"] == 0.1  # the original is untouched
    with pytest.raises(ValueError, match="optimizer"):
        apply_fix({"optimizer": "sgd"}, {"optimizer.lr": 1.0})
    assert describe_fix({"init.freeze": [], "model.norm": "layer"}) == '[init] freeze = []; [model] norm = "layer"'
    assert compare(0.5, 0.9, higher_is_better=True) and not compare(0.9, 0.5, higher_is_better=True)
    assert compare(None, 0.3, higher_is_better=True) and not compare(0.3, None, higher_is_better=True)
    assert compare(2.0, 1.5, higher_is_better=False) and not compare(1.5, math.nan, higher_is_better=False)


def test_an_unexplained_symptom_names_the_causes_left_open_and_the_probe_decides() -> None:
    flat = _records([2.30] * 25, [(2.3, 0.1)], acc=0.1)
    cfg = {**SGD, "model": {"name": "mlp", "width": 16, "depth": 2, "activation": "relu"}}  # narrow, not < classes
    top = diagnose_run(RunEvidence(config=cfg, records=flat, data=_data()))[0]
    assert top.code == "PLATEAU" and [s.code for s in top.symptoms] == ["NO_LEARNING"]  # no cause in sight
    assert {"LR_TOO_HIGH", "LR_TOO_LOW", "MODEL_TOO_SMALL", "LABEL_PROBLEMS"} <= set(top.differential)
    assert "SATURATING_ACTIVATION" not in top.differential and "SMALL_BATCH_NORM" not in top.differential
    assert "--probe" in top.tell_apart and "lr probe" in top.tell_apart and "capacity probe" in top.tell_apart
    assert "could be: " in str(top)
    # the lr probe says ×10 learns: the rate was the cause, and the fix is the peak × 10
    probed = diagnose_run(RunEvidence(config=cfg, records=flat, data=_data(),
                                      probes={"lr": {"best_factor": 10.0, "factors": [0.1, 1.0, 10.0]}}))[0]
    assert probed.code == "LR_TOO_LOW" and probed.fix == {"optimizer.lr": pytest.approx(1.0)}
    assert {"NO_LEARNING", "PLATEAU"} <= {s.code for s in probed.symptoms}
    # the probes rule the rate and the capacity out: they leave the differential
    ruled = diagnose_run(RunEvidence(config=cfg, records=flat, data=_data(),
                                     probes={"lr": {"best_factor": 1.0}, "capacity": {"helps": False}}))[0]
    assert ruled.code == "PLATEAU" and not {"LR_TOO_HIGH", "LR_TOO_LOW", "MODEL_TOO_SMALL"} & set(ruled.differential)
