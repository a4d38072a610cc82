"""actbench.model: the packed MLP, its initialisation, and per-seed independence."""

import math

import pytest
import torch
from torch import nn

from actbench.model import PackedMLP, accuracy, cross_entropy


def test_default_is_the_blogs_mlp():
    net = PackedMLP([0], nn.ReLU())
    assert [tuple(w.shape) for w in net.weights] == [(128, 784), (10, 128)]  # nn.Linear's own shapes
    assert [tuple(b.shape) for b in net.biases] == [(128,), (10,)]
    assert sum(p.numel() for p in net.parameters()) == 784 * 128 + 128 + 128 * 10 + 10


def test_depth_and_width():
    net = PackedMLP([0, 1], nn.Tanh(), depth=3, width=16)
    assert [tuple(net.per_seed(w).shape) for w in net.weights] == [(2, 16, 784), (2, 16, 16), (2, 16, 16), (2, 10, 16)]
    assert net(torch.randn(2, 5, 784)).shape == (2, 5, 10)


def test_one_member_is_a_plain_mlp():
    net = PackedMLP([4], nn.GELU(), depth=2, width=16)
    x = torch.randn(1, 7, 784)
    plain = nn.Sequential(nn.Linear(784, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 10))
    with torch.no_grad():
        for lin, w, b in zip(plain[::2], net.weights, net.biases):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    assert torch.allclose(net(x)[0], plain(x[0]), atol=1e-6)


@pytest.mark.parametrize(
    "init, bound, bias_zero",
    [("torch", 1 / math.sqrt(784), False), ("glorot", math.sqrt(6 / (784 + 128)), True)],
)
def test_uniform_inits_have_their_bounds(init, bound, bias_zero):
    w, b = PackedMLP([0], nn.ReLU(), init=init).weights[0], PackedMLP([0], nn.ReLU(), init=init).biases[0]
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert (b == 0).all() if bias_zero else b.abs().max() > 0


@pytest.mark.parametrize("init, std", [("kaiming", math.sqrt(2 / 784)), ("lecun", math.sqrt(1 / 784))])
def test_normal_inits_have_their_std(init, std):
    net = PackedMLP([0], nn.ReLU(), init=init)
    assert net.weights[0].std().item() == pytest.approx(std, rel=0.02) and (net.biases[0] == 0).all()


def test_a_seeds_weights_do_not_depend_on_its_pack():
    alone = PackedMLP([7], nn.ReLU())
    packed = PackedMLP([3, 7], nn.ReLU())
    for a, p in zip(alone.parameters(), packed.parameters()):
        assert torch.equal(a, packed.per_seed(p)[1])
    assert not torch.equal(packed.per_seed(packed.weights[0])[0], packed.per_seed(packed.weights[0])[1])


def test_packed_forward_equals_each_seed_alone():
    packed = PackedMLP([0, 1], nn.GELU(), depth=2, width=32)
    x = torch.randn(2, 9, 784)
    out = packed(x)
    for k, s in enumerate([0, 1]):
        alone = PackedMLP([s], nn.GELU(), depth=2, width=32)
        assert torch.allclose(out[k], alone(x[k : k + 1])[0], atol=1e-6)


def test_summed_losses_give_each_seed_exactly_its_own_gradient():
    packed = PackedMLP([0, 1], nn.Sigmoid(), width=8)
    x, y = torch.randn(2, 6, 784), torch.randint(0, 10, (2, 6))
    cross_entropy(packed(x), y).sum().backward()
    alone = PackedMLP([1], nn.Sigmoid(), width=8)
    cross_entropy(alone(x[1:]), y[1:]).sum().backward()
    for p, a in zip(packed.parameters(), alone.parameters()):
        assert torch.allclose(packed.per_seed(p.grad)[1], a.grad, atol=1e-7)


def test_loss_and_correct_per_seed():
    logits = torch.tensor([[[5.0, 0, 0], [0, 5.0, 0]], [[5.0, 0, 0], [5.0, 0, 0]]])
    y = torch.tensor([[0, 1], [0, 1]])
    assert accuracy(logits, y).tolist() == [1.0, 0.5]
    loss = cross_entropy(logits, y)
    assert loss[0] < loss[1] and loss[0].item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 2)), rel=1e-5)


