"""actbench.placement: what other processes leave of the cores (more placement tests sit with the
runs they place, in test_train.py)."""

import subprocess
import sys
import time

import pytest

from actbench import placement


def test_busy_elsewhere_counts_other_processes_cpu_not_this_ones():
    # (machine busy s, own CPU s, wall s): over 2 s the CPUs were busy 3 s, 1 s of it this process's
    assert placement.busy_elsewhere((10.0, 5.0, 100.0), (13.0, 6.0, 102.0)) == pytest.approx(1.0)
    assert placement.busy_elsewhere((10.0, 5.0, 100.0), (11.0, 6.0, 102.0)) == 0.0  # all of it ours
    assert placement.busy_elsewhere((10.0, 5.0, 100.0), (13.0, 6.0, 100.1)) is None  # too short to tell
    assert placement.busy_elsewhere(None, (13.0, 6.0, 102.0)) is None  # not on Linux


@pytest.mark.parametrize("threads, others, cores, warned", [
    (2, 1.0, 2, True), (2, 0.3, 2, False), (1, 2.0, 2, False), (8, 0.4, 8, False), (8, 2.0, 8, True), (2, None, 2, False),
])
def test_a_busy_machine_gets_a_line_only_when_threads_would_share_cores(threads, others, cores, warned):
    line = placement.contention(threads, others, cores)
    assert (line is not None) == warned
    if warned:
        assert "threads=1" in line and "\n" not in line


@pytest.mark.skipif(placement.cpu_clock() is None, reason="no /proc/stat here")
def test_cpu_clock_sees_another_process_burn_a_core():
    before = placement.cpu_clock()
    subprocess.run([sys.executable, "-c", "import time\nend = time.time() + 0.8\nwhile time.time() < end: pass"], check=True)
    time.sleep(0.05)
    assert placement.busy_elsewhere(before, placement.cpu_clock()) >= 0.5


def trained(model: str, seeds: list[int], threads: int, **keys) -> tuple:
    """A shipped model's pack (or lone member) after three training steps on `threads` threads:
    (per-member losses [steps, K], its state)."""
    import torch
    from models import batch, pack, train

    from actbench.models.cnn import ConvNet
    from actbench.models.mlp import MLP
    from actbench.models.vit import ViT

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, y = batch(3, (1, 28, 28), n=32)
        k = [0, 1, 2].index(seeds[0]) if len(seeds) == 1 else slice(None)
        net = pack({"mlp": MLP, "cnn": ConvNet, "vit": ViT}[model], seeds, ["relu"] * len(seeds), shape=(1, 28, 28), **keys)
        losses = train(net, x[k].view(len(seeds), *x.shape[1:]), y[k].view(len(seeds), -1), steps=3)
        return losses, net
    finally:
        torch.set_num_threads(before)


def test_the_mlp_computes_the_same_bits_on_one_thread_and_two():
    """MKL's strict mode (actbench sets MKL_CBWR) makes the dense products thread-invariant, so an
    MLP's thread count is a matter of speed only. A convolution's is not (oneDNN sums its weight
    gradient per thread): the README says what this machine gave, and placement keeps a run's count."""
    import torch

    (l1, one), (l2, two) = trained("mlp", [0], 1), trained("mlp", [0], 2)
    assert torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


@pytest.mark.parametrize("model, keys, packed_threads, lone_threads", [
    ("mlp", {}, 2, 1),  # threads=auto: a pack of the blog's MLP splits its step between two cores, a lone run does not
    ("cnn", {"norm": "batch", "dropout": 0.2}, 2, 2),  # the ConvNet's step is big enough to split, alone or packed
    ("vit", {"dropout": 0.1}, 2, 2),  # and so is the ViT's
])
def test_packed_members_equal_their_lone_runs_on_the_counts_threads_auto_gives(model, keys, packed_threads, lone_threads):
    import torch

    losses, net = trained(model, [0, 1, 2], packed_threads, **keys)
    for k in range(3):
        alone, lone = trained(model, [k], lone_threads, **keys)
        assert torch.equal(alone[:, 0], losses[:, k])
        for name, value in lone.state_dict().items():
            assert torch.equal(net.per_seed(net.state_dict()[name])[k].reshape(value.shape), value), name
