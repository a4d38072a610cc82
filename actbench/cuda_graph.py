"""The whole training step (forward, backward, optimizer update) captured once in a CUDA graph
and replayed for every batch of that shape.

A model this small is launch-bound on a GPU: a step is ~50 tiny kernels, each costing more to
launch than to run. Replaying a graph launches them all at once. Batches are copied into static
input buffers; the optimizer must keep its state on the device (`capturable=True`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


def capturable_optimizer(factory: Callable, params) -> torch.optim.Optimizer:
    """Build the configured optimizer with its state on the device, so its update can be captured."""
    fn = getattr(factory, "func", factory)
    accepts = "capturable" in inspect.signature(fn).parameters
    return factory(params, capturable=True) if accepts else factory(params)


class GraphedStep:
    """Training steps for one batch shape: a few eager warm-up steps, then one capture, then replays.

    Every call is one real optimizer step on the batch given (warm-up steps included), so the
    loss curve is the eager one up to floating-point reassociation."""

    def __init__(self, net: nn.Module, loss_fn: Callable, correct_fn: Callable):
        self.net, self.loss_fn, self.correct_fn = net, loss_fn, correct_fn
        self.shape: tuple | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0

    def accepts(self, shape: tuple) -> bool:
        return self.shape is None or tuple(shape) == self.shape

    def _body(self, optimizer: torch.optim.Optimizer) -> tuple[Tensor, Tensor]:
        logits = self.net(self.x)
        loss = self.loss_fn(logits, self.y)
        loss.sum().backward()
        optimizer.step()
        return loss.detach(), self.correct_fn(logits.detach(), self.y)

    def step(self, x: Tensor, y: Tensor, lightning_optimizer) -> tuple[Tensor, Tensor]:
        optimizer = lightning_optimizer.optimizer
        if self.shape is None:
            self.shape = tuple(x.shape)
            self.x, self.y = x.clone(), y.clone()
        self.x.copy_(x)
        self.y.copy_(y)
        # the graph bypasses LightningOptimizer.step, so count the step for trainer.global_step here
        lightning_optimizer._on_before_step()
        if self.graph is None and self.warm < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                optimizer.zero_grad(set_to_none=True)
                loss, correct = self._body(optimizer)
            torch.cuda.current_stream().wait_stream(side)
            self.warm += 1
            lightning_optimizer._on_after_step()
            return loss, correct
        if self.graph is None:
            optimizer.zero_grad(set_to_none=True)  # gradients are then written, not accumulated, on replay
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss, self.correct = self._body(optimizer)
        self.graph.replay()
        lightning_optimizer._on_after_step()
        return self.loss, self.correct
