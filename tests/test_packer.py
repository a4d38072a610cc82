"""actbench.packer: plain models packed, each member bit for bit what it computes alone."""

import math
from pathlib import Path

import models
import pytest
import torch
from models import ACTS, SHAPE, batch, pack, train
from omegaconf import OmegaConf
from torch import nn

from actbench.model_facts import PlainModel
from actbench.models.cnn import ConvNet
from actbench.models.mlp import MLP
from actbench.packer import ActivationTwin, DropoutTwin, LinearTwin, PackedLinear, Unpackable
from actbench.tags import DEAD, GRAD_RATIO, layer_tag

CASES = [
    (MLP, {"depth": 2, "width": 64, "dropout": 0.3}),
    (ConvNet, {"channels": [4, 8], "width": 16, "norm": "batch", "dropout": 0.3}),
    (ConvNet, {"channels": [4, 8], "width": 16}),
    (models.NormNet, {}),
    (models.TinyTransformer, {}),
]


@pytest.mark.parametrize("cls, keys", CASES, ids=[c.__name__ + ("_bn" if keys.get("norm") == "batch" else "") for c, keys in CASES])
def test_each_packed_member_trains_bit_for_bit_as_alone(cls, keys, threads):
    seeds, names = [3, 4, 5], ["relu", "gelu", "relu"]
    x, y = batch(3)
    packed = pack(cls, seeds, names, **keys)
    losses = train(packed, x, y)
    state = packed.state_dict()
    for k, (seed, name) in enumerate(zip(seeds, names)):
        alone = pack(cls, [seed], [name], **keys)
        assert torch.equal(train(alone, x[k : k + 1], y[k : k + 1]), losses[:, k : k + 1]), f"member {k}'s losses"
        for key, value in alone.state_dict().items():
            assert torch.equal(packed.per_seed(state[key])[k].reshape(value.shape), value), f"member {k}'s {key}"
    assert not torch.equal(losses[:, 0], losses[:, 2])  # same activation, other seed: other weights, masks, data


def test_member_k_is_the_plain_model_with_its_own_weights_and_activation():
    packed = pack(models.NormNet, [0, 1], ["relu", "sigmoid"])
    x, y = batch(2)
    train(packed, x, y, steps=2)
    packed.eval()
    out = packed(x)
    for k, act in enumerate((nn.ReLU, nn.Sigmoid)):
        plain = packed.member(k).eval()
        assert type(plain) is models.NormNet and any(isinstance(m, act) for m in plain.modules())
        assert torch.allclose(plain(x[k]), out[k], atol=1e-6)


def test_a_members_initial_weights_come_from_its_seed_not_its_pack():
    alone, packed = pack(MLP, [7], ["relu"], init="glorot"), pack(MLP, [3, 7], ["relu", "relu"], init="glorot")
    for key, value in alone.state_dict().items():
        assert torch.equal(packed.per_seed(packed.state_dict()[key])[1], value)
    first = [m for m in packed.modules() if isinstance(m, LinearTwin)][0]
    assert not torch.equal(packed.per_seed(first.weight)[0], packed.per_seed(first.weight)[1])
    assert (packed.per_seed(first.bias) == 0).all()  # glorot: zero bias


def test_a_layer_a_pack_cannot_hold_is_named():
    with pytest.raises(Unpackable, match=r"OwnParameter"):
        pack(models.OwnParameter, [0, 1], ["relu", "relu"])
    assert pack(models.OwnParameter, [0], ["relu"])(torch.randn(3, *SHAPE)).shape == (3, 10)  # alone it trains


def test_probe_record_gives_every_activation_site_per_member():
    packed = pack(models.TinyTransformer, [0, 1], ["relu", "gelu"])
    record = []
    packed(torch.randn(2, 5, *SHAPE), record=record)
    (z, h, site), = record
    assert z.shape == (2, 5, 8, 32) and torch.equal(h[0], torch.relu(z[0])) and torch.equal(h[1], nn.GELU()(z[1]))
    assert torch.equal(site.as_function()(z), h)


