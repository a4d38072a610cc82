"""The LightningModule that trains a pack (actbench/packer.py: K members of a plain model as one),
and what one training step is: `step_losses` (forward, each member's loss) and the step functions
of `Classifier` (backward, optimizer). Batches are laid out [K, B, ...]; a lone member's
step takes its plain model's path with [B, ...].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from actbench.conf import locate
from actbench.errors import ConfigError
from actbench.model_facts import PlainModel
from actbench.packer import Packed
from actbench.schedule import clip_members
from actbench.tags import ACC, LOSS, TEST, TRAIN, VAL, metric_tag

# optimizers whose update of each weight depends on that weight's own gradient history only:
# with them, the members of a pack train exactly as apart
ELEMENTWISE_OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop")


def cross_entropy(logits: Tensor, y: Tensor, reduce: str = "mean") -> Tensor:
    """Each member's mean (or summed) cross-entropy, [K], from logits [K, B, ..., C] and labels
    [K, B, ...] (a language model's: one per position). Their sum gives every member exactly its
    own gradient."""
    per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(logits.shape[0], -1)
    return per.mean(1) if reduce == "mean" else per.sum(1)


def step_losses(net: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One training step's forward: (the scalar to differentiate, logits [K, B, C], each
    member's loss [K]), the last two detached. The one place where a lone member takes a plain
    MLP's path: its tensors stay [B, ...] through the loss, since in a step this small (~600 us on
    a CPU) every extra autograd view of a tensor costs a measurable share."""
    if x.shape[0] == 1:
        logits = net(x[0])
        # the packed reduction (per example, then each member's mean), not F.cross_entropy's own
        # mean, which rounds differently: a member's loss is then the same bits packed or alone
        flat, labels = (logits, y[0]) if logits.dim() == 2 else (logits.flatten(0, -2), y[0].flatten())  # a label per position
        loss = F.cross_entropy(flat, labels, reduction="none").mean()
        return loss, logits.detach().unsqueeze(0), loss.detach().view(1)
    logits = net(x)
    losses = cross_entropy(logits, y)
    return losses.sum(), logits.detach(), losses.detach()


def predictions(logits: Tensor, y: Tensor) -> Tensor:
    """What a step keeps until its epoch's end: the logits where a label is per example (small),
    the predicted classes where it is per position (a language model's logits are vocab times more)."""
    return logits if y.dim() == 2 else logits.argmax(-1)


def accuracy(kept: Tensor, y: Tensor) -> Tensor:
    """The share of correct predictions per member: kept (logits or predictions) [K, B, ...] and
    labels [K, B, ...] -> [K]."""
    pred = kept.argmax(-1) if kept.dim() > y.dim() else kept
    return (pred == y).flatten(1).float().mean(-1)


class PackedNet(nn.Module):
    """The protocol of hand-packed models, removed: its subclasses are refused in one line
    (`model_class`); a model is now plain PyTorch, packed by actbench (actbench/packer.py)."""


def model_class(cfg) -> PlainModel:
    """What `cfg.model` names, with the model's facts found from it before one is built."""
    cls = locate(cfg.model._target_, "model._target_")
    if isinstance(cls, type) and issubclass(cls, PackedNet):
        raise ConfigError(f"model._target_={cfg.model._target_!r} is a hand-packed PackedNet, which actbench no longer "
                          "packs: write it as a plain nn.Module, Model(activation, input_shape, n_classes, **keys) "
                          "(README: Add your own model)")
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return PlainModel(cls, cfg)
    raise ConfigError(f"model._target_={cfg.model._target_!r}: must name a torch.nn.Module class")


def eval_batch_size(cfg) -> int:
    """data.eval_batch_size, where `auto` is the model's own choice."""
    value = cfg.data.eval_batch_size
    return model_class(cfg).EVAL_BATCH if value == "auto" else int(value)


# Fused CPU Adam updates a tensor's SIMD-vector body and its scalar tail with slightly different
# rounding, so an element's update depends on where it sits in its tensor: a member whose share
# of a tensor is not a whole number of vectors (a classifier bias of 10) sits elsewhere in a pack
# than alone, and trained a little differently packed (ReLU and Leaky ReLU runs then part ways).
SIMD_ELEMENTS = 64  # a multiple of every CPU's float32 vector width (AVX-512: 16)


def param_groups(params, members: int = 1, fused: bool = False, weight_decay: float = 0.0) -> list:
    """The parameters as an optimizer's groups.

    With weight decay, only weight matrices and kernels (two dimensions or more) decay, as in
    nanoGPT: biases, norms' scales and shifts and a learnable activation's parameters do not.
    With a fused optimizer, those whose per-member size is not a whole number of SIMD_ELEMENTS
    (biases, batch norm's scales: a few hundred numbers) get the same maths tensor by tensor
    (fused=False, foreach=False), which rounds every element alike: a packed member's update is
    then its lone run's, bit for bit."""
    groups = [{"params": list(params)}]
    if weight_decay:
        every = groups[0]["params"]
        groups = [{"params": [p for p in every if p.dim() >= 2]}, {"params": [p for p in every if p.dim() < 2], "weight_decay": 0.0}]
    if fused:
        groups = [{**g, "params": [p for p in g["params"] if (p.numel() // members) % SIMD_ELEMENTS == 0]} for g in groups] + \
                 [{**g, "params": [p for p in g["params"] if (p.numel() // members) % SIMD_ELEMENTS], "fused": False, "foreach": False}
                  for g in groups]
    groups = [g for g in groups if g["params"]]
    return groups[0]["params"] if len(groups) == 1 and len(groups[0]) == 1 else groups


class Classifier(LightningModule):
    """Trains a pack with manual optimisation: each Lightning step runs the chunk of
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

    def __init__(self, net: Packed, optimizer: Callable, cuda_graph: bool = False,
                 rate: Callable[[int], float] | None = None, clip_norm: float | None = None):
        """rate: the factor on the optimizer's rate before each step (actbench.schedule.rate_factor),
        None for a constant rate; clip_norm: each member's gradients scaled to at most this norm."""
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.use_cuda_graph = cuda_graph
        self.rate, self.clip_norm = rate, clip_norm
        self.automatic_optimization = False
        self.epoch_log: dict[str, Tensor] = {}
        self._graph = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from actbench.checkpoints import CheckpointError

        if set(checkpoint["state_dict"]) != set(self.state_dict()):
            raise CheckpointError("its checkpoint holds other layers than this model's (an older actbench's hand-packed "
                                  "model wrote it?): delete the run's checkpoints/ to train it afresh")

    def configure_optimizers(self):
        if self.use_cuda_graph:
            from actbench.cuda_graph import capturable_optimizer

            return capturable_optimizer(self.optimizer_factory, self.net.parameters())
        keys = getattr(self.optimizer_factory, "keywords", {})
        opt = self.optimizer_factory(param_groups(self.net.parameters(), self.net.n_seeds, bool(keys.get("fused")),
                                                  float(keys.get("weight_decay") or 0.0)))
        if self.rate is None:
            return opt
        # Lightning keeps its state in the checkpoint, so a resumed run goes on where it stopped
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, self.rate)}

    def _clip(self) -> None:
        if self.clip_norm is not None:
            clip_members(self.net, self.clip_norm)

    # ------------------------------------------------------------------ training

    def on_train_start(self) -> None:
        self._step = self._pick_step()

    def _pick_step(self) -> Callable:
        from lightning.pytorch.strategies import SingleDeviceStrategy

        if self.use_cuda_graph:
            from actbench.cuda_graph import GraphedStep

            self._graph = GraphedStep(self.net, step_losses, self._clip)
            return lambda x, y, opt, last: self._graph.step(x, y, opt)
        direct = isinstance(self.trainer.strategy, SingleDeviceStrategy) and getattr(self.trainer.precision_plugin, "scaler", None) is None
        return self._direct_step if direct else self._lightning_step

    def _lightning_step(self, x: Tensor, y: Tensor, opt, last: bool = True) -> tuple[Tensor, Tensor]:
        """One optimizer step through Lightning's manual_backward and optimizer wrapper."""
        objective, logits, losses = step_losses(self.net, x, y)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(objective)
        self._clip()
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
        self._clip()
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
        schedule = self.lr_schedulers() if self.rate is not None else None
        for s in range(len(chunk)):
            x, y = chunk[s]
            logits, losses = self._step(x, y, opt, s == last)
            self._kept.append((predictions(logits, y), y, losses))
            if schedule is not None:
                schedule.step()

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
                "acc": torch.cat([accuracy(torch.cat([lg for lg, _, _ in p]), torch.cat([y for _, y, _ in p])).view(len(p), -1)
                                  for p in parts if p]),
            }
        # each member's steps as one contiguous row: a column's mean would sum in an order that
        # depends on the pack's size, and a member's epoch loss would differ packed and alone
        self.epoch_log[metric_tag(LOSS, TRAIN)] = steps["loss"].t().contiguous().mean(1)
        self.epoch_log[metric_tag(ACC, TRAIN)] = steps["acc"].t().contiguous().mean(1)
        return steps

    # ------------------------------------------------------------------ evaluation

    def _eval_start(self) -> None:
        self._eval_sums = torch.zeros(3, self.net.n_seeds, device=self.device)

    def _eval_step(self, batch) -> None:
        x, y = batch
        logits = self.net(x)
        self._eval_sums[0] += cross_entropy(logits, y, reduce="sum")
        self._eval_sums[1] += (logits.argmax(-1) == y).flatten(1).sum(1)
        self._eval_sums[2] += y[0].numel()

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
