"""The MLP and the LightningModule that trains it.

One module serves one run and K packed members alike, each member with its own seed and
activation. Every tensor is laid out [K, B, ...]; a layer's weight is stored as [K*out, in] and
its bias as [K*out], member k owning rows k*out..(k+1)*out, so that with one member they are
exactly nn.Linear's tensors. `linear` is the one place that takes the one-member fast path.
Each member's initial weights come from its own generator, so they do not depend on its pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from actbench.data import N_CLASSES, derive_seed, generator
from actbench.tags import ACC, LOSS, TEST, TRAIN, VAL, metric_tag

INITS = ("torch", "glorot", "kaiming", "lecun")
# optimizers whose update of each weight depends on that weight's own gradient history only:
# with them, the members of a pack train exactly as apart
ELEMENTWISE_OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop")

def init_layer(w: Tensor, b: Tensor, scheme: str, gen: torch.Generator) -> None:
    """Initialise one seed's layer in place: w [out, in], b [out]."""
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


class PackedLinear(torch.autograd.Function):
    """z = h @ W^T + b for K members at once: h [K, B, in], W [K, out, in], b [K, 1, out].

    The same maths as baddbmm on W's transpose, but its backward computes the weight gradient
    directly in W's [K, out, in] layout; autograd's would be [K, in, out], and transposing it
    back costs a copy of every weight gradient at every step (half a packed step on a CPU)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(h, w)
        return torch.baddbmm(b, h, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w = ctx.saved_tensors
        grad_h = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        return grad_h, torch.bmm(grad.transpose(1, 2), h), grad.sum(1, keepdim=True)


def linear(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Each member's affine layer: h [K, B, in], w [K*out, in], b [K*out] -> [K, B, out]. A lone
    member's training step passes h as [B, in] (see `step_losses`) and gets nn.Linear's kernel."""
    if h.dim() == 2:
        return F.linear(h, w, b)
    k = h.shape[0]
    return PackedLinear.apply(h, w.view(k, -1, w.shape[1]), b.view(k, 1, -1))


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Each member's mean cross-entropy, [K], from logits [K, B, C] and labels [K, B]. Their sum
    gives every member exactly its own gradient."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)


