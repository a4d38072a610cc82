"""The MLP: input -> width x depth -> classes, the blog's with one hidden layer of 128.

With `residual`, every hidden layer after the first adds its input to its output (MNIST-1D's
MLP, 40-256-256-10, has its second layer residual).

A gated activation (`in_per_out = 2`) gets twice its units from the layer before; with
match_params its width is cut so that the MLP has the pointwise one's parameters (784-128-10
with a gated unit: 64 units, not 128 or 85)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from actbench.models import dropout_rate, matched_width, positive_ints


class MLP(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int,
                 depth: int = 1, width: int = 128, dropout: float = 0.0, match_params: bool = True, residual: bool = False):
        super().__init__()
        positive_ints(depth=depth, width=width)
        dropout_rate(dropout)
        if not isinstance(residual, bool):
            raise ValueError(f"residual={residual!r}: must be true or false")
        layers: list[nn.Module] = [nn.Flatten()]
        size = math.prod(input_shape)
        acts = [activation() for _ in range(depth)]
        g = getattr(acts[0], "in_per_out", 1)
        width = matched_width(width, g, lambda w, g: (size + 1) * g * w + (depth - 1) * (w + 1) * g * w + (w + 1) * n_classes, match_params)
        self.blocks: list[tuple[int, int]] = []  # each hidden layer's span in self.layers
        for act in acts:
            start = len(layers)
            layers += [nn.Linear(size, width * g), act]
            if dropout:
                layers.append(nn.Dropout(dropout))
            self.blocks.append((start, len(layers)))
            size = width
        self.layers = nn.Sequential(*layers, nn.Linear(size, n_classes))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        if not self.residual:
            return self.layers(x)
        h = self.layers[0](x)
        for i, (start, end) in enumerate(self.blocks):
            out = h
            for j in range(start, end):  # not self.layers[start:end]: a new Sequential at every step
                out = self.layers[j](out)
            h = out + h if i else out  # every hidden layer but the first adds its input
        return self.layers[-1](h)
