"""The bench's language model: a small decoder-only transformer (nanoGPT's shape: token and
position embeddings, pre-norm blocks of causal self-attention and a GELU MLP, a final norm and
an untied output head) trained on characters of the text that ships with Python
(`pydoc_data.topics`, the help topics: ~465 k characters), so it needs no download.

The split is fixed: the topics in sorted order, the first 90 % of the characters train, the
last 10 % validate (a fixed set of windows, the same for every trial). The metric is the
validation loss in nats per character.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thalweg.bench.tasks.problems import Problem, Workload, builtin, doc

__all__ = ["CharTransformer", "char_lm", "text_splits"]

VAL_SHARE = 0.1


@lru_cache(maxsize=1)
def text_splits() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(train ids, validation ids, vocabulary): the characters of `pydoc_data.topics`."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    vocab = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = round(len(ids) * (1 - VAL_SHARE))
    return ids[:cut], ids[cut:], vocab


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """A decoder-only character model; `forward(ids)` (N, T) → logits (N, T, vocab)."""

    def __init__(self, vocab: int, context: int = 64, d: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d ({d}) must be a multiple of heads ({heads})")
        self.context = context
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.Sequential(*(Block(d, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)  # last: Muon's name split keeps it on AdamW
        for name, p in self.named_parameters():  # GPT-2's initialization
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.ln(self.blocks(x)))


def _windows(ids: torch.Tensor, context: int, n: int) -> torch.Tensor:
    """`n` evenly spaced windows of context + 1 characters (inputs and shifted targets)."""
    starts = torch.linspace(0, len(ids) - context - 2, n).round().long()
    return torch.stack([ids[s : s + context + 1] for s in starts.tolist()])


@builtin("char_lm")
def char_lm(context: int = 64, d: int = 64, layers: int = 2, heads: int = 4, batch_size: int = 16,
            val_windows: int = 128) -> Workload:  # fmt: skip
    """A decoder-only transformer (2 layers, d = 64, 4 heads, context 64) on the characters of
    Python's own help text (`pydoc_data.topics`, 90/10 split); metric: validation loss (nats/char)."""
    for name, v in (("context", context), ("d", d), ("layers", layers), ("heads", heads),
                    ("batch_size", batch_size), ("val_windows", val_windows)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if context > 4096 or d > 4096 or layers > 64 or batch_size > 4096 or val_windows > 100_000:
        raise ValueError("char_lm is a small benchmark: context, d ≤ 4096, layers ≤ 64, batch_size ≤ 4096")

    def build(seed: int) -> Problem:
        train, val, vocab = text_splits()
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = CharTransformer(len(vocab), context, d, layers, heads)
        held = _windows(val, context, val_windows)

        def batches() -> Iterator[torch.Tensor]:
            while True:
                starts = torch.randint(0, len(train) - context - 1, (batch_size,), generator=g)
                yield torch.stack([train[s : s + context + 1] for s in starts.tolist()])

        def loss(batch: torch.Tensor) -> torch.Tensor:
            logits = model(batch[:, :-1])
            return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

        @torch.no_grad()
        def evaluate() -> dict[str, float]:
            was = model.training
            model.eval()
            total = 0.0
            for chunk in held.split(64):
                logits = model(chunk[:, :-1])
                total += float(F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"))
            model.train(was)
            v = total / (len(held) * context)
            return {"val_loss": v, "val_bits_per_char": v / math.log(2)}

        steps = max(1, len(train) // (batch_size * context))
        return Problem(model=model, loss=loss, batches=batches(), evaluate=evaluate, steps_per_epoch=steps)

    return Workload("char_lm", build, metric="val_loss", mode="min", step_budget=600, max_seconds=600.0,
                    eval_every=20, description=doc(char_lm))  # fmt: skip


def describe_data() -> dict[str, Any]:
    """Sizes of the split (for the docs)."""
    train, val, vocab = text_splits()
    return {"train_chars": len(train), "val_chars": len(val), "vocab": len(vocab)}
