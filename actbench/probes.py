"""The probes: callbacks that measure the blog's claims while a pack of seeds trains.

This module owns what is measured about a network beside its loss and accuracy: dead units,
saturation and the mean activation derivative per hidden layer, pre-activation and activation
histograms (`ActivationProbe`), and per-layer weight-gradient norms with the first-over-last
ratio (`GradientProbe`). The measurements are small pure functions of tensors (`probe_forward`,
`unit_stats`, `layer_stats`, `grad_norms`, `grad_ratio`) that the thin Lightning callbacks call;
everything is per seed, with a leading K dimension, never pooled across seeds.

Derivatives come from autograd (`actbench.activations.derivative`), so any activation, a
user's own included, is probed without extra code. The callbacks write their epoch values into
`pl_module.epoch_log` (the `Recorder`, which runs after them, puts those in TensorBoard and in
metrics.json's `probes` section); histograms and per-sample gradient norms go straight to each
seed's TensorBoard writer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from actbench.activations import derivative
from actbench.conf import option
from actbench.tags import ACT, ACT_PARAM, DACT_MEAN, DEAD, GRAD_NORM_STEP, GRAD_RATIO, GRAD_RATIO_STEP, PREACT, SATURATED, grad_norm_tag, layer_tag

# |f'(z)| at or below DEAD_TOL on every probe example: the unit is dead; below SATURATION_TOL:
# saturated. Set, with why, in conf/probes/default.yaml; functions called outside a run default to them.
DEAD_TOL, SATURATION_TOL = (float(option("probes")["activations"][k]) for k in ("dead_tol", "saturation_tol"))


# ---------------------------------------------------------------- pure measurements


@torch.no_grad()
def probe_forward(net: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor, nn.Module]]:
    """(z, f(z), the place) of every hidden activation for inputs x [K, n, ...], in eval mode (no
    dropout, batch norm with its running statistics); the net's previous mode is restored. Each z
    and f(z) is [K, n, units] for a dense layer, [K, n, channels, height, width] for a
    convolution; the place (actbench.packer.Site) gives its members' activation as a function."""
    was_training = net.training
    net.eval()
    try:
        record: list[tuple[Tensor, Tensor, nn.Module]] = []
        net(x, record=record)
    finally:
        net.train(was_training)
    return record