def step_losses(net: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One training step's forward: (the scalar to differentiate, logits [K, B, C], each
    member's loss [K]), the last two detached. The one place where a lone member takes a plain
    MLP's path: its tensors stay [B, ...] through the loss, since in a step this small (~600 us on
    a CPU) every extra autograd view of a tensor costs a measurable share."""
    if x.shape[0] == 1:
        logits = net(x[0])
        loss = F.cross_entropy(logits, y[0])
        return loss, logits.detach().unsqueeze(0), loss.detach().view(1)
    logits = net(x)
    losses = cross_entropy(logits, y)
    return losses.sum(), logits.detach(), losses.detach()


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """The share of correct predictions over the batch dimension: logits [..., B, C], y [..., B] -> [...]."""
    return (logits.argmax(-1) == y).float().mean(-1)


class PackedMLP(nn.Module):
    """K independent MLPs 784 -> width x depth -> 10, one per packed member, as one module.
    `activation` maps pre-activations [K, B, width] elementwise (one function, or each member's
    own: actbench.activations.PerMember)."""

    def __init__(
        self,
        seeds: list[int],
        activation: Callable[[Tensor], Tensor],
        depth: int = 1,
        width: int = 128,
        init: str = "torch",
        dropout: float = 0.0,
        in_features: int = 784,
        n_classes: int = N_CLASSES,
    ):
        super().__init__()
        self.seeds, self.activation, self.depth, self.init, self.dropout = list(seeds), activation, depth, init, dropout
        k = len(self.seeds)
        sizes = [in_features] + [width] * depth + [n_classes]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(k * o, i)) for i, o in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(k * o)) for o in sizes[1:])
        self._dropout_gens: list[torch.Generator] = []
        self.reset_parameters()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def per_seed(self, t: Tensor) -> Tensor:
        """A weight, bias or their gradient, viewed as [K, out, ...]."""
        return t.view(self.n_seeds, -1, *t.shape[1:])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for k, seed in enumerate(self.seeds):
            gen = generator(seed, "init")
            for w, b in zip(self.weights, self.biases):
                init_layer(self.per_seed(w)[k], self.per_seed(b)[k], self.init, gen)

    def start_epoch(self, epoch: int, shard: tuple[int, int] = (0, 1)) -> None:
        """Re-derive each member's dropout stream from (seed, epoch): a resumed run draws the same
        masks. Under DDP each device, holding its own share of the batch, gets its own stream."""
        if self.dropout > 0:
            device = self.weights[0].device
            extra = (shard[0],) if shard[1] > 1 else ()
            self._dropout_gens = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout", epoch, *extra)) for s in self.seeds
            ]

    def _drop(self, h: Tensor) -> Tensor:
        """Dropout with each member's own masks, for h [K, B, width] (or a lone member's [B, width])."""
        keep = 1.0 - self.dropout
        if not self._dropout_gens:
            self.start_epoch(0)
        rows = h.shape[-2:]
        mask = torch.stack([torch.empty(rows, device=h.device).bernoulli_(keep, generator=g) for g in self._dropout_gens])
        return h * mask.view(h.shape) / keep

    def _apply(self, fn, recurse=True):
        self._pairs = None  # parameters may be replaced (device moves keep them, but be safe)
        return super()._apply(fn, recurse)

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) per layer; cached, since ParameterList lookups cost microseconds each and
        a whole training step of the blog's model costs about 600."""
        if getattr(self, "_pairs", None) is None:
            self._pairs = list(zip(self.weights, self.biases))
        return self._pairs

    def forward(self, x: Tensor, record: list | None = None) -> Tensor:
        """x [K, B, in] -> logits [K, B, classes] (a lone member's [B, in] -> [B, classes], for
        `step_losses`). `record`, if given, receives (z, f(z)) per hidden layer."""
        *hidden, (w_out, b_out) = self.layers()
        h = x
        for w, b in hidden:
            z = linear(h, w, b)
            h = self.activation(z.clone() if record is not None else z)  # an in-place activation must not overwrite what is recorded
            if record is not None:
                record.append((z, h))
            if self.dropout > 0 and self.training:
                h = self._drop(h)
        return linear(h, w_out, b_out)


def n_params(depth: int, width: int, in_features: int = 784, n_classes: int = N_CLASSES) -> int:
    """Weights and biases of one member's MLP."""
    sizes = [in_features] + [width] * depth + [n_classes]
    return sum(i * o + o for i, o in zip(sizes, sizes[1:]))


def bytes_per_seed(depth: int, width: int, batch_size: int, eval_rows: int, probe_size: int, in_features=784, n_classes=N_CLASSES) -> int:
    """What one more member in a pack costs in memory, roughly: weights with their gradients and
    two Adam moments, and the activations of the largest pass (an evaluation batch, usually)."""
    params = n_params(depth, width, in_features, n_classes)
    rows = max(batch_size, eval_rows, probe_size)
    activations = rows * (in_features + 3 * width * depth + 2 * n_classes)  # inputs, z, f(z), f'(z) for probes
    return 4 * (4 * params + activations)