def test_facts_are_found_from_the_model():
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.mlp.MLP", "depth": 1, "width": 128, "init": "torch", "dropout": 0.0},
                            "activation": ACTS["relu"], "data": {"_target_": "actbench.data.FashionMNIST"}})
    facts = PlainModel(MLP, cfg)
    assert facts.n_params(cfg.model, (1, 28, 28), 10) == 784 * 128 + 128 + 128 * 10 + 10
    assert facts.flops_per_sample(cfg.model, (1, 28, 28), 10) == 2 * (784 * 128 + 128 * 10)
    assert not facts.draws_random(cfg.model) and facts.draws_random(OmegaConf.merge(cfg.model, {"dropout": 0.5}))
    assert facts.hparams(cfg.model) == {"model": "mlp", "depth": 1, "width": 128, "init": "torch", "dropout": 0.0}
    assert facts.EVAL_BATCH == 10_000


@pytest.mark.slow
def test_the_readmes_own_model_from_a_folder_outside_the_checkout_runs_packed_with_probes(tiny_run, tmp_path):
    """The README's 20-line model, its YAML on hydra.searchpath: a sweep over activations and seeds
    is one pack, each member probed, and each member equal to its pack=false twin."""
    import re

    from conftest import ROOT, metrics, run_cli

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Add your own model") :]
    code, conf = (re.search(rf"```{lang}\n# (\S+)\n(.*?)```", section, re.S) for lang in ("python", "yaml"))
    (tmp_path / "user" / "my_package").mkdir(parents=True)
    (tmp_path / "user" / "my_package" / "lnmlp.py").write_text(code.group(2))
    (Path(tiny_run[1]) / "model").mkdir()
    (Path(tiny_run[1]) / "model" / "lnmlp.yaml").write_text(conf.group(2))
    sweep = ["model=lnmlp", "activation=relu,gelu", "seed=0,1", "model.width=16", "report=none"]
    env = {"PYTHONPATH": str(tmp_path / "user")}
    packed = run_cli("-m", *tiny_run, "name=p", *sweep, env=env)
    apart = run_cli("-m", *tiny_run, "name=a", *sweep, "pack=false", env=env)
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    assert "Launching 1 jobs" in packed.stdout + packed.stderr
    names = [f"activation={a},model=lnmlp,model.width=16,seed={s}" for a in ("gelu", "relu") for s in (0, 1)]
    for name in names:
        mp, ma = metrics(tmp_path / "runs" / "p" / name), metrics(tmp_path / "runs" / "a" / name)
        assert mp["status"] == "finished" and mp["hparams"]["model"] == "LayerNormMLP" and mp["hparams"]["depth"] == 2
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # bit for bit
            assert mp["curves"][key] == ma["curves"][key], key
        assert mp["final"]["test_acc"] == ma["final"]["test_acc"] and mp["final"]["test_loss"] == ma["final"]["test_loss"]
        assert {layer_tag(DEAD, 1), layer_tag(DEAD, 2), GRAD_RATIO} <= set(mp["probes"])
    bad = run_cli(*tiny_run, "model=lnmlp", "model.depth=0", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == "actbench: error: model.depth=0: must be at least 1"


def test_a_sweep_made_with_the_hand_packed_mlp_keeps_its_identity():
    """The plain MLP computes the hand-packed one's bits, so its runs hash as that one's did: a
    sweep directory written before is skipped as finished, not refused as another configuration."""
    from actbench.runs import config_hash

    before = {"seed": 0, "model": {"_target_": "actbench.model.PackedMLP", "depth": 1, "width": 128, "init": "torch", "dropout": 0.0}}
    config = {**before, "model": {**before["model"], "_target_": "actbench.models.mlp.MLP", "match_params": True}}
    other = {**config, "model": {**config["model"], "width": 64}}
    unmatched = {**config, "model": {**config["model"], "match_params": False}}
    assert config_hash(config, []) == config_hash(before, []) != config_hash(other, [])
    assert config_hash(unmatched, []) != config_hash(config, [])


@pytest.mark.parametrize("init, bound, bias_zero", [("torch", 1 / math.sqrt(784), False), ("glorot", math.sqrt(6 / (784 + 128)), True)])
def test_uniform_inits_have_their_bounds(init, bound, bias_zero):
    first = models.dense(models.packed_mlp([0], nn.ReLU(), init=init))[0]
    w, b = first.weight, first.bias
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert (b == 0).all() if bias_zero else b.abs().max() > 0


@pytest.mark.parametrize("init, std", [("kaiming", math.sqrt(2 / 784)), ("lecun", math.sqrt(1 / 784))])
def test_normal_inits_have_their_std(init, std):
    first = models.dense(models.packed_mlp([0], nn.ReLU(), init=init))[0]
    assert first.weight.std().item() == pytest.approx(std, rel=0.02) and (first.bias == 0).all()


def test_dropout_masks_come_from_seed_and_epoch():
    def masks(seeds, epoch, rows=4):
        net = models.packed_mlp(seeds, nn.Identity(), width=64, dropout=0.5).train()
        net.start_epoch(epoch)
        drop = next(m for m in net.modules() if isinstance(m, DropoutTwin))
        return drop(torch.ones(len(seeds) * rows, 64)).view(len(seeds), rows, 64)

    assert torch.equal(masks([3], 0)[0], masks([1, 3], 0)[1])
    assert not torch.equal(masks([3], 0), masks([3], 1))
    assert set(masks([3], 0).unique().tolist()) == {0.0, 2.0}  # kept units are scaled by 1/(1-p)
    net = models.packed_mlp([0], nn.ReLU(), dropout=0.5).eval()
    x = torch.randn(1, 3, 784)
    assert torch.equal(net(x), net(x))  # none in eval mode


def test_packed_linear_gradients_match_autograd():
    h = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PackedLinear.apply, (h, w, b))
    assert torch.allclose(PackedLinear.apply(h, w, b), torch.baddbmm(b, h, w.transpose(1, 2)))


