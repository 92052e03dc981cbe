"""Random probe vectors for stochastic trace, diagonal and spectral-density estimators."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["rademacher"]


def rademacher(
    shape: int | Sequence[int],
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Independent ±1 entries with probability ½ each: the Hutchinson / SLQ probe, E[zzᵀ] = I.

    The bits are drawn on the generator's device (so a CPU generator gives the same probes
    whatever `device` the result is moved to).
    """
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    where = generator.device if generator is not None else device
    bits = torch.randint(0, 2, size, generator=generator, device=where)
    return (bits * 2 - 1).to(dtype=dtype, device=device)
