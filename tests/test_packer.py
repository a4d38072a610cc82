"""actbench.packer: plain models packed, each member bit for bit what it computes alone."""

from pathlib import Path

import models
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from actbench.model import PackedMLP, param_groups, step_losses
from actbench.model_facts import PlainModel, activation_factory
from actbench.models.mlp import MLP
from actbench.packer import LinearTwin, Packed, Unpackable
from actbench.tags import DEAD, GRAD_RATIO, layer_tag

ACTS = {name: OmegaConf.create({"_target_": target}) for name, target in
        [("relu", "torch.nn.ReLU"), ("gelu", "torch.nn.GELU"), ("sigmoid", "torch.nn.Sigmoid")]}
SHAPE = (1, 8, 8)


def pack(cls, seeds, names, shape=SHAPE, **keys) -> Packed:
    factories = {n: activation_factory(ACTS[n]) for n in names}
    build = lambda act: cls(act, shape, 10, **keys)  # noqa: E731
    return Packed(build, seeds, [factories[n] for n in names], shape, keys.pop("init", "torch"))


def train(net: Packed, x: torch.Tensor, y: torch.Tensor, steps: int = 6) -> torch.Tensor:
    """Per-member losses [steps, K] of a few fused-Adam steps over one batch (as actbench steps)."""
    torch.manual_seed(123)  # anything drawing from torch's global stream would show up as a difference
    opt = torch.optim.Adam(param_groups(net.parameters(), net.n_seeds, fused=True), lr=1e-2, fused=True)
    net.train()
    net.start_epoch(0)
    out = []
    for _ in range(steps):
        objective, _, losses = step_losses(net, x if net.n_seeds > 1 else x[:1], y)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        out.append(losses)
    return torch.stack(out)


def batch(k: int, shape=SHAPE, n: int = 12):
    gen = torch.Generator().manual_seed(7)
    return torch.randn(k, n, *shape, generator=gen), torch.randint(0, 10, (k, n), generator=gen)


CASES = [
    (MLP, {"depth": 2, "width": 64, "dropout": 0.3}),
    (models.NormNet, {}),
    (models.TinyTransformer, {}),
]


@pytest.mark.parametrize("cls, keys", CASES, ids=[c.__name__ for c, _ in CASES])
def test_each_packed_member_trains_bit_for_bit_as_alone(cls, keys):
    torch.set_num_threads(1)
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


def test_the_plain_mlp_packs_to_the_bits_of_the_hand_packed_one():
    """Until the hand-packed MLP goes: the same initial weights, dropout masks and training."""
    seeds, x, y = [0, 1], *batch(2, (1, 28, 28))
    new = pack(MLP, seeds, ["relu", "relu"], shape=(1, 28, 28), depth=2, width=64, dropout=0.2)
    old = PackedMLP(seeds, nn.ReLU(), depth=2, width=64, dropout=0.2)
    assert torch.equal(train(new, x, y), train(old, x, y))


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
    (z, h), = record
    assert z.shape == (2, 5, 8, 32) and torch.equal(h[0], torch.relu(z[0])) and torch.equal(h[1], nn.GELU()(z[1]))
    assert torch.equal(packed.activation(z), h)


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

    config = {"seed": 0, "model": {"_target_": "actbench.models.mlp.MLP", "depth": 1, "width": 128, "init": "torch", "dropout": 0.0}}
    before = {**config, "model": {**config["model"], "_target_": "actbench.model.PackedMLP"}}
    other = {**config, "model": {**config["model"], "width": 64}}
    assert config_hash(config, []) == config_hash(before, []) != config_hash(other, [])
