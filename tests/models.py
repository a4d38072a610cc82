"""Test-only models, named by runs through `model._target_=models.<Class>` (tests/ on PYTHONPATH),
and how tests pack and train a model: `pack`, `packed_mlp`, `batch`, `train`."""

import math

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from actbench.conf import CONF_DIR
from actbench.model import param_groups, step_losses
from actbench.model_facts import activation_factory, fresh
from actbench.models.mlp import MLP
from actbench.packer import LinearTwin, Packed
from actbench.schedule import clip_members

ACTS = {name: OmegaConf.create({"_target_": target}) for name, target in
        [("relu", "torch.nn.ReLU"), ("gelu", "torch.nn.GELU"), ("sigmoid", "torch.nn.Sigmoid"), ("prelu", "torch.nn.PReLU"),
         ("swish_beta", "actbench.activations.SwishBeta")]}
ACTS.update({name: OmegaConf.load(CONF_DIR / "activation" / f"{name}.yaml") for name in ("swiglu", "geglu", "reglu", "relu2")})
SHAPE = (1, 8, 8)


def pack(cls, seeds, names, shape=SHAPE, classes: int = 10, dtype=torch.float32, **keys) -> Packed:
    factories = {n: activation_factory(ACTS[n]) for n in names}
    build = lambda act: cls(act, shape, classes, **keys)  # noqa: E731
    return Packed(build, seeds, [factories[n] for n in names], shape, keys.pop("init", "torch"), dtype)


def train(net: Packed, x: torch.Tensor, y: torch.Tensor, steps: int = 6, rate=None, clip_norm=None) -> torch.Tensor:
    """Per-member losses [steps, K] of a few fused-Adam steps over one batch (as actbench steps),
    with a rate schedule (actbench.schedule.rate_factor's) and clipping when given."""
    torch.manual_seed(123)  # anything drawing from torch's global stream would show up as a difference
    opt = torch.optim.Adam(param_groups(net.parameters(), net.n_seeds, fused=True), lr=1e-2, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, rate) if rate else None
    net.train()
    net.start_epoch(0)
    out = []
    for _ in range(steps):
        objective, _, losses = step_losses(net, x if net.n_seeds > 1 else x[:1], y)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        if clip_norm:
            clip_members(net, clip_norm)
        opt.step()
        if schedule:
            schedule.step()
        out.append(losses)
    return torch.stack(out)


def batch(k: int, shape=SHAPE, n: int = 12):
    gen = torch.Generator().manual_seed(7)
    return torch.randn(k, n, *shape, generator=gen), torch.randint(0, 10, (k, n), generator=gen)



def packed_mlp(seeds, activation, *, input_shape=(784,), init: str = "torch", **keys) -> Packed:
    """actbench's pack of the plain MLP on rows of 784 pixels: `activation` (a module or a function
    of one tensor) for every member, or a list of one per member."""
    acts = activation if isinstance(activation, list) else [activation] * len(seeds)
    made = {id(fn): (lambda fn=fn: fresh(fn)) for fn in acts}
    return Packed(lambda act: MLP(act, input_shape, 10, **keys), seeds, [made[id(fn)] for fn in acts], input_shape, init)


def dense(net: Packed) -> list[LinearTwin]:
    """A pack's dense layers, in the order the model registers them."""
    return [m for m in net.modules() if isinstance(m, LinearTwin)]


class Blocks(MLP):
    """The MLP under a key of its own, which its constructor checks: a refusal names the key."""

    def __init__(self, activation, input_shape, n_classes, blocks: int = 1, **kw):
        if not (isinstance(blocks, int) and blocks >= 1):
            raise ValueError(f"blocks={blocks!r}: must be an integer >= 1")
        super().__init__(activation, input_shape, n_classes, **{**kw, "depth": blocks})


class Broken(nn.Module):
    """A model whose constructor fails for a reason of its own (not a refused key)."""

    def __init__(self, activation, input_shape, n_classes, **kw):
        raise RuntimeError("planted model failure")


# ---------------------------------------------------------------- plain PyTorch models, packed by actbench


class NormNet(nn.Module):
    """Dense layers with batch norm, dropout and LayerNorm: every kind of per-member state."""

    def __init__(self, activation, input_shape, n_classes, width: int = 16, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.BatchNorm1d(width), activation(),
                                  nn.Dropout(dropout), nn.Linear(width, width), nn.LayerNorm(width), activation())
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class TinyTransformer(nn.Module):
    """Image rows as tokens: a linear embedding, learned positions, one pre-norm block of causal
    attention (F.scaled_dot_product_attention) and a feed-forward, mean pooling."""

    def __init__(self, activation, input_shape, n_classes, dim: int = 16, heads: int = 2):
        super().__init__()
        rows, cols = input_shape[-2:]
        self.heads = heads
        self.embed, self.pos = nn.Linear(cols, dim), nn.Embedding(rows, dim)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.ff = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), activation(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        x = x.flatten(1, -2)  # [B, rows, cols]
        b, t, _ = x.shape
        h = self.embed(x) + self.pos(torch.arange(t, device=x.device))
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1))
        h = h + self.ff(self.norm2(h))
        return self.head(h.mean(1))


class OwnParameter(nn.Module):
    """A parameter used beside sub-layers: a pack cannot hold it."""

    def __init__(self, activation, input_shape, n_classes):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.layer = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes))

    def forward(self, x):
        return self.layer(x) * self.scale
