"""actbench.models.mlp: the blog's MLP by default, its depth and width, and its refusals."""

import pytest
import torch
from models import dense, packed_mlp
from omegaconf import OmegaConf
from torch import nn

from actbench import activations
from actbench.errors import ConfigError
from actbench.model_facts import PlainModel, fresh
from actbench.models.mlp import MLP


def test_default_is_the_blogs_mlp():
    net = packed_mlp([0], nn.ReLU())
    assert [tuple(m.weight.shape) for m in dense(net)] == [(128, 784), (10, 128)]  # nn.Linear's own shapes
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 10 + 10


def test_depth_and_width():
    net = packed_mlp([0, 1], nn.Tanh(), depth=3, width=16)
    assert [tuple(net.per_seed(m.weight).shape) for m in dense(net)] == [(2, 16, 784), (2, 16, 16), (2, 16, 16), (2, 10, 16)]
    assert net(torch.randn(2, 5, 784)).shape == (2, 5, 10)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [1, 3])
def test_a_gated_mlp_is_matched_to_the_pointwise_ones_parameters(depth):
    """784-h-10: a gated unit takes 2h values, so h = 64 keeps ReLU's 101,770 parameters within 1%
    (Shazeer's 2/3 would give 85 and a third more); match_params=false keeps the width."""
    swiglu = activations.from_name("swiglu")
    relu = n_params(MLP(nn.ReLU, (1, 28, 28), 10, depth=depth))
    matched = MLP(lambda: fresh(swiglu), (1, 28, 28), 10, depth=depth)
    assert abs(n_params(matched) - relu) <= 0.01 * relu
    if depth == 1:
        assert matched.layers[1].out_features == 128 and matched.layers[3].in_features == 64
    wide = MLP(lambda: fresh(swiglu), (1, 28, 28), 10, depth=depth, match_params=False)
    assert wide.layers[1].out_features == 256 and n_params(wide) > 1.5 * relu


def test_memory_per_member_grows_with_the_model():
    def facts(depth):
        cfg = OmegaConf.create({"model": {"_target_": "actbench.models.mlp.MLP", "depth": depth, "width": 128, "dropout": 0.0},
                                "activation": {"_target_": "torch.nn.ReLU"}})
        return PlainModel(MLP, cfg), cfg.model

    (one, cfg1), (eight, cfg8) = facts(1), facts(8)
    small = one.bytes_per_member(cfg1, 5000, (1, 28, 28), 10)
    assert eight.bytes_per_member(cfg8, 5000, (1, 28, 28), 10) > small > 4 * 4 * 101_770
    assert one.n_params(cfg1, (1, 28, 28), 10) == 101_770


@pytest.mark.parametrize("key, value, said", [("depth", 0, "depth=0: must be an integer >= 1"),
                                              ("width", 2.5, "width=2.5: must be an integer >= 1"),
                                              ("dropout", 1.0, "dropout=1.0: must be a number in [0, 1)")])
def test_a_key_it_refuses_is_one_line_naming_it(key, value, said):
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.mlp.MLP", key: value}, "activation": {"_target_": "torch.nn.ReLU"}})
    with pytest.raises(ConfigError) as e:
        PlainModel(MLP, cfg).check((1, 28, 28), 10)
    assert str(e.value) == f"model.{said}"
