"""The MLP: input -> width x depth -> classes, the blog's with one hidden layer of 128."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from actbench.models import dropout_rate, positive_ints


class MLP(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int,
                 depth: int = 1, width: int = 128, dropout: float = 0.0):
        super().__init__()
        positive_ints(depth=depth, width=width)
        dropout_rate(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        size = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(size, width), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            size = width
        self.layers = nn.Sequential(*layers, nn.Linear(size, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
