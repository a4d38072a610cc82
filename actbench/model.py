"""The MLP and the LightningModule that trains it.

One module serves one seed and K packed seeds alike. A layer's weight is stored as [K*out, in]
and its bias as [K*out]: seed k owns rows k*out..(k+1)*out, so `per_seed` views them as
[K, out, ...] for batched matrix products, and with one seed they are exactly nn.Linear's
tensors, used by plain linear layers with no reshaping on the hot path. Each seed's initial
weights come from its own generator, so a seed's weights do not depend on its pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from actbench.data import N_CLASSES, derive_seed, generator

INITS = ("torch", "glorot", "kaiming", "lecun")
# optimizers whose update of each weight depends on that weight's own gradient history only:
# with them, the seeds of a pack train exactly as apart
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
    """z = h @ W^T + b for K seeds at once: h [K, B, in], W [K, out, in], b [K, 1, out].

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
        """Re-derive each seed's dropout stream from (seed, epoch): a resumed run draws the same
        masks. Under DDP each device, holding its own share of the batch, gets its own stream."""
        if self.dropout > 0:
            device = self.weights[0].device
            extra = (shard[0],) if shard[1] > 1 else ()
            self._dropout_gens = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout", epoch, *extra)) for s in self.seeds
            ]

    def _drop(self, h: Tensor) -> Tensor:
        keep = 1.0 - self.dropout
        if not self._dropout_gens:
            self.start_epoch(0)
        mask = torch.stack([torch.empty(h.shape[1:], device=h.device).bernoulli_(keep, generator=g) for g in self._dropout_gens])
        return h * mask / keep

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
        """x [K, B, in] -> logits [K, B, classes]; with one seed also x [B, in] -> [B, classes],
        the training step's fast path. `record`, if given (3-D input only), receives (z, f(z))
        per hidden layer."""
        *hidden, (w_out, b_out) = self.layers()
        act, drop = self.activation, self.dropout > 0 and self.training
        if x.dim() == 2:  # one seed's training step: plain linear layers, nothing but the maths
            h = x
            for w, b in hidden:
                h = act(F.linear(h, w, b))
                if drop:
                    h = self._drop(h.unsqueeze(0)).squeeze(0)
            return F.linear(h, w_out, b_out)
        k, h = self.n_seeds, x
        for w, b in hidden:
            z = PackedLinear.apply(h, w.view(k, -1, w.shape[1]), b.view(k, 1, -1))
            h = act(z.clone() if record is not None else z)  # an in-place activation must not overwrite what is recorded
            if record is not None:
                record.append((z, h))
            if drop:
                h = self._drop(h)
        return PackedLinear.apply(h, w_out.view(k, -1, w_out.shape[1]), b_out.view(k, 1, -1))


def n_params(depth: int, width: int, in_features: int = 784, n_classes: int = N_CLASSES) -> int:
    """Weights and biases of one seed's MLP."""
    sizes = [in_features] + [width] * depth + [n_classes]
    return sum(i * o + o for i, o in zip(sizes, sizes[1:]))


def bytes_per_seed(depth: int, width: int, batch_size: int, eval_rows: int, probe_size: int, in_features=784, n_classes=N_CLASSES) -> int:
    """What one more seed in a pack costs in memory, roughly: weights with their gradients and two
    Adam moments, and the activations of the largest pass (an evaluation batch, usually)."""
    params = n_params(depth, width, in_features, n_classes)
    rows = max(batch_size, eval_rows, probe_size)
    activations = rows * (in_features + 3 * width * depth + 2 * n_classes)  # inputs, z, f(z), f'(z) for probes
    return 4 * (4 * params + activations)


def per_seed_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of each seed: [K]. Summing these gives every seed exactly its own gradient."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)


