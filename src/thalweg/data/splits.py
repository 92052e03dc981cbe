"""The train/validation/test container every dataset returns, and input standardization."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Splits", "random_split_indices", "standardize"]

Task = Literal["classification", "regression"]
_PARTS = ("train", "val", "test")


@dataclass
class Splits:
    """A dataset split three ways: float32 inputs, int64 labels (classification) or float32
    targets of shape (N, k) (regression), plus what the trainer needs to build a model."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    num_classes: int | None
    name: str
    feature_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.task == "classification" and (self.num_classes is None or self.num_classes < 1):
            raise ValueError(
                f"num_classes must be a positive int for classification, got {self.num_classes!r}"
            )
        for part in _PARTS:
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError(f"x_{part} and y_{part} must be torch tensors")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{part} has {x.shape[0]} rows but y_{part} has {y.shape[0]}")
            if x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(
                    f"x_{part} has shape {tuple(x.shape)}, x_train {tuple(self.x_train.shape)}"
                )

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch dimension)."""
        return tuple(self.x_train.shape[1:])

    @property
    def out_features(self) -> int:
        """Number of model outputs: classes for classification, target columns for regression."""
        if self.task == "classification":
            assert self.num_classes is not None
            return self.num_classes
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {p: int(getattr(self, f"x_{p}").shape[0]) for p in _PARTS}

    def to(self, device: torch.device | str) -> Splits:
        """A copy with every tensor on ``device``."""
        moved = {
            f"{k}_{p}": getattr(self, f"{k}_{p}").to(device) for p in _PARTS for k in ("x", "y")
        }
        return dataclasses.replace(self, **moved)


def random_split_indices(
    n: int, fractions: tuple[float, float], seed: int, what: str = "dataset"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded permutation of ``range(n)`` cut into train / val / test with the given
    (val, test) fractions; raises ValueError if any split would be empty."""
    val_f, test_f = fractions
    for arg, f in (("val_fraction", val_f), ("test_fraction", test_f)):
        if not 0.0 < f < 1.0:
            raise ValueError(f"{arg} must be in (0, 1), got {f}")
    if val_f + test_f >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_f} + {test_f}")
    n_val, n_test = round(n * val_f), round(n * test_f)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(
            f"{what}: {n} rows give an empty split (train={n_train}, val={n_val}, "
            f"test={n_test}); supply more rows or change val_fraction/test_fraction"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def standardize(
    splits: Splits, eps: float = 1e-8
) -> tuple[Splits, tuple[torch.Tensor, torch.Tensor]]:
    """Input normalization: subtract the training split's per-feature mean and divide by its
    standard deviation (constant features are left unscaled); returns (new splits, (mean, std))."""
    x = splits.x_train
    if x.shape[0] < 2:
        raise ValueError(f"standardize needs at least 2 training rows, {splits.name!r} has {x.shape[0]}")
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > eps, std, torch.ones_like(std))
    new = dataclasses.replace(
        splits,
        x_train=(splits.x_train - mean) / std,
        x_val=(splits.x_val - mean) / std,
        x_test=(splits.x_test - mean) / std,
    )
    return new, (mean, std)
