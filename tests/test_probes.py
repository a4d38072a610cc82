"""Probes on hand-built networks with known answers, and end to end through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from models import dense, packed_mlp

from actbench import activations
from actbench.model import cross_entropy
from actbench.packer import Packed
from actbench.probes import ActivationProbe, GradientProbe, grad_norms, grad_ratio, layer_stats, probe_forward, unit_stats
from conftest import events, metrics, run_cli

SOFTSIGN = "torch.nn.functional.softsign"


def cubic_soft(x: torch.Tensor) -> torch.Tensor:
    """A user's own activation, known to actbench only through its `_target_`."""
    return x / (1 + x.abs()) + 0.1 * x


def inputs(k: int, n: int = 200, d: int = 784, seed: int = 0) -> torch.Tensor:
    """Pixel-like inputs in [0, 1]: [K, n, d]."""
    return torch.rand(k, n, d, generator=torch.Generator().manual_seed(seed))


def net_with_bias(biases: list[float], activation, width: int = 16, depth: int = 1) -> Packed:
    """A pack of len(biases) seeds whose first hidden layer has the given bias per seed and small weights."""
    net = packed_mlp(list(range(len(biases))), activation, depth=depth, width=width)
    with torch.no_grad():
        dense(net)[0].weight.mul_(0.1)  # |w.x| <= 784 * 0.1 / 28 < 3: a bias of +-100 decides the sign
        for k, b in enumerate(biases):
            net.per_seed(dense(net)[0].bias)[k].fill_(b)
    return net


# ---------------------------------------------------------------- dead units


def test_dead_by_construction_is_one_and_healthy_is_zero():
    relu = torch.nn.ReLU()
    for bias, expected in ((-100.0, 1.0), (100.0, 0.0)):
        net = net_with_bias([bias], relu)
        stats = layer_stats(probe_forward(net, inputs(1)))
        assert stats["probes/dead/layer1"].tolist() == [expected]
        assert stats["probes/dact_mean/layer1"].tolist() == [1.0 - expected]


def test_a_unit_alive_for_one_example_is_not_dead():
    relu = torch.nn.ReLU()
    z = torch.full((1, 50, 4), -1.0)
    z[0, 17, 2] = 0.5  # unit 2 fires for one example
    assert unit_stats(relu, z)["dead"].tolist() == [0.75]


def test_a_gated_unit_is_dead_when_its_product_has_no_derivative_and_saturates_by_its_gate():
    """ReGLU, relu(a) * b: a unit with a < 0 on every example is dead (neither a nor b moves it);
    one with a > 0 and b = 0 is alive (b's derivative is relu(a)). GLU's sigmoid gate saturates
    at large |a|; Bilinear's identity gate never does."""
    a, b = torch.full((1, 50, 3), -1.0), torch.zeros(1, 50, 3)
    a[..., 1] = 2.0
    a[0, 7, 2] = 0.5  # unit 2 is alive for one example, through b's derivative
    reglu = activations.from_name("reglu")
    stats = unit_stats(reglu, torch.cat([a, b], -1), per_out=2, gate=torch.relu)
    assert stats["dead"].tolist() == [pytest.approx(1 / 3)]
    glu = unit_stats(activations.from_name("glu"), torch.cat([torch.full((1, 50, 4), 20.0), torch.ones(1, 50, 4)], -1),
                     per_out=2, gate=torch.sigmoid)
    assert glu["saturated"].tolist() == [1.0] and glu["dead"].tolist() == [0.0]
    bilinear = unit_stats(activations.from_name("bilinear"), torch.randn(1, 50, 8), per_out=2, gate=lambda t: t)
    assert bilinear["saturated"].tolist() == [0.0] and bilinear["dact_mean"].tolist() == [1.0]


def test_a_packed_gated_layer_is_probed_with_each_members_gate():
    swiglu, reglu = activations.from_name("swiglu"), activations.from_name("reglu")
    net = packed_mlp([0, 1], [swiglu, reglu], width=16)
    with torch.no_grad():
        net.per_seed(dense(net)[0].bias)[1, :8].fill_(-100.0)  # member 1's gate inputs: ReGLU dead, SwiGLU alive
        dense(net)[0].weight.mul_(0.1)
    record = probe_forward(net, inputs(2))
    assert [tuple(z.shape) for z, _, _ in record] == [(2, 200, 16)] and record[0][2].per_out == 2
    stats = layer_stats(record)
    assert stats["probes/dead/layer1"].tolist() == [0.0, 1.0]
    assert stats["probes/dact_mean/layer1"][1].item() == 0.0 < stats["probes/dact_mean/layer1"][0].item()


