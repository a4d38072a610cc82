"""Fashion-MNIST in memory: find, verify and decode the IDX files, cache the decoded arrays,
split per seed, and cut batches by slicing a per-epoch permutation.

Every random choice here (validation split, epoch order) is derived from (seed, purpose, epoch),
so a run's data never depends on the activation, on how many seeds share a process, or on
where a resumed run restarted.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule

from actbench.errors import DataError
from actbench.files import atomic_write

SPLITS = {"train": "train", "test": "t10k"}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
# Fashion-MNIST's facts; FashionMNIST states them to the code that asks, models take them as defaults
INPUT_SHAPE, N_CLASSES = (1, 28, 28), 10
# sha256 of the decoded (not gzipped) files: distributors recompress the .gz, the content is what matters.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FULL_SIZE = {"train": 60000, "t10k": 10000}
MISSING_HINT = (
    "Fashion-MNIST not found in {where}. Get it with `apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu) or let torchvision download it with `data.download=true`."
)


def derive_seed(seed: int, purpose: str, *more: int) -> int:
    """An independent 63-bit stream seed for one purpose of one run seed."""
    return int(np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), *more]).generate_state(2, np.uint64)[0] >> 1)


def generator(seed: int, purpose: str, *more: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *more))


# ---------------------------------------------------------------- files


def _stem(prefix: str, kind: str) -> str:
    return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def candidate_dirs(root: str | None, system_dirs) -> list[Path]:
    """Where to look, in order: the configured root (torchvision's layout, then a plain folder),
    then system folders such as Debian's dataset-fashion-mnist."""
    dirs = []
    if root:
        r = Path(root).expanduser()
        dirs += [r / "FashionMNIST" / "raw", r]
    dirs += [Path(d) for d in system_dirs or ()]
    return dirs


def find_files(dirs: list[Path]) -> dict[str, Path] | None:
    """The first folder holding all four files (unpacked or .gz) wins."""
    for d in dirs:
        found = {}
        for prefix in SPLITS.values():
            for kind in ("images", "labels"):
                stem = _stem(prefix, kind)
                path = next((p for p in (d / stem, d / f"{stem}.gz") if p.is_file()), None)
                if path is None:
                    break
                found[stem] = path
        if len(found) == 4:
            return found
    return None


def read_idx(path: Path, expect_magic: int) -> np.ndarray:
    """Decode one IDX file (optionally gzipped), checking magic number and size."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated ({e})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    header = 4 + 4 * ndim
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: size {len(raw)} bytes does not match its header {dims} (truncated?)")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def check_content(path: Path, stem: str, array: np.ndarray) -> None:
    prefix = stem.split("-")[0]
    if array.shape[0] == FULL_SIZE[prefix]:
        digest = hashlib.sha256(idx_header(array) + array.tobytes()).hexdigest()
        if digest != FASHION_MNIST_SHA256[stem]:
            raise DataError(f"{path}: right size but its content is not Fashion-MNIST's (sha256 {digest[:12]}...)")


def idx_header(array: np.ndarray) -> bytes:
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)


def decode(files: dict[str, Path], verify_checksum: bool = True) -> dict[str, np.ndarray]:
    """Read and verify the four files into {train_x, train_y, test_x, test_y} uint8 arrays."""
    out = {}
    for split, prefix in SPLITS.items():
        img_stem, lab_stem = _stem(prefix, "images"), _stem(prefix, "labels")
        x = read_idx(files[img_stem], IMAGE_MAGIC)
        y = read_idx(files[lab_stem], LABEL_MAGIC)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{files[img_stem]}: images are {tuple(x.shape)}, expected (N, 28, 28)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{files[lab_stem]}: {len(y)} labels for {len(x)} images")
        if y.size and int(y.max()) >= N_CLASSES:
            raise DataError(f"{files[lab_stem]}: label {int(y.max())} outside 0..{N_CLASSES - 1}")
        if verify_checksum:
            check_content(files[img_stem], img_stem, x)
            check_content(files[lab_stem], lab_stem, y)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def _cache_path(cache_dir: Path, files: dict[str, Path], verified: bool = True) -> Path:
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files.values())
    # arrays decoded without the checksum are cached apart: a run that asks for it never gets them
    key += "" if verified else "|unverified"
    return cache_dir / f"fashion-mnist-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def load_arrays(root=None, system_dirs=(), download=False, cache_dir=None, verify_checksum=True) -> dict[str, np.ndarray]:
    """Find, verify and decode Fashion-MNIST; decoded arrays are cached so later runs skip gunzip."""
    dirs = candidate_dirs(root, system_dirs)
    files = find_files(dirs)
    if files is None and download:
        if not root:
            raise DataError("data.download=true needs data.root to say where to put the files")
        files = _download(Path(root).expanduser(), dirs)
    if files is None:
        raise DataError(MISSING_HINT.format(where=", ".join(str(d) for d in dirs) or "no folder (data.root unset)"))
    cache = _cache_path(Path(cache_dir).expanduser(), files, verify_checksum) if cache_dir else None
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zlib.error, EOFError):
            pass  # a damaged cache is rebuilt from the source files
    arrays = decode(files, verify_checksum)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, lambda f: np.savez(f, **arrays))  # a full disk leaves no half cache behind
        except OSError:
            pass  # caching is an optimisation; a read-only home must not stop a run
    return arrays


def _download(root: Path, dirs: list[Path]) -> dict[str, Path]:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        reason = " ".join(str(e).split())  # torchvision puts the cause on the lines after the first
        raise DataError(
            f"Fashion-MNIST could not be downloaded into {root} ({type(e).__name__}: {reason[:240]}). Get it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put its four .gz files into data.root."
        ) from None
    files = find_files(dirs)
    if files is None:
        raise DataError(MISSING_HINT.format(where=", ".join(str(d) for d in dirs)))
    return files


# ---------------------------------------------------------------- tensors and batches


def to_float(x: np.ndarray, normalize: str) -> torch.Tensor:
    """uint8 images [N, 28, 28] -> float32 [N, 1, 28, 28] (one channel), scaled once for the whole run."""
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).float().div_(255.0)
    if normalize == "standardize":
        # Fashion-MNIST's training-set mean and std of the [0, 1] pixels
        t.sub_(0.2860).div_(0.3530)
    elif normalize != "scale":
        raise ValueError(f"data.normalize must be 'scale' or 'standardize', got {normalize!r}")
    return t


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
        """Step s's batch: x [K, B, 1, 28, 28], y [K, B]."""
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

    x: torch.Tensor  # [N, 1, 28, 28] on the training device
    y: torch.Tensor  # [N]
    train_idx: torch.Tensor  # [K, n_train] indices into x, per seed
    seeds: list[int]
    batch_size: int
    steps: int
    epoch_fn: callable
    shuffle: bool = True
    shard: tuple[int, int] = (0, 1)
    _order: tuple[int, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        full, rest = divmod(self.train_idx.shape[1], self.batch_size)
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
            yield Chunk(self.x, self.y, order[:, start * b : (start + s) * b].reshape(k, s, b).transpose(0, 1), self.shard)
        if n % b:
            yield Chunk(self.x, self.y, order[:, full * b :].unsqueeze(0), self.shard)


@dataclass
class EvalBatches:
    """Evaluation batches for K seeds: x [K, B, 1, 28, 28], y [K, B]. `idx` is [K, n] (per-seed
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
                yield x.expand(self.n_seeds, *x.shape), self.y[sl].expand(self.n_seeds, -1)
            else:
                idx = self.idx[:, start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


class FashionMNIST(LightningDataModule):
    """The whole data set as tensors on the training device, per-seed splits, slicing batches.
    Its facts, which models and placement ask: `INPUT_SHAPE`, `N_CLASSES`, `bytes_on_device()`."""

    INPUT_SHAPE = INPUT_SHAPE
    N_CLASSES = N_CLASSES

    @classmethod
    def bytes_on_device(cls) -> int:
        """The whole set as float32 images, and a copy while it moves to the device."""
        return 2 * 4 * sum(FULL_SIZE.values()) * math.prod(cls.INPUT_SHAPE)

    @classmethod
    def eval_rows(cls, cfg, eval_batch_size: int) -> int:
        """The most examples one evaluation pass holds (a validation or test batch)."""
        return min(eval_batch_size, max(int(cfg.val_size), FULL_SIZE["t10k"]))

    def __init__(
        self,
        seeds: list[int],
        root: str | None = None,
        system_dirs=(),
        download: bool = False,
        cache_dir: str | None = None,
        verify_checksum: bool = True,
        val_size: int = 5000,
        batch_size: int = 32,
        eval_batch_size: int = 10000,
        normalize: str = "scale",
        shuffle: bool = True,
        steps_per_execution: int = 1,
        probe_size: int = 1000,
    ):
        super().__init__()
        self.seeds = list(seeds)
        self.source = dict(root=root, system_dirs=system_dirs, download=download, cache_dir=cache_dir, verify_checksum=verify_checksum)
        self.val_size, self.batch_size, self.eval_batch_size = val_size, batch_size, eval_batch_size
        self.normalize, self.shuffle, self.steps = normalize, shuffle, steps_per_execution
        self.probe_size = probe_size
        self._loaded = False

    def prepare(self) -> None:
        """Load and verify the files now (before any model is built), so bad data fails first."""
        if self._loaded:
            return
        arrays = load_arrays(**self.source)
        n = len(arrays["train_x"])
        if not 0 < self.val_size < n:
            raise DataError(f"data.val_size={self.val_size} must be between 1 and {n - 1} (the training set has {n})")
        self.train_x, self.train_y = to_float(arrays["train_x"], self.normalize), torch.from_numpy(arrays["train_y"].astype(np.int64))
        self.test_x, self.test_y = to_float(arrays["test_x"], self.normalize), torch.from_numpy(arrays["test_y"].astype(np.int64))
        splits = [split_indices(n, self.val_size, s) for s in self.seeds]
        self.train_idx = torch.stack([t for t, _ in splits])
        self.val_idx = torch.stack([v for _, v in splits])
        self._loaded = True

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last, partial batch counted): what the rate schedule counts in."""
        self.prepare()
        return -(-self.train_idx.shape[1] // self.batch_size)

    def setup(self, stage: str) -> None:
        self.prepare()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for name in ("train_x", "train_y", "test_x", "test_y", "train_idx", "val_idx"):
            setattr(self, name, getattr(self, name).to(device))

    def probe_set(self) -> torch.Tensor:
        """A fixed, seeded subset of each seed's training data: [K, probe_size, 1, 28, 28]."""
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


def main(argv=None) -> int:
    """`python -m actbench.data [OVERRIDE ...]`: find, verify and cache the data that a run with the
    same overrides (data.root=..., data.download=true) would use."""
    import argparse

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from actbench.conf import CONF_DIR

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("overrides", nargs="*", help="config overrides, as for actbench.train (e.g. data.root=/data/fmnist)")
    args = ap.parse_args(argv)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = compose("train", overrides=args.overrides, return_hydra_config=True)
        hydra_cfg, before = HydraConfig.instance(), HydraConfig.instance().cfg
        hydra_cfg.set_config(cfg)  # data.root is relative to the working directory, as in a run
        try:
            source = {k: cfg.data[k] for k in ("root", "system_dirs", "download", "cache_dir", "verify_checksum")}
        finally:
            hydra_cfg.cfg = before
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        print(f"actbench: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        arrays = load_arrays(**source)
    except DataError as e:
        print(f"actbench: error: {e}", file=sys.stderr)
        return 2
    files = find_files(candidate_dirs(source["root"], source["system_dirs"]))
    where = next(iter(files.values())).parent if files else source["root"]
    checked = "verified" if source["verify_checksum"] else "checked (content not verified: data.verify_checksum=false)"
    print(f"Fashion-MNIST: {len(arrays['train_x'])} train + {len(arrays['test_x'])} test images, {checked}, in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
