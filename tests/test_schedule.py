"""actbench.schedule: the rate's warm-up and cosine decay, clipping by each member's own norm, and
the keys that stay out of what the optimizer and Lightning are given."""

import math

import pytest
import torch
from models import packed_mlp
from omegaconf import OmegaConf
from torch import nn

from actbench.schedule import clip_members, instantiable, rate_factor


def schedule(**keys):
    return OmegaConf.create({"warmup": 0, "decay": "none", "min_lr": 0.0, **keys})


def test_warm_up_rises_linearly_then_cosine_falls_to_the_floor():
    f = rate_factor(schedule(warmup=4, decay="cosine", min_lr=0.1), 14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(13) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))
    assert all(f(s) >= f(s + 1) for s in range(4, 13))


def test_a_share_of_the_steps_warms_up_and_no_schedule_is_none():
    f = rate_factor(schedule(warmup=0.1), 200)
    assert [f(s) for s in (0, 19, 20, 199)] == [0.05, 1.0, 1.0, 1.0]
    assert rate_factor(schedule(), 200) is None and rate_factor(None, 200) is None


def test_each_member_is_clipped_by_its_own_norm():
    net = packed_mlp([0, 1], nn.ReLU(), width=8)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
        net.per_seed(p.grad)[1].mul_(1e-4)  # member 1's gradient is tiny
    before = [p.grad.clone() for p in net.parameters()]
    clip_members(net, 1.0)
    norms = [torch.linalg.vector_norm(torch.cat([net.per_seed(p.grad)[k].flatten() for p in net.parameters()])) for k in (0, 1)]
    assert norms[0].item() == pytest.approx(1.0, rel=1e-5)
    assert all(torch.equal(net.per_seed(p.grad)[1], net.per_seed(b)[1]) for p, b in zip(net.parameters(), before))


def test_actbenchs_own_keys_stay_out_of_the_optimizer_and_the_trainer():
    opt = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 0.1, "schedule": schedule()})
    assert "schedule" not in instantiable(opt, "optimizer") and "schedule" in opt
    trainer = OmegaConf.create({"_target_": "lightning.Trainer", "clip_norm": None})
    assert "clip_norm" not in instantiable(trainer, "trainer")


def test_a_warm_up_share_alone_is_a_schedule_whatever_the_steps():
    """A CUDA graph would freeze the rate: a short warm-up share must count as changing it."""
    from actbench.schedule import is_constant

    assert is_constant(schedule()) and is_constant(None)
    assert not is_constant(schedule(warmup=0.05)) and not is_constant(schedule(decay="cosine"))
    f = rate_factor(schedule(warmup=0.05), 4)  # 0.2 steps rounds to none: one step, not a silently constant rate
    assert f is not None and f(0) == 1.0
