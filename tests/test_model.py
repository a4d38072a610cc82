"""actbench.model: each member's loss and gradient, the optimizer's groups, and which classes a
run may name as its model."""

import math

import pytest
import torch
from models import dense, packed_mlp
from omegaconf import OmegaConf
from torch import nn

from actbench.errors import ConfigError
from actbench.model import PackedNet, accuracy, cross_entropy, model_class, param_groups, step_losses


def test_loss_and_correct_per_seed():
    logits = torch.tensor([[[5.0, 0, 0], [0, 5.0, 0]], [[5.0, 0, 0], [5.0, 0, 0]]])
    y = torch.tensor([[0, 1], [0, 1]])
    assert accuracy(logits, y).tolist() == [1.0, 0.5]
    loss = cross_entropy(logits, y)
    assert loss[0] < loss[1] and loss[0].item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 2)), rel=1e-5)


def test_summed_losses_give_each_seed_exactly_its_own_gradient():
    packed = packed_mlp([0, 1], nn.Sigmoid(), width=8)
    x, y = torch.randn(2, 6, 784), torch.randint(0, 10, (2, 6))
    cross_entropy(packed(x), y).sum().backward()
    alone = packed_mlp([1], nn.Sigmoid(), width=8)
    cross_entropy(alone(x[1:]), y[1:]).sum().backward()
    for p, a in zip(packed.parameters(), alone.parameters()):
        assert torch.allclose(packed.per_seed(p.grad)[1], a.grad, atol=1e-7)


def test_a_lone_members_step_is_its_plain_models():
    net = packed_mlp([3], nn.GELU(), depth=2, width=16)
    plain = net.member(0)
    x, y = torch.randn(1, 7, 784), torch.randint(0, 10, (1, 7))
    objective, logits, losses = step_losses(net, x, y)
    assert torch.equal(logits[0], plain(x[0])) and losses.shape == (1,)
    assert objective.item() == pytest.approx(nn.functional.cross_entropy(plain(x[0]), y[0]).item(), rel=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
    ],
    ids=["sgd-momentum", "adamw", "rmsprop"],
)
def test_packed_seeds_train_as_apart_with_elementwise_optimizers(make):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 16, 784, generator=gen), torch.randint(0, 10, (2, 16), generator=gen)) for _ in range(5)]

    def train(net, data):
        opt = make(net.parameters())
        for x, y in data:
            opt.zero_grad()
            cross_entropy(net(x), y).sum().backward()
            opt.step()
        return net

    packed = train(packed_mlp([0, 1], nn.Tanh(), width=32), batches)
    for k, s in enumerate([0, 1]):
        alone = train(packed_mlp([s], nn.Tanh(), width=32), [(x[k : k + 1], y[k : k + 1]) for x, y in batches])
        for p, a in zip(packed.parameters(), alone.parameters()):
            assert torch.allclose(packed.per_seed(p)[k], a, rtol=1e-5, atol=1e-6)


def test_packed_members_train_bit_for_bit_as_alone_with_fused_adam():
    # ReLU and Leaky ReLU amplify any last-bit difference (a unit flips at the kink), so packed
    # and lone runs agree only if every step agrees exactly; fused Adam rounds a tensor's tail
    # apart from its vector body, and param_groups keeps the misaligned biases out of it
    gen = torch.Generator().manual_seed(0)
    steps = 600
    xs, ys = torch.rand(steps, 2, 8, 784, generator=gen), torch.randint(0, 10, (steps, 2, 8), generator=gen)

    def train(net, data):
        opt = torch.optim.Adam(param_groups(net.parameters(), net.n_seeds, fused=True), lr=1e-3, fused=True)
        for x, y in data:
            opt.zero_grad()
            step_losses(net, x, y)[0].backward()
            opt.step()
        return net

    leaky = nn.LeakyReLU(0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as threads=auto trains a step this small, packed or alone
    try:
        packed = train(packed_mlp([0, 1], [nn.ReLU(), leaky], width=32), zip(xs, ys))
        alone = train(packed_mlp([1], leaky, width=32), zip(xs[:, 1:], ys[:, 1:]))
    finally:
        torch.set_num_threads(threads)
    for p, a in zip(packed.parameters(), alone.parameters()):
        assert torch.equal(packed.per_seed(p)[1], a.view(packed.per_seed(p)[1].shape))
    assert [tuple(m.weight.shape) for m in dense(alone)] == [(32, 784), (10, 32)]


def test_a_hand_packed_model_or_a_non_module_is_one_line(monkeypatch):
    import types

    old = types.ModuleType("old_models")
    old.MyNet = type("MyNet", (PackedNet,), {})
    old.not_a_model = lambda x: x
    monkeypatch.setitem(__import__("sys").modules, "old_models", old)
    for target, said in (("old_models.MyNet", "is a hand-packed PackedNet, which actbench no longer packs: write it as a plain nn.Module"),
                         ("old_models.not_a_model", "must name a torch.nn.Module class")):
        with pytest.raises(ConfigError) as e:
            model_class(OmegaConf.create({"model": {"_target_": target}}))
        assert said in str(e.value) and "\n" not in str(e.value)


def test_with_weight_decay_only_weight_matrices_decay():
    net = packed_mlp([0, 1], nn.PReLU(), depth=2, width=64)
    groups = param_groups(net.parameters(), net.n_seeds, fused=True, weight_decay=0.1)
    kept = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert kept == {id(p) for n, p in net.named_parameters() if not n.endswith("1.weight") and not n.endswith("3.weight")
                    and not n.endswith("5.weight")} and len(kept) == 5  # three biases, two PReLU slopes
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert param_groups(net.parameters()) == list(net.parameters())  # no decay, not fused: one group, as given


def test_a_checkpoint_of_an_older_hand_packed_model_is_one_line():
    from actbench.checkpoints import CheckpointError
    from actbench.model import Classifier

    module = Classifier(packed_mlp([0], nn.ReLU()), torch.optim.Adam)
    module.on_load_checkpoint({"state_dict": dict(module.state_dict())})  # its own: fine
    old = {"net.weights.0": torch.zeros(128, 784), "net.biases.0": torch.zeros(128)}  # the hand-packed MLP's names
    with pytest.raises(CheckpointError, match="other layers than this model's .* delete the run's checkpoints/"):
        module.on_load_checkpoint({"state_dict": old})
