"""MNIST-1D's ConvNet (Greydanus 2020, the paper's "ConvBase"): three 1-D convolutions of
`channels` (kernel 5, then 3 and 3; stride 2, padding 1), each followed by the activation, then
the classifier on the flattened maps (for 40 values: 25 channels x 5 positions = 125 inputs)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from actbench.models import positive_ints


class ConvNet1D(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int, channels: int = 25):
        super().__init__()
        positive_ints(channels=channels)
        if len(input_shape) != 2:
            raise ValueError(f"a 1-D ConvNet takes signals [channels, length]; this data's examples are {tuple(input_shape)}: use data=mnist1d")
        acts = [activation() for _ in range(3)]
        if getattr(acts[0], "in_per_out", 1) != 1:
            raise ValueError("a gated activation does not fit the 1-D ConvNet (its units are channels): use model=mlp")
        c, length = input_shape
        layers: list[nn.Module] = []
        for kernel, act in zip((5, 3, 3), acts):
            layers += [nn.Conv1d(c, channels, kernel, stride=2, padding=1), act]
            c, length = channels, (length + 2 - kernel) // 2 + 1
        if length < 1:
            raise ValueError(f"a 1-D ConvNet's three strided convolutions leave nothing of a signal of {input_shape[1]}")
        self.layers = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * length, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