def test_per_seed_independence_only_seed_one_dead():
    relu = torch.nn.ReLU()
    net = net_with_bias([100.0, -100.0], relu)
    stats = layer_stats(probe_forward(net, inputs(2)))
    assert stats["probes/dead/layer1"].tolist() == [0.0, 1.0]
    assert stats["probes/saturated/layer1"].tolist() == [0.0, 1.0]


def test_dead_tolerance_counts_near_zero_derivatives():
    z = torch.full((1, 10, 3), -20.0)  # sigmoid'(-20) ~ 2e-9
    assert unit_stats(torch.sigmoid, z, dead_tol=1e-6)["dead"].tolist() == [1.0]
    assert unit_stats(torch.sigmoid, z, dead_tol=0.0)["dead"].tolist() == [0.0]


# ---------------------------------------------------------------- saturation


def test_sigmoid_at_large_z_is_saturated_and_at_zero_is_not():
    far = torch.tensor([-6.0, 5.0, 8.0, -3.0]).repeat(1, 25, 1)  # [1, 25, 4], all |z| > 2.944
    near = torch.tensor([0.0, 0.5, -1.0, 2.9]).repeat(1, 25, 1)
    s_far, s_near = unit_stats(torch.sigmoid, far), unit_stats(torch.sigmoid, near)
    assert s_far["saturated"].tolist() == [1.0] and s_near["saturated"].tolist() == [0.0]
    assert s_far["dact_mean"].item() < 0.015 and s_near["dact_mean"].item() > 0.15
    sigma = torch.sigmoid(near)
    assert s_near["dact_mean"].item() == pytest.approx((sigma * (1 - sigma)).mean().item(), rel=1e-6)
    assert s_far["dead"].tolist() == [0.0]  # saturated, but not dead: sigmoid'(8) ~ 3e-4
    # the threshold is sigmoid's value at |z| = 2.944, where sigmoid leaves [0.05, 0.95]
    edge = torch.tensor([[[2.93], [2.96]]])
    assert unit_stats(torch.sigmoid, edge)["saturated"].tolist() == [0.5]


def test_saturation_through_a_sigmoid_network():
    sigmoid = torch.nn.Sigmoid()
    net = net_with_bias([100.0, 0.0], sigmoid)
    stats = layer_stats(probe_forward(net, inputs(2)))
    sat, mean = stats["probes/saturated/layer1"].tolist(), stats["probes/dact_mean/layer1"].tolist()
    assert sat[0] == 1.0 and sat[1] < 0.05
    assert mean[0] < 1e-6 and mean[1] > 0.15


