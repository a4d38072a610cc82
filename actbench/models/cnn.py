"""The ConvNet: per entry of `channels` a 3x3 convolution (padding 1), batch norm (norm=batch),
the activation and 2x2 max-pooling; then a dense layer of `width` (batch norm, the activation,
dropout) and the classifier.

Gated activations are refused: a convolution's units are its channels (dim 1), which a gated
unit would have to split, and the ConvNet keeps to pointwise ones.

With batch norm, the layers it follows have no bias: batch norm's shift takes its place, and a
bias it cancels would get a gradient of pure rounding noise, which Adam turns into full steps.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from actbench.models import dropout_rate, positive_ints

NORMS = ("none", "batch")


class ConvNet(nn.Module):
    def __init__(self, activation: Callable[[], nn.Module], input_shape, n_classes: int,
                 channels=(16, 32), width: int = 128, norm: str = "none", dropout: float = 0.0):
        super().__init__()
        if not (isinstance(channels, (list, tuple)) and channels and all(isinstance(c, int) and c >= 1 for c in channels)):
            raise ValueError(f"channels={channels!r}: must be a non-empty list of integers >= 1, e.g. [16,32]")
        positive_ints(width=width)
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}: must be one of {', '.join(NORMS)}")
        dropout_rate(dropout)
        if len(input_shape) != 3:
            raise ValueError(f"the ConvNet takes images [channels, height, width]; this data's examples are {tuple(input_shape)}: "
                             "use model=mlp, or model=cnn1d for signals")
        acts = [activation() for _ in range(len(channels) + 1)]
        if getattr(acts[0], "in_per_out", 1) != 1:
            raise ValueError("a gated activation does not fit the ConvNet (its convolutions' units are channels, which "
                             "it would have to split): use model=mlp or model=vit")
        c, h, w = input_shape
        batch = norm == "batch"
        layers: list[nn.Module] = []
        for out, act in zip(channels, acts):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=not batch), *([nn.BatchNorm2d(out)] if batch else []),
                       act, nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"channels={list(channels)}: {len(channels)} poolings leave nothing of a {input_shape[1]}x{input_shape[2]} image")
        layers += [nn.Flatten(), nn.Linear(c * h * w, width, bias=not batch), *([nn.BatchNorm1d(width)] if batch else []),
                   acts[-1], *([nn.Dropout(dropout)] if dropout else []), nn.Linear(width, n_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
