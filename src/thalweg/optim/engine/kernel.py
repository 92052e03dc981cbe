"""One kernel call of the flat core: a pass of a chain over matching tensors (low precision
computes in float32), the unit a step is planned in, and the compile/autocast helpers."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain, Totals

from .lowprec import Layout, dequantize, quantize, round_to_bf16, stochastic_bf16

__all__ = [
    "EAGER_CHUNK",
    "LOW_PRECISION",
    "Unit",
    "autocast_off",
    "chunked",
    "compute_dtype",
    "fresh_function",
    "pass_states",
    "plain_runner",
    "run_pass",
    "run_stats",
    "run_stored_pass",
    "run_stored_stats",
]

LOW_PRECISION = (torch.float16, torch.bfloat16)

#: eager updates walk the flat buffer in chunks of this many elements, so each chunk stays in
#: cache across the chain's several elementwise ops (one pass over memory, not one per op)
EAGER_CHUNK = 1 << 18


def run_pass(chain: Chain, p: Tensor, g: Tensor, state: list[Tensor], hp: Any, norm: Tensor | None,
            part: int, out: Tensor | None) -> None:
    """Pass `part` of one update over matching tensors, in place (or into `out` when more
    passes follow). Low-precision tensors compute in float32."""
    if p.dtype in LOW_PRECISION:
        p32, st32 = p.float(), [s.float() for s in state]
        chain.update(p32, g.float(), st32, hp, norm, part, out)
        p.copy_(p32)
        for buf, new in zip(state, st32, strict=True):
            buf.copy_(new)
    else:
        chain.update(p, g, state, hp, norm, part, out)


def run_stats(chain: Chain, p: Tensor, g: Tensor, state: list[Tensor], hp: Any, part: int,
              total: Totals) -> Tensor:
    """The sums pass `part`'s reducing transform needs, over matching tensors; reads the
    state as :func:`run_pass` does (low precision in float32) and changes nothing."""
    if p.dtype in LOW_PRECISION:
        p, g, state = p.float(), g.float(), [s.float() for s in state]
    return chain.statistics(p, g, state, hp, part, total)


def pass_states(chain: Chain, part: int) -> frozenset[int]:
    """Indices (in `chain.state_keys`) of the state buffers pass `part` reads or writes."""
    return frozenset(i for op in chain.passes[part].ops
                     for i in range(op.state_at, op.state_at + len(op.transform.state_names)))


#: seeds of the stochastic roundings of one call: the parameters use `seed`, state key k
#: `seed + (k + 1)·_SEED_STRIDE`, so no two buffers draw the same bits
_SEED_STRIDE = 0x3C6EF35


def _decode(chain: Chain, layout: Layout, p: Tensor, state: list[Tensor], part: int,
            lo: int) -> tuple[list[Tensor], list[tuple[str, list[Tensor], Tensor, int]]]:
    """The full-precision state pass `part` works on (one tensor per state key, matching
    `p`), and what has to be written back: (kind, stored tensors, values, key index)."""
    used = pass_states(chain, part)
    full: list[Tensor] = []
    back: list[tuple[str, list[Tensor], Tensor, int]] = []
    n, j = p.numel(), 0
    for k, kind in enumerate(layout.states):
        bufs = state[j : j + layout.n_tensors(k)]
        j += len(bufs)
        if k not in used:
            full.append(bufs[0])
            continue
        if kind == "int8":
            cover = dequantize(bufs[0], bufs[1], layout.block)
            whole = lo == 0 and p.dim() == 2 and p.shape[-1] == layout.block  # whole blocks: no slicing
            full.append(cover.view(p.shape) if whole else cover[lo : lo + n].view(p.shape))
            back.append((kind, bufs, cover, k))
        elif bufs[0].dtype in LOW_PRECISION:
            x = bufs[0].float()
            full.append(x)
            back.append((kind, bufs, x, k))
        else:
            full.append(bufs[0])
    return full, back


def run_stored_pass(chain: Chain, layout: Layout, p: Tensor, g: Tensor, state: list[Tensor], hp: Any,
                    norm: Any, part: int, out: Tensor | None, master: Tensor | None,
                    lo: int, base: Any, seed: Any) -> None:
    """Pass `part` over one range of a segment whose state is low precision: dequantize →
    update → requantize in one function (one fused kernel when compiled), so only this
    range is ever held in full precision.

    `state` holds per state key its buffer (a view matching `p`), or for int8 the codes
    (blocks × block, so the block stays a static size under dynamic shapes) and scales of the
    whole blocks covering the range, which starts `lo` elements into them.
    `base` is the range's first element index in the segment and `seed` this step's seed:
    stochastic roundings draw their bits from them.
    """
    full, back = _decode(chain, layout, p, state, part, lo)
    low_p = p.dtype in LOW_PRECISION
    pw = master if master is not None else (p.float() if low_p else p)
    chain.update(pw, g.float() if g.dtype in LOW_PRECISION else g, full, hp, norm, part, out)
    if low_p:
        p.copy_(round_to_bf16(pw, True, base, seed) if layout.param_sr else pw)
    for kind, bufs, x, k in back:
        if kind == "int8":
            codes, scale = quantize(x, layout.block)
            bufs[0].copy_(codes.view(bufs[0].shape))
            bufs[1].copy_(scale.view(bufs[1].shape))
        elif kind == "bf16":
            bufs[0].copy_(stochastic_bf16(x, base, seed + (k + 1) * _SEED_STRIDE))
        else:  # low-precision buffer in the parameter's dtype (torch's): nearest
            bufs[0].copy_(x)


def run_stored_stats(chain: Chain, layout: Layout, p: Tensor, g: Tensor, state: list[Tensor], hp: Any,
                     part: int, total: Totals, master: Tensor | None, lo: int) -> Tensor:
    """:func:`run_stats` over one range of a low-precision segment: the state decoded, and
    the parameters (master copy) read, exactly as :func:`run_stored_pass` will."""
    full, _ = _decode(chain, layout, p, state, part, lo)
    pw = master if master is not None else (p.float() if p.dtype in LOW_PRECISION else p)
    return chain.statistics(pw, g.float() if g.dtype in LOW_PRECISION else g, full, hp, part, total)


@contextlib.contextmanager
def autocast_off(device_types: Iterable[str]) -> Iterator[None]:
    """The update runs in the parameters' own precision even inside a user's autocast
    region (autocast would run matrix products of matrix rules in bf16)."""
    with contextlib.ExitStack() as stack:
        for dt in sorted(set(device_types)):
            if torch.amp.is_autocast_available(dt):
                stack.enter_context(torch.autocast(dt, enabled=False))
        yield


@dataclass
class Unit:
    """One kernel call per pass: a whole segment (fast path) or one parameter's views."""

    fn: Callable[..., None]  # fn(p, g, states, hp, norm, part, out)
    p: Tensor
    g: Tensor
    states: list[Tensor]
    hp: Any
    scratch: Tensor | None  # the update between passes (multi-pass chains only)
    # for reducing transforms (`Transform.reduces`): the tensors' shapes (in order, as packed
    # in `p`), the parameter group and the step these scalars are for
    shapes: tuple[torch.Size, ...] = ()
    group: Any = None
    step: int = 0
    # a low-precision unit's sums, `stats(unit, part, scope)` (decoded as its update decodes)
    stats: Callable[[Unit, int, str], Tensor] | None = None
    # the process group holding the other shards of these tensors (DTensor parameters): the
    # sums a reduction takes over them are all-reduced there (engine/dtensor.py)
    over: Any = None

    def source(self, part: int) -> Tensor:
        return self.g if part == 0 else self.scratch  # type: ignore[return-value]

    def run(self, part: int, last: int, norm: Tensor | None) -> None:
        self.fn(self.p, self.source(part), self.states, self.hp, norm, part,
                None if part == last else self.scratch)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype



