"""Datasets that work offline: MNIST-1D, sklearn digits, the seeds' regression toy, a
synthetic ill-conditioned regression, and (in :mod:`.files`) the user's CSV/NPZ files."""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .splits import Splits, random_split_indices

__all__ = [
    "DATASETS",
    "digits",
    "ill_conditioned",
    "linreg_toy",
    "load_dataset",
    "mnist1d",
]

# The seeds' linear-regression example (seed 004).
LINREG_X = (1.0, 2.0, 3.0, 4.0, 5.0)
LINREG_Y = (2.0, 3.0, 5.0, 7.0, 11.0)

_MNIST1D_MEMO: dict[tuple[int, int], dict[str, np.ndarray]] = {}


def _cache_dir() -> Path:
    root = os.environ.get("THALWEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "thalweg"
    )
    return Path(root)


def _fast_interpolate(original: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """mnist1d's linear resampling via ``np.interp`` instead of building a scipy ``interp1d``
    per call (70 % of generation time); same values to rounding, no RNG involved."""

    def interpolate(x: np.ndarray, n: int) -> np.ndarray:
        if np.ndim(x) != 1:
            return original(x, n)
        return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)

    return interpolate


def _generate_mnist1d(seed: int, num_samples: int, fast: bool = True) -> dict[str, np.ndarray]:
    """Run the mnist1d generator (never its downloader), leaving global RNG states untouched."""
    from mnist1d.data import get_dataset_args, make_dataset

    tf = sys.modules["mnist1d.transform"]  # the module (the package re-exports a function by that name)

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    original = getattr(tf, "interpolate", None)
    if fast and callable(original):
        tf.interpolate = _fast_interpolate(original)
    try:
        d = make_dataset(args)
    finally:
        if fast and callable(original):
            tf.interpolate = original
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def _mnist1d_arrays(seed: int, num_samples: int) -> dict[str, np.ndarray]:
    key = (seed, num_samples)
    if key in _MNIST1D_MEMO:
        return _MNIST1D_MEMO[key]
    path = _cache_dir() / f"mnist1d-v1-seed{seed}-n{num_samples}.npz"
    arrays: dict[str, np.ndarray] | None = None
    if path.is_file():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, KeyError, ValueError):
            arrays = None
    if arrays is None:
        arrays = _generate_mnist1d(seed, num_samples)
        try:  # atomic write so concurrent processes never read half a file
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache is fine: we just regenerate next time
    _MNIST1D_MEMO[key] = arrays
    return arrays


#: the generator seed of MNIST-1D's extra validation samples is the data seed plus this
VAL_SEED_OFFSET = 1_000_003