class Classifier(LightningModule):
    """Trains a PackedMLP with manual optimisation: each Lightning step runs the chunk of
    optimizer steps its batch holds (Keras's steps_per_execution), so per-step framework cost
    is paid once per chunk; trainer.global_step counts every optimizer step.

    How a step runs is chosen once per fit (`_pick_step`): in a CUDA graph; straight through
    torch inside a chunk with the chunk's last step through Lightning (one device, no gradient
    scaler: Lightning's backward and optimizer-step hooks then fire once per chunk); or every
    step through Lightning (DDP, gradient scaling). Each step's logits, labels and losses stay
    on the device until the epoch ends.

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

    def on_train_start(self) -> None:
        self._step = self._pick_step()

    def _pick_step(self) -> Callable:
        from lightning.pytorch.strategies import SingleDeviceStrategy

        if self.use_cuda_graph:
            from actbench.cuda_graph import GraphedStep

            self._graph = GraphedStep(self.net, step_losses)
            return lambda x, y, opt, last: self._graph.step(x, y, opt)
        direct = isinstance(self.trainer.strategy, SingleDeviceStrategy) and getattr(self.trainer.precision_plugin, "scaler", None) is None
        return self._direct_step if direct else self._lightning_step

    def _lightning_step(self, x: Tensor, y: Tensor, opt, last: bool = True) -> tuple[Tensor, Tensor]:
        """One optimizer step through Lightning's manual_backward and optimizer wrapper."""
        objective, logits, losses = step_losses(self.net, x, y)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(objective)
        opt.step()
        return logits, losses

    def _direct_step(self, x: Tensor, y: Tensor, opt, last: bool) -> tuple[Tensor, Tensor]:
        """One optimizer step straight through torch, keeping Lightning's step counter; the
        chunk's last step goes through Lightning, so its hooks fire once per chunk."""
        if last:
            return self._lightning_step(x, y, opt)
        objective, logits, losses = step_losses(self.net, x, y)
        opt.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        opt._on_before_step()  # the counter behind trainer.global_step
        opt.optimizer.step()
        opt._on_after_step()
        return logits, losses

    def on_train_epoch_start(self) -> None:
        # losses and accuracies per step come from these at the epoch's end: one batched
        # computation instead of small ops and host reads at every step
        self._kept: list[tuple[Tensor, Tensor, Tensor]] = []
        self.epoch_log = {}
        self.net.start_epoch(self.current_epoch, (self.global_rank, self.trainer.world_size))

    def training_step(self, chunk, batch_idx):
        opt, last = self.optimizers(), len(chunk) - 1
        for s in range(len(chunk)):
            x, y = chunk[s]
            logits, losses = self._step(x, y, opt, s == last)
            self._kept.append((logits, y, losses))

    def train_epoch_steps(self) -> dict[str, Tensor]:
        """This epoch's per-step training losses and accuracies [steps, K]; also puts their means
        in `epoch_log`. Called by the recorder (callbacks' epoch-end hooks run before the module's)."""
        kept = self._kept
        if not kept:
            empty = torch.zeros(0, self.net.n_seeds, device=self.device)
            steps = {"loss": empty, "acc": empty}
        else:
            # every step has one batch shape but an epoch's short last one: stack each part once
            full = len(kept) - (kept[-1][1].shape != kept[0][1].shape)
            parts = [kept[:full], kept[full:]]
            steps = {
                "loss": torch.stack([losses for _, _, losses in kept]),
                "acc": torch.cat([accuracy(torch.stack([lg for lg, _, _ in p]), torch.stack([y for _, y, _ in p])) for p in parts if p]),
            }
        self.epoch_log[metric_tag(LOSS, TRAIN)] = steps["loss"].mean(0)
        self.epoch_log[metric_tag(ACC, TRAIN)] = steps["acc"].mean(0)
        return steps

    # ------------------------------------------------------------------ evaluation

    def _eval_start(self) -> None:
        self._eval_sums = torch.zeros(3, self.net.n_seeds, device=self.device)

    def _eval_step(self, batch) -> None:
        x, y = batch
        logits = self.net(x)
        k = logits.shape[0]
        self._eval_sums[0] += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).sum(1)
        self._eval_sums[1] += (logits.argmax(-1) == y).sum(1)
        self._eval_sums[2] += y.shape[1]

    def _eval_end(self, split: str) -> None:
        loss_sum, correct, n = self._eval_sums
        self.epoch_log[metric_tag(LOSS, split)] = loss_sum / n
        self.epoch_log[metric_tag(ACC, split)] = correct / n

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end(VAL)

    def on_test_epoch_start(self) -> None:
        self.epoch_log = {}
        self._eval_start()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end(TEST)
