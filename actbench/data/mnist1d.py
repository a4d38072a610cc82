"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): ten 1-D digit templates, each padded,
shifted, scaled, sheared and noised into a signal of 40 values; 5,000 signals by default, 4,000
to train and 1,000 to test. Small and fast, and it separates models far more than MNIST does.

Made offline by the `mnist1d` package's own generator (`make_dataset`, never its downloader,
which writes a pickle into the working directory), from the arguments in conf/data/mnist1d.yaml,
which are part of a run's identity; the made arrays are cached by those arguments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from actbench.data.memory import InMemoryData, cached
from actbench.errors import DataError

LENGTH, CLASSES = 40, 10


def make(num_samples: int, **generate) -> dict[str, np.ndarray]:
    """The package's dataset for these arguments: {x, y, x_test, y_test}, the signals float32
    [N, 40] (standardised by the package), labels int64. Numpy's global random state, which the
    package seeds, is left as it was."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("data=mnist1d is made by the `mnist1d` package, which is not installed: pip install mnist1d") from None
    args = get_dataset_args()
    unknown = set(generate) - set(vars(args))
    if unknown:
        raise DataError(f"data.generate: {', '.join(sorted(unknown))} not among the mnist1d package's arguments ({', '.join(sorted(vars(args)))})")
    for key, value in {**generate, "num_samples": num_samples, "final_seq_length": LENGTH}.items():
        setattr(args, key, value)
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


class MNIST1D(InMemoryData):
    """MNIST-1D's signals as [N, 1, 40] (one channel, so a 1-D convolution takes them as they
    are), ten classes; `num_samples` signals made, split train/test by the package's
    `train_split`; `generate` holds the package's other arguments."""

    INPUT_SHAPE = (1, LENGTH)
    N_CLASSES = CLASSES

    @classmethod
    def sizes(cls, cfg_data) -> dict[str, int]:
        n = int(cfg_data.num_samples) // CLASSES * CLASSES  # the package makes num_samples // 10 of each digit
        train = int(n * float(cfg_data.get("generate", {}).get("train_split", 0.8)))
        return {"train": train, "test": n - train}

    def __init__(self, seeds: list[int], num_samples: int = 5000, generate: dict | None = None,
                 cache_dir: str | None = None, **common):
        super().__init__(seeds, **common)
        if not (isinstance(num_samples, int) and num_samples >= 2 * CLASSES):
            raise DataError(f"data.num_samples={num_samples!r} must be an integer >= {2 * CLASSES}")
        self.num_samples, self.generate, self.cache_dir = num_samples, dict(generate or {}), cache_dir

    def _cache_path(self) -> Path | None:
        if not self.cache_dir:
            return None
        key = json.dumps({"num_samples": self.num_samples, **self.generate}, sort_keys=True, default=str)
        return Path(self.cache_dir).expanduser() / f"mnist1d-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"

    def arrays(self) -> dict[str, np.ndarray]:
        return cached(self._cache_path(), lambda: make(self.num_samples, **self.generate))

    def load(self) -> dict[str, torch.Tensor]:
        a = self.arrays()
        return {"train_x": torch.from_numpy(a["x"]).unsqueeze(1), "train_y": torch.from_numpy(a["y"]),
                "test_x": torch.from_numpy(a["x_test"]).unsqueeze(1), "test_y": torch.from_numpy(a["y_test"])}

    def describe(self, arrays: dict[str, torch.Tensor]) -> str:
        return f"MNIST-1D: {len(arrays['train_x'])} train + {len(arrays['test_x'])} test signals of {LENGTH}, made by the mnist1d package"