def mnist1d(
    *, seed: int = 0, num_samples: int = 5000, val_fraction: float = 0.1, val_samples: int = 0
) -> Splits:
    """MNIST-1D (Greydanus 2020): 10-class, length-40 signals generated offline by the
    ``mnist1d`` package with ``seed``; 80 % train (of which ``val_fraction`` is held out), 20 % test.

    ``val_samples > 0``: the whole 80 % trains (the paper's train/test protocol) and the
    validation set is that many *extra* samples from the same generator with seed
    ``seed + VAL_SEED_OFFSET`` (a large validation set without shrinking the training set).
    Generated once per (seed, num_samples), then memoized and cached under ``$THALWEG_CACHE``
    (default ``~/.cache/thalweg``)."""
    if num_samples < 50:
        raise ValueError(f"num_samples must be >= 50, got {num_samples}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(val_samples, bool) or not isinstance(val_samples, int) or not 0 <= val_samples <= 10**6:
        raise ValueError(f"val_samples must be an int in [0, 1000000], got {val_samples!r}")
    a = _mnist1d_arrays(seed, num_samples)
    x = torch.as_tensor(a["x"], dtype=torch.float32)
    y = torch.as_tensor(a["y"], dtype=torch.int64)
    if val_samples:
        extra = _mnist1d_arrays(seed + VAL_SEED_OFFSET, max(50, -(-val_samples // 10) * 10))
        x_va = torch.as_tensor(np.concatenate([extra["x"], extra["x_test"]])[:val_samples], dtype=torch.float32)
        y_va = torch.as_tensor(np.concatenate([extra["y"], extra["y_test"]])[:val_samples], dtype=torch.int64)
        x_tr, y_tr = x, y
    else:
        n_val = max(1, round(len(x) * val_fraction))
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        tr, va = perm[n_val:], perm[:n_val]
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
    return Splits(
        x_tr, y_tr, x_va, y_va,
        torch.as_tensor(a["x_test"], dtype=torch.float32),
        torch.as_tensor(a["y_test"], dtype=torch.int64),
        task="classification", num_classes=10, name="mnist1d",
        class_names=tuple(str(i) for i in range(10)),
    )  # fmt: skip


def digits(*, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Splits:
    """scikit-learn's 8×8 handwritten digits (1797 images, shipped with sklearn), flattened to
    64 features scaled to [0, 1], split with a seeded permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    tr, va, te = random_split_indices(len(x), (val_fraction, test_fraction), seed, "digits")
    return Splits(
        x[tr], y[tr], x[va], y[va], x[te], y[te],
        task="classification", num_classes=10, name="digits",
        class_names=tuple(str(i) for i in range(10)),
    )  # fmt: skip


def linreg_toy(*, seed: int = 0) -> Splits:
    """The seeds' linear-regression example: X = [1, 2, 3, 4, 5], Y = [2, 3, 5, 7, 11].

    Five points cannot be split, so train, val and test are all the same five points; the
    least-squares fit is y = 2.2·x − 1.0. (``seed`` is accepted for a uniform interface.)"""
    del seed
    x = torch.tensor(LINREG_X, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(LINREG_Y, dtype=torch.float32).unsqueeze(1)
    return Splits(
        x, y, x.clone(), y.clone(), x.clone(), y.clone(),
        task="regression", num_classes=None, name="linreg_toy",
        feature_names=("x",),
    )  # fmt: skip


def ill_conditioned(
    *,
    seed: int = 0,
    condition_number: float = 100.0,
    dim: int = 20,
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 128,
    noise: float = 0.1,
) -> Splits:
    """Linear regression whose training design has a prescribed conditioning: the columns of
    ``x_train`` are centred and ``x_trainᵀ x_train / n_train`` has eigenvalues log-spaced on
    [1, condition_number], so the mean-squared-error Hessian (with or without a bias term) has
    exactly that condition number — the seeds' ravine. Every feature has the same variance, so
    :func:`standardize` keeps the condition number. Targets: y = x·w* + noise·ε.

    Validation and test inputs are drawn from the same (population) covariance."""
    if isinstance(condition_number, bool) or not isinstance(condition_number, int | float):
        raise TypeError(f"condition_number must be a number, got {condition_number!r}")
    if not (condition_number >= 1.0 and np.isfinite(condition_number)):
        raise ValueError(f"condition_number must be finite and >= 1, got {condition_number}")
    if dim < 2 and condition_number > 1.0:
        raise ValueError(f"dim must be >= 2 for condition_number > 1, got dim={dim}")
    if n_train < dim + 1:
        raise ValueError(f"n_train must exceed dim ({dim}) for a well-posed design, got {n_train}")
    if min(n_val, n_test) < 1:
        raise ValueError(f"n_val and n_test must be >= 1, got {n_val}, {n_test}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    eig = torch.logspace(0.0, float(np.log10(condition_number)), dim, dtype=f64)
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=f64))
    v = _equal_diagonal_rotation(v, eig)
    z = torch.randn(n_train, dim, generator=g, dtype=f64)
    q, _ = torch.linalg.qr(z - z.mean(dim=0))  # orthonormal, zero-mean columns
    mix = torch.diag(eig.sqrt()) @ v.T  # x = z · diag(√λ) · Vᵀ  ⇒  cov = V diag(λ) Vᵀ
    x_train = (n_train**0.5) * q @ mix
    x_val = torch.randn(n_val, dim, generator=g, dtype=f64) @ mix
    x_test = torch.randn(n_test, dim, generator=g, dtype=f64) @ mix
    w_star = torch.randn(dim, 1, generator=g, dtype=f64) / dim**0.5

    def target(x: torch.Tensor) -> torch.Tensor:
        return x @ w_star + noise * torch.randn(x.shape[0], 1, generator=g, dtype=f64)

    f32 = torch.float32
    return Splits(
        x_train.to(f32), target(x_train).to(f32),
        x_val.to(f32), target(x_val).to(f32),
        x_test.to(f32), target(x_test).to(f32),
        task="regression", num_classes=None, name=f"ill_conditioned(k={condition_number:g})",
    )  # fmt: skip


def _equal_diagonal_rotation(v: torch.Tensor, eig: torch.Tensor) -> torch.Tensor:
    """Rotate ``v`` with Givens rotations until V·diag(eig)·Vᵀ has a constant diagonal
    (Davies & Higham 2000): every feature then has the same variance, so standardizing scales
    the design uniformly and keeps its condition number."""
    tau = float(eig.mean())
    w = v.clone()
    for _ in range(len(eig)):
        a = w @ torch.diag(eig) @ w.T
        d = a.diagonal()
        i, j = int(d.argmin()), int(d.argmax())
        if float(d[j] - d[i]) <= 1e-12 * tau:
            break
        aij = float(a[i, j])
        root = math.sqrt(max(aij**2 - float(d[j] - tau) * float(d[i] - tau), 0.0))
        t = (aij + root) / float(d[j] - tau)
        c = 1.0 / math.sqrt(1.0 + t * t)
        rot = torch.eye(len(eig), dtype=w.dtype)
        rot[i, i] = rot[j, j] = c
        rot[i, j], rot[j, i] = c * t, -c * t
        w = rot.T @ w
    return w


def _files(kind: str) -> Callable[..., Splits]:
    def load(**kwargs: object) -> Splits:
        from . import files

        return getattr(files, f"load_{kind}")(**kwargs)

    return load


DATASETS: dict[str, Callable[..., Splits]] = {
    "mnist1d": mnist1d,
    "digits": digits,
    "linreg_toy": linreg_toy,
    "ill_conditioned": ill_conditioned,
    "csv": _files("csv"),
    "npz": _files("npz"),
}


def load_dataset(name: str, *, seed: int = 0, **kwargs: object) -> Splits:
    """Load a dataset by name (see ``DATASETS``) as train/val/test :class:`Splits`;
    ``kwargs`` are the loader's own options (e.g. ``condition_number``, ``path``)."""
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {sorted(DATASETS)}, got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    try:
        return DATASETS[name](seed=seed, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise TypeError(f"dataset {name!r}: {e}") from None
        raise
