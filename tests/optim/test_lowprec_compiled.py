"""The compiled low-precision kernel (one fused kernel per chunk of whole int8 blocks, the
partial blocks at the edges eager) follows the eager one."""

from __future__ import annotations

import pytest
import torch

import thalweg.optim as to
from thalweg.optim.engine import core


@pytest.mark.slow
def test_compiled_int8_adamw_follows_the_eager_kernel(monkeypatch):
    monkeypatch.setattr(core, "COMPILED_CHUNK", 4096)  # several chunks, then a shorter one
    shapes = [(100, 70), (333,), (64, 65), (1,), (2000,)]  # edges fall inside blocks
    runs = {}
    for compile in (False, True):
        ps = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(1))) for s in shapes]
        opt = to.AdamW(ps, lr=1e-2, state_dtype="int8", compile=compile)
        grads = torch.Generator().manual_seed(2)
        for _ in range(6):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=grads)
            opt.step()
        assert opt._segments[0].compiled == compile
        runs[compile] = torch.cat([p.detach().reshape(-1) for p in ps])
    start = torch.cat([torch.randn(s, generator=torch.Generator().manual_seed(1)).reshape(-1) for s in shapes])
    moved = float((runs[False] - start).abs().max())
    assert float((runs[True] - runs[False]).abs().max()) <= 1e-3 * moved
