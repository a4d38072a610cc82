"""The ConvNet: K small convolutional nets for 28x28 images, one per packed member, as one module.

    [3x3 convolution (padding 1) -> batch norm (norm=batch) -> activation -> 2x2 max-pooling] per
    entry of `channels`, then a dense layer of `width` -> batch norm -> activation -> dropout,
    then the classifier.

With batch norm, the layers it follows have no bias: batch norm's shift takes its place, and a
bias it cancels would get a gradient of pure rounding noise, which Adam turns into full steps.

Packed as grouped convolutions: the members' images sit side by side as channel groups of one
batch [B, K*C, H, W], a convolution with groups=K gives each member its own kernels (weight
[K*out, in, 3, 3], member k's rows k*out..(k+1)*out: a lone member's is nn.Conv2d's), and batch
norm over those K*C channels computes each member's own batch statistics, exactly as a lone run
does. The dense layers are the MLP's packed products.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actbench.activations import PerMember
from actbench.checks import POSITIVE_INT, is_int
from actbench.data import INPUT_SHAPE, N_CLASSES, generator
from actbench.model import PackedNet, copy_into, init_layer, linear

NORMS = ("none", "batch")
BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm's defaults


class PackedConvNet(PackedNet):
    RULES = {
        **PackedNet.RULES,
        "channels": (lambda v: isinstance(v, list) and bool(v) and all(is_int(c) and c >= 1 for c in v),
                     "a non-empty list of integers >= 1, e.g. [16,32]"),
        "width": POSITIVE_INT,
        "norm": (lambda v: v in NORMS, f"one of {', '.join(NORMS)}"),
    }
    EVAL_BATCH = 500  # a 5000-image batch's feature maps (250 MB) run at a third of the speed of ten of 500
    # members of different activations pack only where that pays: here each activation's share of
    # a feature map is a slice to split off and put back, which costs more than packing saves
    # (15 members of five activations: 7.0 ms a member and step, apart 6.0; of one: 3.5)
    MIXES_ACTIVATIONS = False

    def __init__(
        self,
        seeds: list[int],
        activation: Callable[[Tensor], Tensor],
        channels=(16, 32),
        width: int = 128,
        norm: str = "none",
        init: str = "torch",
        dropout: float = 0.0,
        input_shape=INPUT_SHAPE,
        n_classes: int = N_CLASSES,
    ):
        super().__init__(seeds, activation, dropout)
        if norm not in NORMS:
            raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {norm!r}")
        k, (c, h, w) = len(self.seeds), input_shape
        self.channels, self.norm, self.init = [int(ch) for ch in channels], norm, init
        biased = norm == "none"
        self.conv_w, self.conv_b = nn.ParameterList(), nn.ParameterList()
        for out in self.channels:
            self.conv_w.append(nn.Parameter(torch.empty(k * out, c, 3, 3)))
            if biased:
                self.conv_b.append(nn.Parameter(torch.empty(k * out)))
            c, h, w = out, h // 2, w // 2
        for kernel in self.conv_w:
            kernel.data = kernel.data.to(memory_format=torch.channels_last)  # .to, not .contiguous: one input channel is ambiguous
        self.flat = c * h * w
        self.dense_w = nn.ParameterList([nn.Parameter(torch.empty(k * width, self.flat)), nn.Parameter(torch.empty(k * n_classes, width))])
        # the hidden dense layer's bias (without batch norm), then the classifier's
        self.dense_b = nn.ParameterList([nn.Parameter(torch.empty(k * o)) for o in ([width] if biased else []) + [n_classes]])
        # batch norm before each activation: its scale and shift per member and channel, and its running statistics
        self.bn_w, self.bn_b = nn.ParameterList(), nn.ParameterList()
        if norm == "batch":
            for i, units in enumerate([*self.channels, width]):
                self.bn_w.append(nn.Parameter(torch.ones(k * units)))
                self.bn_b.append(nn.Parameter(torch.zeros(k * units)))
                self.register_buffer(f"bn_mean{i}", torch.zeros(k * units))
                self.register_buffer(f"bn_var{i}", torch.ones(k * units))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for k, seed in enumerate(self.seeds):
            gen = generator(seed, "init")
            for w, b in self._layers():
                init_layer(self.per_seed(w)[k], None if b is None else self.per_seed(b)[k], self.init, gen)

    def _layers(self) -> list[tuple[Tensor, Tensor | None]]:
        """(weight, bias or None) of every layer: the convolutions, the hidden dense one, the classifier."""
        biases = [*self.conv_b, *self.dense_b] if self.norm == "none" else [None] * (len(self.conv_w) + 1) + [self.dense_b[-1]]
        return list(zip([*self.conv_w, *self.dense_w], biases))

    # ---------------------------------------------------------------- forward

    def _batch_norm(self, z: Tensor, i: int) -> Tensor:
        """z [B, K*units, ...]: each member's channels normalised by their own batch statistics."""
        if self.norm != "batch":
            return z
        return F.batch_norm(z, getattr(self, f"bn_mean{i}"), getattr(self, f"bn_var{i}"), self.bn_w[i], self.bn_b[i],
                            self.training, BN_MOMENTUM, BN_EPS)

    def _act(self, z: Tensor, record: list | None) -> Tensor:
        """The activation of z laid out [B, K*C, H, W] (members as channel groups); `record`
        gets (z, f(z)) with the members first, [K, B, C, H, W], as the probes read them."""
        k, b = self.n_seeds, z.shape[0]
        src = z.clone() if record is not None else z  # an in-place activation must not overwrite what is recorded
        if isinstance(self.activation, PerMember):  # each member's own, on its group of channels,
            # in NCHW, where a member's channels are one block per image (in channels-last they
            # interleave, and the split costs twice as much)
            h = self.activation(src.contiguous(), dim=1, per_member=z.shape[1] // k).contiguous(memory_format=torch.channels_last)
        else:
            h = self.activation(src)
        grouped = z.view(b, k, -1, *z.shape[2:])  # [B, K, C, H, W], a view
        if record is not None:
            record.append((grouped.transpose(0, 1), h.view(b, k, -1, *z.shape[2:]).transpose(0, 1)))
        return h

    def forward(self, x: Tensor, record: list | None = None) -> Tensor:
        """x [K, B, C, H, W] (or a lone member's [B, C, H, W]) -> logits [K, B, classes]
        ([B, classes])."""
        lone = x.dim() == 4
        k = self.n_seeds
        h = x if lone else x.transpose(0, 1).reshape(x.shape[1], k * x.shape[2], *x.shape[3:])  # [B, K*C, H, W]
        h = h.to(memory_format=torch.channels_last)  # oneDNN's fast layout (1.5x a step on a CPU), as the kernels are
        *convs, (dense_w, dense_b), (out_w, out_b) = self._layers()
        for i, (w, b) in enumerate(convs):
            z = self._batch_norm(F.conv2d(h, w, b, padding=1, groups=k), i)
            h = F.max_pool2d(self._act(z, record), 2)
        batch = h.shape[0]
        h = h.reshape(batch, -1) if lone else h.reshape(batch, k, self.flat).transpose(0, 1)  # [B, flat] / [K, B, flat]
        z = linear(h, dense_w, dense_b)
        if self.norm == "batch":  # members' units as channels of one [B, K*width] batch
            z = (self._batch_norm(z, len(self.channels)) if lone
                 else self._batch_norm(z.transpose(0, 1).reshape(batch, -1), len(self.channels)).view(batch, k, -1).transpose(0, 1))
        h = self.activation(z.clone() if record is not None else z)
        if record is not None:
            record.append((z.unsqueeze(0), h.unsqueeze(0)) if lone else (z, h))
        return linear(self.drop(h), out_w, out_b)

    # ---------------------------------------------------------------- facts

    def probe_weights(self) -> list[Tensor]:
        return [*self.conv_w, *self.dense_w]

    def member(self, k: int) -> nn.Sequential:
        act, norm = self.member_activation(k), self.norm == "batch"
        *convs, (dense_w, dense_b), (out_w, out_b) = self._layers()

        def own(t: Tensor | None) -> Tensor | None:
            return None if t is None else self.per_seed(t)[k]

        def bn(cls, i: int) -> list[nn.Module]:
            if not norm:
                return []
            m = copy_into(cls(own(self.bn_w[i]).numel(), momentum=BN_MOMENTUM, eps=BN_EPS), own(self.bn_w[i]), own(self.bn_b[i]))
            m.running_mean.copy_(own(getattr(self, f"bn_mean{i}")))
            m.running_var.copy_(own(getattr(self, f"bn_var{i}")))
            return [m]

        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(convs):
            w_k = own(w)
            conv = nn.Conv2d(w_k.shape[1], w_k.shape[0], 3, padding=1, bias=b is not None)
            layers += [copy_into(conv, w_k, own(b)), *bn(nn.BatchNorm2d, i), act, nn.MaxPool2d(2)]
        w_k, o_k = own(dense_w), own(out_w)
        layers += [nn.Flatten(), copy_into(nn.Linear(w_k.shape[1], w_k.shape[0], bias=dense_b is not None), w_k, own(dense_b)),
                   *bn(nn.BatchNorm1d, len(convs)), act, *([nn.Dropout(self.dropout)] if self.dropout > 0 else []),
                   copy_into(nn.Linear(o_k.shape[1], o_k.shape[0]), o_k, own(out_b))]
        return nn.Sequential(*layers)

    @classmethod
    def hparams(cls, cfg) -> dict:
        return {"model": "cnn", "channels": "-".join(str(int(c)) for c in cfg.channels), "width": int(cfg.width),
                "norm": str(cfg.norm), "init": str(cfg.init), "dropout": float(cfg.dropout)}

    @classmethod
    def _shapes(cls, cfg, input_shape) -> tuple[list[tuple[int, int, int]], int]:
        """(the (in, out, positions) of each convolution, the flattened size after the last pooling)."""
        c, h, w = input_shape
        convs = []
        for out in (int(ch) for ch in cfg.channels):
            convs.append((c, out, h * w))
            c, h, w = out, h // 2, w // 2
        return convs, c * h * w

    @classmethod
    def n_params(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        convs, flat = cls._shapes(cfg, input_shape)
        width = int(cfg.width)
        units = sum(o for _, o, _ in convs) + width  # a bias each, or batch norm's scale and shift
        per_unit = 2 if cfg.norm == "batch" else 1
        return sum(i * o * 9 for i, o, _ in convs) + flat * width + width * n_classes + n_classes + per_unit * units

    @classmethod
    def flops_per_sample(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        convs, flat = cls._shapes(cfg, input_shape)
        return 2 * (sum(i * o * 9 * p for i, o, p in convs) + flat * int(cfg.width) + int(cfg.width) * n_classes)

    @classmethod
    def bytes_per_member(cls, cfg, rows: int, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        convs, _ = cls._shapes(cfg, input_shape)
        # per example: the input, and z, f(z) and the pooled map (or f'(z), for probes) of every block
        per_row = math.prod(input_shape) + sum(3 * o * p for _, o, p in convs) + 3 * int(cfg.width) + 2 * n_classes
        return 4 * (4 * cls.n_params(cfg, input_shape, n_classes) + rows * per_row)
