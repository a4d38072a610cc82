"""actbench.convnet: the packed ConvNet equals plain torch ConvNets, member by member, in shape,
in its forward pass and in training (dropout and batch norm on); and the probes read convolutions."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from actbench.activations import PerMember, gelu_sigmoid
from actbench.convnet import PackedConvNet
from actbench.model import step_losses
from actbench.probes import grad_norms, layer_stats, probe_forward
from conftest import events, metrics, run_cli


def test_shape_and_parameter_count_are_a_plain_convnets():
    net = PackedConvNet([0], nn.ReLU())
    ref = net.member(0)
    assert [tuple(w.shape) for w in net.conv_w] == [(16, 1, 3, 3), (32, 16, 3, 3)]  # nn.Conv2d's own shapes
    assert net(torch.randn(1, 5, 1, 28, 28)).shape == (1, 5, 10)
    n = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in net.parameters()) == n == PackedConvNet.n_params(OmegaConf.create(
        {"channels": [16, 32], "width": 128, "norm": "none"})) == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 7 * 7 * 128 + 128 + 1290
    packed = PackedConvNet([0, 1, 2], nn.ReLU(), channels=[8, 4], width=32, norm="batch")
    assert [tuple(packed.per_seed(w).shape) for w in packed.conv_w] == [(3, 8, 1, 3, 3), (3, 4, 8, 3, 3)]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_each_packed_member_computes_what_a_plain_convnet_does(norm):
    acts = [nn.ReLU(), nn.GELU(), nn.Sigmoid()]
    net = PackedConvNet([0, 1, 2], PerMember(acts), channels=[4, 8], width=16, norm=norm).train()
    x = torch.randn(3, 6, 1, 28, 28)
    out = net(x)
    for k in range(3):
        ref = net.member(k).train()  # torch's own Conv2d, BatchNorm2d, MaxPool2d and Linear
        assert torch.allclose(out[k], ref(x[k]), atol=1e-5), k
    alone = PackedConvNet([1], nn.GELU(), channels=[4, 8], width=16, norm=norm).train()
    assert torch.allclose(alone(x[1]), out[1], atol=1e-5)  # a lone member's [B, C, H, W] fast path, its own initial weights


@pytest.fixture
def float64():
    # Adam's first steps move each weight by about lr * sign(grad): in float32 a convolution's summation
    # order (which differs between CPUs) flips the sign of near-zero gradients. In float64 rounding is
    # 1e-15, so any difference left is a packing bug, not arithmetic.
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_packed_training_equals_each_member_alone_with_dropout_and_batch_norm(float64):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(3, 8, 1, 28, 28, generator=gen), torch.randint(0, 10, (3, 8), generator=gen)) for _ in range(4)]

    def train(seeds, data, act):
        net = PackedConvNet(seeds, act, channels=[4, 8], width=16, norm="batch", dropout=0.3).train()
        net.start_epoch(0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        losses = []
        for x, y in data:
            opt.zero_grad()
            objective, _, loss = step_losses(net, x, y)
            objective.backward()
            opt.step()
            losses.append(loss)
        return net, torch.stack(losses)

    acts = [nn.ReLU(), nn.Tanh(), gelu_sigmoid]
    packed, packed_losses = train([0, 1, 2], batches, PerMember(acts))
    for k, seed in enumerate([0, 1, 2]):
        alone, losses = train([seed], [(x[k : k + 1], y[k : k + 1]) for x, y in batches], acts[k])
        assert torch.allclose(packed_losses[:, k], losses[:, 0], rtol=1e-9, atol=1e-10)
        for (name, p), a in zip(packed.state_dict().items(), alone.state_dict().values()):
            assert torch.allclose(packed.per_seed(p)[k], a.view(packed.per_seed(p)[k].shape), rtol=1e-9, atol=1e-10), name


def test_dead_channels_and_saturation_on_hand_built_convolutions():
    net = PackedConvNet([0, 1], nn.ReLU(), channels=[4, 2], width=8).eval()
    with torch.no_grad():
        for b in net.conv_b:  # norm=none: the convolutions have biases
            b.zero_()
        net.conv_w[0].abs_()  # positive kernels on positive images: every first-layer channel is active ...
        net.per_seed(net.conv_b[0])[0, :3] = -100.0  # ... but member 0's channels 0-2 are dead everywhere
    x = torch.rand(2, 5, 1, 28, 28)
    stats = layer_stats(net.activation, probe_forward(net, x))
    assert stats["probes/dead/layer1"].tolist() == [0.75, 0.0] and stats["probes/saturated/layer1"][0] >= 0.75
    sig = PackedConvNet([0], nn.Sigmoid(), channels=[4, 2], width=8).eval()
    with torch.no_grad():
        sig.conv_b[0].fill_(10.0)  # sigmoid(z > 2.944) everywhere: saturated, not dead
    s = layer_stats(sig.activation, probe_forward(sig, x[:1]))
    assert s["probes/saturated/layer1"].item() == 1.0 and s["probes/dead/layer1"].item() == 0.0 and 0 < s["probes/dact_mean/layer1"].item() < 0.0475


def test_gradient_norms_cover_convolutions_and_dense_layers_per_member():
    net = PackedConvNet([0, 1], nn.ReLU(), channels=[4, 2], width=8)
    x, y = torch.rand(2, 5, 1, 28, 28), torch.randint(0, 10, (2, 5))
    step_losses(net, x, y)[0].backward()
    norms = grad_norms(net)
    assert norms.shape == (4, 2)  # conv1, conv2, dense, output; per member
    assert torch.allclose(norms[0, 1], net.per_seed(net.conv_w[0].grad)[1].norm())


@pytest.mark.slow
def test_a_convnet_run_and_a_packed_multirun_write_the_usual_outputs(tiny_run, tmp_path):
    one = run_cli(*tiny_run, "model=cnn", "name=one")
    assert one.returncode == 0, one.stderr[-2000:]
    m = metrics(tmp_path / "runs" / "one" / "model=cnn")
    assert m["status"] == "finished" and m["hparams"]["model"] == "cnn" and m["hparams"]["channels"] == "16-32"
    assert {"probes/dead/layer1", "probes/dead/layer3", "probes/grad_norm/w4"} <= set(m["probes"])  # two convolutions, the dense layer, four weights
    sweep = ["-m", *tiny_run, "model=cnn", "model.norm=batch", "activation=relu,sigmoid", "seed=0,1", "data.eval_batch_size=200",
             "report=none"]
    packed = run_cli(*sweep, "name=p")
    apart = run_cli(*sweep, "name=a", "pack=false")
    assert packed.returncode == 0 and apart.returncode == 0, packed.stderr[-2000:] + apart.stderr[-2000:]
    assert packed.stdout.count("(+1 packed)") >= 2  # one job; a pack per activation (the ConvNet does not mix them)
    for d in (tmp_path / "runs" / "p").glob("activation=*"):
        mp, ma = metrics(d), metrics(tmp_path / "runs" / "a" / d.name)
        assert mp["final"]["test_acc"] == pytest.approx(ma["final"]["test_acc"], abs=2e-3)
        assert mp["curves"]["val_loss"] == pytest.approx(ma["curves"]["val_loss"], rel=1e-4)
        assert "loss/train" in events(d).Tags()["scalars"]
