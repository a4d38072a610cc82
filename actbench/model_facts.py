"""What actbench finds out about a plain PyTorch model from the model itself, never declared by it:
its parameter count and FLOPs (a forward pass on the meta device, counted by
torch.utils.flop_counter), one more member's memory, whether a step draws random numbers, its
hparams (its config node), and one line for keys it refuses (its constructor's own error).

A model is any `nn.Module` class constructed as `Model(activation, input_shape, n_classes,
**its own keys)`, `activation()` giving a fresh activation module at every call; `model.init`
is actbench's (see actbench.packer), every other key of `conf/model/*.yaml` is the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from actbench.errors import ConfigError
from actbench.packer import INITS, Packed, build_noting_activations, unpackable

ACTBENCH_KEYS = ("_target_", "init")  # the keys of a model's config node that are not its constructor's
EVAL_FLOATS = 32_000_000  # an evaluation batch's activations, in floats (about 128 MB): bigger batches run no faster
_FACTS: dict[str, tuple[int, int, int]] = {}  # PlainModel._forward_facts, by model config, activation and data shape


class Elementwise(nn.Module):
    """A plain function of one tensor (an activation `_target_` that is not a module), as a module."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def fresh(fn) -> nn.Module:
    """A new module of an activation (a module, copied with its own parameters, or a function), on
    the device the model is being built on (meta, for facts)."""
    import copy

    return copy.deepcopy(fn).to(torch.get_default_device()) if isinstance(fn, nn.Module) else Elementwise(fn)


def activation_factory(cfg_activation) -> Callable[[], nn.Module]:
    """`activation()` for a model: a fresh module of the configured activation at every call."""
    from actbench import activations

    built: list = []

    def make() -> nn.Module:
        if not built:
            with torch.device("cpu"):  # checked on real numbers, even while a model is built on meta
                built.append(activations.build(cfg_activation))
        return fresh(built[0])

    return make


def model_name(cls: type) -> str:
    """A model's name in the HParams tab: a shipped model's file (`mlp`), a user's class name."""
    module = cls.__module__
    return module.rsplit(".", 1)[-1] if module.startswith("actbench.models.") else cls.__name__


