"""Packing any plain PyTorch model: K members, each with its own seed, data, dropout masks and
activation, trained as one batched model that computes for each member the bits it computes alone.

The pack travels folded into the batch dimension: the model's forward sees [K*B, ...], member k's
rows at [k*B:(k+1)*B], so its own reshapes (`x.flatten(1)`, `view(B, -1)`) work unchanged. Every
layer that holds weights, draws random numbers or is an activation is swapped for a packed twin
that unfolds [K*B, ...] to [K, B, ...] inside:

- `nn.Linear`: one batched product for all members (`PackedLinear`);
- `nn.Conv1d/2d/3d`: each member's convolution on its rows (in channels-last for a 2-D one);
- the activations the model made by calling `activation()`: each member's own, members of one
  activation in one call;
- `nn.Dropout`: each member's masks from its own stream, re-derived from (seed, epoch);
- any other layer with parameters or buffers and no sub-layers (LayerNorm, BatchNorm, Embedding,
  a user's own): run member by member with that member's tensors (`MemberLoop`).

Every twin stores each parameter and buffer as K equal chunks along dim 0, so a member's tensors
are its chunk, a checkpoint splits by chunking, and a pack of one holds the plain layer's shapes.
A lone run goes through the same twins as a pack of one, so packed equals apart by construction;
the batched product's bits equal `F.linear`'s, which a lone member's twin calls.

A module that holds its own parameters and also has sub-layers cannot be packed (its forward uses
the parameter in ways only it knows); `unpackable` names it, and its runs train in packs of one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from actbench.activations import in_per_out
from actbench.data import derive_seed, generator

INITS = ("torch", "glorot", "kaiming", "lecun")


def init_layer(w: Tensor, b: Tensor | None, scheme: str, gen: torch.Generator) -> None:
    """Initialise one member's layer in place: w [out, in] (dense) or [out, in, *kernel] (a
    convolution, whose fans count its receptive field, as torch's and Keras's do), b [out] or
    None (a layer without bias)."""
    fan_in, fan_out = w[0].numel(), w.shape[0] * w[0][0].numel()
    if scheme == "torch":  # nn.Linear's and nn.Conv2d's default: U(+-1/sqrt(fan_in)) for weight and bias
        bound = 1.0 / math.sqrt(fan_in)
        w.uniform_(-bound, bound, generator=gen)
        if b is not None:
            b.uniform_(-bound, bound, generator=gen)
        return
    if scheme == "glorot":  # Keras Dense and Conv2D default: glorot-uniform weights, zero bias
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w.uniform_(-bound, bound, generator=gen)
    elif scheme == "kaiming":  # He normal, fan_in, gain sqrt(2)
        w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
    elif scheme == "lecun":  # LeCun normal, what SELU assumes
        w.normal_(0.0, math.sqrt(1.0 / fan_in), generator=gen)
    else:
        raise ValueError(f"model.init must be one of {', '.join(INITS)}, got {scheme!r}")
    if b is not None:
        b.zero_()


class PackedLinear(torch.autograd.Function):
    """z = h @ W^T + b for K members at once: h [K, B, in], W [K, out, in], b [K, 1, out].

    The same maths as baddbmm on W's transpose, but its backward computes the weight gradient
    directly in W's [K, out, in] layout; autograd's would be [K, in, out], and transposing it
    back costs a copy of every weight gradient at every step (half a packed step on a CPU)."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        ctx.save_for_backward(h, w)
        return torch.bmm(h, w.transpose(1, 2)) if b is None else torch.baddbmm(b, h, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w = ctx.saved_tensors
        grad_h = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        grad_b = grad.sum(1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_h, torch.bmm(grad.transpose(1, 2), h), grad_b


def stacked(t: Tensor, k: int) -> Tensor:
    """K copies of a layer's tensor as K equal chunks along dim 0 ([K] for a scalar)."""
    t = t.detach()
    return t.repeat(k, *[1] * (t.dim() - 1)) if t.dim() else t.expand(k).clone()  # a copy, never a view of t


class Twin(nn.Module):
    """A packed layer: K members' tensors, each stacked along dim 0 (`member_tensor` views one)."""

    k: int

    def member_tensor(self, t: Tensor, k: int) -> Tensor:
        return t.view(self.k, -1, *t.shape[1:])[k]


class LinearTwin(Twin):
    """nn.Linear for K members: weight [K*out, in], bias [K*out]; [K*B, ..., in] -> [K*B, ..., out]."""

    def __init__(self, layer: nn.Linear, k: int):
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(stacked(layer.weight, k))
        self.bias = None if layer.bias is None else nn.Parameter(stacked(layer.bias, k))

    def forward(self, h: Tensor) -> Tensor:
        if self.k == 1:
            return F.linear(h, self.weight, self.bias)
        w, b, k = self.weight, self.bias, self.k
        out = PackedLinear.apply(h.reshape(k, -1, w.shape[1]), w.view(k, -1, w.shape[1]), None if b is None else b.view(k, 1, -1))
        return out.view(*h.shape[:-1], -1)


class ConvTwin(Twin):
    """nn.Conv1d/2d/3d for K members: weight [K*out, in/groups, *kernel], each member's own
    convolution on its rows, a 2-D one in channels-last (oneDNN's fast layout on a CPU, as a tuned
    plain loop has it). Member by member, not as one grouped convolution: a grouped one sums the
    weight's gradient in another order than a lone one (up to 1e-3 apart, measured on an AMD
    EPYC), and a member must compute its lone bits."""

    def __init__(self, layer: nn.modules.conv._ConvNd, k: int):
        super().__init__()
        self.k, self.layer = k, [layer]  # the template: its stride, padding and padding mode
        self.format = torch.channels_last if layer.weight.dim() == 4 else torch.contiguous_format
        # .to, not .contiguous: with one input channel either layout is contiguous, and only .to
        # sets the strides that make oneDNN pick its channels-last kernels
        self.weight = nn.Parameter(stacked(layer.weight, k).to(memory_format=self.format))
        self.bias = None if layer.bias is None else nn.Parameter(stacked(layer.bias, k))

    def forward(self, x: Tensor) -> Tensor:
        conv = self.layer[0]._conv_forward
        x = x.to(memory_format=self.format)
        if self.k == 1:
            return conv(x, self.weight, self.bias)
        biases = [None] * self.k if self.bias is None else self.bias.chunk(self.k)
        return torch.cat([conv(part, w, b) for part, w, b in zip(x.chunk(self.k), self.weight.chunk(self.k), biases)])


class Site:
    """What an activation twin shares: while `record` is a list it receives (z, f(z), the twin), z
    and f(z) as [K, B, ...], for the probes; `as_function` applies the members' activations of
    this place to z laid out [K, ...] (the probes' derivative)."""

    k: int
    record: list | None = None
    # where its units sit: at dim 1 after a convolution or batch norm (channels), else last (a
    # dense layer's features, over tokens); set from the forward order where the trace knows it
    channels_first = True

    def apply_members(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def recorded(self, z: Tensor) -> Tensor:
        if self.record is None:
            return self.apply_members(z)
        h = self.apply_members(z.clone())  # an in-place activation must not overwrite what is recorded
        self.record.append((z.view(self.k, -1, *z.shape[1:]), h.view(self.k, -1, *h.shape[1:]), self))
        return h

    def as_function(self) -> Callable[[Tensor], Tensor]:
        return lambda z: self.apply_members(z.reshape(-1, *z.shape[2:])).view(*z.shape[:-1], -1)

    @property
    def per_out(self) -> int:
        """Inputs per output of this place's activations (a gated unit's 2; equal across a pack)."""
        return in_per_out(self.template())

    def template(self) -> nn.Module:
        raise NotImplementedError

    def gate_function(self) -> Callable[[Tensor], Tensor] | None:
        """For a gated place whose activations name their `gate` (actbench.activations.Gated), the
        members' gates applied to their first chunks' values laid out [K, ...]; else None."""
        return None


class ActivationTwin(Site, Twin):
    """One place where the model applies a fixed activation: each member's own on its rows,
    neighbouring members of one activation in one call."""

    def __init__(self, fns: list[nn.Module]):
        super().__init__()
        self.k = len(fns)
        self.spans: list[tuple[int, int, nn.Module]] = []
        for i, fn in enumerate(fns):
            if self.spans and self.spans[-1][2] is fn:
                self.spans[-1] = (self.spans[-1][0], i + 1, fn)
            else:
                self.spans.append((i, i + 1, fn))
        self.fns = nn.ModuleList(dict.fromkeys(f for _, _, f in self.spans))  # buffers follow the device

    def apply_members(self, z: Tensor) -> Tensor:
        if len(self.spans) == 1:
            return self.spans[0][2](z)
        rows = z.shape[0] // self.k
        # split, not slicing: its backward is one concatenation, where each slice's would be a
        # zero-filled copy of the whole gradient, summed
        parts = z.split([(b - a) * rows for a, b, _ in self.spans])
        return torch.cat([fn(part) for part, (_, _, fn) in zip(parts, self.spans)])

    def forward(self, z: Tensor) -> Tensor:
        return self.recorded(z)

    def template(self) -> nn.Module:
        return self.spans[0][2]

    def gate_function(self) -> Callable[[Tensor], Tensor] | None:
        gates = [getattr(fn, "gate", None) for _, _, fn in self.spans]
        if not all(isinstance(g, nn.Module) for g in gates):
            return None

        def apply(a: Tensor) -> Tensor:
            rows = a.shape[0] // self.k
            return torch.cat([g(part) for part, g, (i, j, _) in zip(a.split([(j - i) * rows for i, j, _ in self.spans]), gates, self.spans)])

        return lambda a: apply(a.reshape(-1, *a.shape[2:])).view(a.shape)


class DropoutStreams:
    """Each member's dropout stream, re-derived from (seed, epoch), so that a member draws the
    same masks packed, alone or resumed; the model's dropout layers draw from it in forward order."""

    def __init__(self, seeds: list[int]):
        self.seeds, self.gens = list(seeds), []

    def start_epoch(self, epoch: int, device, shard: tuple[int, int] = (0, 1)) -> None:
        """Under DDP each device, holding its own share of the batch, gets its own stream."""
        extra = (shard[0],) if shard[1] > 1 else ()
        self.gens = [torch.Generator(device=device).manual_seed(derive_seed(s, "dropout", epoch, *extra)) for s in self.seeds]


class DropoutTwin(Twin):
    """nn.Dropout with each member's masks drawn from its own stream."""

    def __init__(self, p: float, streams: "DropoutStreams"):
        super().__init__()
        self.p, self.streams, self.k = float(p), streams, len(streams.seeds)

    def forward(self, h: Tensor) -> Tensor:
        if not (self.p > 0 and self.training):
            return h
        if not self.streams.gens:
            self.streams.start_epoch(0, h.device)
        keep = 1.0 - self.p
        rows = (h.numel() // self.k,)
        mask = torch.stack([torch.empty(rows, device=h.device).bernoulli_(keep, generator=g) for g in self.streams.gens])
        return h * mask.view(h.shape) / keep


class Batch:
    """The folded batch's rows in the current forward pass, for layers that take something else."""

    rows = 0


def trace(build: Callable, activation: Callable[[], nn.Module], input_shape, dtype=torch.float32) -> tuple[list[str], set[str]]:
    """One member on the meta device, run on batches of one and two: (its layers without sub-layers,
    by name, in the order its forward first calls them; those whose input does not follow the
    batch, such as a position embedding's). ([], set()) where the model does not run on meta."""
    with torch.device("meta"):
        model = build(activation).eval()  # batch norm refuses a training batch of one
    leaves = {m: name for name, m in model.named_modules() if not any(True for _ in m.children())}
    seen: list[dict[str, int | None]] = [{}, {}]
    try:
        for i, b in enumerate((1, 2)):
            def note(m, args, i=i):
                first = args[0] if args and torch.is_tensor(args[0]) and args[0].dim() else None
                seen[i].setdefault(leaves[m], None if first is None else first.shape[0])
            hooks = [m.register_forward_pre_hook(note) for m in leaves]
            try:
                with torch.no_grad():
                    model(torch.zeros(b, *input_shape, dtype=dtype, device="meta"))
            finally:
                for h in hooks:
                    h.remove()
    except Exception:  # noqa: BLE001 - an op without a meta kernel: registration order, every input batched
        return [], set()
    return list(seen[0]), {n for n, rows in seen[0].items() if rows is not None and rows == seen[1].get(n)}


class MemberLoop(Twin):
    """Any other layer with parameters or buffers and no sub-layers (norms, embeddings, a user's
    own), run member by member on that member's rows with that member's tensors: exactly
    the layer's own computation, so it needs nothing from the layer. Buffers that the layer
    updates in place (batch norm's running statistics) are updated in each member's chunk."""

    def __init__(self, layer: nn.Module, k: int, batch: "Batch", shared: bool = False):
        super().__init__()
        self.k, self.layer = k, [layer]  # in a list: the template's own tensors are not this module's
        self.batch, self.shared = batch, shared
        self.shapes = {}
        for name, t in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
            if t is None:
                continue
            self.shapes[name] = t.shape
            if isinstance(t, nn.Parameter):
                self.register_parameter(name, nn.Parameter(stacked(t, k), requires_grad=t.requires_grad))
            else:
                self.register_buffer(name, stacked(t, k))

    def members(self) -> list[dict[str, Tensor]]:
        tensors = {name: getattr(self, name) for name in self.shapes}
        per = {name: t.view(self.k, *self.shapes[name]).unbind(0) for name, t in tensors.items()}
        return [{name: parts[i] for name, parts in per.items()} for i in range(self.k)]

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        layer = self.layer[0]
        layer.train(self.training)
        if self.k == 1:
            return functional_call(layer, self.members()[0], (x, *args), kwargs)
        if self.shared:  # an input of no example (positions): each member's output, as one per example
            outs = [functional_call(layer, own, (x, *args), kwargs) for own in self.members()]
            return torch.cat([o.expand(self.batch.rows // self.k, *o.shape) for o in outs])
        return torch.cat([functional_call(layer, own, (part, *args), kwargs) for part, own in zip(x.chunk(self.k), self.members())])

    def _apply(self, fn, recurse=True):
        self.layer[0]._apply(fn)  # the template's device and dtype follow (its stray tensors, if any)
        return super()._apply(fn, recurse)


class LearnableTwin(Site, MemberLoop):
    """One place where the model applies a learnable activation (PReLU's slope, a learned beta):
    each member's own parameters, stacked as any layer's, applied to its rows. A pack holds one
    activation config when it is learnable (actbench.packing), so one template serves all members."""

    def apply_members(self, z: Tensor) -> Tensor:
        return MemberLoop.forward(self, z)

    def forward(self, z: Tensor) -> Tensor:
        return self.recorded(z)

    def template(self) -> nn.Module:
        return self.layer[0]


def build_noting_activations(build: Callable, activation: Callable[[], nn.Module]) -> tuple[nn.Module, list[nn.Module]]:
    """A model built with `activation`, and the activation modules it made, in the order it made them."""
    made: list[nn.Module] = []

    def noted() -> nn.Module:
        made.append(activation())
        return made[-1]

    return build(noted), made


def unpackable(model: nn.Module, activations: set[int]) -> list[str]:
    """The modules a pack cannot hold: those with their own parameters beside sub-layers."""
    out = []
    for name, m in model.named_modules():
        if id(m) in activations or not any(True for _ in m.children()):
            continue
        if any(True for _ in m.parameters(recurse=False)) or any(b is not None for b in m.buffers(recurse=False)):
            out.append(f"{name or 'the model'} ({type(m).__name__})")
    return out


def tied_parameters(model: nn.Module) -> list[list[tuple[str, str]]]:
    """The parameters that several layers hold (weight tying), each as its [(layer, name), ...]."""
    holders: dict[int, list[tuple[str, str]]] = {}
    for layer, m in model.named_modules():
        for name, p in m.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((layer, name))
    return [h for h in holders.values() if len(h) > 1]


class Packed(nn.Module):
    """K members of one plain model as one module: forward takes [K, B, ...] (a lone member may
    come as [B, ...]) and gives [K, B, ...] ([B, ...]). What actbench reads from a pack: `seeds`,
    `n_seeds`, `per_seed`, `start_epoch`, `probe_weights`, `activation` (for the probes'
    derivative), `member(k)` (member k as its own plain model)."""

    def __init__(self, build: Callable[[Callable[[], nn.Module]], nn.Module], seeds: list[int],
                 activations: list[Callable[[], nn.Module]], input_shape, init: str = "torch", input_dtype=torch.float32):
        super().__init__()
        self.input_dims = len(input_shape)
        if init not in INITS:
            raise ValueError(f"model.init must be one of {', '.join(INITS)}, got {init!r}")
        self.seeds, self.build, self.member_activations = list(seeds), build, list(activations)
        k = len(self.seeds)
        with torch.random.fork_rng(devices=[]):  # the model's own initialisation is replaced below
            model, made = build_noting_activations(build, activations[0])
        sites = {id(m): i for i, m in enumerate(made)}
        if k > 1 and (bad := unpackable(model, set(sites))):
            raise Unpackable(f"cannot pack {', '.join(bad)}: its parameters sit beside sub-layers")
        # each member's activation at every site: one instance per distinct activation and site
        per_site = [[None] * k for _ in made]
        for factory in dict.fromkeys(activations):
            for site in range(len(made)):
                fn = made[site] if factory is activations[0] else factory()
                if in_per_out(fn) != in_per_out(made[site]):
                    raise Unpackable("a gated activation packs only with gated ones: its layers have other shapes than a pointwise one's")
                for i in range(k):
                    if activations[i] is factory:
                        per_site[site][i] = fn
        self.dropouts: list[DropoutTwin] = []
        self.streams, self.batch = DropoutStreams(self.seeds), Batch()
        order, self.shared = trace(build, activations[0], input_shape, input_dtype)
        names = {m: name for name, m in model.named_modules()}
        tied = tied_parameters(model)
        self.model = self._twin(model, sites, per_site, names)
        twins = dict(self.model.named_modules())
        for (first, name), *others in tied:
            shared = getattr(twins[first], name)
            for other, other_name in others:
                if getattr(twins[other], other_name).shape != shared.shape:
                    raise Unpackable(f"{first}.{name} is tied to {other}.{other_name}, which a pack lays out otherwise")
                setattr(twins[other], other_name, shared)  # tied in the pack as in the model (an output layer and its embedding)
        # the weight matrices in the order the forward uses them (registration order where unknown)
        self.weights = [twins[n] for n in order if isinstance(twins.get(n), (LinearTwin, ConvTwin))] or \
            [m for m in self.model.modules() if isinstance(m, (LinearTwin, ConvTwin))]
        channels_first = True
        for name in order:
            m = twins.get(name)
            layer = m.layer[0] if isinstance(m, MemberLoop) else m
            if isinstance(m, Site):
                m.channels_first = channels_first
            elif isinstance(layer, (ConvTwin, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
                channels_first = True
            elif isinstance(layer, (LinearTwin, nn.LayerNorm, nn.RMSNorm, nn.Embedding)):
                channels_first = False
        self.reset_parameters(init)

    def _twin(self, module: nn.Module, sites: dict[int, int], per_site: list, names: dict) -> nn.Module:
        k = self.n_seeds
        if id(module) in sites:
            fns = per_site[sites[id(module)]]
            if any(True for _ in fns[0].parameters()):
                if len(set(map(id, fns))) > 1:
                    raise Unpackable("a learnable activation packs only with members of the same activation")
                return LearnableTwin(fns[0], k, self.batch)
            return ActivationTwin(fns)
        if isinstance(module, nn.Linear):
            return LinearTwin(module, k)
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            return ConvTwin(module, k)
        if isinstance(module, nn.Dropout):
            self.dropouts.append(DropoutTwin(module.p, self.streams))
            return self.dropouts[-1]
        children = list(module.named_children())
        if not children and (any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))):
            return MemberLoop(module, k, self.batch, names[module] in self.shared)
        for name, child in children:
            setattr(module, name, self._twin(child, sites, per_site, names))
        return module

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def per_seed(self, t: Tensor) -> Tensor:
        """A parameter, buffer or gradient, viewed as [K, ...]: member k's own tensor at [k]."""
        return t.view(self.n_seeds, -1, *t.shape[1:])

    @torch.no_grad()
    def reset_parameters(self, init: str) -> None:
        """Each member's initial weights from its own generator, so they do not depend on its pack:
        dense layers (and convolutions) by `init`, in the order the model registers them; other
        layers by their own reset_parameters, with torch's random numbers seeded per member and layer.
        A tied weight is initialised once, by the first layer that holds it (an embedding's way)."""
        for i, seed in enumerate(self.seeds):
            gen = generator(seed, "init")
            done: set[int] = set()
            for j, m in enumerate(self.model.modules()):
                own = {id(p) for p in m.parameters(recurse=False)}
                if own and own <= done:
                    continue
                done |= own
                if isinstance(m, (LinearTwin, ConvTwin)):
                    init_layer(m.member_tensor(m.weight, i), None if m.bias is None else m.member_tensor(m.bias, i), init, gen)
                elif isinstance(m, MemberLoop) and hasattr(m.layer[0], "reset_parameters"):
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(derive_seed(seed, "init", j))
                        m.layer[0].reset_parameters()
                    for name, t in [*m.layer[0].named_parameters(recurse=False), *m.layer[0].named_buffers(recurse=False)]:
                        own = m.member_tensor(getattr(m, name), i)
                        own.copy_(t.view_as(own))

    def start_epoch(self, epoch: int, shard: tuple[int, int] = (0, 1)) -> None:
        if self.dropouts:
            self.streams.start_epoch(epoch, next(self.parameters()).device, shard)

    def forward(self, x: Tensor, record: list | None = None) -> Tensor:
        lone = x.dim() == self.input_dims + 1  # a lone member's batch, without the member dimension
        folded = x if lone else x.flatten(0, 1)
        twins = [m for m in self.model.modules() if isinstance(m, Site)] if record is not None else []
        for t in twins:
            t.record = record
        self.batch.rows = folded.shape[0]
        try:
            out = self.model(folded)
        finally:
            for t in twins:
                t.record = None
        return out if lone else out.view(self.n_seeds, -1, *out.shape[1:])

    def probe_weights(self) -> list[Tensor]:
        """The weight matrices the gradient probe follows, in the order the forward uses them."""
        return [m.weight for m in self.weights]

    def member(self, i: int) -> nn.Module:
        """Member i as its own plain model (its own activation), holding its current tensors."""
        with torch.random.fork_rng(devices=[]):
            plain = self.build(self.member_activations[i])
        own = {name: self.per_seed(t)[i].reshape(plain.state_dict()[name].shape) for name, t in self.model.state_dict().items()}
        plain.load_state_dict(own)
        return plain


class Unpackable(ValueError):
    """A model whose layers a pack cannot hold; its runs train one by one."""
