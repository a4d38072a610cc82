"""A small Vision Transformer: an image cut into non-overlapping `patch` x `patch` patches, each
embedded to `dim`, plus a learned position per patch; `depth` pre-norm blocks of multi-head
self-attention and a feed-forward (dim -> mlp_ratio * dim -> dim, the activation between);
mean pooling over the patches (no class token), a final norm and the classifier.

A gated activation (one that declares `in_per_out = 2`) gets twice its units from the layer
before it; with match_params the feed-forward's hidden units are cut so that it keeps the pointwise
one's parameters (Shazeer 2020: 2/3 of them, dim 64 and mlp_ratio 2 giving 85 instead of 128).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actbench.models import dropout_rate, matched_width, positive_ints


class Block(nn.Module):
    """x + attention(norm(x)), then x + feed-forward(norm(x)), with dropout after each; `causal`:
    each token attends to itself and those before it only (a language model's)."""

    def __init__(self, dim: int, heads: int, hidden: int, activation: Callable[[], nn.Module], dropout: float, match: bool,
                 causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        act = activation()
        g = getattr(act, "in_per_out", 1)
        hidden = matched_width(hidden, g, lambda h, g: (dim + 1) * g * h + (h + 1) * dim, match)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden * g), act, nn.Linear(hidden, dim))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.drop1(self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(b, t, d)))
        return x + self.drop2(self.ff(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int, patch: int = 7, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0,
                 match_params: bool = True):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"the ViT takes images [channels, height, width]; this data's examples are {tuple(input_shape)}: use model=mlp")
        c, h, w = input_shape
        positive_ints(patch=patch, dim=dim, depth=depth, heads=heads)
        if h % patch or w % patch:
            raise ValueError(f"patch={patch}: must divide the image's {h}x{w} pixels")
        if dim % heads:
            raise ValueError(f"heads={heads}: must divide dim={dim}")
        if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio={mlp_ratio!r}: must be a number > 0")
        dropout_rate(dropout)
        self.patch = patch
        self.embed = nn.Linear(c * patch * patch, dim)
        self.pos = nn.Embedding((h // patch) * (w // patch), dim)
        hidden = max(1, round(mlp_ratio * dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, activation, dropout, match_params) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch
        patches = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        z = self.embed(patches) + self.pos(torch.arange(patches.shape[1], device=x.device))
        return self.head(self.norm(self.blocks(z)).mean(1))
