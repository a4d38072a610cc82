"""The MLP and the LightningModule that trains it.

One module serves one seed and K packed seeds alike: every weight carries a leading seed
dimension [K, out, in] and layers are batched matrix products, so K=1 is an ordinary MLP and
K>1 trains K independent MLPs at once. Each seed's initial weights come from its own generator,
so a seed's weights do not depend on which other seeds share the pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from actbench.data import generator

INITS = ("torch", "glorot", "kaiming", "lecun")


def init_layer(w: Tensor, b: Tensor, scheme: str, gen: torch.Generator) -> None:
    """Initialise one seed's layer in place: w [out, in], b [1, out]."""
    fan_out, fan_in = w.shape
    if scheme == "torch":  # torch.nn.Linear's default: U(+-1/sqrt(fan_in)) for weight and bias
        bound = 1.0 / math.sqrt(fan_in)
        w.uniform_(-bound, bound, generator=gen)
        b.uniform_(-bound, bound, generator=gen)
        return
    if scheme == "glorot":  # Keras Dense default: glorot-uniform weights, zero bias
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w.uniform_(-bound, bound, generator=gen)
    elif scheme == "kaiming":  # He normal, fan_in, gain sqrt(2)
        w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
    elif scheme == "lecun":  # LeCun normal, what SELU assumes
        w.normal_(0.0, math.sqrt(1.0 / fan_in), generator=gen)
    else:
        raise ValueError(f"model.init must be one of {', '.join(INITS)}, got {scheme!r}")
    b.zero_()


