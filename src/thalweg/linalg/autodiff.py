"""Hessian-vector products from a gradient graph, batched over many vectors, and the dense
Hessian built from them — the double-backward core under Newton, AdaHessian and curvature.

`grads` are ∇L with respect to `params`, computed with ``create_graph=True``. One product
H·v is ``torch.autograd.grad(grads, params, grad_outputs=v)``; a block of vectors goes through
one vmapped backward (``is_grads_batched``), falling back to a loop where an op has no
batching rule. Vectors are flat: the parameters' entries concatenated in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from thalweg.linalg.operators import OperatorBase

__all__ = ["GraphHessian", "dense_hessian", "flatten", "grad_graph", "grad_graph_reached", "hvp_from_graph", "unflatten"]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors' entries concatenated into one flat vector (the layout of every vector here)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vs: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of the flat vector(s) `vs` (..., n) shaped like each tensor of `like` (..., *shape)."""
    out, i = [], 0
    for p in like:
        n = p.numel()
        out.append(vs[..., i : i + n].reshape(*vs.shape[:-1], *p.shape))
        i += n
    return out


def grad_graph(loss: Tensor, params: Sequence[Tensor], *, create_graph: bool = True) -> list[Tensor]:
    """∇loss with respect to `params`, with its graph kept for Hessian-vector products
    (``torch.autograd.grad``, never ``backward(create_graph=True)``, which leaves a reference
    cycle through ``p.grad``); a parameter the loss does not use gets a zero gradient."""
    return grad_graph_reached(loss, params, create_graph=create_graph)[0]


def grad_graph_reached(loss: Tensor, params: Sequence[Tensor], *,
                       create_graph: bool = True) -> tuple[list[Tensor], list[bool]]:
    """:func:`grad_graph`, and which parameters the loss reaches at all (torch.optim's rule:
    a parameter that no gradient reached takes no part in a step)."""
    grads = torch.autograd.grad(loss, list(params), create_graph=create_graph, allow_unused=True)
    return ([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)],
            [g is not None for g in grads])


def _products(grads: Sequence[Tensor | None], params: Sequence[Tensor], live: list[int], vs: Tensor,
              *, retain_graph: bool, batched: bool) -> Tensor:
    parts = unflatten(vs, params)
    with torch.enable_grad():
        hv = torch.autograd.grad(
            [grads[i] for i in live], list(params), grad_outputs=[parts[i] for i in live],  # type: ignore[misc]
            retain_graph=retain_graph, allow_unused=True, is_grads_batched=batched,
        )
    lead = vs.shape[:-1]
    return torch.cat([
        torch.zeros((*lead, p.numel()), dtype=vs.dtype, device=vs.device) if h is None
        else h.detach().reshape(*lead, -1)
        for p, h in zip(params, hv, strict=True)
    ], dim=-1)


def hvp_from_graph(
    grads: Sequence[Tensor | None],
    params: Sequence[Tensor],
    vs: Tensor,
    *,
    retain_graph: bool = True,
    chunk: int | None = None,
) -> Tensor:
    """H·v for a flat vector `vs` of length n, or H·vᵢ for each row of an (k, n) block.

    A block is differentiated `chunk` rows at a time (all at once when None) in one vmapped
    backward each. Gradients that are None or constant (no graph: that part of H is zero)
    are skipped. ``retain_graph=False`` frees the graph after a single product; blocks
    always keep it (a failed vmapped pass must be able to retry row by row).
    """
    params = list(params)
    n = sum(p.numel() for p in params)
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    if vs.ndim not in (1, 2) or vs.shape[-1] != n:
        raise ValueError(f"vs must have shape ({n},) or (k, {n}); got {tuple(vs.shape)}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:
        return torch.zeros(vs.shape, dtype=vs.dtype, device=vs.device)
    if vs.ndim == 1:
        return _products(grads, params, live, vs, retain_graph=retain_graph, batched=False)
    step = max(1, len(vs)) if chunk is None else chunk
    blocks = []
    for s in range(0, len(vs), step):
        block = vs[s : s + step]
        try:
            blocks.append(_products(grads, params, live, block, retain_graph=True, batched=True))
        except RuntimeError:  # an op without a batching rule: one product per row
            blocks.append(torch.stack([_products(grads, params, live, row, retain_graph=True, batched=False)
                                       for row in block]))
    return torch.cat(blocks) if blocks else vs.new_zeros(vs.shape)


def dense_hessian(
    grads: Sequence[Tensor | None],
    params: Sequence[Tensor],
    *,
    chunk: int = 256,
    symmetrize: bool = True,
) -> Tensor:
    """The exact n×n Hessian, column j = H·eⱼ, from n products batched `chunk` at a time.

    ``symmetrize`` returns ½(H + Hᵀ), removing the rounding asymmetry of the products.
    """
    p0 = params[0]
    n = sum(p.numel() for p in params)
    eye = torch.eye(n, dtype=p0.dtype, device=p0.device)
    h = hvp_from_graph(grads, params, eye, chunk=chunk).T  # row j of the products is H·eⱼ
    return 0.5 * (h + h.T) if symmetrize else h.contiguous()


class GraphHessian(OperatorBase):
    """The Hessian behind a gradient graph as a `LinearOperator` (products keep the graph)."""

    def __init__(self, grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> None:
        self.grads, self.params = list(grads), list(params)
        if not self.params or len(self.grads) != len(self.params):
            raise ValueError(f"need one gradient per parameter; got {len(self.grads)} for {len(self.params)}")
        super().__init__(sum(p.numel() for p in self.params), self.params[0].dtype, self.params[0].device)

    def _matvec(self, v: Tensor) -> Tensor:
        return hvp_from_graph(self.grads, self.params, v)

    def _matmat(self, V: Tensor) -> Tensor:
        return hvp_from_graph(self.grads, self.params, V.T).T  # one vmapped backward

    def dense(self, *, chunk: int = 256) -> Tensor:
        """The symmetrized dense Hessian (n products)."""
        self.num_matvecs += self.dim
        return dense_hessian(self.grads, self.params, chunk=chunk)
