"""actbench.activations: the zoo's values, the builder, and autograd derivatives."""

import math

import pytest
import torch

from actbench import activations

X = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=torch.float64)
# GELU reference values (x * Phi(x), and the tanh approximation) at X
GELU_EXACT = [-0.00404951, -0.15865529, 0.0, 0.8413447, 2.9959507]
GELU_TANH = [-0.00363752, -0.15880796, 0.0, 0.841192, 2.9963627]


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


REQUIRED = ["relu", "leaky", "sigmoid", "tanh", "gelu", "gelu_tanh", "gelu_sigmoid", "silu", "elu", "selu", "mish", "softplus",
            "relu2", "prelu", "swish_beta", "glu", "bilinear", "reglu", "geglu", "swiglu"]
# Shazeer 2020's gated units: gate(xW) * xV, each gate as a plain function
GATES = {"glu": torch.sigmoid, "bilinear": lambda a: a, "reglu": torch.relu, "geglu": torch.nn.functional.gelu,
         "swiglu": lambda a: a * torch.sigmoid(a)}


def test_every_required_activation_is_shipped():
    assert set(REQUIRED) <= set(activations.names())


@pytest.mark.parametrize("name", activations.names())  # every file in conf/activation/
def test_shipped_activations_are_elementwise_and_finite(name):
    fn = activations.from_name(name)
    n = activations.in_per_out(fn)
    assert n == (2 if name in GATES else 1)
    x = torch.linspace(-5, 5, 101 * n).view(n, 101).t().flip(0).contiguous().view(-1)  # chunk j holds x's j-th values
    y = fn(x)
    assert y.shape == (101,) and torch.isfinite(y).all()
    # elementwise: the value at a point does not depend on the other points
    flipped = x.view(n, 101).flip(1).view(-1) if n > 1 else x.flip(0)
    assert torch.allclose(fn(flipped), y.flip(0), atol=1e-6)


@pytest.mark.parametrize("name", sorted(GATES))
def test_a_gated_unit_is_its_gate_of_one_projection_times_the_other(name):
    """GEGLU(x) = GELU(xW) * xV and its kin, computed by hand on a tiny input: the layer before
    yields [xW, xV] as the two halves of its output."""
    gen = torch.Generator().manual_seed(0)
    x, w, v = torch.randn(3, 5, generator=gen), torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    fn = activations.from_name(name)
    assert torch.allclose(fn(torch.cat([x @ w, x @ v], dim=-1)), GATES[name](x @ w) * (x @ v), atol=1e-6)
    assert fn(torch.tensor([[0.5, -2.0]])).item() == pytest.approx(GATES[name](torch.tensor(0.5)).item() * -2.0)


def test_squared_relu():
    assert activations.from_name("relu2")(torch.tensor([-2.0, 0.0, 0.5, 3.0])).tolist() == [0.0, 0.0, 0.25, 9.0]


class Pooled(torch.nn.Module):
    """A would-be gated unit whose gate reads every unit's value."""

    in_per_out = 2

    def forward(self, z):
        a, b = z.chunk(2, dim=-1)
        return a * b.mean(-1, keepdim=True)


def test_a_gated_unit_that_reads_other_units_or_declares_nonsense_is_refused():
    with pytest.raises(ValueError, match="in_per_out=2, but its output j does not read element j of each of the 2 chunks"):
        activations.build({"_target_": "test_activations.Pooled"})
    bad = activations.Gated()
    bad.in_per_out = 0
    with pytest.raises(ValueError, match="in_per_out=0 must be an integer >= 1"):
        activations.in_per_out(bad)


def test_gelu_exact_and_tanh_reference_values():
    assert activations.from_name("gelu")(X).tolist() == pytest.approx(GELU_EXACT, abs=1e-6)
    assert activations.from_name("gelu_tanh")(X).tolist() == pytest.approx(GELU_TANH, abs=1e-6)
    assert [x * phi(x) for x in X.tolist()] == pytest.approx(GELU_EXACT, abs=1e-6)


