"""Task distributions for meta-learning, offline and reproducible from a seed.

An :class:`Episode` is a meta-batch of tasks with equal shapes (so the inner loop can be
vectorized over tasks): a support set to adapt on and a query set to score the adapted model.
:class:`Sinusoid` is the MAML paper's regression benchmark; :class:`FewShot` draws N-way
K-shot classification tasks from a labelled dataset (MNIST-1D, digits, …) restricted to a set
of classes, so meta-training and meta-testing can use disjoint classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Episode",
    "FewShot",
    "MetaError",
    "Sinusoid",
    "TaskDistribution",
    "augment_classes",
    "episode_seed",
    "fewshot_distributions",
]


class MetaError(ValueError):
    """A bad meta-learning setting; `field` and `value` name what is wrong."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem
        super().__init__(f"{field} = {value!r}: {problem}")


def episode_seed(seed: int, stream: int, index: int) -> int:
    """An independent 63-bit seed for episode `index` of `stream` (train, val, test …):
    every episode is a pure function of (seed, stream, index), so runs resume exactly."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0]) >> 1


@dataclass(frozen=True)
class Episode:
    """T tasks: support (T, S, …) and query (T, Q, …) inputs and targets, plus per-task
    descriptors in `info` (sinusoid amplitude/phase, few-shot class ids)."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def select(self, index: slice | Sequence[int] | Tensor) -> Episode:
        """The sub-episode of some tasks."""
        return Episode(self.support_x[index], self.support_y[index], self.query_x[index],
                       self.query_y[index], {k: v[index] for k, v in self.info.items()})

    def to(self, device: torch.device | str) -> Episode:
        """A copy on `device`."""
        return Episode(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x,
                                                self.query_y)),
                       {k: v.to(device) for k, v in self.info.items()})


class TaskDistribution(Protocol):
    """What the learners and the run need from a task distribution."""

    task: Literal["regression", "classification"]
    in_shape: tuple[int, ...]
    out_features: int

    def sample(self, num_tasks: int, seed: int, *, shuffle_labels: bool = True) -> Episode:
        """`num_tasks` tasks, a pure function of `seed`."""
        ...


def _check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise MetaError(name, value, f"must be an integer >= {low}")
    return value


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise MetaError(name, tuple(value), "must be two finite numbers (low, high) with low <= high")
    return lo, hi


@dataclass(frozen=True)
class Sinusoid:
    """y = A·sin(x − φ) with A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5] (Finn et al. 2017, §5.1)."""

    k_shot: int = 10
    k_query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    task: Literal["regression"] = "regression"
    in_shape: tuple[int, ...] = (1,)
    out_features: int = 1

    def __post_init__(self) -> None:
        _check_int("k_shot", self.k_shot, 1)
        _check_int("k_query", self.k_query, 1)
        for name in ("amplitude", "phase", "x_range"):
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))

    @staticmethod
    def function(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
        """The task's target A·sin(x − φ) (broadcasting A, φ of shape (T,) over x (T, N, 1))."""
        return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))

    def sample(self, num_tasks: int, seed: int, *, shuffle_labels: bool = True) -> Episode:
        """`num_tasks` sinusoids with K support and Q query points each."""
        _check_int("num_tasks", num_tasks, 1)
        g = torch.Generator().manual_seed(seed)
        amp = torch.empty(num_tasks).uniform_(*self.amplitude, generator=g)
        ph = torch.empty(num_tasks).uniform_(*self.phase, generator=g)
        x = torch.empty(num_tasks, self.k_shot + self.k_query, 1).uniform_(*self.x_range, generator=g)
        y = self.function(x, amp, ph)
        k = self.k_shot
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"amplitude": amp, "phase": ph})

    @staticmethod
    def with_descriptors(ep: Episode) -> Episode:
        """The oracle's view: every input x becomes (x, A, φ), the task's true parameters."""

        def extend(x: Tensor) -> Tensor:
            d = torch.stack([ep.info["amplitude"], ep.info["phase"]], dim=1)  # (T, 2)
            return torch.cat([x, d[:, None, :].expand(-1, x.shape[1], -1)], dim=2)

        return dataclasses.replace(ep, support_x=extend(ep.support_x), query_x=extend(ep.query_x))


