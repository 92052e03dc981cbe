"""Datasets, standardization, resumable loaders and the gradient noise scale, checked against
closed forms and exact references."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import thalweg.data.datasets as datasets_mod
from thalweg.data import (
    Loader,
    Splits,
    gradient_noise_scale,
    load_dataset,
    standardize,
)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THALWEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets_mod, "_MNIST1D_MEMO", {})
    return tmp_path / "cache"


def test_mnist1d_offline_seeded_and_cached(fresh_cache, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    np.random.seed(123)
    random.seed(123)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    a = load_dataset("mnist1d", seed=3, num_samples=200)
    assert np.array_equal(np.random.get_state()[1], before_np), "global numpy RNG was changed"
    assert random.getstate() == before_py, "global python RNG was changed"
    assert a.sizes() == {"train": 144, "val": 16, "test": 40}
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.in_shape == (40,) and a.out_features == 10 and a.task == "classification"
    assert set(a.y_train.tolist()) <= set(range(10))
    assert list(fresh_cache.glob("mnist1d-*.npz")), "no cache file written"
    datasets_mod._MNIST1D_MEMO.clear()
    b = load_dataset("mnist1d", seed=3, num_samples=200)  # from the disk cache
    torch.testing.assert_close(a.x_train, b.x_train, rtol=0, atol=0)
    c = load_dataset("mnist1d", seed=4, num_samples=200)
    assert not torch.equal(a.x_test, c.x_test)


def test_mnist1d_fast_resampling_matches_the_package() -> None:
    import sys

    fast = datasets_mod._generate_mnist1d(1, 100, fast=True)
    module = sys.modules["mnist1d.transform"]
    original = module.interpolate
    slow = datasets_mod._generate_mnist1d(1, 100, fast=False)
    assert module.interpolate is original  # the speed-up is undone afterwards
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_mnist1d_default_size(fresh_cache) -> None:
    s = load_dataset("mnist1d")
    assert s.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert torch.bincount(s.y_train, minlength=10).min() > 300  # every digit present


@pytest.mark.slow
def test_mnist1d_extra_validation_samples(fresh_cache) -> None:
    """val_samples: the paper's 4000 train / 1000 test, and that many fresh samples from the
    generator (another seed) validate — none of them a training sample."""
    paper = load_dataset("mnist1d", seed=42)
    s = load_dataset("mnist1d", seed=42, val_samples=1000)
    assert s.sizes() == {"train": 4000, "val": 1000, "test": 1000}
    torch.testing.assert_close(s.x_test, paper.x_test)
    assert torch.bincount(s.y_val, minlength=10).tolist() == [100] * 10
    train = {tuple(r) for r in s.x_train.round(decimals=4).tolist()}
    assert not any(tuple(r) in train for r in s.x_val.round(decimals=4).tolist())
    with pytest.raises(ValueError, match="val_samples"):
        load_dataset("mnist1d", seed=42, val_samples=-1)


def test_digits_split() -> None:
    s = load_dataset("digits", seed=1)
    assert sum(s.sizes().values()) == 1797
    assert s.in_shape == (64,) and s.num_classes == 10
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) <= 1.0
    s2 = load_dataset("digits", seed=1)
    assert torch.equal(s.y_val, s2.y_val)


def test_linreg_toy_is_the_seeds_example() -> None:
    s = load_dataset("linreg_toy")
    assert s.x_train.flatten().tolist() == [1, 2, 3, 4, 5]
    assert s.y_train.flatten().tolist() == [2, 3, 5, 7, 11]
    assert s.task == "regression" and s.out_features == 1
    design = torch.cat([s.x_train, torch.ones(5, 1)], 1).double()
    coef = torch.linalg.lstsq(design, s.y_train.double()).solution.flatten()
    torch.testing.assert_close(coef, torch.tensor([2.2, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("kappa", [1.0, 10.0, 1e4])
def test_ill_conditioned_hessian_condition_number(kappa: float) -> None:
    s = load_dataset("ill_conditioned", condition_number=kappa, dim=8, n_train=200)
    x = s.x_train.double()
    xs = standardize(s)[0].x_train.double()  # equal feature variances: standardizing keeps κ
    ones = torch.ones(len(x), 1, dtype=x.dtype)
    for design in (x, torch.cat([x, ones], 1), xs, torch.cat([xs, ones], 1)):  # ± bias
        hessian = 2.0 * design.T @ design / len(x)  # of mean squared error
        ev = torch.linalg.eigvalsh(hessian)
        assert float(ev[-1] / ev[0]) == pytest.approx(kappa, rel=1e-4)
    assert s.x_val.shape == (128, 8) and s.y_test.shape == (128, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"condition_number": 0.5}, "condition_number.*0.5"), ({"dim": 1}, "dim"),
     ({"n_train": 5}, "n_train")],
)  # fmt: skip
def test_ill_conditioned_bad_args(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("ill_conditioned", **kwargs)


def test_load_dataset_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'cifar'"):
        load_dataset("cifar")
    with pytest.raises(TypeError, match=r"digits.*colour"):
        load_dataset("digits", colour=True)


def _write(path, text: str):
    path.write_text(text)
    return path


def test_csv_columns_by_name_and_text_labels(tmp_path) -> None:
    rows = "\n".join(f"{i},{i * 2},{i % 3},{['cat', 'dog'][i % 2]}" for i in range(40))
    p = _write(tmp_path / "pets.csv", "a,b,c,kind\n" + rows + "\n")
    s = load_dataset("csv", path=p, target="kind", features=["b", "a"], seed=0)
    assert s.task == "classification" and s.num_classes == 2 and s.class_names == ("cat", "dog")
    assert s.feature_names == ("b", "a") and s.in_shape == (2,)
    x = torch.cat([s.x_train, s.x_val, s.x_test])
    y = torch.cat([s.y_train, s.y_val, s.y_test])
    assert sorted(x[:, 1].tolist()) == list(range(40))
    torch.testing.assert_close(x[:, 0], 2 * x[:, 1])
    assert torch.equal(y, x[:, 1].long() % 2)  # cat=0 for even rows
    reg = load_dataset("csv", path=p, target="b", features=["a"])  # 40 distinct → regression
    assert reg.task == "regression" and reg.y_train.shape[1] == 1


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a,b\n1,2\n", {"target": "z"}, r"\['z'\] not found.*\['a', 'b'\]"),
        ("a,b\n1,2\nx,3\n", {"target": "b"}, "line 3, column 'a': non-numeric value 'x'"),
        ("a,b\n1,2\ninf,3\n", {"target": "b"}, "line 3, column 'a': non-finite"),
        ("a,b\n1,2\n,3\n", {"target": "b"}, "line 3, column 'a': missing value"),
        ("a,b\n1,2\n1,2,3\n", {"target": "b"}, "line 3: expected 2 fields, got 3"),
        ("a,b\n1,2\n1,nan\n", {"target": "b"}, "column 'b': non-finite"),
        ("a,b\n1,x\n1,y\n", {"target": "b", "task": "regression"}, "non-numeric target 'x'"),
        ("", {}, "empty file"),
        ("a,b\n", {}, "no data rows"),
        ("a,b\n1,2\n2,3\n", {}, "empty split"),
        ("a,a\n1,2\n", {}, "duplicate column"),
    ],
)
def test_csv_errors_name_file_and_problem(tmp_path, text, kwargs, match) -> None:
    p = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=match) as info:
        load_dataset("csv", path=p, **kwargs)
    assert "bad.csv" in str(info.value)


def test_csv_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_dataset("csv", path=tmp_path / "nope.csv")


def test_npz_roundtrip_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3, 4)), rng.normal(size=(50, 2))
    p = tmp_path / "d.npz"
    np.savez(p, inputs=x, targets=y)
    s = load_dataset("npz", path=p, features="inputs", target="targets", seed=2)
    assert s.task == "regression" and s.in_shape == (3, 4) and s.out_features == 2
    allx = torch.cat([s.x_train, s.x_val, s.x_test]).double()
    assert sorted(allx.sum((1, 2)).tolist()) == pytest.approx(sorted(x.sum((1, 2)).tolist()))
    with pytest.raises(ValueError, match=r"d.npz: array\(s\) \['y'\] not found"):
        load_dataset("npz", path=p, features="inputs")
    q = tmp_path / "rows.npz"
    np.savez(q, x=x, y=y[:40])
    with pytest.raises(ValueError, match=r"rows\.npz: 'x' has 50 rows but 'y' has 40"):
        load_dataset("npz", path=q)
    x_nan = x.copy()
    x_nan[7, 1, 2] = np.nan
    r = tmp_path / "nan.npz"
    np.savez(r, x=x_nan, y=y)
    with pytest.raises(ValueError, match=r"nan.npz: array 'x' has a non-finite value at index \(7, 1, 2\)"):
        load_dataset("npz", path=r)
    o = tmp_path / "obj.npz"
    np.savez(o, x=np.array([{"a": 1}] * 50, dtype=object), y=y)
    with pytest.raises(ValueError, match=r"obj\.npz"):
        load_dataset("npz", path=o)
    z = _write(tmp_path / "junk.npz", "not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        load_dataset("npz", path=z)


def test_standardize_uses_training_statistics_only() -> None:
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(100, 4, generator=g)
    x[:, 2] = 7.0  # constant feature
    y = torch.zeros(100, dtype=torch.long)
    s = Splits(x[:60], y[:60], x[60:80] + 100, y[60:80], x[80:], y[80:],
               task="classification", num_classes=1, name="t")  # fmt: skip
    t, (mean, std) = standardize(s)
    torch.testing.assert_close(mean, x[:60].mean(0))
    torch.testing.assert_close(t.x_train.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.x_train[:, [0, 1, 3]].std(0, unbiased=False), torch.ones(3))
    assert torch.all(t.x_train[:, 2] == 0) and std[2] == 1.0
    torch.testing.assert_close(t.x_val, (x[60:80] + 100 - mean) / std)  # val shift not leaked
    torch.testing.assert_close(t.x_test, (x[80:] - mean) / std)


def _data(n: int = 23):
    return torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n)


def test_loader_epoch_covers_each_example_once_and_reproduces() -> None:
    x, y = _data()
    loader = Loader(x, y, batch_size=5, seed=7)
    assert len(loader) == 5
    e0 = [yb.clone() for _, yb in loader]
    assert [len(b) for b in e0] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(e0).tolist()) == list(range(23))
    e1 = torch.cat([yb for _, yb in loader])  # epoch advanced by itself
    assert not torch.equal(torch.cat(e0), e1)
    again = Loader(x, y, batch_size=5, seed=7)
    assert torch.equal(torch.cat([yb for _, yb in again]), torch.cat(e0))
    again.set_epoch(1)
    assert torch.equal(torch.cat([yb for _, yb in again]), e1)
    assert not torch.equal(torch.cat([yb for _, yb in Loader(x, y, 5, seed=8)]), torch.cat(e0))
    assert torch.equal(torch.cat([yb for _, yb in Loader(x, y, 5, shuffle=False)]), y)
    dl = Loader(x, y, batch_size=5, drop_last=True)
    assert len(dl) == 4 and [len(b) for _, b in dl] == [5, 5, 5, 5]


def test_loader_resumes_mid_epoch_identically() -> None:
    x, y = _data(40)
    ref = Loader(x, y, batch_size=4, seed=3)
    for _ in ref:  # finish epoch 0, so the resume happens in epoch 1
        pass
    ref.set_epoch(1)
    reference = [yb.clone() for _, yb in ref]
    interrupted = Loader(x, y, batch_size=4, seed=3)
    interrupted.set_epoch(1)
    seen = []
    for i, (_, yb) in enumerate(interrupted):
        seen.append(yb.clone())
        if i == 4:
            state = interrupted.state_dict()
            break
    resumed = Loader(x, y, batch_size=4, seed=0)  # seed comes from the state
    resumed.load_state_dict(state)
    seen += [yb.clone() for _, yb in resumed]
    assert len(seen) == len(reference) == 10
    for a, b in zip(seen, reference, strict=True):
        assert torch.equal(a, b)
    assert resumed.epoch == 2 and resumed.position == 0
    with pytest.raises(ValueError, match="batch_size=4 but this loader has batch_size=8"):
        Loader(x, y, batch_size=8).load_state_dict(state)


def test_loader_shards_for_data_parallel() -> None:
    x, y = _data(10)
    shards = [torch.cat([b for _, b in Loader(x, y, 2, seed=1, rank=r, world_size=3)]) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # ceil(10/3), padded by wrap-around
    assert set(torch.cat(shards).tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [({"batch_size": 0}, ValueError, "batch_size.*0"), ({"batch_size": 2, "rank": 3, "world_size": 2}, ValueError, "rank"),
     ({"batch_size": 50, "drop_last": True}, ValueError, "batch_size=50")],
)  # fmt: skip
def test_loader_bad_arguments(kwargs, exc, match) -> None:
    x, y = _data(10)
    with pytest.raises(exc, match=match):
        Loader(x, y, **kwargs)


def _noisy_linear_regression(d: int = 5, n: int = 4096, sigma: float = 0.5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = (x @ w + sigma * torch.randn(n, generator=g)).unsqueeze(1)
    delta = torch.randn(d, generator=g)
    delta /= delta.norm()
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_((w + delta).unsqueeze(0))
    return model, x, y, w + delta


def test_gradient_noise_scale_matches_closed_form() -> None:
    d, sigma = 5, 0.5
    model, x, y, w = _noisy_linear_regression(d, sigma=sigma)
    model.weight.grad = torch.full_like(model.weight, 9.0)
    # Exact per-example gradients of (xᵀw − y)² on this dataset.
    per_example = 2 * x * (x @ w - y.squeeze(1)).unsqueeze(1)
    big_g = per_example.mean(0)
    trace_ref = float(((per_example - big_g) ** 2).sum(1).mean())
    b_ref = trace_ref / float(big_g.square().sum())
    # Population closed form for x ~ N(0, I), |δ| = 1: tr Σ / |G|² = (1 + d) + d σ².
    assert b_ref == pytest.approx((1 + d) + d * sigma**2, rel=0.05)
    ns = gradient_noise_scale(model, nn.MSELoss(), (x, y), small_batch=8, big_batch=256, repeats=1000)
    assert ns.b_simple == pytest.approx(b_ref, rel=0.1)
    assert ns.trace_sigma == pytest.approx(trace_ref, rel=0.1)
    assert ns.suggested_batch_size == 8
    assert torch.all(model.weight.grad == 9.0), "existing .grad was modified"
    assert "suggested batch size 8" in ns.summary()


def test_gradient_noise_scale_bad_args() -> None:
    model, x, y, _ = _noisy_linear_regression()
    with pytest.raises(ValueError, match="big_batch"):
        gradient_noise_scale(model, nn.MSELoss(), (x, y), small_batch=64, big_batch=64)
    with pytest.raises(TypeError, match="data"):
        gradient_noise_scale(model, nn.MSELoss(), x)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40), batch=st.integers(1, 9), world=st.integers(1, 3),
    stop=st.integers(0, 12), drop_last=st.booleans(), seed=st.integers(0, 2**31),
)  # fmt: skip
def test_loader_properties(n, batch, world, stop, drop_last, seed) -> None:
    x, y = _data(n)
    n_local = -(-n // world)
    if drop_last and n_local < batch:
        return
    shards = []
    for rank in range(world):
        ref = Loader(x, y, batch, seed=seed, drop_last=drop_last, rank=rank, world_size=world)
        batches = [b.clone() for _, b in ref]
        assert len(batches) == len(ref)
        shards.append(torch.cat(batches) if batches else torch.empty(0, dtype=torch.long))
        again = Loader(x, y, batch, seed=seed, drop_last=drop_last, rank=rank, world_size=world)
        it = iter(again)
        seen = [next(it)[1].clone() for _ in range(min(stop, len(batches)))]
        resumed = Loader(x, y, batch, drop_last=drop_last, rank=rank, world_size=world)
        resumed.load_state_dict(again.state_dict())
        seen += [b.clone() for _, b in resumed]
        assert len(seen) == len(batches)
        assert all(torch.equal(a, b) for a, b in zip(seen, batches, strict=True))
    if not drop_last:  # every example is seen by some worker every epoch
        assert set(torch.cat(shards).tolist()) == set(range(n))
