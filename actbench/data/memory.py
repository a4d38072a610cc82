"""The contract every dataset keeps, and the in-memory batching they share.

A dataset is a subclass of `InMemoryData` that states its facts as class attributes, read
before anything is loaded (models are built for them, placement sizes packs by them):

- `INPUT_SHAPE`: one example's shape, e.g. (1, 28, 28) for an image, (1, 40) for a signal;
- `N_CLASSES`: the classes its labels run over (`shape(cfg_data)` gives both, for a dataset
  whose shape depends on its config or its content: a text's window and vocabulary);
- `INPUT_DTYPE`: float32 for measurements, int64 for token ids;
- `RANK_BY`: the final metric that ranks activations on it (metrics.json's name: test_acc, test_loss);
- `sizes(cfg_data)`: its training and test examples, {"train": n, "test": m}, for a config;

and loads itself once (`load`: float inputs [N, *INPUT_SHAPE] and int64 labels for train and
test, however it gets them: files, a generator) and says in one line what it loaded (`describe`).
Everything else is here: the seeded validation split of each seed, the per-epoch order, batches
cut by slicing tensors on the training device, the probe set. Every random choice is derived
from (seed, purpose, epoch), so a run's data never depends on the activation, on how many seeds
share a process, or on where a resumed run restarted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule

from actbench.errors import DataError
from actbench.files import atomic_write


def derive_seed(seed: int, purpose: str, *more: int) -> int:
    """An independent 63-bit stream seed for one purpose of one run seed."""
    return int(np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), *more]).generate_state(2, np.uint64)[0] >> 1)


def generator(seed: int, purpose: str, *more: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *more))


def cached(path: Path | None, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A dataset's arrays from its cache file at `path` (named by what they are made from), else
    made and saved there. A damaged cache is made again; a cache that cannot be written (a full
    disk, a read-only home) leaves no half file and does not stop a run; None: no cache."""
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zlib.error, EOFError):
            pass
    arrays = make()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **arrays))
        except OSError:
            pass
    return arrays


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded train/validation split of range(n)."""
    perm = torch.randperm(n, generator=generator(seed, "split"))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


@dataclass
class Chunk:
    """The batches of a chunk of optimizer steps, as indices into the in-memory data set; each
    batch is gathered when its step asks for it, so it is still in cache when the step reads it."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor  # [S, K, B]
    shard: tuple[int, int] = (0, 1)  # (rank, world size): under DDP each device takes its share of every batch

    def __len__(self) -> int:
        return self.idx.shape[0]

    @property
    def batch_size(self) -> int:
        return self.idx.shape[2]

    def __getitem__(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step s's batch: x [K, B, *INPUT_SHAPE], y [K, B]."""
        i = self.idx[s]
        if self.shard[1] > 1:
            i = i[:, self.shard[0] :: self.shard[1]]
        flat = i.flatten()  # index_select on flat rows: half the time of x[i] for a pack's gather
        return self.x.index_select(0, flat).view(*i.shape, *self.x.shape[1:]), self.y.index_select(0, flat).view(i.shape)


@dataclass
class TrainBatches:
    """Per-epoch shuffled batches for K packed seeds, cut by slicing a per-epoch permutation; each
    item is a `Chunk` of `steps` optimizer steps. The last, partial batch of an epoch (kept, as
    Keras does) comes alone so that every chunk has one batch size."""

    x: torch.Tensor  # [N, *INPUT_SHAPE] on the training device
    y: torch.Tensor  # [N]
    train_idx: torch.Tensor  # [K, n_train] indices into x, per seed
    seeds: list[int]
    batch_size: int
    steps: int
    epoch_fn: callable
    shuffle: bool = True
    shard: tuple[int, int] = (0, 1)
    _order: tuple[int, torch.Tensor] | None = field(default=None, init=False, repr=False)
    chunk = Chunk  # what a chunk of steps is cut into batches by

    @property
    def per_epoch(self) -> int:
        """Examples each member trains on in an epoch."""
        return self.train_idx.shape[1]

    def __len__(self) -> int:
        full, rest = divmod(self.per_epoch, self.batch_size)
        return -(-full // self.steps) + (1 if rest else 0)

    def order(self, epoch: int) -> torch.Tensor:
        """[K, n_train] sample indices in this epoch's order, each seed with its own permutation
        (kept for the epoch, so that asking again costs nothing)."""
        if not self.shuffle:
            return self.train_idx
        if self._order is None or self._order[0] != epoch:
            n = self.train_idx.shape[1]
            perms = torch.stack([torch.randperm(n, generator=generator(s, "order", epoch)) for s in self.seeds])
            self._order = (epoch, torch.gather(self.train_idx, 1, perms.to(self.train_idx.device)))
        return self._order[1]

    def __iter__(self):
        order = self.order(self.epoch_fn())
        k, n = order.shape
        b, full = self.batch_size, n // self.batch_size
        for start in range(0, full, self.steps):
            s = min(self.steps, full - start)
            yield self.chunk(self.x, self.y, order[:, start * b : (start + s) * b].reshape(k, s, b).transpose(0, 1), self.shard)
        if n % b:
            yield self.chunk(self.x, self.y, order[:, full * b :].unsqueeze(0), self.shard)


@dataclass
class EvalBatches:
    """Evaluation batches for K seeds: x [K, B, *INPUT_SHAPE], y [K, B]. `idx` is [K, n] (per-seed
    validation sets) or None (the shared test set, broadcast to every seed)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor | None
    n_seeds: int
    batch_size: int

    def __len__(self) -> int:
        n = self.x.shape[0] if self.idx is None else self.idx.shape[1]
        return -(-n // self.batch_size)

    def __iter__(self):
        n = self.x.shape[0] if self.idx is None else self.idx.shape[1]
        for start in range(0, n, self.batch_size):
            if self.idx is None:
                sl = slice(start, start + self.batch_size)
                x = self.x[sl]
                y = self.y[sl]
                yield x.expand(self.n_seeds, *x.shape), y.expand(self.n_seeds, *y.shape)
            else:
                idx = self.idx[:, start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


class InMemoryData(LightningDataModule):
    """A whole dataset as tensors on the training device, per-seed splits, slicing batches; a
    dataset subclasses it with its facts and its `load` (see the module's docstring)."""

    INPUT_SHAPE: tuple[int, ...]
    N_CLASSES: int
    INPUT_DTYPE = torch.float32
    RANK_BY = "test_acc"

    @classmethod
    def shape(cls, cfg_data) -> tuple[tuple[int, ...], int]:
        """(one example's shape, the classes) that a model is built for, for this config."""
        return cls.INPUT_SHAPE, cls.N_CLASSES

    @classmethod
    def sizes(cls, cfg_data) -> dict[str, int]:
        raise NotImplementedError

    @classmethod
    def bytes_on_device(cls, cfg_data) -> int:
        """The whole set as float32 inputs, and a copy while it moves to the device."""
        return 2 * 4 * sum(cls.sizes(cfg_data).values()) * math.prod(cls.INPUT_SHAPE)

    @classmethod
    def eval_rows(cls, cfg_data, eval_batch_size: int) -> int:
        """The most examples one evaluation pass holds (a validation or test batch)."""
        return min(eval_batch_size, max(int(cfg_data.val_size), cls.sizes(cfg_data)["test"]))

    def __init__(self, seeds: list[int], val_size: int = 5000, batch_size: int = 32, eval_batch_size: int = 10000,
                 shuffle: bool = True, steps_per_execution: int = 1, probe_size: int = 1000):
        super().__init__()
        self.seeds = list(seeds)
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.shuffle, self.steps = shuffle, steps_per_execution
        self.probe_size = probe_size
        self._loaded = False

    def load(self) -> dict[str, torch.Tensor]:
        """{train_x, train_y, test_x, test_y}: inputs as float32 [N, *INPUT_SHAPE], labels int64 [N]."""
        raise NotImplementedError

    def describe(self, arrays: dict[str, torch.Tensor]) -> str:
        """One line: what `load` gave (`arrays`), from where."""
        raise NotImplementedError

    @staticmethod
    def summary(final: dict) -> str:
        """A finished run's result in a few words, from metrics.json's `final`."""
        return f"test accuracy {100 * final.get('test_acc', float('nan')):.2f}%"

    def fetch(self) -> None:
        """Bring the data onto this machine where `load` cannot (`python -m actbench.data` calls it,
        a training job never): most datasets' `load` finds or downloads their files itself."""

    def prepare(self) -> None:
        """Load and check the data now (before any model is built), so bad data fails first."""
        if self._loaded:
            return
        arrays = self.load()
        self.source = self.describe(arrays)  # metrics.json says what a run trained on
        n = len(arrays["train_x"])
        if not 0 < self.val_size < n:
            raise DataError(f"data.val_size={self.val_size} must be between 1 and {n - 1} (the training set has {n})")
        self.train_x, self.train_y, self.test_x, self.test_y = (arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))
        splits = [split_indices(n, self.val_size, s) for s in self.seeds]
        self.train_idx = torch.stack([t for t, _ in splits])
        self.val_idx = torch.stack([v for _, v in splits])
        self._loaded = True

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last, partial batch counted): what the rate schedule counts in."""
        return -(-self.examples_per_epoch // self.batch_size)

    @property
    def examples_per_epoch(self) -> int:
        """Examples each member trains on in an epoch."""
        self.prepare()
        return self.train_idx.shape[1]

    def setup(self, stage: str) -> None:
        self.prepare()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for name in ("train_x", "train_y", "test_x", "test_y", "train_idx", "val_idx"):
            setattr(self, name, getattr(self, name).to(device))

    def probe_set(self) -> torch.Tensor:
        """A fixed, seeded subset of each seed's training data: [K, probe_size, *INPUT_SHAPE]."""
        n = min(self.probe_size, self.train_idx.shape[1])
        picks = torch.stack([torch.randperm(self.train_idx.shape[1], generator=generator(s, "probe"))[:n] for s in self.seeds])
        return self.train_x[torch.gather(self.train_idx, 1, picks.to(self.train_idx.device))]

    def train_dataloader(self):
        epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        shard = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return TrainBatches(self.train_x, self.train_y, self.train_idx, self.seeds, self.batch_size, self.steps, epoch_fn, self.shuffle, shard)

    def val_dataloader(self):
        return EvalBatches(self.train_x, self.train_y, self.val_idx, len(self.seeds), self.eval_batch_size)

    def test_dataloader(self):
        return EvalBatches(self.test_x, self.test_y, None, len(self.seeds), self.eval_batch_size)


