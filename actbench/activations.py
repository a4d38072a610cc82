"""The activation zoo and the one function that turns an `activation` config into a callable.

Most activations are plain `torch.nn` classes named directly by `conf/activation/*.yaml`;
this module holds only what torch lacks (squared ReLU, a learned-beta Swish, the gated units),
and `build`, which accepts any `_target_` that names a `torch.nn.Module` class or a plain
function of one tensor.

An activation is elementwise, or gated: a module with `in_per_out = n` takes n values per output
along the last dimension, as n chunks, and output j reads element j of each chunk alone (the
layer before it yields n times the units; a model that supports gating sizes it so).
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


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU, max(0, x)^2 (So et al. 2021, "Primer")."""
    return torch.relu(x).square()


def build(cfg) -> Callable[[Tensor], Tensor]:
    """Instantiate an activation config: a Module class gets its parameters as constructor
    arguments, a function gets them bound with functools.partial."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    from actbench.conf import locate

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    target = locate(cfg._target_, "activation._target_")
    if inspect.isclass(target):
        fn = instantiate(cfg)
    else:
        params = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
        fn = functools.partial(target, **params) if params else target
    n = in_per_out(fn)
    if not is_elementwise(fn):
        # probes take f'(z) per unit, and a pack lays seeds along an axis the function must not mix
        if n > 1:
            raise ValueError(f"activation {cfg._target_} declares in_per_out={n}, but its output j does not read element j "
                             f"of each of the {n} chunks of its last dimension alone")
        raise ValueError(f"activation {cfg._target_} does not act elementwise (like softmax); actbench compares elementwise nonlinearities")
    return fn


def in_per_out(fn) -> int:
    """How many inputs an activation takes per output: 1, or a gated unit's declared `in_per_out`."""
    n = getattr(fn, "in_per_out", 1)
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"activation {type(fn).__name__}: in_per_out={n!r} must be an integer >= 1")
    return n


class Gated(nn.Module):
    """A gated linear unit (Shazeer 2020, "GLU Variants Improve Transformer"): the layer before
    yields [a, b], two halves of the last dimension, and the unit is gate(a) * b. With the gate
    sigmoid it is GLU (Dauphin et al. 2017), identity Bilinear, ReLU ReGLU, GELU GEGLU, SiLU SwiGLU.
    `gate` is the gate's own module, which the probes' saturation reads."""

    in_per_out = 2

    def __init__(self, gate: nn.Module | None = None):
        super().__init__()
        self.gate = nn.Identity() if gate is None else gate

    def forward(self, z: Tensor) -> Tensor:
        a, b = z.chunk(2, dim=-1)
        return self.gate(a) * b


class SwishBeta(nn.Module):
    """x * sigmoid(beta * x) with beta learned, one per place the model applies it (Ramachandran
    et al. 2017, "Searching for Activation Functions"); beta = 1 is SiLU, large beta nears ReLU."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)


def is_elementwise(fn: Callable[[Tensor], Tensor]) -> bool:
    """Whether f(x)[i] depends on x[i] alone: shuffling the input shuffles the output the same way.
    An activation with a parameter per channel (PReLU's `num_parameters`, on dim 1) may treat each
    channel its own way; it must still leave every other input out of an output (its Jacobian on a
    small input is diagonal). A gated one (`in_per_out = n`): output j of the last dimension reads
    element j of each of its input's n chunks there, and nothing else."""
    gen = torch.Generator().manual_seed(0)
    n = in_per_out(fn)
    if n > 1:
        rows, units = 6, 4
        z = torch.randn(rows, n * units, generator=gen)
        jac = torch.autograd.functional.jacobian(lambda t: fn(t.clone()), z)
        if jac.shape != (rows, units, rows, n * units):
            return False
        allowed = torch.eye(rows)[:, None, :, None, None] * torch.eye(units)[None, :, None, None, :]  # [rows, units, rows, 1, units]
        return bool((jac.view(rows, units, rows, n, units)[(allowed == 0).expand(-1, -1, -1, n, -1)] == 0).all())
    channels = max((p.numel() for p in fn.parameters()), default=1) if isinstance(fn, nn.Module) else 1
    if channels > 1:
        z = torch.randn(2, channels, 3, generator=gen)
        jac = torch.autograd.functional.jacobian(lambda t: fn(t.clone()), z).reshape(z.numel(), -1)
        return jac.shape == (z.numel(), z.numel()) and torch.equal(jac, torch.diag(torch.diagonal(jac)))
    z = torch.randn(2, 3, 5, generator=gen)
    perm = torch.randperm(z.numel(), generator=gen)
    try:
        with torch.no_grad():
            direct = fn(z.clone()).flatten()[perm]
            shuffled = fn(z.flatten()[perm].view(z.shape).clone()).flatten()
    except RuntimeError:  # a module that needs its input shaped (torch's GLU halves an even dimension)
        return False
    return direct.shape == shuffled.shape and torch.allclose(direct, shuffled, atol=1e-6, equal_nan=True)


def is_learnable(fn) -> bool:
    """Whether an activation has parameters of its own, learned with the model's."""
    return isinstance(fn, nn.Module) and any(True for _ in fn.parameters())


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