def fresh_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of `fn` with its own code object, so dynamo keeps a separate cache for it and
    many optimizers never exhaust one function's recompile limit."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def chunked(kernel: Callable[..., None], chain: Chain, p: Tensor, g: Tensor, state: list[Tensor],
             hp: Any, norm: Tensor | None, part: int, out: Tensor | None) -> None:
    """Run an elementwise kernel chunk by chunk (exact: every transform is elementwise)."""
    n = p.numel()
    if n <= EAGER_CHUNK:
        kernel(chain, p, g, state, hp, norm, part, out)
        return
    for a in range(0, n, EAGER_CHUNK):
        b = min(a + EAGER_CHUNK, n)
        piece = (norm[0], norm[1][a:b]) if isinstance(norm, tuple) else norm  # per-tensor values, element index
        kernel(chain, p[a:b], g[a:b], [s[a:b] for s in state], hp, piece, part,
               None if out is None else out[a:b])


def plain_runner(chain: Chain, compiled: bool, compile_options: Mapping[str, Any]) -> Callable[..., None]:
    """`run(p, g, state, hp, norm, part, out)`: the update of a full-precision segment (the
    low-precision one is :func:`.stored.runner`). Compiled: one fused kernel over the whole
    buffer (`fullgraph`, static shapes, then `compile_options`); eager: a one-pass chain in one
    call, any other in cache-sized chunks (:func:`chunked`)."""
    eager = fresh_function(run_pass)
    if compiled:
        options = {"fullgraph": True, "dynamic": False, **compile_options}
        fn = torch.compile(eager, **options)
        return lambda p, g, st, hp, n, k, o: fn(chain, p, g, st, hp, n, k, o)
    if chain.single_pass:  # already one pass; chunks would only add overhead
        return lambda p, g, st, hp, n, k, o: eager(chain, p, g, st, hp, n, k, o)
    return lambda p, g, st, hp, n, k, o: chunked(eager, chain, p, g, st, hp, n, k, o)
