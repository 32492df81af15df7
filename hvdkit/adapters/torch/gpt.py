"""A GPT-style decoder-only transformer in PyTorch, the same architecture and parameter count
as hvdkit/adapters/tensorflow/gpt.py.

Token ids (N, T) → logits over the vocabulary (N, T, V). The top-level children are what a
pipeline cuts: `Embeddings` (token + position, dropout), one `Block` per layer (pre-norm causal
self-attention and a 4x MLP, each on a residual branch), and `Head` (final layer norm and the
output projection, tied to the token embedding). `Head.weight` *is* the token embedding's
Parameter, so one process holds it once (`parameters()` deduplicates) and autograd sums both
uses' gradients; a pipeline that puts the embeddings and the head on different stages keeps a
copy on each and sums their gradients between those stages (see hvdkit.parallel.tied).
Initialisation follows GPT-2: normal(0, 0.02), residual projections scaled by 1/sqrt(2·layers).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hvdkit.adapters.torch.models import MODELS
from hvdkit.config import ModelConfig
from hvdkit.models.catalogue import check_sequences

STD = 0.02
LN_EPS = 1e-5


def linear(c_in: int, c_out: int, std: float = STD) -> nn.Linear:
    layer = nn.Linear(c_in, c_out)
    nn.init.normal_(layer.weight, 0.0, std)
    nn.init.zeros_(layer.bias)
    return layer


class Embeddings(nn.Module):
    def __init__(self, vocab: int, block_size: int, width: int, dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(block_size, width)
        for table in (self.tok, self.pos):
            nn.init.normal_(table.weight, 0.0, STD)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.tok(idx) + self.pos(positions))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)); causal: position t sees 0..t."""

    def __init__(self, width: int, heads: int, dropout: float, layers: int) -> None:
        super().__init__()
        residual_std = STD / math.sqrt(2 * layers)
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(width, eps=LN_EPS)
        self.qkv = linear(width, 3 * width)
        self.proj = linear(width, width, residual_std)
        self.ln2 = nn.LayerNorm(width, eps=LN_EPS)
        self.fc = linear(width, 4 * width)
        self.fc2 = linear(4 * width, width, residual_std)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, t, w = x.shape
        q, k, v = (z.view(n, t, self.heads, w // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(w, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, t, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.ln1(x)))
        return x + self.drop(self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class Head(nn.Module):
    """Final layer norm, then logits = x · Eᵀ with E the token embedding (tied)."""

    def __init__(self, tok: nn.Embedding, width: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(width, eps=LN_EPS)
        self.weight = tok.weight  # the same Parameter: registered here and in Embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln(x), self.weight)


@MODELS.register("gpt")
def gpt(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Sequences of `input_shape` = (T,) token ids below `num_classes` (the vocabulary)."""
    check_sequences(config, input_shape)
    embeddings = Embeddings(num_classes, config.block_size, config.width, config.dropout)
    blocks = [Block(config.width, config.heads, config.dropout, config.layers)
              for _ in range(config.layers)]
    return nn.Sequential(embeddings, *blocks, Head(embeddings.tok, config.width))

