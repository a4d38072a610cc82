"""The activation zoo and the one function that turns an `activation` config into a callable.

Most activations are plain `torch.nn` classes named directly by `conf/activation/*.yaml`;
this module holds only what torch lacks, and `build`, which accepts any `_target_` that
names a `torch.nn.Module` class or a plain function of one tensor.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from actbench.conf import CONF_DIR


def gelu_sigmoid(x: Tensor) -> Tensor:
    """GELU's sigmoid approximation x*sigmoid(1.702x) (Hendrycks & Gimpel, 2016)."""
    return x * torch.sigmoid(1.702 * x)


def build(cfg) -> Callable[[Tensor], Tensor]:
    """Instantiate an activation config: a Module class gets its parameters as constructor
    arguments, a function gets them bound with functools.partial."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    from actbench.checks import locate

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    target = locate(cfg._target_, "activation._target_")
    if inspect.isclass(target):
        fn = instantiate(cfg)
    else:
        params = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
        fn = functools.partial(target, **params) if params else target
    if isinstance(fn, nn.Module) and any(True for _ in fn.parameters()):
        # A learnable activation would be shared by every packed seed and skip the optimizer's
        # per-layer bookkeeping; actbench compares fixed nonlinearities.
        raise ValueError(f"activation {cfg._target_} has learnable parameters; actbench supports fixed activations only")
    if not is_elementwise(fn):
        # probes take f'(z) elementwise, and a pack lays seeds along an axis the function must not mix
        raise ValueError(f"activation {cfg._target_} does not act elementwise (like softmax); actbench compares elementwise nonlinearities")
    return fn


class PerMember(nn.Module):
    """Each packed member's own activation: z [K, ...] -> f_k(z[k]) for every member k, with
    neighbouring members of the same activation applied in one call. Elementwise like each f_k,
    so probes differentiate it as any activation."""

    def __init__(self, fns: list[Callable[[Tensor], Tensor]]):
        super().__init__()
        self.spans: list[tuple[int, int, Callable]] = []
        for k, fn in enumerate(fns):
            if self.spans and self.spans[-1][2] is fn:
                start, _, _ = self.spans[-1]
                self.spans[-1] = (start, k + 1, fn)
            else:
                self.spans.append((k, k + 1, fn))
        # registered, so that a module activation's buffers follow the net to its device
        self.fns = nn.ModuleList(dict.fromkeys(f for _, _, f in self.spans if isinstance(f, nn.Module)))

    def forward(self, z: Tensor, dim: int = 0, per_member: int = 1) -> Tensor:
        """z with the members along `dim`, `per_member` entries each (dim 0 and 1 for [K, B, ...];
        a ConvNet's [B, K*C, H, W] has dim 1 and C)."""
        if len(self.spans) == 1:
            return self.spans[0][2](z)
        # split, not slicing: its backward is one concatenation, where each slice's would be a
        # zero-filled copy of the whole gradient, summed
        parts = z.split([(b - a) * per_member for a, b, _ in self.spans], dim=dim)
        return torch.cat([fn(part) for part, (_, _, fn) in zip(parts, self.spans)], dim=dim)


def is_elementwise(fn: Callable[[Tensor], Tensor]) -> bool:
    """Whether f(x)[i] depends on x[i] alone: shuffling the input shuffles the output the same way."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 5, generator=gen)
    perm = torch.randperm(z.numel(), generator=gen)
    with torch.no_grad():
        direct = fn(z.clone()).flatten()[perm]
        shuffled = fn(z.flatten()[perm].view(z.shape).clone()).flatten()
    return direct.shape == shuffled.shape and torch.allclose(direct, shuffled, atol=1e-6, equal_nan=True)


def names() -> list[str]:
    """The activations shipped in conf/activation/, by config name."""
    return sorted(p.stem for p in (CONF_DIR / "activation").glob("*.yaml"))


def from_name(name: str) -> Callable[[Tensor], Tensor]:
    """Build a shipped activation by its config name (for plots and tests, outside Hydra)."""
    from omegaconf import OmegaConf

    def load(name: str):
        path = CONF_DIR / "activation" / f"{name}.yaml"
        if not path.exists():
            raise ValueError(f"unknown activation {name!r}; valid: {', '.join(names())}")
        node = OmegaConf.load(path)
        # as Hydra composes a file of the group: the files it names as defaults, then its own keys
        bases = [load(d) for d in node.pop("defaults", []) if d != "_self_"]
        return OmegaConf.merge(*bases, node)

    return build(load(name))


def derivative(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Elementwise f'(z) by autograd, so any elementwise activation needs no hand-written derivative."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(z.clone()).sum(), z)  # clone: in-place activations too
    return grad
