"""Checkpoint files: a packed model's checkpoint is stored as one ordinary single-seed checkpoint
in each seed's run directory, and put back together on resume.

Every tensor in the model state and the optimizer state stacks the seeds along its first
dimension (scalars such as Adam's step count are shared), so splitting is chunking and merging
is concatenating; a one-seed checkpoint is exactly what an unpacked run writes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from actbench.files import atomic_write_all


class CheckpointError(RuntimeError):
    """A run's checkpoint cannot be used; the run is recorded as failed with this message."""


def _map_packed(ckpt: dict, fn) -> dict:
    """A copy of `ckpt` with `fn` applied to every tensor that carries the seed dimension."""
    out = dict(ckpt)
    out["state_dict"] = {k: fn(v) if v.dim() else v for k, v in ckpt["state_dict"].items()}
    out["optimizer_states"] = [
        {**opt, "state": {p: {n: fn(t) if torch.is_tensor(t) and t.dim() else t for n, t in st.items()} for p, st in opt["state"].items()}}
        for opt in ckpt.get("optimizer_states", [])
    ]
    return out


def split(ckpt: dict, k: int, n_seeds: int) -> dict:
    """Seed k's part of a checkpoint of n_seeds packed seeds."""
    return _map_packed(ckpt, lambda t: t.chunk(n_seeds)[k].clone())


def merge(parts: list[dict]) -> dict:
    out = _map_packed(parts[0], lambda t: t)  # fresh containers to fill with concatenations
    for key, t in out["state_dict"].items():
        if t.dim():
            out["state_dict"][key] = torch.cat([p["state_dict"][key] for p in parts])
    for i, opt in enumerate(out["optimizer_states"]):
        for pid, st in opt["state"].items():
            for name, t in st.items():
                if torch.is_tensor(t) and t.dim():
                    st[name] = torch.cat([p["optimizer_states"][i]["state"][pid][name] for p in parts])
    return out


class PerSeedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, with a checkpoint's file name mapped into each seed's run directory."""

    def __init__(self, run_dirs: list[Path], seeds: list[int]):
        self.run_dirs, self.seeds = [Path(d) for d in run_dirs], list(seeds)

    def paths(self, path) -> list[Path]:
        name = Path(path).name
        return [d / "checkpoints" / name for d in self.run_dirs]

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        def writer(k: int, seed: int):
            def write(f) -> None:
                # split while writing, so that a big pack holds one member's copy at a time
                part = split(checkpoint, k, len(self.seeds)) if len(self.seeds) > 1 else dict(checkpoint)
                part["actbench_seed"] = seed
                # serialised in memory first: torch's zip writer turns a full disk into "unexpected
                # pos" errors, while a plain write says ENOSPC
                buf = io.BytesIO()
                torch.save(part, buf)
                del part
                f.write(buf.getbuffer())

            return write

        targets = self.paths(path)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
        # every member's file is written before any replaces its predecessor: a full disk midway
        # leaves the whole pack at the previous epoch, so it still resumes as one pack
        atomic_write_all({t: writer(k, seed) for k, (seed, t) in enumerate(zip(self.seeds, targets))})

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        parts = []
        for seed, source in zip(self.seeds, self.paths(path)):
            try:
                part = torch.load(source, map_location=map_location or "cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
                raise CheckpointError(f"{source}: unreadable checkpoint ({type(e).__name__}); delete it to restart that run") from None
            if part.get("actbench_seed", seed) != seed:
                raise CheckpointError(f"{source}: checkpoint of seed {part['actbench_seed']}, expected seed {seed}")
            parts.append(part)
        steps = {p.get("global_step") for p in parts}
        if len(steps) > 1:
            raise CheckpointError(f"checkpoints of one pack are at different steps {sorted(steps)}")
        return merge(parts) if len(parts) > 1 else parts[0]

    def remove_checkpoint(self, path) -> None:
        for p in self.paths(path):
            p.unlink(missing_ok=True)


def resume_point(path: Path) -> tuple[int, int] | None:
    """(global step, completed epochs) of a checkpoint file, or None if it is missing or unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        # saved at the end of epoch index `epoch`, so that many + 1 epochs are complete
        return int(ckpt["global_step"]), int(ckpt["epoch"]) + 1
    except Exception:  # noqa: BLE001 - no usable checkpoint means a fresh start
        return None