def unit_stats(
    fn: Callable[[Tensor], Tensor], z: Tensor, dead_tol: float = DEAD_TOL, saturation_tol: float = SATURATION_TOL,
    channels_first: bool = True, per_out: int = 1, gate: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One hidden layer's statistics from its pre-activations z [K, n, units], for a convolution
    [K, n, channels, height, width], or, with channels_first=False, token-shaped [K, n, tokens,
    units]; each value is [K]:

    - `dead`: fraction of units (channels) with |f'(z)| <= dead_tol for every one of the n
      examples (and every position of a channel, every token of a unit);
    - `saturated`: fraction of (unit, example) pairs, or (channel, position, example), with
      |f'(z)| < saturation_tol;
    - `dact_mean`: mean |f'(z)| over all of them.

    A gated unit (`per_out` inputs per output along the last dimension, z [..., per_out * units])
    is dead when the derivative of its output by every one of its inputs is <= dead_tol on every
    example; `saturated` and `dact_mean` are its gate's, f' taken at the first chunk by `gate`
    (NaN where the activation names no gate).
    """
    d = derivative(fn, z).abs()
    g = d
    if per_out > 1:
        d = d.unflatten(-1, (per_out, -1)).amax(-2)  # a unit's largest derivative by any of its inputs
        g = derivative(gate, z.unflatten(-1, (per_out, -1)).select(-2, 0)).abs() if gate else torch.full_like(d, math.nan)

    def by_unit(t: Tensor) -> Tensor:  # [K, n, units or channels, positions (1 for a dense layer)]
        if not channels_first and t.dim() > 3:
            t = t.movedim(-1, 2)  # the units before the tokens they are counted over
        return t.reshape(*t.shape[:3], -1)

    d, g = by_unit(d), by_unit(g)
    return {
        DEAD: (d <= dead_tol).all(dim=3).all(dim=1).float().mean(dim=1),
        SATURATED: (g < saturation_tol).float().mean(dim=(1, 2, 3)) if per_out == 1 or gate else g[:, 0, 0, 0],
        DACT_MEAN: g.mean(dim=(1, 2, 3)),
    }


def layer_stats(record: list, dead_tol: float = DEAD_TOL, saturation_tol: float = SATURATION_TOL) -> dict[str, Tensor]:
    """`unit_stats` of every hidden layer of a `probe_forward` record, each with its own place's
    activation, under the TensorBoard tags `probes/dead/layer{i}`, `probes/saturated/layer{i}`,
    `probes/dact_mean/layer{i}` (i from 1, in the record's order), each [K]."""
    out = {}
    for i, (z, _, site) in enumerate(record, start=1):
        stats = unit_stats(site.as_function(), z, dead_tol, saturation_tol, site.channels_first, site.per_out, site.gate_function())
        for name, value in stats.items():
            out[layer_tag(name, i)] = value
    return out


def activation_parameters(record: list) -> dict[str, Tensor]:
    """The learned values of every learnable activation in a `probe_forward` record, per member
    [K]: `probes/act_{name}/layer{i}` for one value per place (PReLU's slope, a learned beta),
    `probes/act_{name}_{mean,min,max}/layer{i}` for several (a PReLU per channel)."""
    out = {}
    for i, (z, _, site) in enumerate(record, start=1):
        for name, p in site.named_parameters():
            per = p.detach().float().view(z.shape[0], -1)  # [K, values]
            if per.shape[1] == 1:
                out[layer_tag(f"{ACT_PARAM}_{name}", i)] = per[:, 0]
            else:
                for stat, value in (("mean", per.mean(1)), ("min", per.amin(1)), ("max", per.amax(1))):
                    out[layer_tag(f"{ACT_PARAM}_{name}_{stat}", i)] = value
    return out


def grad_norms(net: nn.Module) -> Tensor:
    """Frobenius norm of the gradient of each weight the net's `probe_weights` names (dense and
    convolution kernels), per member: [L, K], the output layer last. A layer without a gradient
    gives NaN. No host sync."""
    rows = []
    for w in net.probe_weights():
        if w.grad is None:
            rows.append(torch.full((net.n_seeds,), math.nan, device=w.device))
        else:
            rows.append(torch.linalg.vector_norm(net.per_seed(w.grad.detach()).flatten(1), dim=1))
    return torch.stack(rows)


def grad_ratio(norms: Tensor) -> Tensor:
    """First layer's gradient norm over the last (output) layer's: [..., L, K] -> [..., K].
    Far below 1 is the vanishing-gradient signature."""
    return norms[..., 0, :] / norms[..., -1, :]


# ---------------------------------------------------------------- TensorBoard helpers


HISTOGRAM_VALUES = 1 << 17  # per member and layer; a ConvNet layer has 12.5M on the probe set


def histogram_sample(values: Tensor) -> Tensor:
    """Each member's values [K, ...] as [K, <= HISTOGRAM_VALUES], a fixed random subsample when
    there are more: TensorBoard's histogram of a ConvNet layer's 12.5M values costs 1.6 s a call.
    Random, not evenly spaced: a stride would see the same few positions of every feature map."""
    flat = values.detach().float().reshape(values.shape[0], -1)
    n = flat.shape[1]
    if n <= HISTOGRAM_VALUES:
        return flat
    # the same positions at every epoch, so that the histograms follow the same values over time;
    # drawn with replacement: a permutation of 12.5M positions would cost more than the histogram
    pick = torch.randint(0, n, (HISTOGRAM_VALUES,), generator=torch.Generator().manual_seed(n)).to(flat.device)
    return flat[:, pick]


def _finite(a: np.ndarray) -> np.ndarray:
    """An array's finite values, flat (a diverged seed's NaNs are left out)."""
    a = a.reshape(-1)
    return a[np.isfinite(a)]


def _writers(trainer) -> list:
    return [logger.experiment for logger in trainer.loggers]


# ---------------------------------------------------------------- callbacks


class ActivationProbe(Callback):
    """At initialisation (epoch 0) and after every epoch, one forward pass of the probe set
    (`trainer.datamodule.probe_set()`, a fixed seeded subset of each seed's training data) in
    eval mode, and per hidden layer i: `probes/dead/layer{i}`, `probes/saturated/layer{i}` and
    `probes/dact_mean/layer{i}`, and a learnable activation's values (`activation_parameters`),
    into `epoch_log` (so TensorBoard and metrics.json get them), and
    histograms `probes/preact/layer{i}` (z) and `probes/act/layer{i}` (f(z)) to TensorBoard only.
    The probe forward touches no random stream, so training is the same with or without it."""

    def __init__(self, dead_tol: float = DEAD_TOL, saturation_tol: float = SATURATION_TOL, histograms: bool = True):
        self.dead_tol, self.saturation_tol, self.histograms = float(dead_tol), float(saturation_tol), bool(histograms)
        self._x: Tensor | None = None

    def _probe_set(self, trainer) -> Tensor:
        if self._x is None:
            self._x = trainer.datamodule.probe_set()
        return self._x

    def measure(self, trainer, pl_module) -> None:
        net = pl_module.net
        record = probe_forward(net, self._probe_set(trainer))
        if trainer.current_epoch == 0 and (blind := [i for i, (_, _, s) in enumerate(record, 1) if s.per_out > 1 and not s.gate_function()]):
            from actbench.logs import warn

            warn(f"probes: saturation and mean |f'| skip layers {', '.join(map(str, blind))}: a gated activation that names no `gate` module has no one f' to read")
        pl_module.epoch_log.update(layer_stats(record, self.dead_tol, self.saturation_tol))
        pl_module.epoch_log.update(activation_parameters(record))
        if self.histograms:
            step = trainer.global_step
            writers = _writers(trainer)
            for i, (z, h, _) in enumerate(record, start=1):
                for tag, values in ((layer_tag(PREACT, i), z), (layer_tag(ACT, i), h)):
                    host = histogram_sample(values).cpu().numpy()  # one copy for all seeds
                    for k, writer in enumerate(writers):
                        finite = _finite(host[k])
                        if finite.size:
                            writer.add_histogram(tag, finite, step)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:  # a resumed run already has its epoch 0
            self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.measure(trainer, pl_module)


class GradientProbe(Callback):
    """Weight-gradient norms of every layer the net's `probe_weights` names (dense layers and
    convolutions), `probes/grad_norm/w{j}` (j = 1..L, the last being the output layer), and their
    first-over-last ratio `probes/grad_ratio`.

    Training runs chunks of optimizer steps, so gradients are sampled in `on_train_batch_end`,
    where `.grad` holds the gradient of the chunk's last optimizer step: a sample is taken when
    `trainer.global_step` has crossed a multiple of `every_n_steps` since the last sample (the
    first chunk of a fresh run counts as crossing step 0), and it is labelled with that
    global_step. Samples stay on the device during the epoch; at the epoch's end each seed's
    TensorBoard gets every sample at its step, as `probes/grad_norm_step/w{j}` and
    `probes/grad_ratio_step`, and `epoch_log` gets the epoch's mean norm per layer as
    `probes/grad_norm/w{j}` and the ratio of those means as `probes/grad_ratio` (so grad_ratio ==
    grad_norm/w1 / grad_norm/w{depth+1} in metrics.json). An epoch without a sample, and epoch 0
    (no gradient yet), record nothing: TensorBoard gets no point, and metrics.json a null, so
    every probe list stays aligned with `probes.epoch`."""

    def __init__(self, every_n_steps: int = 64):
        if int(every_n_steps) < 1:
            raise ValueError(f"probes.gradients.every_n_steps must be >= 1, got {every_n_steps}")
        self.every = int(every_n_steps)
        self._last = -1
        self._samples: list[Tensor] = []
        self._steps: list[int] = []

    @staticmethod
    def _tags(n_layers: int) -> list[str]:
        return [grad_norm_tag(j) for j in range(1, n_layers + 1)]

    def on_train_start(self, trainer, pl_module) -> None:
        step = trainer.global_step
        self._last = step if step > 0 else -1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._samples, self._steps = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step // self.every > self._last // self.every:
            self._samples.append(grad_norms(pl_module.net))
            self._steps.append(step)
            self._last = step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._samples:
            return
        norms = torch.stack(self._samples)  # [S, L, K]
        means = norms.mean(0)  # [L, K]
        pl_module.epoch_log.update(dict(zip(self._tags(norms.shape[1]), means.unbind(0))))
        pl_module.epoch_log[GRAD_RATIO] = grad_ratio(means)
        host = torch.cat([norms, grad_ratio(norms).unsqueeze(1)], dim=1).tolist()  # [S][L+1][K], one copy
        tags = [grad_norm_tag(j, GRAD_NORM_STEP) for j in range(1, norms.shape[1] + 1)] + [GRAD_RATIO_STEP]
        for k, writer in enumerate(_writers(trainer)):
            for s, step in enumerate(self._steps):
                for tag, row in zip(tags, host[s]):
                    value = row[k]
                    if math.isfinite(value):
                        writer.add_scalar(tag, value, step)
