"""Shared fixtures: small synthetic Fashion-MNIST-shaped IDX files, a way to run the CLI, readers
of what a run wrote (metrics.json, TensorBoard events), and synthetic sweep directories whose
numbers the report's tests choose."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from actbench.conf import CONF_DIR

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


TINY_ATLAS = """# @package _global_
defaults:
  - fair
  - _self_
name: tiny_atlas
data: {val_size: 100, probe_size: 64, system_dirs: []}
trainer: {max_epochs: 1, log_every_n_steps: 5}
study: {lrs: [1.0e-2], tune_seeds: [100], seeds: [0, 1], max_extend: 0}
atlas:
  settings:
    mlp: []
    cnn: [experiment=tiny, model=cnn, "model.channels=[4]", model.width=16, "study.lrs=[3.0e-3]"]   # the tiny preset's recipe
    nodata: [data=cifar10, data.root=/nonexistent]
hydra:
  sweeper:
    _target_: hydra_plugins.actbench_sweeper.atlas_sweeper.AtlasSweeper
    params:
      activation: relu,sigmoid
"""


@pytest.fixture
def tiny_atlas(tiny_run, tmp_path):
    """CLI arguments for an atlas of two settings on the tiny data (and one whose data is missing):
    relu and sigmoid, one rate, one tune seed, two confirm seeds."""
    (tmp_path / "conf" / "experiment" / "tiny_atlas.yaml").write_text(TINY_ATLAS)
    return ["-m", *[a if a != "experiment=tiny" else "experiment=tiny_atlas" for a in tiny_run], f"data.cache_dir={tmp_path / 'cache'}"]


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


def hparams_api(logdir: Path):
    """What TensorBoard's HParams tab gets from its backend for this log directory, as TensorBoard
    itself computes it: (the experiment, the session groups with every column's values)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)),
                               multiplexer=mux)
    ctx, backend = context.RequestContext(), backend_context.Context(tb)
    # the frontend's own request: up to 1000 hparams, metrics included
    exp = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest(include_metrics=True, hparams_limit=1000)).run()
    columns = [api_pb2.ColParams(hparam=h.name) for h in exp.hparam_infos] + [api_pb2.ColParams(metric=m.name) for m in exp.metric_infos]
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, allowed_statuses=list(api_pb2.Status.values()),
                                               include_metrics=True, col_params=columns)
    return exp, list_session_groups.Handler(ctx, backend, "", request).run()


