"""actbench.cuda_graph: the captured training step equals the eager one; CPU falls back to eager."""

import pytest
import torch
from models import packed_mlp
from torch import nn

from actbench.cuda_graph import GraphedStep, capturable_optimizer
from actbench.model import cross_entropy, step_losses
from conftest import compose_cfg as cfg
from conftest import metrics, run_cli

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU path is tested elsewhere)")


class Counting:
    """What GraphedStep needs of a LightningOptimizer: the optimizer and the step-counting hooks."""

    def __init__(self, optimizer):
        self.optimizer, self.steps = optimizer, 0

    def _on_before_step(self):
        pass

    def _on_after_step(self):
        self.steps += 1




def test_cuda_graph_falls_back_to_eager_on_cpu(capsys):
    from actbench.placement import use_cuda_graph

    assert use_cuda_graph(cfg(), torch.device("cpu")) is False
    assert use_cuda_graph(cfg("cuda_graph=true"), torch.device("cpu")) is False
    assert "using eager steps (not training on CUDA)" in capsys.readouterr().out
    assert use_cuda_graph(cfg("model.dropout=0.1"), torch.device("cuda")) is False
    assert use_cuda_graph(cfg(), torch.device("cuda")) is True


def test_capturable_only_where_the_optimizer_has_it():
    from functools import partial

    p = [nn.Parameter(torch.zeros(2))]
    assert capturable_optimizer(partial(torch.optim.Adam, lr=1e-3), p).defaults["capturable"] is True
    assert "capturable" not in capturable_optimizer(partial(torch.optim.SGD, lr=1e-3), p).defaults


def test_after_a_failed_capture_the_remaining_steps_are_eager_and_counted():
    torch.manual_seed(0)
    net = packed_mlp([0], nn.ReLU())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step, wrapped = GraphedStep(net, step_losses), Counting(opt)
    step.failed = "an activation that syncs with the host"  # as a failed capture leaves it
    ref = packed_mlp([0], nn.ReLU())
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    for _ in range(3):
        x, y = torch.randn(1, 32, 784), torch.randint(0, 10, (1, 32))
        step.step(x, y, wrapped)  # on the CPU: any capture attempt would fail on torch.cuda
        ref_opt.zero_grad()
        cross_entropy(ref(x), y).sum().backward()
        ref_opt.step()
    assert wrapped.steps == 3 and not step.captured
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@cuda
@pytest.mark.parametrize("activation", [nn.ReLU(), nn.GELU()])
def test_graphed_steps_match_eager_steps(activation):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    batches = [(torch.randn(2, 32, 784, device=dev), torch.randint(0, 10, (2, 32), device=dev)) for _ in range(12)]

    def train(graphed):
        net = packed_mlp([0, 1], activation).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True, fused=True)
        step, wrapped, losses = GraphedStep(net, step_losses), Counting(opt), []
        for x, y in batches:
            if graphed:
                losses.append(step.step(x, y, wrapped)[1])
            else:
                opt.zero_grad(set_to_none=True)
                loss = cross_entropy(net(x), y)
                loss.sum().backward()
                opt.step()
                losses.append(loss.detach())
        assert not graphed or (wrapped.steps == len(batches) and step.graph is not None)
        return torch.stack(losses), [p.detach().clone() for p in net.parameters()]

    (le, pe), (lg, pg) = train(False), train(True)
    assert torch.allclose(le, lg, rtol=1e-5, atol=1e-6)
    for a, b in zip(pe, pg):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@cuda
def test_dropped_gradients_are_given_back_to_the_graph():
    import copy

    from actbench.cuda_graph import WARMUP_STEPS

    dev = torch.device("cuda")
    torch.manual_seed(0)
    net = packed_mlp([0], nn.ReLU()).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=True, fused=True)
    step, wrapped = GraphedStep(net, step_losses), Counting(opt)
    for _ in range(WARMUP_STEPS + 2):
        step.step(torch.randn(1, 32, 784, device=dev), torch.randint(0, 10, (1, 32), device=dev), wrapped)
    net.zero_grad(set_to_none=True)  # as Lightning does before every validation
    x, y = torch.randn(1, 32, 784, device=dev), torch.randint(0, 10, (1, 32), device=dev)
    ref = copy.deepcopy(net)
    cross_entropy(ref(x), y).sum().backward()
    step.step(x, y, wrapped)  # gives the graph's buffers back itself
    for p, q in zip(net.parameters(), ref.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@cuda
@pytest.mark.slow
def test_a_gpu_run_with_the_graph_matches_eager(tiny_run, tmp_path):
    for name, graph in (("g", "true"), ("e", "false")):
        # 512 training images: every step is a graph step, the last one before each validation too
        r = run_cli(*tiny_run, f"name={name}", f"cuda_graph={graph}", "trainer.accelerator=gpu", "trainer.max_epochs=2",
                    "data.val_size=88", "probes.gradients.every_n_steps=1")
        assert r.returncode == 0, r.stderr[-2000:]
        assert "eager steps" not in r.stdout  # the graph run really ran the graph
    g, e = (metrics(next((tmp_path / "runs" / n).rglob("metrics.json")).parent) for n in "ge")
    assert g["device"].startswith("cuda")
    assert g["curves"]["train_loss"] == pytest.approx(e["curves"]["train_loss"], rel=1e-4)
    assert g["final"]["test_loss"] == pytest.approx(e["final"]["test_loss"], rel=1e-4)
    assert g["final"]["steps"] == e["final"]["steps"]
    # gradient probes sample every epoch, also after validation dropped the gradients
    ratio_g, ratio_e = g["probes"]["probes/grad_ratio"][1:], e["probes"]["probes/grad_ratio"][1:]
    assert len(ratio_g) == 2 and None not in ratio_g
    assert ratio_g == pytest.approx(ratio_e, rel=1e-3)