class PlainModel:
    """A plain model class with the facts actbench reads off it for one composed config."""

    RULES = {"init": (lambda v: v in INITS, f"one of {', '.join(INITS)}")}

    def __init__(self, cls: type, cfg):
        self.cls, self.cfg = cls, cfg

    # ---------------------------------------------------------------- building

    @staticmethod
    def own_keys(cfg_model) -> dict:
        node = OmegaConf.to_container(cfg_model, resolve=True) if OmegaConf.is_config(cfg_model) else dict(cfg_model)
        return {k: v for k, v in node.items() if k not in ACTBENCH_KEYS}

    def builder(self, cfg_model, input_shape, n_classes) -> Callable[[Callable[[], nn.Module]], nn.Module]:
        keys = self.own_keys(cfg_model)
        return lambda activation: self.cls(activation=activation, input_shape=tuple(input_shape), n_classes=n_classes, **keys)

    def pack(self, cfg_model, seeds, activations, input_shape, n_classes) -> Packed:
        return Packed(self.builder(cfg_model, input_shape, n_classes), seeds, activations, input_shape, str(cfg_model.get("init", "torch")),
                      self.input_dtype())

    def on_meta(self, cfg_model, input_shape, n_classes) -> nn.Module:
        """One member, built on the meta device: shapes without memory or time."""
        with torch.device("meta"):
            return self.builder(cfg_model, input_shape, n_classes)(activation_factory(self.cfg.activation))

    def check(self, input_shape, n_classes) -> None:
        """The model's refusal of its keys (its constructor's ValueError or TypeError), or any other
        failure to build it on the meta device (with where it was raised), as one line before
        anything trains. A message that starts `key=value:` for one of its keys names it `model.key`."""
        import inspect

        params = inspect.signature(self.cls).parameters
        if not {"activation", "input_shape", "n_classes"} <= set(params) and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise ConfigError(f"model._target_={self.cfg.model._target_!r}: a model is constructed as "
                              f"Model(activation, input_shape, n_classes, **its keys); {self.cls.__name__} takes ({', '.join(params)})")
        try:
            self.on_meta(self.cfg.model, input_shape, n_classes)
        except (ValueError, TypeError) as e:
            message = " ".join(str(e).split())
            if message.split("=", 1)[0] in self.cfg.model:
                raise ConfigError(f"model.{message}") from None
            raise ConfigError(f"model ({self.cfg.model._target_}): {message}") from None
        except Exception as e:  # noqa: BLE001 - a user's model may raise anything; where it did is what helps
            import traceback

            where = traceback.extract_tb(e.__traceback__)[-1]
            raise ConfigError(f"model ({self.cfg.model._target_}) fails to build: {type(e).__name__}: "
                              f"{' '.join(str(e).split())} ({Path(where.filename).name}:{where.lineno})") from None

    # ---------------------------------------------------------------- facts

    def hparams(self, cfg_model) -> dict:
        """The model's flat hyperparameters for logging, each under its config key."""
        def flat(v):  # what TensorBoard's HParams tab takes: a list as `16-32`, anything else not a scalar as text
            if isinstance(v, (list, tuple)):
                return "-".join(str(x) for x in v)
            return v if isinstance(v, (int, float, str, bool)) else str(v)

        node = OmegaConf.to_container(cfg_model, resolve=True)
        return {"model": model_name(self.cls), **{k: flat(v) for k, v in node.items() if k != "_target_"}}

    def size(self) -> tuple[int, int]:
        """This config's model's (parameters, forward FLOPs per example), one member's."""
        data = self._data()
        flops, _, params = self._forward_facts(self.cfg.model, *data.shape(self.cfg.data))
        return params, flops

    def n_params(self, cfg_model, input_shape, n_classes) -> int:
        return self._forward_facts(cfg_model, input_shape, n_classes)[2]

    def _forward_facts(self, cfg_model, input_shape, n_classes) -> tuple[int, int, int]:
        """(FLOPs of one example's forward pass, floats of every layer's output for it, parameters),
        found once per model, activation and data shape (threads, pack size and eval batch all ask)."""
        import json

        key = json.dumps([f"{self.cls.__module__}.{self.cls.__qualname__}", self.own_keys(cfg_model),
                          OmegaConf.to_container(self.cfg.activation, resolve=True), list(input_shape), n_classes,
                          str(self.input_dtype())],
                         sort_keys=True, default=str)
        if key not in _FACTS:
            _FACTS[key] = self._count(cfg_model, input_shape, n_classes)
        return _FACTS[key]

    def _count(self, cfg_model, input_shape, n_classes) -> tuple[int, int, int]:
        from torch.utils.flop_counter import FlopCounterMode

        model = self.on_meta(cfg_model, input_shape, n_classes).eval()  # batch norm refuses a training batch of one
        outputs = [math.prod(input_shape)]
        hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if torch.is_tensor(o) else 0))
                 for m in model.modules() if not any(True for _ in m.children())]
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=self.input_dtype(), device="meta"))
        for h in hooks:
            h.remove()
        return counter.get_total_flops(), sum(outputs), sum(p.numel() for p in model.parameters())

    def flops_per_sample(self, cfg_model, input_shape, n_classes) -> int:
        return self._forward_facts(cfg_model, input_shape, n_classes)[0]

    def bytes_per_member(self, cfg_model, rows: int, input_shape, n_classes) -> int:
        """One more member's memory, roughly: weights with their gradients and two Adam moments,
        and the layers' outputs of the largest pass over `rows` examples (their derivatives, for
        the probes, counted with them)."""
        _, floats, params = self._forward_facts(cfg_model, input_shape, n_classes)
        return 4 * (4 * params + rows * floats)

    def input_dtype(self) -> torch.dtype:
        """What the model's input holds: the dataset's INPUT_DTYPE (token ids: int64), else floats."""
        return self._data().INPUT_DTYPE if self.cfg is not None and self.cfg.get("data") else torch.float32

    def _data(self):
        """The config's dataset class, whose input shape and classes the model is built for."""
        from hydra.utils import get_class

        return get_class(self.cfg.data._target_)

    def unpackable(self) -> list[str]:
        """The layers of this config's model that a pack cannot hold (its runs then train one by one)."""
        data = self._data()
        with torch.device("meta"):
            model, made = build_noting_activations(self.builder(self.cfg.model, *data.shape(self.cfg.data)),
                                                   activation_factory(self.cfg.activation))
        return unpackable(model, {id(m) for m in made})

    def draws_random(self, cfg_model) -> bool:
        data = self._data()
        model = self.on_meta(cfg_model, *data.shape(self.cfg.data))
        return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())

    @property
    def EVAL_BATCH(self) -> int:  # noqa: N802 - a constant of the model, to its readers
        """Examples per evaluation batch: as many as EVAL_FLOATS of activations hold, in hundreds."""
        data = self._data()
        floats = self._forward_facts(self.cfg.model, *data.shape(self.cfg.data))[1]
        return int(min(10_000, max(100, EVAL_FLOATS // floats // 100 * 100)))
