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

from actbench.logs import say

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require


def capturable_optimizer(factory: Callable, params) -> torch.optim.Optimizer:
    """Build the configured optimizer with its state on the device, so its update can be captured."""
    fn = getattr(factory, "func", factory)
    accepts = "capturable" in inspect.signature(fn).parameters
    return factory(params, capturable=True) if accepts else factory(params)


class GraphedStep:
    """Training steps for one batch shape: a few eager warm-up steps, then one capture, then replays.

    Every call is one real optimizer step on the batch given (warm-up steps included), so the
    loss curve is the eager one up to floating-point reassociation. A batch of another shape (an
    epoch's short last batch) runs eager, and so does every step if capture fails. The step
    bypasses Lightning's optimizer wrapper, so Lightning's backward and optimizer-step hooks do
    not fire on this path; trainer.global_step still counts every step."""

    def __init__(self, net: nn.Module, losses: Callable, before_update: Callable[[], None] = lambda: None):
        """losses(net, x, y) -> (the scalar to differentiate, logits, each member's loss), as
        model.step_losses; before_update() runs between backward and the update (clipping)."""
        self.net, self.losses, self.before_update = net, losses, before_update
        self.shape: tuple | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.failed: str | None = None  # why capture failed (an activation that syncs with the host, say)
        self.grads: list[tuple[nn.Parameter, Tensor]] = []  # each parameter and its captured gradient buffer

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def own_grads(self) -> None:
        """Point every `.grad` back at the buffers the captured backward writes. Lightning sets them
        to None before each validation (`on_validation_model_zero_grad`), as can any callback;
        replays would still train correctly, but probes and eager steps would see other tensors."""
        for q, g in self.grads:
            if q.grad is not g:
                q.grad = g

    def _body(self, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer) -> tuple[Tensor, Tensor]:
        objective, logits, losses = self.losses(self.net, x, y)
        objective.backward()
        self.before_update()
        optimizer.step()
        return logits, losses

    def step(self, x: Tensor, y: Tensor, lightning_optimizer) -> tuple[Tensor, Tensor]:
        """One optimizer step on (x, y); returns the step's logits and losses (copies: a captured
        graph's outputs are buffers that the next replay overwrites)."""
        if self.shape is None:
            self.shape = tuple(x.shape)
            self.x, self.y = x.clone(), y.clone()
        # the graph bypasses LightningOptimizer.step, so count the step for trainer.global_step here
        lightning_optimizer._on_before_step()
        logits, losses = self._advance(x, y, lightning_optimizer.optimizer)
        lightning_optimizer._on_after_step()
        return logits.clone(), losses.clone()

    def _advance(self, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer) -> tuple[Tensor, Tensor]:
        if self.captured:
            self.own_grads()  # between chunks, validation or a callback may have dropped them
        if self.failed is not None or tuple(x.shape) != self.shape:
            # eager; once captured, into the graph's gradient buffers, not new ones
            optimizer.zero_grad(set_to_none=not self.captured)
            return self._body(x, y, optimizer)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph is None and self.warm < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                optimizer.zero_grad(set_to_none=True)
                out = self._body(self.x, self.y, optimizer)
            torch.cuda.current_stream().wait_stream(side)
            self.warm += 1
            return out
        if self.graph is None:
            optimizer.zero_grad(set_to_none=True)  # gradients are then written, not accumulated, on replay
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.out = self._body(self.x, self.y, optimizer)
            except RuntimeError as e:  # capture records without running: nothing was applied yet
                self.failed = str(e).splitlines()[0][:200]
                say(f"cuda_graph: capture failed ({self.failed}); training with eager steps")
                optimizer.zero_grad(set_to_none=True)  # drop gradients the aborted capture allocated
                return self._body(x, y, optimizer)
            self.graph = graph
            self.grads = [(q, q.grad) for q in self.net.parameters()]
        self.graph.replay()
        return self.out