def compose_cfg(*overrides: str):
    """conf/train.yaml composed with these overrides, as the CLI would (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


# the runs of the 2 x 2 sweep `activation=relu,sigmoid seed=0,1`, as named on disk
NAMES_2x2 = ["activation=relu,seed=0", "activation=relu,seed=1", "activation=sigmoid,seed=0", "activation=sigmoid,seed=1"]


# ---------------------------------------------------------------- synthetic sweeps (no training)


def make_metrics(overrides: dict, test_acc: float, *, status="finished", error=None, epochs=3, probes=True,
                 train_loss=None, epoch_s=2.0, old_probe_names=False) -> dict:
    """A metrics.json with the documented schema; curves and probes are plausible shapes, and
    the numbers the tests check (final metrics, timing) are the ones passed in. `old_probe_names`:
    the probes as files written before their tags had the `probes/` prefix name them."""
    rng = np.random.default_rng(zlib.crc32(json.dumps(overrides, sort_keys=True).encode()))
    act, depth = overrides.get("activation", "relu"), int(overrides.get("model.depth", 1))
    e = np.arange(1, epochs + 1)
    err = 1 - test_acc
    train = 0.9 * err * 2.2 + 0.5 / e + rng.normal(0, 0.004, epochs)
    val = 0.9 * err * 2.6 + 0.3 / e + 0.004 * e + rng.normal(0, 0.004, epochs)
    train_loss = float(train[-1]) if train_loss is None else train_loss
    m = {
        "schema": 1,
        "status": status,
        "error": error,
        "name": ",".join(f"{k}={v}" for k, v in overrides.items()),
        "overrides": overrides,
        "hparams": {"activation": act, "seed": overrides.get("seed", 0), "lr": 0.001, "depth": depth, "width": 128},
        "config": {},
        "curves": {"epoch": e.tolist(), "train_loss": train.tolist(), "val_loss": val.tolist(),
                   "train_acc": (1 - train / 3).tolist(), "val_acc": (1 - val / 3).tolist(),
                   "epoch_s": [epoch_s] * epochs, "samples_per_s": [27500.0] * epochs},
        "final": {"train_loss": train_loss, "train_acc": 0.9, "val_loss": float(val[-1]), "val_acc": test_acc + 0.003,
                  "test_loss": 2.5 * err, "test_acc": test_acc, "epochs": epochs, "steps": 1719 * epochs},
        "timing": {"started": "2025-01-01T00:00:00", "ended": "2025-01-01T00:01:00", "wall_s": 60.0,
                   "startup_s": 3.0, "fit_s": 57.0, "epoch_s_median": epoch_s},
        "versions": {"python": "3.11", "torch": "2.x", "lightning": "2.x", "hydra": "1.3", "actbench": "0.1.0"},
        "device": "cpu",
    }
    if probes:
        # Saturating activations lose gradient layer by layer; relu-like ones lose units instead.
        decay = {"sigmoid": 0.25, "tanh": 0.6}.get(act, 0.9)
        dead_end = {"relu": 0.12, "leaky": 0.0}.get(act, 0.0)
        p = {"epoch": list(range(epochs + 1))}
        for layer in range(1, depth + 1):
            p[f"probes/dead/layer{layer}"] = [dead_end * layer * t / epochs / depth for t in range(epochs + 1)]
            p[f"probes/saturated/layer{layer}"] = [(0.3 if act in ("sigmoid", "tanh") else 0.01) * t / epochs for t in range(epochs + 1)]
            p[f"probes/dact_mean/layer{layer}"] = [0.5] * (epochs + 1)
        for w in range(1, depth + 2):
            p[f"probes/grad_norm/w{w}"] = [None] + [float(decay ** (depth + 1 - w) * (1 + 0.1 * rng.random())) for _ in range(epochs)]
        p["probes/grad_ratio"] = [None] + [p["probes/grad_norm/w1"][t] / p[f"probes/grad_norm/w{depth + 1}"][t] for t in range(1, epochs + 1)]
        m["probes"] = {k.removeprefix("probes/"): v for k, v in p.items()} if old_probe_names else p
    return m


def write_run(sweep: Path, overrides: dict, test_acc: float = 0.88, **kw) -> Path:
    d = sweep / ",".join(f"{k}={v}" for k, v in overrides.items())
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "config.yaml").write_text("activation: {}\n")
    (d / "metrics.json").write_text(json.dumps(make_metrics(overrides, test_acc, **kw)))
    return d


def write_sweep(sweep: Path, accs: dict[str, list[float]], seeds: dict[str, list[int]] | None = None, **kw) -> Path:
    for act, values in accs.items():
        for seed, acc in zip((seeds or {}).get(act, range(len(values))), values):
            write_run(sweep, {"activation": act, "seed": seed}, acc, **kw)
    return sweep


# ---------------------------------------------------------------- small filesystems


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs("2m")` mounts a tmpfs of that size and returns it: a real filesystem that fills up
    (or, remounted, turns read-only). Root only (CI runs as root); skipped with the reason elsewhere."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
                           check=False, capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        if subprocess.run(["umount", str(mnt)], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def remount(mnt: Path, options: str) -> None:
    """Change a mounted tmpfs's options: `remount(mnt, "size=8m")`, `remount(mnt, "ro")`."""
    r = subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=False, capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot remount the tmpfs with {options}: {r.stderr.strip()}")


@pytest.fixture
def threads():
    """One thread: a product split between threads may sum in another order packed than alone
    (tests/test_placement.py has the shipped models on the counts threads=auto gives them)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(before)
