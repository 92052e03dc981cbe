"""A segment's state in its storage format (the parameter's dtype, float32, bf16, or int8
codes with per-block scales): creating it chunk by chunk, the tensors a kernel call gets,
torch's per-parameter view of it, reading and writing one parameter's values, its bytes;
and what bf16/int8 storage refuses (complex parameters, state that is a copy of the weights).

int8 blocks run over the segment's flat buffer, so a block may hold the end of one
parameter and the start of the next; a parameter's state entry carries the scales of the
blocks it touches and `block_offset`, where it starts in the first (see docs/memory.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from thalweg.optim.transforms.chain import Chain

from .kernel import LOW_PRECISION
from .lowprec import DEFAULT_BLOCK, Layout, dequantize, quantize
from .segment import Segment

__all__ = ["MEMORY_KEYS", "clear_padding", "init_state", "keeps_step", "kernel_state", "layout_for", "nbytes",
           "param_cover", "param_entries", "read_param", "refuse_complex",
           "refuse_rounded_weights", "write_params"]

#: the param-group keys of the storage options (present only when not at their default)
MEMORY_KEYS = ("state_dtype", "state_block_size", "param_rounding", "master_weights")

#: state buffers are created and converted in chunks of this many elements (a multiple of
#: every block size), so no full-precision copy of a low-precision state is ever made
INIT_CHUNK = 1 << 18


def keeps_step(chain: Chain, layout: Layout | None) -> bool:
    """Whether a parameter's state carries `step`: the rule counts steps (torch's), or the
    storage rounds stochastically (see `Layout.stochastic`)."""
    return chain.counts_steps or (layout is not None and layout.stochastic)


def refuse_rounded_weights(group: Mapping[str, Any], chain: Chain, gi: int) -> None:
    """A bf16/int8 `state_dtype` stores every buffer in that format; a buffer that is a copy
    of the weights (schedule-free's z) would lose every update below its rounding step."""
    sd = group.get("state_dtype")
    weights = [t.name for t in chain.transforms if t.weight_state]
    if sd in ("bf16", "int8") and weights:
        raise ValueError(f"param group {gi}: state_dtype={sd!r} is not supported by {weights[0]} (its state "
                         "is a copy of the weights, which this format would round); use state_dtype=None or 'fp32'")


def refuse_complex(group: Mapping[str, Any], p: Tensor, gi: int) -> None:
    """bf16/int8 state has no format for a complex parameter (kept as a real view (…, 2))."""
    if p.is_complex() and group.get("state_dtype") in ("bf16", "int8"):
        raise ValueError(f"param group {gi}: state_dtype={group['state_dtype']!r} is not supported for "
                         "complex parameters; use state_dtype=None or 'fp32'")


def layout_for(group: Mapping[str, Any], seg: Segment, chain: Chain) -> Layout:
    """The storage layout of `seg` under its param group's options."""
    dtype = group.get("state_dtype")
    kind = {None: "plain", "fp32": "plain", "bf16": "bf16", "int8": "int8"}[dtype]
    sr = group.get("param_rounding", "nearest") == "stochastic" and seg.dtype == torch.bfloat16
    master = bool(group.get("master_weights", False)) and seg.dtype in LOW_PRECISION
    return Layout(tuple(kind for _ in chain.state_keys), int(group.get("state_block_size", DEFAULT_BLOCK)), sr, master)


def _buffer_dtype(layout: Layout, seg: Segment, group: Mapping[str, Any]) -> torch.dtype:
    if layout.states and layout.states[0] == "bf16":
        return torch.bfloat16
    if group.get("state_dtype") == "fp32" and seg.dtype in LOW_PRECISION:
        return torch.float32
    return seg.dtype


def init_state(seg: Segment, chain: Chain, layout: Layout, group: Mapping[str, Any],
               keys: tuple[str, ...] | None = None) -> None:
    """Create the state buffers `keys` (default: all of the chain's) in their format, from
    the chain's own initial values, chunk by chunk."""
    keys = chain.state_keys if keys is None else keys
    if layout.master and seg.master is None:
        seg.master = seg.flat_p.detach().float()
    dtype = _buffer_dtype(layout, seg, group)
    if not layout.quantized and dtype == seg.dtype:  # torch's own layout: one call, as before
        seg.state.update({k: v for k, v in chain.init(seg.flat_p.detach()).items() if k in keys})
        return
    n, block = seg.numel, layout.block
    npad = -(-n // block) * block
    for k in keys:
        if layout.quantized:
            seg.state[k] = torch.zeros(npad, dtype=torch.int8, device=seg.device)
            seg.scales[k] = torch.zeros(npad // block, dtype=torch.float32, device=seg.device)
        else:
            seg.state[k] = torch.empty(n, dtype=dtype, device=seg.device)
    src = seg.flat_p.detach()
    for a in range(0, n, INIT_CHUNK):
        b = min(a + INIT_CHUNK, n)
        fresh = chain.init(src[a:b].float())
        for k in keys:
            if layout.quantized:
                _store_range(seg, k, block, a, fresh[k])
            else:
                seg.state[k][a:b].copy_(fresh[k])


def clear_padding(seg: Segment, chain: Chain, layout: Layout) -> None:
    """Set the int8 codes past the segment's last element (its last block's padding) to the
    code of zero (a block with no negative value: its smallest value), so they never move
    that block's scale. They are in no state dict: left to drift with each requantization,
    a resumed optimizer (whose padding comes from its own start) would scale its last block
    differently from an uninterrupted one and its steps would not be bitwise the same."""
    n = seg.numel
    if not layout.quantized or n % layout.block == 0:
        return
    for k, kind in zip(chain.state_keys, layout.states, strict=True):
        if kind == "int8" and k in seg.state:
            zero = torch.where(seg.scales[k][-1] < 0, -128, 0).to(torch.int8)
            seg.state[k][n:] = zero


def _store_range(seg: Segment, key: str, block: int, a: int, values: Tensor) -> None:
    """Quantize `values` into elements a … a+len of int8 state `key` (re-encoding the whole
    blocks it touches; a block's other values keep theirs)."""
    b = a + values.numel()
    b0, b1 = a // block, -(-b // block)
    cover = dequantize(seg.state[key][b0 * block : b1 * block], seg.scales[key][b0:b1], block)
    cover[a - b0 * block : b - b0 * block] = values.reshape(-1)
    cover[seg.numel - b0 * block :] = 0  # the padding past the last element holds nothing
    codes, scale = quantize(cover, block)
    seg.state[key][b0 * block : b1 * block] = codes
    seg.scales[key][b0:b1] = scale


def kernel_state(seg: Segment, chain: Chain, layout: Layout) -> list[Tensor]:
    """The whole segment's state tensors in kernel order (int8: codes then scales)."""
    out: list[Tensor] = []
    for k, kind in zip(chain.state_keys, layout.states, strict=True):
        out.append(seg.state[k])
        if kind == "int8":
            out.append(seg.scales[k])
    return out


def param_cover(seg: Segment, chain: Chain, layout: Layout, i: int) -> tuple[list[Tensor], int]:
    """Parameter i's state tensors for a kernel call on its own (int8: the whole blocks it
    touches) and where the parameter starts in them."""
    off, n, block = seg.offsets[i], seg.numels[i], layout.block
    b0, b1 = off // block, -(-(off + n) // block)
    out: list[Tensor] = []
    for k, kind in zip(chain.state_keys, layout.states, strict=True):
        if kind == "int8":
            out += [seg.state[k][b0 * block : b1 * block], seg.scales[k][b0:b1]]
        else:
            out.append(seg._view(seg.state[k], i))
    return out, (off - b0 * block if layout.quantized else 0)


def param_entries(seg: Segment, chain: Chain, layout: Layout, i: int) -> dict[str, Any]:
    """Parameter i's state-dict entries as views of the segment's buffers: torch's layout;
    int8 adds `<key>.scale` (its blocks' scales) and `block_offset`; a master copy
    `master_param`."""
    st: dict[str, Any] = {}
    off, n, block = seg.offsets[i], seg.numels[i], layout.block
    for k in chain.state_keys:
        st[k] = seg._view(seg.state[k], i)
        if layout.quantized:
            st[f"{k}.scale"] = seg.scales[k][off // block : -(-(off + n) // block)]
    if layout.quantized and chain.state_keys:
        st["block_offset"] = off % block
    if layout.master and seg.master is not None:
        st["master_param"] = seg._view(seg.master, i)
    return st


def read_param(seg: Segment, layout: Layout, key: str, i: int) -> Tensor:
    """Parameter i's values of state `key` in float32 (dequantized) or its buffer's dtype."""
    if not layout.quantized:
        return seg._view(seg.state[key], i)
    off, n, block = seg.offsets[i], seg.numels[i], layout.block
    b0, b1 = off // block, -(-(off + n) // block)
    cover = dequantize(seg.state[key][b0 * block : b1 * block], seg.scales[key][b0:b1], block)
    return cover[off - b0 * block : off - b0 * block + n].view(seg.shapes[i])


def write_params(seg: Segment, layout: Layout, key: str, values: list[Tensor | None]) -> None:
    """Set state `key` of each parameter whose entry in `values` is not None (rounded to
    nearest into the format). int8 is re-encoded chunk by chunk with every new value in
    place first, so each value is rounded once, however parameters share blocks."""
    if not layout.quantized:
        for i, v in enumerate(values):
            if v is not None:
                seg._view(seg.state[key], i).copy_(v)
        return
    block = layout.block
    for a in range(0, seg.numel, INIT_CHUNK):
        b = min(a + INIT_CHUNK, seg.numel)
        touched = [i for i, v in enumerate(values) if v is not None
                   and seg.offsets[i] < b and seg.offsets[i] + seg.numels[i] > a]
        if not touched:
            continue
        b1 = -(-b // block)
        cover = dequantize(seg.state[key][a:b1 * block], seg.scales[key][a // block : b1], block)
        for i in touched:
            lo, hi = max(a, seg.offsets[i]), min(b, seg.offsets[i] + seg.numels[i])
            src = values[i].reshape(-1)[lo - seg.offsets[i] : hi - seg.offsets[i]]  # type: ignore[union-attr]
            cover[lo - a : hi - a] = src.to(cover)
        cover[seg.numel - a :] = 0  # the padding past the last element holds nothing
        codes, scale = quantize(cover, block)
        seg.state[key][a:b1 * block] = codes
        seg.scales[key][a // block : b1] = scale


def decode_saved(entry: Mapping[str, Any], key: str, block: int) -> Tensor:
    """float32 values of an int8 state-dict entry (codes, `<key>.scale`, `block_offset`)."""
    codes = entry[key]
    off, n = int(entry["block_offset"]), codes.numel()
    cover = torch.zeros(-(-(off + n) // block) * block, dtype=torch.int8, device=codes.device)
    cover[off : off + n] = codes.reshape(-1).to(torch.int8)
    return dequantize(cover, entry[f"{key}.scale"].to(torch.float32), block)[off : off + n].view(codes.shape)


def nbytes(seg: Segment) -> int:
    """Bytes of this segment's state buffers, scales, master copy and step counters."""
    tensors = [*seg.state.values(), *seg.scales.values(), seg.step_t]
    if seg.master is not None:
        tensors.append(seg.master)
    return sum(t.numel() * t.element_size() for t in tensors)