def test_gelu_approximation_errors():
    xs = torch.linspace(-6, 6, 120001, dtype=torch.float64)
    exact = activations.from_name("gelu")(xs)
    d_tanh = (activations.from_name("gelu_tanh")(xs) - exact).abs()
    d_sig = (activations.from_name("gelu_sigmoid")(xs) - exact).abs()
    assert 4.5e-4 < d_tanh.max() < 5e-4 and abs(abs(xs[d_tanh.argmax()]) - 2.7) < 0.1
    assert 1.9e-2 < d_sig.max() < 2.1e-2


def test_other_values_at_known_points():
    x = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)
    assert activations.from_name("relu")(x).tolist() == [0, 0, 2]
    assert activations.from_name("leaky")(x).tolist() == pytest.approx([-0.02, 0, 2])
    assert activations.from_name("sigmoid")(x).tolist() == pytest.approx([1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-2)])
    assert activations.from_name("silu")(x).tolist() == pytest.approx([-2 / (1 + math.e**2), 0, 2 / (1 + math.e**-2)])
    assert activations.from_name("elu")(x).tolist() == pytest.approx([math.exp(-2) - 1, 0, 2])
    assert activations.from_name("softplus")(x).tolist() == pytest.approx([math.log1p(math.exp(-2)), math.log(2), math.log1p(math.e**2)])
    assert activations.from_name("mish")(x)[2].item() == pytest.approx(2 * math.tanh(math.log1p(math.e**2)))


def test_build_accepts_a_module_class_with_parameters():
    fn = activations.build({"_target_": "torch.nn.LeakyReLU", "negative_slope": 0.3})
    assert fn(torch.tensor([-1.0])).item() == pytest.approx(-0.3)


def test_build_accepts_a_plain_function_with_bound_arguments():
    fn = activations.build({"_target_": "torch.nn.functional.gelu", "approximate": "tanh"})
    assert fn(X).tolist() == pytest.approx(GELU_TANH, abs=1e-6)
    bare = activations.build({"_target_": "torch.tanh"})
    assert bare(torch.tensor([0.5])).item() == pytest.approx(math.tanh(0.5))


def test_learnable_activations_build_with_their_initial_values():
    prelu, swish = activations.from_name("prelu"), activations.from_name("swish_beta")
    assert activations.is_learnable(prelu) and prelu.weight.tolist() == [0.25]
    assert prelu(torch.tensor([-2.0, 3.0])).tolist() == [-0.5, 3.0]
    assert activations.is_learnable(swish) and swish.beta.item() == 1.0
    assert torch.allclose(swish(X), torch.nn.functional.silu(X))  # beta = 1 is SiLU
    per_channel = activations.build({"_target_": "torch.nn.PReLU", "num_parameters": 4})  # a slope per channel of dim 1
    assert per_channel.weight.shape == (4,) and not activations.is_learnable(torch.relu)


def test_a_learnable_module_that_mixes_its_inputs_is_refused():
    with pytest.raises(ValueError, match="elementwise"):
        activations.build({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 3})


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="relu"):
        activations.from_name("nope")


def test_derivative_by_autograd():
    z = torch.tensor([-3.0, -0.5, 0.5, 3.0])
    assert activations.derivative(torch.relu, z).tolist() == [0, 0, 1, 1]
    s = torch.sigmoid(z)
    assert torch.allclose(activations.derivative(torch.sigmoid, z), s * (1 - s))
    d = activations.derivative(activations.from_name("leaky"), z)
    assert d.tolist() == pytest.approx([0.01, 0.01, 1, 1])


def test_non_elementwise_activations_are_refused():
    with pytest.raises(ValueError, match="elementwise"):
        activations.build({"_target_": "torch.nn.Softmax", "dim": -1})
    assert activations.is_elementwise(torch.tanh) and not activations.is_elementwise(lambda z: z.cumsum(-1))


def test_in_place_activations_get_their_derivative():
    fn = activations.build({"_target_": "torch.nn.ELU", "inplace": True})
    z = torch.tensor([-1.0, 2.0])
    assert activations.derivative(fn, z).tolist() == pytest.approx([math.exp(-1), 1.0])
    assert z.tolist() == [-1.0, 2.0]
