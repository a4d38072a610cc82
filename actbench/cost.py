"""What an activation costs on its own: the time of its forward and backward pass per element,
relative to ReLU's on the same device and tensor, and the memory it keeps for the backward pass
(bytes saved per output element, counted through torch.autograd.graph.saved_tensors_hooks).

    python -m actbench.cost relu gelu mish swiglu            # the shipped ones, by config name
    python -m actbench.cost relu swish15 --config-dir myconf # and a user's, from myconf/activation/

Timings are torch.utils.benchmark's (warmed up, the median of its adaptive repeats); in one
run, on one device, they compare; across machines only the ratios do.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

ROWS, COLS = 256, 4096  # a layer's pre-activations for a batch: 1M values (4 MB in float32)


@dataclass
class Cost:
    name: str
    seconds: float  # forward + backward of one ROWS x COLS output
    saved_bytes: float  # kept for the backward pass, per output element
    relative: float = math.nan  # seconds over ReLU's
    peak_bytes: float = math.nan  # on a GPU: the step's peak memory above its input and gradient, per output element

    @property
    def ns_per_element(self) -> float:
        return 1e9 * self.seconds / (ROWS * COLS)


def saved_bytes(fn: Callable[[Tensor], Tensor], z: Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps from fn(z) for its backward pass (z itself
    included when it keeps it: the layer before does not always)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    z = z.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(z.clone() if _in_place(fn) else z)
    if _in_place(fn):  # the clone is ours, not the activation's: count what it keeps of its own
        seen = {k: v for k, v in seen.items() if k[0] != z.data_ptr()}
    return sum(seen.values())


def _in_place(fn) -> bool:
    return bool(getattr(fn, "inplace", False))


def measure(name: str, fn: Callable[[Tensor], Tensor], device: str = "cpu", min_run_time: float = 0.5) -> Cost:
    """One activation's cost on a [ROWS, COLS x in_per_out] input (a gated unit takes two values per output)."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its import warns of a missing CUDA, irrelevant here
    from torch.utils import benchmark

    from actbench.activations import in_per_out

    gen = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(ROWS, COLS * in_per_out(fn), generator=gen).to(device).requires_grad_(True)
    grad = torch.ones(ROWS, COLS, device=device)

    def step():
        z.grad = None
        fn(z.clone() if _in_place(fn) else z).backward(grad)

    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    timer.timeit(3)  # warm-up: allocator, kernels' first calls
    seconds = timer.adaptive_autorange(min_run_time=min_run_time).median
    peak = math.nan
    if z.is_cuda:  # what the step needs beyond what exists before it: the allocator's own count
        z.grad = None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / (ROWS * COLS)
    return Cost(name, seconds, saved_bytes(fn, z.detach()) / (ROWS * COLS), peak_bytes=peak)


def compare(named: dict[str, Callable[[Tensor], Tensor]], device: str = "cpu", min_run_time: float = 0.5) -> list[Cost]:
    """Every activation's cost, with its time relative to ReLU's measured in the same run."""
    from torch import nn

    from actbench.placement import keep_freed_memory

    keep_freed_memory()  # as in training: else each step's megabyte tensors are page-faulted back in, in an order-dependent way
    measure("warm-up", nn.ReLU(), device, min_run_time)  # the process's first timing pays for its thread pool
    costs = [measure(name, fn, device, min_run_time) for name, fn in named.items()]
    relu = next((c for c in costs if c.name == "relu"), None) or measure("relu", nn.ReLU(), device, min_run_time)
    for c in costs:
        c.relative = c.seconds / relu.seconds
    return costs


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def table(costs: list[Cost], what: str) -> str:
    """The costs as a markdown table, titled with the device they were measured on (`what`)."""
    gpu = any(math.isfinite(c.peak_bytes) for c in costs)
    lines = [f"Activation cost, forward + backward of a {ROWS}x{COLS} output on {what} (median of torch.utils.benchmark's repeats)", "",
             "| activation | ns per element | x relu | saved for backward (bytes per element) |" + (" peak (bytes per element) |" if gpu else ""),
             "|---|---|---|---|" + ("---|" if gpu else "")]
    lines += [f"| {c.name} | {c.ns_per_element:.2f} | {c.relative:.2f} | {c.saved_bytes:g} |" + (f" {c.peak_bytes:.3g} |" if gpu else "")
              for c in costs]
    return "\n".join(lines)


def build(name: str, config_dir: Path | None):
    """An activation by config name: from `config_dir/activation/` first, else a shipped one."""
    from omegaconf import OmegaConf

    from actbench import activations

    own = config_dir / "activation" / f"{name}.yaml" if config_dir else None
    if own is not None and own.exists():
        return activations.build(OmegaConf.load(own))
    return activations.from_name(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m actbench.cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="activation config names (conf/activation/, or --config-dir's activation/)")
    ap.add_argument("--config-dir", type=Path, default=None, help="a folder with your own activation/*.yaml, as on hydra.searchpath")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--min-run-time", type=float, default=0.5, help="seconds of repeats per activation")
    args = ap.parse_args(argv)
    try:
        named = {n: build(n, args.config_dir) for n in args.names}
    except (ValueError, ImportError) as e:
        print(f"actbench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(table(compare(named, args.device, args.min_run_time), device_name(args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
