"""actbench.cost: an activation's time relative to ReLU's and the bytes it keeps for backward."""

import pytest
import torch
from torch import nn

from actbench import cost


def slow(x):
    """An activation made at least 50x slower than the identity: 60 passes over its input."""
    for _ in range(60):
        x = torch.sin(x) + x
    return x


def test_the_identity_ranks_below_an_activation_made_fifty_times_slower():
    costs = {c.name: c for c in cost.compare({"identity": nn.Identity(), "slow": slow, "relu": nn.ReLU()}, min_run_time=0.05)}
    assert costs["relu"].relative == 1.0
    assert costs["slow"].seconds > 20 * costs["identity"].seconds and costs["slow"].relative > costs["identity"].relative


@pytest.mark.parametrize("fn, per_element", [(nn.Identity(), 0), (nn.ReLU(), 4), (torch.square, 4), (nn.ReLU(inplace=True), 4),
                                             (lambda z: torch.sigmoid(z) * torch.tanh(z), 8), (lambda z: z * torch.tanh(z), 8)])
def test_saved_bytes_are_the_tensors_autograd_keeps(fn, per_element):
    """ReLU keeps its output, square its input, an in-place ReLU its output (not our copy of the
    input); sigmoid(z) * tanh(z) keeps the two outputs (the product's operands are the same two
    tensors, counted once); z * tanh(z) keeps z and tanh's output."""
    z = torch.randn(8, 16)
    assert cost.saved_bytes(fn, z) == per_element * z.numel()


def test_the_command_prints_a_table_and_refuses_an_unknown_name_in_one_line(capsys):
    assert cost.main(["relu", "swiglu", "--min-run-time", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "| relu |" in out and "| swiglu |" in out and "| 1.00 |" in out
    assert cost.main(["relux"]) == 2
    assert capsys.readouterr().err.strip().startswith("actbench: error: unknown activation 'relux'")
