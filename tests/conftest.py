"""Shared fixtures: small synthetic Fashion-MNIST-shaped IDX files, a way to run the CLI, and readers
of what a run wrote (metrics.json, TensorBoard events)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA_DIRS = [Path("/usr/share/datasets/fashion-mnist")]  # Debian's dataset-fashion-mnist


def idx_bytes(array: np.ndarray) -> bytes:
    # written independently of actbench.data, so that the reader is tested against the format
    magic = 0x00000803 if array.ndim == 3 else 0x00000801
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable fake images: each class is a fixed random template plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = np.clip(templates[y] * 0.6 + rng.integers(0, 100, size=(n, 28, 28)), 0, 255)
        return x.astype(np.uint8), y.astype(np.uint8)

    (tx, ty), (sx, sy) = make(n_train), make(n_test)
    return {"train_x": tx, "train_y": ty, "test_x": sx, "test_y": sy}


def write_idx_files(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }
    for key, stem in names.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return folder


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A data root with 600 training and 200 test images, as gzipped IDX files."""
    return write_idx_files(tmp_path / "data", synthetic_arrays())


@pytest.fixture
def real_data_dir() -> Path:
    for d in REAL_DATA_DIRS:
        if (d / "train-images-idx3-ubyte.gz").exists():
            return d
    pytest.skip("the real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


TINY_EXPERIMENT = """# @package _global_
name: tiny
data: {val_size: 100, probe_size: 64, system_dirs: []}
trainer: {max_epochs: 1, log_every_n_steps: 5}
"""


@pytest.fixture
def tiny_run(tmp_path, tiny_data):
    """CLI arguments for fast runs on tiny data, isolated from the real data and the user's cache;
    `experiment=tiny` keeps its settings out of the run names."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(TINY_EXPERIMENT)
    out = tmp_path / "runs"
    return [
        "--config-dir",
        str(tmp_path / "conf"),
        "experiment=tiny",
        f"data.root={tiny_data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"out_dir={out}",
    ]


def run_cli(*args: str, module: str = "actbench.train", timeout: int = 300, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repo root and capture its output (env values of None unset)."""
    full_env = {k: v for k, v in {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def metrics(run_dir: Path) -> dict:
    """A run directory's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def events(run_dir: Path):
    """A run directory's TensorBoard events, every scalar and histogram kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def compose_cfg(*overrides: str):
    """conf/train.yaml composed with these overrides, as the CLI would (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


# the runs of the 2 x 2 sweep `activation=relu,sigmoid seed=0,1`, as named on disk
NAMES_2x2 = ["activation=relu,seed=0", "activation=relu,seed=1", "activation=sigmoid,seed=0", "activation=sigmoid,seed=1"]
