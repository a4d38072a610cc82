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
    loss curve is the eager one up to floating-point reassociation. The step bypasses Lightning's
    optimizer wrapper, so Lightning's backward and optimizer-step hooks do not fire on this path;
    trainer.global_step still counts every step. If capture fails, eager steps take over."""

    def __init__(self, net: nn.Module, objective: Callable):
        """objective(logits, y) -> the scalar to differentiate, as model.training_objective."""
        self.net, self.objective = net, objective
        self.batch_size: int | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.failed: str | None = None  # why capture failed (an activation that syncs with the host, say)
        self.grads: list[tuple[nn.Parameter, Tensor]] = []  # each parameter and its captured gradient buffer

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def accepts(self, batch_size: int) -> bool:
        return self.failed is None and self.batch_size in (None, batch_size)

    def own_grads(self) -> None:
        """Point every `.grad` back at the buffers the captured backward writes. Lightning sets them
        to None before each validation (`on_validation_model_zero_grad`), as can any callback;
        replays would still train correctly, but probes and eager steps would see other tensors."""
        for q, g in self.grads:
            if q.grad is not g:
                q.grad = g

    def _body(self, optimizer: torch.optim.Optimizer) -> Tensor:
        logits = self.net(self.x)
        self.objective(logits, self.y).backward()
        optimizer.step()
        return logits.detach()

    def step(self, x: Tensor, y: Tensor, lightning_optimizer) -> Tensor:
        """One optimizer step on (x, y); returns the step's logits (a static buffer once captured)."""
        if self.batch_size is None:
            self.batch_size = x.shape[-2]
            self.x, self.y = x.clone(), y.clone()
        self.x.copy_(x)
        self.y.copy_(y)
        # the graph bypasses LightningOptimizer.step, so count the step for trainer.global_step here
        lightning_optimizer._on_before_step()
        logits = self._advance(lightning_optimizer.optimizer)
        lightning_optimizer._on_after_step()
        return logits

    def _advance(self, optimizer: torch.optim.Optimizer) -> Tensor:
        if self.failed is not None:  # the rest of a chunk whose capture failed: eager, as later chunks
            optimizer.zero_grad(set_to_none=True)
            return self._body(optimizer)
        if self.graph is None and self.warm < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                optimizer.zero_grad(set_to_none=True)
                logits = self._body(optimizer)
            torch.cuda.current_stream().wait_stream(side)
            self.warm += 1
            return logits
        if self.graph is None:
            optimizer.zero_grad(set_to_none=True)  # gradients are then written, not accumulated, on replay
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.logits = self._body(optimizer)
            except RuntimeError as e:  # capture records without running: nothing was applied yet
                self.failed = str(e).splitlines()[0][:200]
                print(f"cuda_graph: capture failed ({self.failed}); training with eager steps", flush=True)
                optimizer.zero_grad(set_to_none=True)  # drop gradients the aborted capture allocated
                return self._body(optimizer)
            self.graph = graph
            self.grads = [(q, q.grad) for q in self.net.parameters()]
        self.graph.replay()
        return self.logits
