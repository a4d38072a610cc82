"""CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test colour images, 32x32, 10 classes,
from torchvision's files (the python pickles of `cifar-10-batches-py`), found in `root` (that
folder in it, or `root` itself), then in `system_dirs`, then downloaded by torchvision where
`download` allows. The pickles are read by an unpickler that builds only dicts, lists, bytes
and numpy arrays: a file that asks for anything else is refused, not run.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from actbench.data.memory import InMemoryData, cached
from actbench.errors import DataError

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
INPUT_SHAPE, N_CLASSES = (3, 32, 32), 10
# the training pixels' per-channel mean and std in [0, 1]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
GET = "torchvision's `cifar-10-batches-py` folder (from https://www.cs.toronto.edu/~kriz/cifar.html) put into data.root"
SAFE = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode")}  # what pickles of numpy arrays need, and nothing that runs anything


class BatchUnpickler(pickle.Unpickler):
    """Builds what a CIFAR batch holds and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch does not hold")


def find_folder(root: str | None, system_dirs) -> Path | None:
    dirs = ([Path(root).expanduser() / FOLDER, Path(root).expanduser()] if root else []) + [Path(d) for d in system_dirs or ()]
    return next((d for d in dirs if all((d / b).is_file() for names in BATCHES.values() for b in names)), None)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 [n, 3, 32, 32] and labels int64 [n], checked."""
    try:
        with path.open("rb") as f:
            d = BatchUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DataError(f"{path}: unreadable, truncated or not a CIFAR-10 batch ({' '.join(str(e).split())})") from None
    data, labels = (d.get(k) if isinstance(d, dict) else None for k in (b"data", b"labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: its b'data' is not uint8 images of 3x32x32 values, one per row")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataError(f"{path}: a label outside 0..{N_CLASSES - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_arrays(root=None, system_dirs=(), download=False, cache_dir=None) -> dict[str, np.ndarray]:
    """Find and read CIFAR-10's six batches into {train_x, train_y, test_x, test_y}; cached."""
    folder = find_folder(root, system_dirs)
    if folder is None and download:
        if not root:
            raise DataError("data.download=true needs data.root to say where to put the files")
        folder = _download(Path(root).expanduser(), system_dirs)
    if folder is None:
        where = ", ".join(str(d) for d in ([f"{root}/{FOLDER}", str(root)] if root else []) + list(system_dirs or ())) or "no folder"
        raise DataError(f"CIFAR-10 not found in {where}. Get it with {GET}, or let torchvision download it with `data.download=true`.")
    files = [folder / b for names in BATCHES.values() for b in names]
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache = Path(cache_dir).expanduser() / f"cifar10-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz" if cache_dir else None
    return cached(cache, lambda: _read(folder))


def _read(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for split, names in BATCHES.items():
        parts = [read_batch(folder / b) for b in names]
        arrays[f"{split}_x"], arrays[f"{split}_y"] = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    return arrays


def _download(root: Path, system_dirs) -> Path:
    from torchvision.datasets import CIFAR10 as TorchCIFAR10

    try:
        TorchCIFAR10(str(root), train=True, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        reason = " ".join(str(e).split())
        raise DataError(f"CIFAR-10 could not be downloaded into {root} ({type(e).__name__}: {reason[:240]}). Get it with {GET}.") from None
    folder = find_folder(str(root), system_dirs)
    if folder is None:
        raise DataError(f"CIFAR-10: torchvision's download left no complete {root / FOLDER}")
    return folder


def to_float(x: np.ndarray, normalize: str) -> torch.Tensor:
    """uint8 images [N, 3, 32, 32] -> float32 in [0, 1], or standardised per channel."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if normalize == "standardize":
        t.sub_(torch.tensor(MEAN).view(1, 3, 1, 1)).div_(torch.tensor(STD).view(1, 3, 1, 1))
    elif normalize != "scale":
        raise ValueError(f"data.normalize must be 'scale' or 'standardize', got {normalize!r}")
    return t


class CIFAR10(InMemoryData):
    """CIFAR-10 in memory: images [N, 3, 32, 32], 10 classes."""

    INPUT_SHAPE = INPUT_SHAPE
    N_CLASSES = N_CLASSES

    @classmethod
    def sizes(cls, cfg_data) -> dict[str, int]:
        return {"train": 50000, "test": 10000}

    def __init__(self, seeds: list[int], root: str | None = None, system_dirs=(), download: bool = False,
                 cache_dir: str | None = None, normalize: str = "standardize", **common):
        super().__init__(seeds, **common)
        self.source = dict(root=root, system_dirs=system_dirs, download=download, cache_dir=cache_dir)
        self.normalize = normalize

    def load(self) -> dict[str, torch.Tensor]:
        a = load_arrays(**self.source)
        return {"train_x": to_float(a["train_x"], self.normalize), "train_y": torch.from_numpy(a["train_y"]),
                "test_x": to_float(a["test_x"], self.normalize), "test_y": torch.from_numpy(a["test_y"])}

    def describe(self, arrays: dict[str, torch.Tensor]) -> str:
        return f"CIFAR-10: {len(arrays['train_x'])} train + {len(arrays['test_x'])} test images, in {find_folder(self.source['root'], self.source['system_dirs'])}"
