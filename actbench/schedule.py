"""What a training step does besides the optimizer's own maths: the learning rate's schedule
(`optimizer.schedule`: linear warm-up, cosine decay) and gradient clipping by each member's own
norm (`trainer.clip_norm`). Both are the same for every member of a pack, so a packed member
still computes its lone run's bits.

These keys are actbench's, not the optimizer's or Lightning's: `instantiable` leaves them out of
the nodes that are instantiated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

DECAYS = ("none", "cosine")
OWN_KEYS = {"optimizer": "schedule", "trainer": "clip_norm"}


def instantiable(node: DictConfig, group: str) -> DictConfig:
    """`cfg.optimizer` or `cfg.trainer` without actbench's own key in it."""
    own = OWN_KEYS[group]
    if own not in node:
        return node
    out = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    out.pop(own)
    return out


def is_constant(schedule) -> bool:
    """Whether a schedule leaves the rate as configured at every step (no warm-up, no decay)."""
    return not schedule or (schedule.get("warmup", 0) == 0 and schedule.get("decay", "none") == "none")


def rate_factor(schedule, total_steps: int) -> Callable[[int], float] | None:
    """The factor on the configured rate before optimizer step s (0, 1, ...), for torch's
    LambdaLR: rising linearly over `warmup` steps (a share of all steps when below 1), then
    constant, or following a half cosine down to `min_lr` at the last step. None for a constant
    rate (no schedule at all: the step is as it was without one)."""
    if is_constant(schedule):
        return None
    warmup, decay, floor = schedule.get("warmup", 0), schedule.get("decay", "none"), float(schedule.get("min_lr", 0.0))
    warm = max(1, int(round(warmup * total_steps))) if 0 < warmup < 1 else int(warmup)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if decay == "none":
            return 1.0
        progress = min(1.0, (s - warm) / max(1, total_steps - 1 - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def clip_members(net, max_norm: float) -> None:
    """Scale each member's gradients so that their joint norm (over all its parameters, as
    torch.nn.utils.clip_grad_norm_) is at most max_norm; each member by its own norm. A lone run
    takes the same path on its whole tensors, so packed and alone agree bit for bit."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return
    for k in range(net.n_seeds):
        own = [net.per_seed(g)[k] for g in grads]
        total = torch.nn.utils.get_total_norm(own)
        torch._foreach_mul_(own, (max_norm / (total + 1e-6)).clamp(max=1.0))

