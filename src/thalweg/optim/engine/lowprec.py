"""Low-precision storage for the flat core: block-wise int8 codes, bf16 with stochastic
rounding, and the random bits both draw on.

**int8** (block-wise, per-block scale, as in the 8-bit optimizers of Dettmers et al. 2022):
a flat state buffer is cut into blocks of `block` elements; each block stores one float32
scale and one int8 code per element. The code is *square-root companded* — it stores
y = sign(x)·√(|x|/A) with A the block's largest |x| — so small values keep relative
precision (a linear code rounds everything below A/254 to zero). Signedness is the core's
business, per block, from the data: a block with a negative value uses the signed code
(y ∈ {−127…127}/127), a block with none (second moments, accumulators) the unsigned one,
which has one more bit and no zero (y ∈ {1…256}/256, after Li et al. 2023: a second moment
that rounds to zero turns Adam's step into m/ε). The scale's sign records which code a
block uses (negative: unsigned). Error bound, with δ = 1/254 (signed) or 1/512 (unsigned)
and y = √(|x|/A): |x̂ − x| ≤ A·δ·(2y + δ); below A/512² an unsigned value reads as A/65536.
Rounding is to nearest, so dequantize → quantize of unchanged values is exact.

**bf16**: float32 rounded to bfloat16 *stochastically* — up with probability equal to the
distance to the value below, in units of the bf16 spacing — so the rounding is unbiased
and updates far below half an ulp still move a value on average (nearest rounding would
drop them every time). The random bits are a hash of (seed, element index), computed
inside the kernel: no random tensor is stored, the user's random streams are untouched,
and eager and compiled kernels draw the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BLOCK",
    "PARAM_ROUNDINGS",
    "STATE_DTYPES",
    "Layout",
    "dequantize",
    "int8_error_bound",
    "quantize",
    "random_bits16",
    "round_to_bf16",
    "stochastic_bf16",
]

#: the accepted `state_dtype` values (None: the parameter's own dtype, as torch.optim)
STATE_DTYPES = ("fp32", "bf16", "int8")
PARAM_ROUNDINGS = ("nearest", "stochastic")
DEFAULT_BLOCK = 256

_SIGNED_LEVELS, _UNSIGNED_LEVELS, _UNSIGNED_OFFSET = 127.0, 256.0, 129.0


# --------------------------------------------------------------------------- int8 codes
def dequantize(codes: Tensor, scale: Tensor, block: int) -> Tensor:
    """float32 values of int8 `codes` (a multiple of `block` elements) with per-block
    `scale` (one float32 per block; negative: the unsigned code)."""
    c = codes.reshape(-1, block).float()
    s = scale.reshape(-1, 1)
    unsigned = s < 0
    y = (c + torch.where(unsigned, _UNSIGNED_OFFSET, 0.0)) * torch.where(
        unsigned, 1.0 / _UNSIGNED_LEVELS, 1.0 / _SIGNED_LEVELS)
    return (y * y.abs() * s.abs()).reshape(-1)


def quantize(x: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """(int8 codes, float32 per-block scales) of float `x` (a multiple of `block` elements):
    the square-root code of the module docstring, rounded to nearest."""
    x2 = x.reshape(-1, block)
    amax = x2.abs().amax(1, keepdim=True)
    nonneg = x2.amin(1, keepdim=True) >= 0
    t = (x2.abs() * (1.0 / amax.clamp_min(1e-38))).sqrt()
    q = torch.where(x2 < 0, -t, t) * torch.where(nonneg, _UNSIGNED_LEVELS, _SIGNED_LEVELS)
    codes = (q.round() - torch.where(nonneg, _UNSIGNED_OFFSET, 0.0)).clamp(-128.0, 127.0)
    scale = torch.where(nonneg & (amax > 0), -amax, amax)
    return codes.to(torch.int8).reshape(-1), scale.reshape(-1)


def int8_error_bound(x: Tensor, absmax: Tensor, nonneg: Tensor) -> Tensor:
    """The largest |dequantize(quantize(x)) − x| the code allows for each value of `x`, given
    its block's largest |x| (`absmax`) and whether the block has no negative value."""
    y = (x.abs() / absmax.clamp_min(1e-38)).sqrt()
    d = torch.where(nonneg, 0.5 / _UNSIGNED_LEVELS, 0.5 / _SIGNED_LEVELS)
    bound = absmax * d * (2 * y + d)
    floor = absmax / _UNSIGNED_LEVELS**2
    return torch.where(nonneg, torch.maximum(bound, floor), bound)


# --------------------------------------------------------------------------- random bits
def _i32(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


_GOLDEN, _M1, _M2 = _i32(0x9E3779B9), _i32(0x7FEB352D), _i32(0x846CA68B)


def random_bits16(n: int, base: int | Tensor, seed: int | Tensor, device: torch.device | None = None) -> Tensor:
    """16 random bits (int32 in [0, 65536)) for elements base … base+n−1 under `seed`: a
    32-bit integer hash (Wellons' lowbias32) of the element index, so any chunking of a
    buffer draws the same bits for the same element."""
    h = torch.arange(n, dtype=torch.int32, device=device) + base
    h = h * _GOLDEN + seed
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _M1
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * _M2
    h = h ^ ((h >> 16) & 0xFFFF)
    return h & 0xFFFF


def stochastic_bf16(x: Tensor, base: int | Tensor, seed: int | Tensor) -> Tensor:
    """float32 `x` rounded to bfloat16 stochastically (unbiased: E[result] = x); the low 16
    bits of the float32 pattern, plus 16 random bits, carry into the kept bits or not."""
    r = random_bits16(x.numel(), base, seed, x.device).reshape(x.shape)
    bits = (x.view(torch.int32) + r) & -65536
    return bits.view(torch.float32).to(torch.bfloat16)


def round_to_bf16(x: Tensor, stochastic: bool, base: int | Tensor, seed: int | Tensor) -> Tensor:
    """`x` as bfloat16: stochastically, or to nearest (torch's cast)."""
    return stochastic_bf16(x, base, seed) if stochastic else x.to(torch.bfloat16)


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """How one segment keeps its state and writes its parameters (static: a kernel is
    compiled per layout). `states`: per state key "plain" (the buffer's own dtype), "bf16"
    (stochastic rounding on write-back) or "int8" (codes + per-block scales);
    `param_sr`: bf16 parameters are written with stochastic rounding; `master`: the chain
    runs on a float32 master copy of the parameters."""

    states: tuple[str, ...]
    block: int = DEFAULT_BLOCK
    param_sr: bool = False
    master: bool = False

    @property
    def plain(self) -> bool:
        """Nothing to round or quantize beyond torch's casts: the ordinary kernel runs."""
        return all(s == "plain" for s in self.states) and not self.param_sr and not self.master

    @property
    def quantized(self) -> bool:
        return "int8" in self.states

    @property
    def stochastic(self) -> bool:
        """Some write rounds stochastically: its bits depend on the step count, so the state
        dict keeps a `step` even for a rule whose torch twin has none (SGD), and a resumed
        optimizer draws the bits an uninterrupted one would."""
        return "bf16" in self.states or self.param_sr

    def n_tensors(self, k: int) -> int:
        """How many kernel arguments state key `k` takes (int8: codes and scales)."""
        return 2 if self.states[k] == "int8" else 1
