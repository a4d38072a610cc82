"""A small GPT (nanoGPT's model, in the size of its `shakespeare_char` configs): token and position
embeddings, `depth` pre-norm blocks of causal self-attention and a feed-forward (dim ->
mlp_ratio * dim -> dim, the activation between), a final norm and the next-token classifier,
whose weight is the token embedding's where `tie_weights` (as nanoGPT's).

Its input is a window of token ids [B, T] and its output a prediction per position [B, T, vocab].
A gated activation gets twice its units from the layer before it; with match_params the
feed-forward's hidden units are cut to keep the pointwise one's parameters (Shazeer 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from actbench.models import dropout_rate, positive_ints
from actbench.models.vit import Block


class Embedding(nn.Embedding):
    """nn.Embedding started as GPT-2's, N(0, 0.02): torch's N(0, 1) would drown the tokens in their
    positions and, through a tied classifier, start every prediction far from uniform."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)


class GPT(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int, dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, tie_weights: bool = True, match_params: bool = True):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"the GPT takes windows of token ids [length]; this data's examples are {tuple(input_shape)}: "
                             "use data=shakespeare_char")
        positive_ints(dim=dim, depth=depth, heads=heads)
        if dim % heads:
            raise ValueError(f"heads={heads}: must divide dim={dim}")
        if not (isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0):
            raise ValueError(f"mlp_ratio={mlp_ratio!r}: must be a number > 0")
        if not isinstance(tie_weights, bool):
            raise ValueError(f"tie_weights={tie_weights!r}: must be true or false")
        dropout_rate(dropout)
        self.tokens, self.pos = Embedding(n_classes, dim), Embedding(input_shape[0], dim)
        self.drop = nn.Dropout(dropout)
        hidden = max(1, round(mlp_ratio * dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, activation, dropout, match_params, causal=True) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, n_classes, bias=False)
        if tie_weights:
            self.head.weight = self.tokens.weight

    def forward(self, idx: Tensor) -> Tensor:
        z = self.tokens(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.norm(self.blocks(self.drop(z))))