def training_objective(logits: Tensor, y: Tensor) -> Tensor:
    """What a step differentiates: the sum of the seeds' mean losses, so each seed gets exactly its
    own gradient; for one seed's [B, classes] logits, its plain mean cross-entropy."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y)
    return per_seed_loss(logits, y).sum()


def per_seed_correct(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.argmax(-1) == y).sum(1)


class Classifier(LightningModule):
    """Trains a PackedMLP with manual optimisation: each Lightning step runs the chunk of
    optimizer steps its batch holds (Keras's steps_per_execution), so per-step framework cost
    is paid once per chunk: on_train_batch_* fire once per chunk, and so do the backward and
    optimizer-step hooks on one device without a gradient scaler (otherwise every step goes
    through Lightning; the CUDA-graph step bypasses them); trainer.global_step counts every
    optimizer step. Each step's logits stay on the device until the epoch ends.

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
        from lightning.pytorch.strategies import SingleDeviceStrategy

        # Inside a chunk, steps may go straight through torch when Lightning would add nothing to
        # the maths: one device and no gradient scaler. The chunk's last step goes through
        # Lightning, so its backward and optimizer-step hooks fire once per chunk.
        self._direct_ok = isinstance(self.trainer.strategy, SingleDeviceStrategy) and (
            getattr(self.trainer.precision_plugin, "scaler", None) is None
        )

    def on_train_epoch_start(self) -> None:
        # Each step's logits are kept; losses and accuracies are computed from them for the whole
        # epoch at once, which costs less than the small ops it would take at every step.
        self._step_logits: list[Tensor] = []
        self.epoch_log = {}
        self.net.start_epoch(self.current_epoch, (self.global_rank, self.trainer.world_size))

    def _step(self, x: Tensor, y: Tensor, opt, through_lightning: bool) -> Tensor:
        """One optimizer step on one batch, through Lightning's manual_backward and optimizer
        wrapper, or straight through torch with Lightning's step counter kept; returns the logits."""
        logits = self.net(x)
        objective = training_objective(logits, y)
        if through_lightning:
            # once a CUDA graph owns the gradient buffers, eager steps must reuse them, not replace them
            opt.zero_grad(set_to_none=not self._captured())
            self.manual_backward(objective)
            opt.step()
        else:
            opt.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            opt._on_before_step()  # the counter behind trainer.global_step
            opt.optimizer.step()
            opt._on_after_step()
        return logits.detach()

    def training_step(self, chunk, batch_idx):
        opt = self.optimizers()
        graph = self._graph_for(chunk.batch_size, opt) if self.use_cuda_graph else None
        captured = self._captured()
        if captured:
            self._graph.own_grads()  # between chunks, validation or a callback may have dropped them
        direct = self._direct_ok and graph is None and not captured
        kept, last = self._step_logits, len(chunk) - 1
        for s in range(len(chunk)):
            x, y = chunk[s]
            if graph is not None:
                kept.append(graph.step(x, y, opt).clone())  # the graph's output buffer is reused
            else:
                kept.append(self._step(x, y, opt, through_lightning=s == last or not direct))

    def _captured(self) -> bool:
        return self._graph is not None and self._graph.captured

    def _graph_for(self, batch_size: int, opt):
        """The graphed step for this batch size; None (eager) for the epoch's short last batch."""
        from actbench.cuda_graph import GraphedStep

        if self._graph is None:
            self._graph = GraphedStep(self.net, training_objective)
        return self._graph if self._graph.accepts(batch_size) else None

    def train_epoch_steps(self) -> dict[str, Tensor]:
        """This epoch's per-step training losses and accuracies [steps, K], from the kept logits;
        also puts their means in `epoch_log`. Called by the recorder (callbacks' epoch-end hooks
        run before the module's)."""
        kept = [t if t.dim() == 3 else t.unsqueeze(0) for t in self._step_logits]  # one seed: [B, C]
        n = len(kept)
        batches = self.trainer.train_dataloader
        labels = batches.step_labels(self.current_epoch)[:n]  # [n, K, B], -1 past a short last batch
        short = labels.shape[-1] - kept[-1].shape[1] if kept else 0
        if short:
            kept = kept[:-1] + [F.pad(kept[-1], (0, 0, 0, short))]
        logits = torch.stack(kept) if kept else torch.zeros(0, *labels.shape[1:], N_CLASSES, device=self.device)
        valid = labels >= 0
        ce = F.cross_entropy(logits.flatten(0, 2), labels.flatten().clamp(min=0), reduction="none").view(labels.shape)
        count = valid.sum(-1)
        steps = {
            "loss": (ce * valid).sum(-1) / count,
            "acc": ((logits.argmax(-1) == labels) & valid).sum(-1) / count,
        }
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
