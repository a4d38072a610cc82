"""actbench.models.gpt: causal, packed bit for bit (tied weights, gated and learnable feed-forwards
included), parameter-matched, probed over positions, and refusing data it cannot read in one line."""

import pytest
import torch
from models import pack, train
from omegaconf import OmegaConf

from actbench.conf import CONF_DIR as CONF
from actbench.errors import ConfigError
from actbench.model_facts import PlainModel
from actbench.models.gpt import GPT
from actbench.probes import probe_forward

SMALL = {"dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0, "dropout": 0.1}
T, V = 12, 20


def tokens(k: int, n: int = 6):
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, V, (k, n, T + 1), generator=gen)
    return ids[..., :-1], ids[..., 1:]


def gpt(seeds, names, **keys):
    return pack(GPT, seeds, names, shape=(T,), classes=V, dtype=torch.long, **{**SMALL, **keys})


def test_a_change_at_position_t_moves_no_prediction_before_t():
    net = gpt([0], ["gelu"]).eval()
    x, _ = tokens(1)
    changed = x.clone()
    changed[..., 7] = (changed[..., 7] + 1) % V
    a, b = net(x), net(changed)
    assert torch.equal(a[..., :7, :], b[..., :7, :]) and not torch.equal(a[..., 7:, :], b[..., 7:, :])


@pytest.mark.parametrize("names", [["relu", "gelu", "relu"], ["swiglu", "geglu"], ["prelu", "prelu"]])
def test_a_packed_gpt_member_trains_bit_for_bit_as_alone(names, threads):
    seeds = list(range(len(names)))
    x, y = tokens(len(names))
    packed = gpt(seeds, names)
    losses = train(packed, x, y)
    for k, name in enumerate(names):
        alone = gpt([k], [name])
        assert torch.equal(train(alone, x[k : k + 1], y[k : k + 1]), losses[:, k : k + 1]), name
        for key, value in alone.state_dict().items():
            assert torch.equal(packed.per_seed(packed.state_dict()[key])[k].reshape(value.shape), value), key


def test_tied_weights_stay_one_tensor_in_a_pack_and_in_each_member():
    net = gpt([0, 1], ["relu", "relu"])
    assert net.model.head.weight is net.model.tokens.weight
    assert sum(p.numel() for p in net.parameters()) == 2 * sum(p.numel() for p in GPT(torch.nn.ReLU, (T,), V, **SMALL).parameters())
    train(net, *tokens(2))
    member = net.member(1)
    assert member.head.weight is member.tokens.weight
    assert torch.equal(member.tokens.weight, net.per_seed(net.model.tokens.weight)[1])
    untied = gpt([0], ["relu"], tie_weights=False)
    assert untied.model.head.weight is not untied.model.tokens.weight


def test_a_gated_feed_forward_keeps_the_pointwise_parameters():
    def params(name, **keys):
        cfg = OmegaConf.create({"model": {"_target_": "actbench.models.gpt.GPT", **keys}, "data": {"_target_": "actbench.data.ShakespeareChar"},
                                "activation": OmegaConf.load(CONF / "activation" / f"{name}.yaml")})
        return PlainModel(GPT, cfg).n_params(cfg.model, (64,), 65)

    gelu = params("gelu")
    for name in ("swiglu", "geglu", "reglu", "glu", "bilinear"):
        assert abs(params(name) - gelu) <= 0.01 * gelu, name
    assert params("relu2") == gelu


def test_every_feed_forward_is_probed_over_positions():
    net = gpt([0, 1], ["relu", "relu"])
    record = probe_forward(net, tokens(2, n=5)[0])
    assert [tuple(z.shape) for z, _, _ in record] == [(2, 5, T, 32)] * 2
    assert not any(site.channels_first for _, _, site in record)
    assert net.probe_weights()[-1] is net.model.head.weight


def test_images_are_refused_in_one_line():
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.gpt.GPT"}, "activation": {"_target_": "torch.nn.GELU"}})
    with pytest.raises(ConfigError, match=r"^model \(actbench.models.gpt.GPT\): the GPT takes windows of token ids"):
        PlainModel(GPT, cfg).check((1, 28, 28), 10)
