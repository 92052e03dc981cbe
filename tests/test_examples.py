"""The seeds' worked examples give the numbers the seeds describe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def seeds():
    spec = importlib.util.spec_from_file_location("seeds_example", EXAMPLES / "seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_linear_regression_hand_written_equals_thalweg_sgd(seeds):
    hand = seeds.linear_regression_by_hand()
    ours = seeds.linear_regression_with("sgd", lr=0.01)
    assert np.allclose(hand, ours, rtol=0, atol=1e-12)
    # 1000 steps of α = 0.01 approach, but have not reached, the least-squares line y = 2.2x − 1
    assert abs(ours[1] - 2.2) < 0.05 and abs(ours[0] + 1.0) < 0.1
    assert abs(ours[0] + 1.0) > 1e-3


def test_minibatch_sgd_recovers_the_true_weights(seeds):
    w, b, loss = seeds.minibatch_sgd()
    assert np.allclose(w, [2.0, -3.4], atol=5e-3) and abs(b - 4.2) < 5e-3
    assert loss < 1e-3


def test_rosenbrock_table_has_every_point_optimizer(seeds):
    from thalweg.optim import registry

    run_names = {name for _, name, _, _ in seeds.ROSENBROCK_RUNS}
    point_optimizers = {i.name for i in registry.infos() if not i.needs_model}
    assert point_optimizers <= run_names
