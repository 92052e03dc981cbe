"""Kronecker-factored preconditioning, shared by Shampoo and SOAP: blocking of large
dimensions, factor statistics, inverse roots and eigenbases, all batched over a stack.

A stack (k, m, n) of equal-shape matrices is cut into blocks of at most `block`×`block`:
the full blocks and the remainders form at most four *pieces*, each a batch (B, bm, bn) of
equal-shape blocks, so every factor update, `torch.linalg.eigh` and `torch.linalg.qr` is
one batched call per piece. No padding: a block never mixes real and invented coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Piece",
    "as_matrices",
    "eigenbasis",
    "inverse_root",
    "merge",
    "pieces",
    "power_iteration_basis",
    "split",
    "stack_view",
]


@dataclass(frozen=True)
class Piece:
    """Rows r0:r1 × columns c0:c1 of each matrix, cut into rb×cb blocks of bm×bn."""

    r0: int
    r1: int
    c0: int
    c1: int
    bm: int
    bn: int

    @property
    def rb(self) -> int:
        return (self.r1 - self.r0) // self.bm

    @property
    def cb(self) -> int:
        return (self.c1 - self.c0) // self.bn

    @property
    def blocks(self) -> int:
        """Blocks per matrix."""
        return self.rb * self.cb


def _cuts(size: int, block: int) -> list[tuple[int, int, int]]:
    """(start, stop, block size) runs covering 0:size with blocks of at most `block`."""
    if size <= block:
        return [(0, size, size)]
    full = (size // block) * block
    runs = [(0, full, block)]
    if full < size:
        runs.append((full, size, size - full))
    return runs


def pieces(m: int, n: int, block: int) -> list[Piece]:
    """The pieces of an m×n matrix cut into blocks of at most block×block."""
    return [Piece(r0, r1, c0, c1, bm, bn) for r0, r1, bm in _cuts(m, block) for c0, c1, bn in _cuts(n, block)]


def as_matrices(x: Tensor) -> Tensor:
    """A stack (k, *shape) of ≥2-D tensors as matrices (k, shape[0], rest) (a view)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def split(x: Tensor, piece: Piece) -> Tensor:
    """The piece's blocks of a stack of matrices (k, m, n) as a batch (k·blocks, bm, bn)."""
    k = x.shape[0]
    sub = x[:, piece.r0 : piece.r1, piece.c0 : piece.c1]
    if piece.blocks == 1:
        return sub
    blocks = sub.reshape(k, piece.rb, piece.bm, piece.cb, piece.bn).permute(0, 1, 3, 2, 4)
    return blocks.reshape(k * piece.blocks, piece.bm, piece.bn)


def merge(out: Tensor, y: Tensor, piece: Piece) -> None:
    """Write a batch of blocks (k·blocks, bm, bn) back into its piece of `out` (k, m, n)."""
    k = out.shape[0]
    dst = out[:, piece.r0 : piece.r1, piece.c0 : piece.c1]
    if piece.blocks == 1:
        dst.copy_(y)
        return
    blocks = y.reshape(k, piece.rb, piece.cb, piece.bm, piece.bn).permute(0, 1, 3, 2, 4)
    dst.copy_(blocks.reshape(k, piece.r1 - piece.r0, piece.c1 - piece.c0))


def _eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """Batched symmetric eigendecomposition; retried in float64 if LAPACK does not converge."""
    sym = 0.5 * (a + a.mT)
    try:
        return torch.linalg.eigh(sym)
    except RuntimeError:  # torch.linalg.LinAlgError
        w, q = torch.linalg.eigh(sym.double())
        return w.to(a.dtype), q.to(a.dtype)


def inverse_root(factors: Tensor, root: float, eps: float) -> Tensor:
    """(F + ε·λ_max·I)^(−1/root) for each factor of a batch (B, d, d), by one batched eigh.

    The damping is relative to each factor's largest eigenvalue, so the preconditioner does
    not depend on the gradients' scale (grafting sets the step's size)."""
    w, q = _eigh(factors)
    w = w.clamp(min=0)
    top = w.amax(dim=-1, keepdim=True)
    w = (w + eps * top).clamp(min=torch.finfo(w.dtype).tiny) ** (-1.0 / root)
    return (q * w.unsqueeze(-2)) @ q.mT


def eigenbasis(factors: Tensor) -> Tensor:
    """Eigenvectors of each factor (B, d, d), columns by decreasing eigenvalue."""
    _, q = _eigh(factors)
    return q.flip(-1)


def power_iteration_basis(factors: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """SOAP's cheap basis refresh: one power iteration (F + δI)·Q and a QR, columns re-sorted
    by the current eigenvalue estimates diag(QᵀFQ). Returns the new basis and the sort order.

    δ (relative to the largest estimate, above rounding noise) keeps the directions a
    rank-deficient F does not see where they were, instead of letting the QR's completion of
    a null space follow rounding noise."""
    fq = factors @ q
    estimates = (q * fq).sum(dim=-2)
    d = factors.shape[-1]
    lift = min(max(64 * d * torch.finfo(fq.dtype).eps, 1e-8), 0.125)
    top = estimates.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(fq.dtype).tiny)
    fq = fq + (lift * top).unsqueeze(-1) * q
    order = torch.argsort(estimates, dim=-1, descending=True)
    fq = torch.take_along_dim(fq, order.unsqueeze(-2), dim=-1)
    q_new, _ = torch.linalg.qr(fq.float() if fq.dtype in (torch.float16, torch.bfloat16) else fq)
    return q_new.to(q.dtype), order


def stack_view(tensors: list[Tensor]) -> Tensor:
    """Equal-shape tensors lying back to back in one storage, as one view (k, *shape).

    The flat core packs a parameter group's tensors so; this reads them as a stack."""
    tensors = [t.detach() for t in tensors]
    t0 = tensors[0]
    n = t0.numel()
    ok = t0.is_contiguous() and all(
        t.shape == t0.shape and t.is_contiguous() and t.untyped_storage().data_ptr() == t0.untyped_storage().data_ptr()
        and t.storage_offset() == t0.storage_offset() + j * n
        for j, t in enumerate(tensors)
    )
    if not ok:
        raise RuntimeError("tensors are not back to back in one buffer; cannot view them as a stack")
    return t0.as_strided((len(tensors), *t0.shape), (n, *t0.stride()), t0.storage_offset())
