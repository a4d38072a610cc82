"""The packed models and the LightningModule that trains them.

A packed model trains K members at once, member k with its own seed and activation; `PackedNet`
writes down what every model must state and do, `PackedMLP` is the blog's MLP, and
actbench/convnet.py holds the ConvNet. Every batch is laid out [K, B, ...]; every parameter and
buffer stacks the members along its first dimension as K equal chunks, so that a lone member's
tensors are exactly a plain model's (nn.Linear's, nn.Conv2d's) and a checkpoint splits by
chunking. `step_losses` is the one place where a lone member takes a plain model's path. Each
member's initial weights come from its own generator, so they do not depend on its pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from actbench.checks import POSITIVE_INT, is_num, locate
from actbench.data import INPUT_SHAPE, N_CLASSES, derive_seed, generator
from actbench.errors import ConfigError
from actbench.model_facts import Elementwise, PlainModel
from actbench.packer import INITS, PackedLinear, init_layer
from actbench.tags import ACC, LOSS, TEST, TRAIN, VAL, metric_tag

# optimizers whose update of each weight depends on that weight's own gradient history only:
# with them, the members of a pack train exactly as apart
ELEMENTWISE_OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop")


def linear(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """Each member's affine layer: h [K, B, in], w [K*out, in], b [K*out] or None -> [K, B, out].
    A lone member's training step passes h as [B, in] (see `step_losses`) and gets nn.Linear's kernel."""
    if h.dim() == 2:
        return F.linear(h, w, b)
    k = h.shape[0]
    return PackedLinear.apply(h, w.view(k, -1, w.shape[1]), None if b is None else b.view(k, 1, -1))


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
        # the packed reduction (per example, then each member's mean), not F.cross_entropy's own
        # mean, which rounds differently: a member's loss is then the same bits packed or alone
        loss = F.cross_entropy(logits, y[0], reduction="none").mean()
        return loss, logits.detach().unsqueeze(0), loss.detach().view(1)
    logits = net(x)
    losses = cross_entropy(logits, y)
    return losses.sum(), logits.detach(), losses.detach()


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """The share of correct predictions over the batch dimension: logits [..., B, C], y [..., B] -> [...]."""
    return (logits.argmax(-1) == y).float().mean(-1)


class PackedNet(nn.Module):
    """The protocol of a packed model: what train, placement, run identity and the probes ask of it.
    A new model is one subclass (in any importable module), one conf/model/*.yaml naming it as
    `_target_`, and tests; PackedMLP and actbench/convnet.py are the examples.

    Construction: `Model(seeds, activation, **cfg.model, input_shape=..., n_classes=...)`, where
    `activation` maps pre-activations elementwise with the members on dim 0 (one function, or
    actbench.activations.PerMember). For members to train in a pack exactly as apart:

    - every parameter and buffer stacks the members along dim 0 as K equal chunks (`per_seed`
      views one; checkpoints split by chunking, and a resumed or lone member is one chunk);
    - member k's initial weights come from its own `generator(seed, "init")` (see `init_layer`),
      so they do not depend on its pack;
    - dropout goes through `drop`, which draws each member's masks from its own stream.

    A subclass provides:

    - `forward(x, record=None)`: x [K, B, *input_shape] -> logits [K, B, classes]; a lone member's
      x may come as [B, *input_shape] (`step_losses`) and gives [B, classes]. `record`, if given,
      receives (z, f(z)) for every hidden activation, z as [K, n, units] or [K, n, C, H, W]: the
      probes' dead units or channels, saturation and histograms come from these (hidden layer i,
      counted from 1, in the order recorded).
    - `probe_weights()`: the weights whose gradient norms the probes follow, input side first,
      the output layer last (their first-over-last ratio is the vanishing-gradient signature).
    - `member(k)`: member k as torch's own layers (an nn.Module holding its weights; ours are
      nn.Sequential), to export a trained member and to check the packed maths against torch's.
    - class methods on the model's config node: `hparams` (its flat hyperparameters for
      logging, each under its config key, so that a swept `model.KEY` is a column of the HParams
      tab), `n_params` and `bytes_per_member` (one more member's memory, for sizing packs),
      `flops_per_sample` (a forward pass, for choosing threads), `draws_random` (whether a
      training step draws random numbers, which a CUDA graph would freeze), and the attributes
      `RULES` (what each of its config keys must be, checked before anything is built),
      `EVAL_BATCH` (its evaluation batch for data.eval_batch_size=auto) and `MIXES_ACTIVATIONS`
      (whether members of different activations gain by sharing a pack).

    It inherits the members' bookkeeping: `seeds`, `n_seeds`, `per_seed`, and per-member dropout
    streams re-derived from (seed, epoch) by `start_epoch`, drawn by `drop`.
    """

    def __init__(self, seeds: list[int], activation: Callable[[Tensor], Tensor], dropout: float = 0.0):
        super().__init__()
        self.seeds, self.activation, self.dropout = list(seeds), activation, float(dropout)
        self._dropout_gens: list[torch.Generator] = []

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def per_seed(self, t: Tensor) -> Tensor:
        """A parameter, buffer or gradient, viewed as [K, ...]: member k's own tensor at [k]."""
        return t.view(self.n_seeds, -1, *t.shape[1:])

    def start_epoch(self, epoch: int, shard: tuple[int, int] = (0, 1)) -> None:
        """Re-derive each member's dropout stream from (seed, epoch): a resumed run draws the same
        masks. Under DDP each device, holding its own share of the batch, gets its own stream."""
        if self.dropout > 0:
            device = next(self.parameters()).device
            extra = (shard[0],) if shard[1] > 1 else ()
            self._dropout_gens = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout", epoch, *extra)) for s in self.seeds
            ]

    def drop(self, h: Tensor) -> Tensor:
        """Dropout with each member's own masks, for h [K, B, ...] (or a lone member's [B, ...])."""
        if not (self.dropout > 0 and self.training):
            return h
        keep = 1.0 - self.dropout
        if not self._dropout_gens:
            self.start_epoch(0)
        # a lone member's h may come with or without its member dimension: the same values either way
        rows = h.shape[1:] if self.n_seeds > 1 else (h.numel(),)
        mask = torch.stack([torch.empty(rows, device=h.device).bernoulli_(keep, generator=g) for g in self._dropout_gens])
        return h * mask.view(h.shape) / keep

    # the model's config keys and what each must be (key -> (test, what it must be)), checked as
    # `model.KEY` before anything is built; a subclass adds its own to these
    RULES: dict = {
        "init": (lambda v: v in INITS, f"one of {', '.join(INITS)}"),
        "dropout": (lambda v: is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    }
    EVAL_BATCH = 10_000  # data.eval_batch_size=auto: examples per evaluation batch that suit this model
    MIXES_ACTIVATIONS = True  # whether members of different activations share a pack (it must pay)

    def member_activation(self, k: int) -> nn.Module:
        """Member k's own activation, as a module."""
        from actbench.activations import PerMember

        fn = self.activation
        if isinstance(fn, PerMember):
            fn = next(f for a, b, f in fn.spans if a <= k < b)
        return fn if isinstance(fn, nn.Module) else Elementwise(fn)

    @classmethod
    def draws_random(cls, cfg) -> bool:
        return bool(cfg.get("dropout", 0))

    def probe_weights(self) -> list[Tensor]:
        raise NotImplementedError

    @classmethod
    def hparams(cls, cfg) -> dict:
        raise NotImplementedError

    @classmethod
    def n_params(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        raise NotImplementedError

    @classmethod
    def flops_per_sample(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        raise NotImplementedError

    @classmethod
    def bytes_per_member(cls, cfg, rows: int, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        """One more member's memory, roughly: weights with their gradients and two Adam moments,
        and the activations of the largest pass over `rows` examples."""
        raise NotImplementedError


def copy_into(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    """torch's layer with one member's weight and bias."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def model_class(cfg) -> type[PackedNet] | PlainModel:
    """What `cfg.model` names, with the model's facts before one is built: a plain model's found
    from it (`PlainModel`), a hand-packed one's as its class states them."""
    cls = locate(cfg.model._target_, "model._target_")
    if isinstance(cls, type) and issubclass(cls, PackedNet):
        return cls
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return PlainModel(cls, cfg)
    raise ConfigError(f"model._target_={cfg.model._target_!r}: must name a torch.nn.Module class")


def eval_batch_size(cfg) -> int:
    """data.eval_batch_size, where `auto` is the model's own choice."""
    value = cfg.data.eval_batch_size
    return model_class(cfg).EVAL_BATCH if value == "auto" else int(value)


class PackedMLP(PackedNet):
    """K independent MLPs: input -> width x depth -> classes, one per packed member, as one
    module; a dense layer's weight is [K*out, in], so a lone member's is nn.Linear's."""

    RULES = {
        **PackedNet.RULES,
        "depth": POSITIVE_INT,
        "width": POSITIVE_INT,
    }

    def __init__(
        self,
        seeds: list[int],
        activation: Callable[[Tensor], Tensor],
        depth: int = 1,
        width: int = 128,
        init: str = "torch",
        dropout: float = 0.0,
        input_shape=INPUT_SHAPE,
        n_classes: int = N_CLASSES,
    ):
        super().__init__(seeds, activation, dropout)
        self.depth, self.init, self.input_shape = depth, init, tuple(input_shape)
        k = len(self.seeds)
        sizes = [math.prod(input_shape)] + [width] * depth + [n_classes]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(k * o, i)) for i, o in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(k * o)) for o in sizes[1:])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for k, seed in enumerate(self.seeds):
            gen = generator(seed, "init")
            for w, b in zip(self.weights, self.biases):
                init_layer(self.per_seed(w)[k], self.per_seed(b)[k], self.init, gen)

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
        *hidden, (w_out, b_out) = self.layers()
        n = len(self.input_shape)
        # images to rows (a view of an input that needs no gradient); rows stay rows
        h = x.flatten(-n) if tuple(x.shape[-n:]) == self.input_shape else x
        for w, b in hidden:
            z = linear(h, w, b)
            h = self.activation(z.clone() if record is not None else z)  # an in-place activation must not overwrite what is recorded
            if record is not None:
                record.append((z, h))
            h = self.drop(h)
        return linear(h, w_out, b_out)

    def probe_weights(self) -> list[Tensor]:
        return list(self.weights)

    def member(self, k: int) -> nn.Sequential:
        act, (*hidden, last) = self.member_activation(k), self.layers()
        layers: list[nn.Module] = [nn.Flatten()]
        for w, b in hidden:
            w_k = self.per_seed(w)[k]
            layers += [copy_into(nn.Linear(w_k.shape[1], w_k.shape[0]), w_k, self.per_seed(b)[k]), act]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
        w_k = self.per_seed(last[0])[k]
        return nn.Sequential(*layers, copy_into(nn.Linear(w_k.shape[1], w_k.shape[0]), w_k, self.per_seed(last[1])[k]))

    @classmethod
    def hparams(cls, cfg) -> dict:
        return {"model": "mlp", "depth": int(cfg.depth), "width": int(cfg.width), "init": str(cfg.init), "dropout": float(cfg.dropout)}

    @classmethod
    def _sizes(cls, cfg, input_shape, n_classes) -> list[int]:
        return [math.prod(input_shape)] + [int(cfg.width)] * int(cfg.depth) + [n_classes]

    @classmethod
    def n_params(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        sizes = cls._sizes(cfg, input_shape, n_classes)
        return sum(i * o + o for i, o in zip(sizes, sizes[1:]))

    @classmethod
    def flops_per_sample(cls, cfg, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        return 2 * cls.n_params(cfg, input_shape, n_classes)

    @classmethod
    def bytes_per_member(cls, cfg, rows: int, input_shape=INPUT_SHAPE, n_classes: int = N_CLASSES) -> int:
        width, depth = int(cfg.width), int(cfg.depth)
        activations = rows * (math.prod(input_shape) + 3 * width * depth + 2 * n_classes)  # inputs, z, f(z), f'(z) for probes
        return 4 * (4 * cls.n_params(cfg, input_shape, n_classes) + activations)


# Fused CPU Adam updates a tensor's SIMD-vector body and its scalar tail with slightly different
# rounding, so an element's update depends on where it sits in its tensor: a member whose share
# of a tensor is not a whole number of vectors (a classifier bias of 10) sits elsewhere in a pack
# than alone, and trained a little differently packed (ReLU and Leaky ReLU runs then part ways).
SIMD_ELEMENTS = 64  # a multiple of every CPU's float32 vector width (AVX-512: 16)


def param_groups(params, members: int = 1, fused: bool = False) -> list:
    """The parameters as an optimizer's groups. With a fused optimizer, those whose per-member size
    is not a whole number of SIMD_ELEMENTS (biases, batch norm's scales: a few hundred numbers) get
    the same maths tensor by tensor (fused=False, foreach=False), which rounds every element
    alike: a packed member's update is then its lone run's, bit for bit."""
    params = list(params)
    if not fused:
        return params
    aligned = [p for p in params if (p.numel() // members) % SIMD_ELEMENTS == 0]
    rest = [p for p in params if (p.numel() // members) % SIMD_ELEMENTS]
    return [{"params": aligned}] + ([{"params": rest, "fused": False, "foreach": False}] if rest else [])


class Classifier(LightningModule):
    """Trains a PackedNet with manual optimisation: each Lightning step runs the chunk of
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

    def __init__(self, net: PackedNet, optimizer: Callable, cuda_graph: bool = False):
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
        fused = bool(getattr(self.optimizer_factory, "keywords", {}).get("fused"))
        return self.optimizer_factory(param_groups(self.net.parameters(), self.net.n_seeds, fused))

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