class FewShot:
    """N-way K-shot classification tasks from examples `x`, `y` restricted to `classes`.

    A task picks N of the classes and K support plus Q query examples of each; labels are
    0…N−1 in a random order (or in class order with `shuffle_labels=False`, the pretrained
    baseline's fixed labelling).
    """

    task: Literal["classification"] = "classification"

    def __init__(self, x: Tensor, y: Tensor, classes: Sequence[int], *, n_way: int = 5,
                 k_shot: int = 1, k_query: int = 15, name: str = "") -> None:
        self.n_way = _check_int("n_way", n_way, 2)
        self.k_shot = _check_int("k_shot", k_shot, 1)
        self.k_query = _check_int("k_query", k_query, 1)
        self.classes = tuple(int(c) for c in classes)
        self.name = name
        where = f" of {name}" if name else ""
        if len(set(self.classes)) != len(self.classes):
            raise MetaError("classes", list(self.classes), "lists a class twice")
        if n_way > len(self.classes):
            raise MetaError("n_way", n_way, f"larger than the {len(self.classes)} classes available"
                            f"{where} ({list(self.classes)})")
        self.x = x
        self.index: list[Tensor] = []
        need = k_shot + k_query
        for c in self.classes:
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < need:
                raise MetaError("k_shot", k_shot, f"k_shot + k_query = {need} but class {c}{where} "
                                f"has only {len(idx)} examples")
            self.index.append(idx)
        self.in_shape = tuple(x.shape[1:])
        self.out_features = n_way

    def sample(self, num_tasks: int, seed: int, *, shuffle_labels: bool = True) -> Episode:
        """`num_tasks` tasks; support and query are ordered class by class."""
        _check_int("num_tasks", num_tasks, 1)
        g = torch.Generator().manual_seed(seed)
        n, k, q = self.n_way, self.k_shot, self.k_query
        picks, chosen = [], []
        for _ in range(num_tasks):
            cls = torch.randperm(len(self.classes), generator=g)[:n]
            if not shuffle_labels:
                cls = cls.sort().values
            chosen.append(cls)
            for c in cls.tolist():
                idx = self.index[c]
                picks.append(idx[torch.randperm(len(idx), generator=g)[: k + q]])
        sel = torch.stack(picks).view(num_tasks, n, k + q)
        xs = self.x[sel]  # (T, N, K+Q, …)
        labels = torch.arange(n).view(1, n, 1).expand(num_tasks, n, k + q)
        rest = self.in_shape

        def flat(t: Tensor, *shape: int) -> Tensor:
            return t.reshape(num_tasks, -1, *shape)

        class_ids = torch.tensor(self.classes)[torch.stack(chosen)]
        return Episode(flat(xs[:, :, :k], *rest), flat(labels[:, :, :k]),
                       flat(xs[:, :, k:], *rest), flat(labels[:, :, k:]), {"classes": class_ids})


Augment = Literal["none", "rotate", "reverse"]
_VARIANTS = {"none": 1, "rotate": 4, "reverse": 2}


def augment_classes(x: Tensor, y: Tensor, augment: Augment) -> tuple[Tensor, Tensor, int]:
    """More classes from the same examples, as Omniglot few-shot work does with rotations:
    each transformed copy of class c is class c·m + j. "rotate": the four 90° rotations of
    square images (flattened H·W or (H, W)); "reverse": 1-D signals and their time reversal.
    Returns (x', y', m)."""
    if augment not in _VARIANTS:
        raise MetaError("augment", augment, f"expected one of {sorted(_VARIANTS)}")
    m = _VARIANTS[augment]
    if m == 1:
        return x, y, 1
    shape = tuple(x.shape[1:])
    if augment == "rotate":
        side = math.isqrt(math.prod(shape))
        if len(shape) > 2 or side * side != math.prod(shape):
            raise MetaError("augment", augment, f"rotations need square images, inputs are {shape}")
        img = x.reshape(-1, side, side)
        copies = [torch.rot90(img, j, dims=(1, 2)).reshape(x.shape) for j in range(m)]
    else:
        copies = [x, x.flip(-1)]
    xs = torch.cat(copies)
    ys = torch.cat([y * m + j for j in range(m)])
    return xs, ys, m


def fewshot_distributions(
    splits: Any, *, n_way: int, k_shot: int, k_query: int, train_classes: Sequence[int],
    test_classes: Sequence[int], val_classes: Sequence[int] = (), augment: Augment = "none",
) -> dict[str, FewShot]:
    """Meta-train, meta-validation and meta-test distributions from a dataset's `Splits`.

    Meta-train tasks use `train_classes` on the dataset's train split; meta-test tasks use
    `test_classes` (disjoint from them) on all its examples; meta-validation uses
    `val_classes` on all examples if given, else the train classes on their held-out examples
    (the dataset's val and test splits, never seen in meta-training). With `augment`, every
    listed class stands for its m transformed copies (see :func:`augment_classes`).
    """
    nc = splits.num_classes
    for name, cls in (("train_classes", train_classes), ("test_classes", test_classes),
                      ("val_classes", val_classes)):
        bad = [c for c in cls if not (isinstance(c, int) and 0 <= c < nc)]
        if bad:
            raise MetaError(name, list(cls), f"{bad[0]!r} is not a class of {splits.name} (0…{nc - 1})")
    overlap = set(train_classes) & (set(test_classes) | set(val_classes))
    if overlap:
        raise MetaError("test_classes", list(test_classes),
                        f"shares classes {sorted(overlap)} with train_classes (they must be disjoint)")
    if set(val_classes) & set(test_classes):
        raise MetaError("val_classes", list(val_classes), "shares classes with test_classes")
    def part(x: Tensor, y: Tensor, classes: Sequence[int], where: str) -> FewShot:
        xa, ya, m = augment_classes(x, y, augment)
        expanded = [c * m + j for c in classes for j in range(m)]
        return FewShot(xa, ya, expanded, n_way=n_way, k_shot=k_shot, k_query=k_query,
                       name=f"{splits.name} {where}")

    x_all = torch.cat([splits.x_train, splits.x_val, splits.x_test])
    y_all = torch.cat([splits.y_train, splits.y_val, splits.y_test])
    out = {"train": part(splits.x_train, splits.y_train, train_classes, "train split"),
           "test": part(x_all, y_all, test_classes, "(all splits)")}
    if val_classes:
        out["val"] = part(x_all, y_all, val_classes, "(all splits)")
    else:
        out["val"] = part(torch.cat([splits.x_val, splits.x_test]),
                          torch.cat([splits.y_val, splits.y_test]), train_classes, "val+test splits")
    return out
