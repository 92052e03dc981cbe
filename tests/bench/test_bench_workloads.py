"""The workload registry, the built-in problems, and submissions over registry spaces."""

from __future__ import annotations

import pytest
import torch

from thalweg.bench.submissions import Submission, SubmissionError
from thalweg.bench.suites import BenchConfig, BenchConfigError, load_bench
from thalweg.bench.tasks import workloads


def test_registry_has_the_issue_workloads_and_keys_drop_defaults():
    for name in ("rosenbrock", "quadratic", "linreg", "deep_linear", "digits_logreg",
                 "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru", "digits_cnn", "char_lm"):
        assert name in workloads.names()
    groups = {n: workloads.get(n).group for n in workloads.names()}
    assert {n for n, g in groups.items() if g == "toy"} == {"rosenbrock", "quadratic", "linreg", "deep_linear"}
    assert workloads.get("quadratic").key == "quadratic"
    assert workloads.get("quadratic(condition_number=100.0)").key == "quadratic"
    w = workloads.get("quadratic", condition_number=1000.0)
    assert w.key == "quadratic(condition_number=1000.0)" and w.params == {"condition_number": 1000.0}
    assert workloads.parse_key(w.key) == ("quadratic", {"condition_number": 1000.0})


def test_bad_workloads_name_the_problem():
    with pytest.raises(workloads.WorkloadError, match="unknown workload 'nope'"):
        workloads.get("nope")
    with pytest.raises(workloads.WorkloadError, match="no parameter 'kappa'"):
        workloads.get("quadratic(kappa=3)")
    with pytest.raises(workloads.WorkloadError, match="width must be >= dim"):
        workloads.get("deep_linear", width=4)


def _excess_at(w, point):
    p = w.build(0)
    with torch.no_grad():
        for param, value in zip(p.model.parameters(), point, strict=True):
            param.copy_(value)
    return p.evaluate()


def test_seed_problems_measure_the_excess_over_the_closed_form_optimum():
    rb = _excess_at(workloads.get("rosenbrock"), [torch.tensor([1.0, 1.0])])
    assert rb["excess_loss"] == 0.0
    start = workloads.get("rosenbrock").build(0).model.x.tolist()
    assert start == [-1.5, 2.0]
    # seed 004: the least-squares line y = 2.2x − 1 has mean squared error 2.8 / 5 = 0.56
    lin = _excess_at(workloads.get("linreg"), [torch.tensor([[2.2]]), torch.tensor([-1.0])])
    assert lin["loss"] == pytest.approx(0.56, abs=1e-5) and abs(lin["excess_loss"]) < 1e-5
    # the deep linear net's hidden layers are at least as wide as its input and output
    net = workloads.get("deep_linear").build(0).model
    widths = [m.out_features for m in net][:-1]
    assert min(widths) >= net[0].in_features and len(widths) >= 2


def test_real_workloads_validate_on_at_least_1000_examples():
    """MNIST-1D: the paper's 4000 train / 1000 test and 2000 extra validation samples; digits:
    1000 of the 1797 images validate."""
    from thalweg.train.components import prepare_data

    w = workloads.get("mnist1d_cnn")
    assert w.config.data.options == {"num_samples": 5000, "val_samples": 2000} and w.config.data.seed == 42
    assert w.metric == "val_accuracy" and w.mode == "max"
    assert prepare_data(w.config)[0].sizes() == {"train": 4000, "val": 2000, "test": 1000}
    assert workloads.get("mnist1d_gru").config.data == w.config.data
    d = workloads.get("digits_cnn")
    assert prepare_data(d.config)[0].sizes() == {"train": 617, "val": 1000, "test": 180}
    assert d.metric == "val_loss" and d.config.model.name == "cnn2d"
    lm = workloads.get("char_lm")  # 128 fixed windows of 64 characters: 8192 predictions
    assert lm.metric == "val_loss" and lm.params == {}


def test_default_space_is_the_registry_space_plus_the_bench_dims():
    from thalweg.optim import registry

    sub = Submission("adam", "adam")
    params = [d.param for d in sub.dims()]
    assert params[:3] == ["lr", "1-betas[0]", "weight_decay"]
    assert sub.dims()[0].dim.high == 1.0 > registry.get("adam").search_space[0].high  # reviewed: wider
    assert "schedule.warmup_fraction" in params
    cfg = sub.configure({"lr": 0.01, "1-betas[0]": 0.1, "schedule.warmup_fraction": 0.0})
    assert cfg["optimizer"] == {"name": "adam", "lr": 0.01, "betas": pytest.approx((0.9, 0.999))}
    assert cfg["schedule"]["warmup_fraction"] == 0.0
    assert Submission("newton", "newton").schedule_section() == {"name": "constant"}
    # weight decay is not searched where it would change the objective (seeds' problems)
    bench = BenchConfig(workloads=["rosenbrock", "digits_logreg"], targets={"rosenbrock": 1, "digits_logreg": 1})
    rb, dg = bench.resolve_workloads()
    assert "weight_decay" not in [d.param for d in bench.for_workload(sub, rb).dims()]
    assert "weight_decay" in [d.param for d in bench.for_workload(sub, dg).dims()]
    with pytest.raises(SubmissionError, match="no hyperparameter 'nope'"):
        Submission("x", "adam", {"nope": 1})


def test_bench_config_errors_name_the_field(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text('workloads = ["linreg"]\ntrials = 0\n')
    with pytest.raises(BenchConfigError, match=r"b.toml: trials = 0"):
        load_bench(p)
    p.write_text('workloads = ["linreg"]\ntypo = 1\n')
    with pytest.raises(BenchConfigError, match=r"typo.*unknown key"):
        load_bench(p)
    with pytest.raises(BenchConfigError, match=r"has no target; compute it with `thalweg bench calibrate "
                                                r"'quadratic\(condition_number=7.0\)'`"):
        BenchConfig(workloads=["quadratic(condition_number=7.0)"]).resolve_workloads()
    with pytest.raises(BenchConfigError, match="neither a suite"):
        load_bench("no-such-suite")


def test_suites_keep_algoperfs_trials_and_the_standard_has_the_lm():
    """AlgoPerf's 5 trials per study everywhere; its 3 studies everywhere but in quick, which
    has fewer optimizers and workloads, not fewer trials, and 8 studies (its verdict holds more
    often: docs/bench.md); the standard suite runs every real workload, the character LM too."""
    from thalweg.bench.suites import BASELINES, REAL

    quick, standard = load_bench("quick"), load_bench("standard")
    assert (standard.trials, standard.studies, standard.confirm_seeds) == (5, 3, 2)
    assert (quick.trials, quick.studies, quick.confirm_seeds) == (5, 8, 2)
    assert load_bench("quick", studies=3).studies == 3  # AlgoPerf's own: --set studies=3
    for cfg in (quick, standard):
        assert set(BASELINES) <= set(cfg.optimizers)
    assert set(REAL) <= set(standard.workloads) and "char_lm" in REAL
    assert set(quick.optimizers) < set(standard.optimizers)
    assert set(quick.workloads) < set(standard.workloads) == set(REAL)
    assert all(workloads.get(w).group == "real" for w in quick.workloads)  # quick: real workloads only
    assert load_bench("quick", seed=3).seed == 3