def test_dropout_masks_come_from_seed_and_epoch():
    def masks(seeds, epoch):
        net = PackedMLP(seeds, nn.Identity(), width=64, dropout=0.5)
        net.train()
        net.start_epoch(epoch)
        return net.drop(torch.ones(len(seeds), 4, 64))

    assert torch.equal(masks([3], 0)[0], masks([1, 3], 0)[1])
    assert not torch.equal(masks([3], 0), masks([3], 1))
    m = masks([3], 0)
    assert set(m.unique().tolist()) == {0.0, 2.0}  # kept units are scaled by 1/(1-p)
    # a lone member's training step works on [B, width] (step_losses): the same masks, per row
    lone = PackedMLP([3], nn.Identity(), width=64, dropout=0.5)
    lone.start_epoch(0)
    assert torch.equal(lone.drop(torch.ones(4, 64)), masks([3], 0)[0])


def test_packed_training_steps_equal_each_member_alone_with_dropout():
    from actbench.model import step_losses

    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 8, 784, generator=gen), torch.randint(0, 10, (2, 8), generator=gen)) for _ in range(4)]

    def train(seeds, data):
        net = PackedMLP(seeds, nn.ReLU(), width=32, dropout=0.3).train()
        net.start_epoch(0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for x, y in data:
            opt.zero_grad()
            step_losses(net, x, y)[0].backward()
            opt.step()
        return net

    packed = train([0, 1], batches)
    alone = train([1], [(x[1:], y[1:]) for x, y in batches])
    for p, a in zip(packed.parameters(), alone.parameters()):
        assert torch.allclose(packed.per_seed(p)[1], a, rtol=1e-5, atol=1e-6)


def test_eval_mode_has_no_dropout():
    net = PackedMLP([0], nn.ReLU(), dropout=0.5).eval()
    x = torch.randn(1, 3, 784)
    assert torch.equal(net(x), net(x))


def test_memory_per_member_grows_with_the_model():
    from omegaconf import OmegaConf

    def mlp(depth):
        return OmegaConf.create({"depth": depth, "width": 128, "init": "torch", "dropout": 0.0})

    small = PackedMLP.bytes_per_member(mlp(1), rows=5000)
    assert PackedMLP.bytes_per_member(mlp(8), rows=5000) > small and small > 4 * 4 * 101_770
    assert PackedMLP.n_params(mlp(1)) == sum(p.numel() for p in PackedMLP([0], nn.ReLU()).parameters()) == 101_770


def test_images_come_in_as_images_and_rows_as_rows():
    net = PackedMLP([0, 1], nn.ReLU(), width=16)
    images = torch.randn(2, 3, 1, 28, 28)
    assert torch.equal(net(images), net(images.flatten(-3)))


def test_packed_linear_gradients_match_autograd():
    from actbench.model import PackedLinear

    h = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PackedLinear.apply, (h, w, b))
    assert torch.allclose(PackedLinear.apply(h, w, b), torch.baddbmm(b, h, w.transpose(1, 2)))


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

    packed = train(PackedMLP([0, 1], nn.Tanh(), width=32), batches)
    for k, s in enumerate([0, 1]):
        alone = train(PackedMLP([s], nn.Tanh(), width=32), [(x[k : k + 1], y[k : k + 1]) for x, y in batches])
        for p, a in zip(packed.parameters(), alone.parameters()):
            assert torch.allclose(packed.per_seed(p)[k], a, rtol=1e-5, atol=1e-6)


def test_packed_members_train_bit_for_bit_as_alone_with_fused_adam():
    # ReLU and Leaky ReLU amplify any last-bit difference (a unit flips at the kink), so packed
    # and lone runs agree only if every step agrees exactly; fused Adam rounds a tensor's tail
    # apart from its vector body, and param_groups keeps the misaligned biases out of it
    from actbench.activations import PerMember
    from actbench.model import param_groups, step_losses

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

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as threads=auto trains the blog's MLP: a product split between threads sums in another order
    try:
        packed = train(PackedMLP([0, 1], PerMember([nn.ReLU(), nn.LeakyReLU(0.01)]), width=32), zip(xs, ys))
        alone = train(PackedMLP([1], nn.LeakyReLU(0.01), width=32), zip(xs[:, 1:], ys[:, 1:]))
    finally:
        torch.set_num_threads(threads)
    for p, a in zip(packed.parameters(), alone.parameters()):
        assert torch.equal(packed.per_seed(p)[1], a.view(packed.per_seed(p)[1].shape))
