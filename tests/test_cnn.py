"""actbench.models.cnn: the ConvNet's shapes and facts, its refusals, and the probes on its
convolutions (packed equals apart is tests/test_packer.py's)."""

import pytest
import torch
from models import ACTS, pack
from omegaconf import OmegaConf

from actbench.errors import ConfigError
from actbench.model import step_losses
from actbench.model_facts import PlainModel
from actbench.models.cnn import ConvNet
from actbench.packer import ConvTwin, Packed
from actbench.probes import grad_norms, layer_stats, probe_forward
from conftest import events, metrics, run_cli

RELU = OmegaConf.create({"_target_": "torch.nn.ReLU"})


def packed(seeds, act="relu", **keys) -> Packed:
    return pack(ConvNet, seeds, [act] * len(seeds), shape=(1, 28, 28), **keys)


def test_parameters_and_facts_are_a_plain_convnets():
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.cnn.ConvNet", "channels": [16, 32], "width": 128, "norm": "none",
                                      "init": "torch", "dropout": 0.0}, "activation": RELU})
    facts = PlainModel(ConvNet, cfg)
    n = 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 7 * 7 * 128 + 128 + 1290
    assert facts.n_params(cfg.model, (1, 28, 28), 10) == n == sum(p.numel() for p in packed([0]).parameters())
    convs = 2 * (16 * 9 * 28 * 28 + 32 * 16 * 9 * 14 * 14)  # multiply-adds of the two convolutions, per image
    assert facts.flops_per_sample(cfg.model, (1, 28, 28), 10) == convs + 2 * (32 * 7 * 7 * 128 + 128 * 10)
    three = packed([0, 1, 2], channels=[8, 4], width=32, norm="batch")
    assert [tuple(three.per_seed(m.weight).shape) for m in three.modules() if isinstance(m, ConvTwin)] == [(3, 8, 1, 3, 3), (3, 4, 8, 3, 3)]
    assert three(torch.randn(3, 5, 1, 28, 28)).shape == (3, 5, 10)


@pytest.mark.parametrize("key, value, said", [("channels", [], "non-empty list"), ("norm", "layer", "one of none, batch"),
                                              ("channels", [4, 4, 4, 4, 4], "nothing of a 28x28 image")])
def test_a_key_it_refuses_is_one_line_naming_it(key, value, said):
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.cnn.ConvNet", key: value}, "activation": RELU})
    with pytest.raises(ConfigError, match=rf"^model\.{key}=.*{said}"):
        PlainModel(ConvNet, cfg).check((1, 28, 28), 10)


def test_a_gated_activation_is_refused_in_one_line():
    cfg = OmegaConf.create({"model": {"_target_": "actbench.models.cnn.ConvNet"}, "activation": ACTS["swiglu"]})
    with pytest.raises(ConfigError, match=r"^model \(actbench.models.cnn.ConvNet\): a gated activation does not fit the ConvNet .* use model=mlp or model=vit$"):
        PlainModel(ConvNet, cfg).check((1, 28, 28), 10)


def test_dead_channels_and_saturation_on_hand_built_convolutions():
    net = packed([0, 1], channels=[4, 2], width=8).eval()
    conv = next(m for m in net.modules() if isinstance(m, ConvTwin))
    with torch.no_grad():
        conv.bias.zero_()
        conv.weight.abs_()  # positive kernels on positive images: every first-layer channel is active ...
        net.per_seed(conv.bias)[0, :3] = -100.0  # ... but member 0's channels 0-2 are dead everywhere
    x = torch.rand(2, 5, 1, 28, 28)
    stats = layer_stats(probe_forward(net, x))
    assert stats["probes/dead/layer1"].tolist() == [0.75, 0.0] and stats["probes/saturated/layer1"][0] >= 0.75
    sig = packed([0], "sigmoid", channels=[4, 2], width=8).eval()
    with torch.no_grad():
        next(m for m in sig.modules() if isinstance(m, ConvTwin)).bias.fill_(10.0)  # sigmoid(z > 2.944) everywhere: saturated, not dead
    s = layer_stats(probe_forward(sig, x[:1]))
    assert s["probes/saturated/layer1"].item() == 1.0 and s["probes/dead/layer1"].item() == 0.0 and 0 < s["probes/dact_mean/layer1"].item() < 0.0475


def test_gradient_norms_cover_convolutions_and_dense_layers_per_member():
    net = packed([0, 1], channels=[4, 2], width=8)
    x, y = torch.rand(2, 5, 1, 28, 28), torch.randint(0, 10, (2, 5))
    step_losses(net, x, y)[0].backward()
    norms = grad_norms(net)
    assert norms.shape == (4, 2)  # conv1, conv2, dense, output; per member
    first = net.probe_weights()[0]
    assert first.shape == (2 * 4, 1, 3, 3) and torch.allclose(norms[0, 1], net.per_seed(first.grad)[1].norm())


@pytest.mark.slow
def test_a_convnet_run_and_a_packed_multirun_write_the_usual_outputs(tiny_run, tmp_path):
    one = run_cli(*tiny_run, "model=cnn", "name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    m = metrics(tmp_path / "runs" / "one" / "model=cnn")
    assert m["status"] == "finished" and m["hparams"]["model"] == "cnn" and m["hparams"]["channels"] == "16-32"
    assert {"probes/dead/layer1", "probes/dead/layer3", "probes/grad_norm/w4"} <= set(m["probes"])  # two convolutions, the dense layer, four weights
    sweep = ["-m", *tiny_run, "model=cnn", "model.norm=batch", "model.dropout=0.2", "activation=relu,sigmoid", "seed=0,1",
             "data.eval_batch_size=200", "report=none"]
    packed_run = run_cli(*sweep, "name=p")
    apart = run_cli(*sweep, "name=a", "pack=false")
    assert packed_run.returncode == 0 and apart.returncode == 0, packed_run.stderr[-2000:] + apart.stderr[-2000:]
    assert packed_run.stdout.count("(+1 packed)") == 0 and "(+3 packed)" in packed_run.stdout  # one pack of all four
    for d in (tmp_path / "runs" / "p").glob("activation=*"):
        mp, ma = metrics(d), metrics(tmp_path / "runs" / "a" / d.name)
        science = [{k: v for k, v in m["curves"].items() if k not in ("epoch_s", "samples_per_s")} for m in (mp, ma)]
        assert mp["final"] == ma["final"] and science[0] == science[1] and science[0]["val_loss"]  # bit for bit
        assert "loss/train" in events(d).Tags()["scalars"]