class PackedMLP(nn.Module):
    """K independent MLPs 784 -> width x depth -> 10, one per seed, as one module."""

    def __init__(
        self,
        seeds: list[int],
        activation: Callable[[Tensor], Tensor],
        depth: int = 1,
        width: int = 128,
        init: str = "torch",
        dropout: float = 0.0,
        in_features: int = 784,
        n_classes: int = 10,
    ):
        super().__init__()
        self.seeds, self.activation, self.depth, self.init, self.dropout = list(seeds), activation, depth, init, dropout
        k = len(self.seeds)
        sizes = [in_features] + [width] * depth + [n_classes]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(k, o, i)) for i, o in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(k, 1, o)) for o in sizes[1:])
        self._dropout_gens: list[torch.Generator] = []
        self.reset_parameters()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for k, seed in enumerate(self.seeds):
            gen = generator(seed, "init")
            for w, b in zip(self.weights, self.biases):
                init_layer(w[k], b[k], self.init, gen)

    def start_epoch(self, epoch: int) -> None:
        """Re-derive each seed's dropout stream from (seed, epoch): a resumed run draws the same masks."""
        if self.dropout > 0:
            device = self.weights[0].device
            self._dropout_gens = [
                torch.Generator(device=device).manual_seed(generator(s, "dropout", epoch).initial_seed()) for s in self.seeds
            ]

    def _drop(self, h: Tensor) -> Tensor:
        keep = 1.0 - self.dropout
        if not self._dropout_gens:
            self.start_epoch(0)
        mask = torch.stack([torch.empty(h.shape[1:], device=h.device).bernoulli_(keep, generator=g) for g in self._dropout_gens])
        return h * mask / keep

    def forward(self, x: Tensor, record: list | None = None) -> Tensor:
        """x [K, B, in] -> logits [K, B, classes]. `record`, if given, receives (z, f(z)) per hidden layer."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b, h, w.transpose(1, 2))
            if i == last:
                return z
            h = self.activation(z)
            if record is not None:
                record.append((z, h))
            if self.dropout > 0 and self.training:
                h = self._drop(h)
        return h


def bytes_per_seed(depth: int, width: int, batch_size: int, eval_rows: int, probe_size: int, in_features=784, n_classes=10) -> int:
    """What one more seed in a pack costs in memory, roughly: weights with their gradients and two
    Adam moments, and the activations of the largest pass (an evaluation batch, usually)."""
    sizes = [in_features] + [width] * depth + [n_classes]
    params = sum(i * o + o for i, o in zip(sizes, sizes[1:]))
    rows = max(batch_size, eval_rows, probe_size)
    activations = rows * (in_features + 3 * width * depth + 2 * n_classes)  # inputs, z, f(z), f'(z) for probes
    return 4 * (4 * params + activations)


def per_seed_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of each seed: [K]. Summing these gives every seed exactly its own gradient."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)


def per_seed_correct(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(-1) == y).sum(1)


class Classifier(LightningModule):
    """Trains a PackedMLP with manual optimisation: each Lightning step runs the chunk of
    optimizer steps its batch holds (Keras's steps_per_execution), so per-step framework cost
    is paid once per chunk. Per-step losses stay on the device until the epoch ends.

    What an epoch produced is left in `epoch_log` ({tag: tensor [K]}) for the callbacks that
    record and probe; `train_epoch_steps` gives the per-step curves.
    """

    def __init__(self, net: PackedMLP, optimizer: Callable, cuda_graph: bool = False):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.use_cuda_graph = cuda_graph
        self.automatic_optimization = False
        self.epoch_log: dict[str, Tensor] = {}
        self._graph = None

    def configure_optimizers(self):
        if self.use_cuda_graph:
            from actbench.cuda_graph import capturable_optimizer

            return capturable_optimizer(self.optimizer_factory, self.net.parameters())
        return self.optimizer_factory(self.net.parameters())

    # ------------------------------------------------------------------ training

    def on_train_epoch_start(self) -> None:
        k = self.net.n_seeds
        steps = self.trainer.train_dataloader.steps_per_epoch
        self._loss_buf = torch.zeros(steps, k, device=self.device)
        self._acc_buf = torch.zeros(steps, k, device=self.device)
        self._step_in_epoch = 0
        self.epoch_log = {}
        self.net.start_epoch(self.current_epoch)

    def _eager_step(self, x: Tensor, y: Tensor, opt) -> tuple[Tensor, Tensor]:
        logits = self.net(x)
        loss = per_seed_loss(logits, y)
        # once a CUDA graph owns the gradient buffers, eager steps must reuse them, not replace them
        opt.zero_grad(set_to_none=self._graph is None or self._graph.graph is None)
        self.manual_backward(loss.sum())
        opt.step()
        return loss.detach(), per_seed_correct(logits.detach(), y)

    def training_step(self, batch, batch_idx):
        xs, ys = batch
        opt = self.optimizers()
        graph = self._graph_for(xs, opt) if self.use_cuda_graph else None
        for s in range(xs.shape[0]):
            if graph is not None:
                loss, correct = graph.step(xs[s], ys[s], opt)
            else:
                loss, correct = self._eager_step(xs[s], ys[s], opt)
            i = self._step_in_epoch
            self._loss_buf[i].copy_(loss)
            self._acc_buf[i].copy_(correct / ys.shape[-1])
            self._step_in_epoch = i + 1

    def _graph_for(self, xs: Tensor, opt):
        from actbench.cuda_graph import GraphedStep

        shape = tuple(xs.shape[1:])
        if self._graph is None:
            self._graph = GraphedStep(self.net, per_seed_loss, per_seed_correct)
        return self._graph if self._graph.accepts(shape) else None

    def train_epoch_steps(self) -> dict[str, Tensor]:
        """This epoch's per-step training losses and accuracies [steps, K]; also puts their means
        in `epoch_log`. Called by the recorder (callbacks' epoch-end hooks run before the module's)."""
        n = self._step_in_epoch
        steps = {"loss": self._loss_buf[:n], "acc": self._acc_buf[:n]}
        self.epoch_log["train/loss"] = steps["loss"].mean(0)
        self.epoch_log["train/acc"] = steps["acc"].mean(0)
        return steps

    # ------------------------------------------------------------------ evaluation

    def _eval_start(self) -> None:
        self._eval_sums = torch.zeros(3, self.net.n_seeds, device=self.device)

    def _eval_step(self, batch) -> None:
        x, y = batch
        logits = self.net(x)
        k = logits.shape[0]
        loss_sum = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).sum(1)
        self._eval_sums[0] += loss_sum
        self._eval_sums[1] += per_seed_correct(logits, y)
        self._eval_sums[2] += y.shape[1]

    def _eval_end(self, prefix: str) -> None:
        loss_sum, correct, n = self._eval_sums
        self.epoch_log[f"{prefix}/loss"] = loss_sum / n
        self.epoch_log[f"{prefix}/acc"] = correct / n

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self.epoch_log = {}
        self._eval_start()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
