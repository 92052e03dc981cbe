"""A seeded minibatch loader over in-memory tensors whose position can be saved and resumed
mid-epoch, so an interrupted run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["Loader"]


class Loader:
    """Iterate ``(xb, yb)`` minibatches of ``(x, y)``; the order is a function of
    (``seed``, epoch) only. One ``for`` loop is one epoch; after a full pass the epoch
    advances by itself. ``rank``/``world_size`` give each data-parallel worker its shard
    (padded by wrap-around to equal length, like torch's DistributedSampler)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be torch tensors, got {type(x).__name__}, {type(y).__name__}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        if x.shape[0] == 0:
            raise ValueError("x and y are empty (0 rows)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not (isinstance(world_size, int) and world_size >= 1):
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.n = int(x.shape[0])
        self.n_local = math.ceil(self.n / world_size)
        if drop_last and self.n_local < batch_size:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.n_local} examples per worker with "
                "drop_last=True, so an epoch would have no batches"
            )
        self.epoch = 0
        self.position = 0  # batches already yielded in the current epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.n_local // self.batch_size
        return math.ceil(self.n_local / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch, self.position = epoch, 0

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This worker's example order for ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else epoch
        if self.shuffle:
            s = int(np.random.SeedSequence([self.seed, e]).generate_state(1, np.uint64)[0] >> 1)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(s))
        else:
            order = torch.arange(self.n)
        total = self.n_local * self.world_size
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.x.device)
        n_batches = len(self)
        while self.position < n_batches:
            idx = order[self.position * self.batch_size : (self.position + 1) * self.batch_size]
            self.position += 1
            yield self.x[idx], self.y[idx]
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from the next batch: epoch, position, and the
        settings the order depends on (checked on load)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "n": self.n,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where :meth:`state_dict` was taken; the data size and batching settings must
        match (the seed is taken from the state)."""
        for key in ("n", "batch_size", "shuffle", "drop_last", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"loader state has {key}={state[key]!r} but this loader has "
                    f"{key}={getattr(self, key)!r}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"loader state has invalid epoch={epoch} / position={position}")
        self.seed = int(state.get("seed", self.seed))
        self.epoch, self.position = epoch, position