def test_token_shaped_activations_count_a_unit_over_tokens_and_images():
    import models
    from models import pack

    net = pack(models.TinyTransformer, [0, 1], ["relu", "relu"]).eval()
    x = torch.randn(2, 6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = layer_stats(probe_forward(net, x))["probes/dead/layer1"]
    ff = net.model.ff[0]  # the feed-forward's first layer: 32 units, applied to each of 8 tokens
    with torch.no_grad():
        net.per_seed(ff.weight)[0, 3].zero_()
        net.per_seed(ff.bias)[0, 3] = -1.0  # member 0's unit 3: off at every token of every image
    record = probe_forward(net, x)
    assert [site.channels_first for _, _, site in record] == [False]  # after a dense layer: units last
    after = layer_stats(record)["probes/dead/layer1"]
    assert after[0] == before[0] + 1 / 32 and after[1] == before[1]  # one unit of 32, not one token of 8


# ---------------------------------------------------------------- gradients


def loss_grad(net: Packed, x: torch.Tensor) -> None:
    y = torch.arange(x.shape[1]).remainder(10).expand(x.shape[0], -1)
    net.zero_grad(set_to_none=True)
    cross_entropy(net(x), y).sum().backward()


def test_grad_norms_are_per_seed_frobenius_norms():
    net = packed_mlp([0, 1], torch.tanh, depth=2, width=8)
    x = inputs(2, n=32)
    loss_grad(net, x)
    norms = grad_norms(net)
    assert norms.shape == (3, 2)
    for j, w in enumerate(net.probe_weights()):
        for k in range(2):
            assert norms[j, k].item() == pytest.approx(torch.linalg.norm(net.per_seed(w.grad)[k]).item(), rel=1e-5)
    assert torch.equal(grad_ratio(norms), norms[0] / norms[-1])
    # a seed's norms do not depend on the other seed: the same seed alone gives the same numbers
    alone = packed_mlp([1], torch.tanh, depth=2, width=8)
    loss_grad(alone, x[1:])
    assert torch.allclose(grad_norms(alone)[:, 0], norms[:, 1], rtol=1e-5)


def test_missing_gradient_is_nan():
    net = packed_mlp([0], torch.relu)
    assert grad_norms(net).isnan().all()


def test_deep_sigmoid_gradient_ratio_is_far_below_identity():
    depth, x = 8, inputs(1, n=256)
    sig = packed_mlp([0], torch.sigmoid, depth=depth, width=64, init="lecun")
    ident = packed_mlp([0], lambda z: z, depth=depth, width=64, init="lecun")
    ident.load_state_dict(sig.state_dict())  # the same weights, only the activation differs
    ratios = []
    for net in (sig, ident):
        loss_grad(net, x)
        ratios.append(grad_ratio(grad_norms(net)).item())
    assert ratios[0] < ratios[1] / 1000, ratios


# ---------------------------------------------------------------- any activation


@pytest.mark.parametrize("target", ["torch.nn.functional.softsign", "test_probes.cubic_soft", "torch.nn.GELU"])
def test_a_user_activation_given_by_target_gets_every_probe(target):
    fn = activations.build({"_target_": target})
    net = packed_mlp([0, 1], fn, depth=2, width=16)
    record = probe_forward(net, inputs(2, n=64))
    stats = layer_stats(record)
    assert set(stats) == {f"probes/{s}/layer{i}" for s in ("dead", "saturated", "dact_mean") for i in (1, 2)}
    assert all(v.shape == (2,) and v.isfinite().all() for v in stats.values())
    # autograd's derivative, checked against a finite difference
    z = record[0][0]
    fd = (fn(z + 1e-3) - fn(z - 1e-3)) / 2e-3
    assert stats["probes/dact_mean/layer1"].tolist() == pytest.approx(fd.abs().mean((1, 2)).tolist(), rel=1e-2)
    loss_grad(net, inputs(2, n=64))
    assert grad_norms(net).shape == (3, 2) and grad_norms(net).gt(0).all()


def test_probe_forward_restores_training_mode_and_skips_dropout():
    net = packed_mlp([0], torch.relu, depth=2, width=16, dropout=0.5)
    net.train()
    x = inputs(1, n=8)
    a, b = probe_forward(net, x), probe_forward(net, x)
    assert net.training
    assert all(torch.equal(za, zb) for (za, _, _), (zb, _, _) in zip(a, b))  # no dropout masks drawn


def test_gradient_probe_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="every_n_steps"):
        GradientProbe(every_n_steps=0)