def test_each_member_gets_its_own_activation_and_derivative():
    from actbench.activations import derivative, gelu_sigmoid
    from actbench.model_facts import Elementwise

    relu, gelu, sig = nn.ReLU(), nn.GELU(), Elementwise(gelu_sigmoid)
    twin = ActivationTwin([relu, relu, gelu, sig])
    assert [(a, b) for a, b, _ in twin.spans] == [(0, 2), (2, 3), (3, 4)]  # neighbours of one activation share a call
    z = torch.randn(4, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.equal(twin(z.flatten(0, 1)).view(z.shape), torch.cat([relu(z[:2]), gelu(z[2:3]), sig(z[3:])]))
    d = derivative(twin.as_function(), z)
    for k, fn in enumerate([relu, relu, gelu, sig]):
        assert torch.allclose(d[k], derivative(fn, z[k]))


@pytest.mark.parametrize("cls, keys, name", [(MLP, {"depth": 2, "width": 64}, "prelu"), (ConvNet, {"channels": [4, 8], "width": 16, "norm": "batch"}, "swish_beta")])
def test_a_learnable_activation_trains_its_own_parameters_per_member_and_place(cls, keys, name, threads):
    seeds, x, y = [3, 4], *batch(2)
    packed = pack(cls, seeds, [name, name], **keys)
    losses = train(packed, x, y)
    sites = [(n, t) for n, t in packed.named_parameters() if t.numel() == len(seeds)]  # one value per member and place
    assert len(sites) == (2 if cls is MLP else 3)  # MLP: two hidden layers; ConvNet: two convolutions and the dense layer
    for n, t in sites:
        a, b = packed.per_seed(t).view(2, -1)
        assert not torch.equal(a, b) and not torch.equal(a, torch.full_like(a, 0.25 if name == "prelu" else 1.0)), n  # each learned its own
    for k, seed in enumerate(seeds):
        alone = pack(cls, [seed], [name], **keys)
        assert torch.equal(train(alone, x[k : k + 1], y[k : k + 1]), losses[:, k : k + 1])
        for key, value in alone.state_dict().items():
            assert torch.equal(packed.per_seed(packed.state_dict()[key])[k].reshape(value.shape), value), key


def test_a_learnable_activation_does_not_share_a_pack_with_another():
    with pytest.raises(Unpackable, match="same activation"):
        pack(MLP, [0, 1], ["prelu", "relu"])
