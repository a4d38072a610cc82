"""Test-only models, named by runs through `model._target_=models.<Class>` (tests/ on PYTHONPATH)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from actbench.checks import POSITIVE_INT
from actbench.model import PackedMLP


class Blocks(PackedMLP):
    """The MLP under a key of its own, with its own rule: a model states what its keys must be."""

    RULES = {**PackedMLP.RULES, "blocks": POSITIVE_INT}

    def __init__(self, seeds, activation, blocks: int = 1, **kw):
        super().__init__(seeds, activation, depth=blocks, **kw)


class Broken(PackedMLP):
    """A model whose constructor fails: the run must be recorded as failed, with the reason."""

    def __init__(self, seeds, activation, **kw):
        raise RuntimeError("planted model failure")


# ---------------------------------------------------------------- plain PyTorch models, packed by actbench


class NormNet(nn.Module):
    """Dense layers with batch norm, dropout and LayerNorm: every kind of per-member state."""

    def __init__(self, activation, input_shape, n_classes, width: int = 16, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.BatchNorm1d(width), activation(),
                                  nn.Dropout(dropout), nn.Linear(width, width), nn.LayerNorm(width), activation())
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class TinyTransformer(nn.Module):
    """Image rows as tokens: a linear embedding, learned positions, one pre-norm block of causal
    attention (F.scaled_dot_product_attention) and a feed-forward, mean pooling."""

    def __init__(self, activation, input_shape, n_classes, dim: int = 16, heads: int = 2):
        super().__init__()
        rows, cols = input_shape[-2:]
        self.heads = heads
        self.embed, self.pos = nn.Linear(cols, dim), nn.Embedding(rows, dim)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.ff = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), activation(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        x = x.flatten(1, -2)  # [B, rows, cols]
        b, t, _ = x.shape
        h = self.embed(x) + self.pos(torch.arange(t, device=x.device))
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1))
        h = h + self.ff(self.norm2(h))
        return self.head(h.mean(1))


class OwnParameter(nn.Module):
    """A parameter used beside sub-layers: a pack cannot hold it."""

    def __init__(self, activation, input_shape, n_classes):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.layer = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes))

    def forward(self, x):
        return self.layer(x) * self.scale