def test_default_config_instantiates_both_probes():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(activations.CONF_DIR / "probes" / "default.yaml")
    probes = [instantiate(p) for p in cfg.values() if p is not None]
    assert [type(p) for p in probes] == [ActivationProbe, GradientProbe]
    assert OmegaConf.load(activations.CONF_DIR / "probes" / "none.yaml") == {}


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_one_epoch_run_records_probes(tiny_run, tmp_path):
    # two packed seeds of a two-layer net with an activation given only by its _target_
    r = run_cli(*tiny_run, "model.depth=2", "seeds=[0,1]", f"activation._target_={SOFTSIGN}")
    assert r.returncode == 0, r.stderr
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / "tiny" / f"activation._target_={SOFTSIGN},model.depth=2,seed={seed}"
        m = metrics(run_dir)
        probes = m["probes"]
        layer_tags = {f"probes/{s}/layer{i}" for s in ("dead", "saturated", "dact_mean") for i in (1, 2)}
        grad_tags = {"probes/grad_norm/w1", "probes/grad_norm/w2", "probes/grad_norm/w3", "probes/grad_ratio"}
        assert set(probes) == {"epoch"} | layer_tags | grad_tags
        assert probes["epoch"] == [0, 1]
        assert all(len(v) == 2 for v in probes.values())
        assert all(probes[t][0] is None and probes[t][1] > 0 for t in grad_tags)  # no gradient at initialisation
        assert all(isinstance(v, float) for t in layer_tags for v in probes[t])
        assert probes["probes/grad_ratio"][1] == pytest.approx(probes["probes/grad_norm/w1"][1] / probes["probes/grad_norm/w3"][1], rel=1e-5)
        assert not any(k.startswith("probes/") for k in m["curves"])

        ea = events(run_dir)
        scalars, histograms = set(ea.Tags()["scalars"]), set(ea.Tags()["histograms"])
        assert layer_tags | grad_tags <= scalars
        assert {"probes/grad_norm_step/w1", "probes/grad_norm_step/w3", "probes/grad_ratio_step"} <= scalars
        assert histograms == {"probes/preact/layer1", "probes/preact/layer2", "probes/act/layer1", "probes/act/layer2"}
        assert [e.step for e in ea.Histograms("probes/preact/layer1")] == [0, m["final"]["steps"]]
        assert [e.step for e in ea.Scalars("probes/dead/layer1")] == [0, m["final"]["steps"]]
        assert ea.Scalars("probes/dead/layer2")[-1].value == pytest.approx(probes["probes/dead/layer2"][1])
        assert all(math.isfinite(e.value) for e in ea.Scalars("probes/grad_ratio_step"))


@pytest.mark.slow
def test_probes_none_records_no_probes_and_same_training(tiny_run, tmp_path):
    a = run_cli(*tiny_run, "name=a", "model.dropout=0.2")
    b = run_cli(*tiny_run, "name=b", "model.dropout=0.2", "probes=none")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma, mb = (metrics(tmp_path / "runs" / n / "model.dropout=0.2") for n in "ab")  # probes stay out of run names
    assert ma["probes"]["epoch"] == [0, 1] and mb["probes"] == {}
    assert ma["curves"]["train_loss"] == mb["curves"]["train_loss"]  # probing changes nothing about training
    assert ma["final"]["test_acc"] == mb["final"]["test_acc"]


def test_histogram_sample_sees_every_position_of_a_feature_map():
    from actbench.probes import HISTOGRAM_VALUES, histogram_sample

    # 128 images x 64 channels x 28 x 28 = 49 x HISTOGRAM_VALUES: a stride of 49 would see 16 of the 784 positions
    z = torch.arange(28 * 28, dtype=torch.float32).expand(1, 128, 64, 28 * 28).reshape(1, 128, 64, 28, 28)
    sample = histogram_sample(z)
    assert sample.shape == (1, HISTOGRAM_VALUES)
    assert len(sample.unique()) == 28 * 28  # every pixel position is represented
    assert torch.equal(sample, histogram_sample(z))  # the same picks at every call


@pytest.mark.slow
def test_a_learnable_activation_packs_apart_and_records_its_values_per_layer(tiny_run, tmp_path):
    r = run_cli("-m", *tiny_run, "model.depth=2", "activation=relu,prelu", "seed=0,1", "report=none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("(+1 packed)") >= 2  # relu's pack and prelu's: a learnable activation packs with its own kind
    sweep = tmp_path / "runs" / "tiny"
    tags = {f"probes/act_weight/layer{i}" for i in (1, 2)}
    values = []
    for seed in (0, 1):
        m = metrics(sweep / f"activation=prelu,model.depth=2,seed={seed}")
        assert tags <= set(m["probes"]) and all(m["probes"][t][0] == 0.25 for t in tags)  # PReLU's initial slope
        values.append([m["probes"][t][-1] for t in sorted(tags)])
        assert tags <= set(events(sweep / f"activation=prelu,model.depth=2,seed={seed}").Tags()["scalars"])
        assert not tags & set(metrics(sweep / f"activation=relu,model.depth=2,seed={seed}")["probes"])
    assert values[0] != values[1] and all(v != 0.25 for v in values[0])  # each member and layer learned its own slope
