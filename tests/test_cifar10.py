"""actbench.data.cifar10 (on small files written in CIFAR-10's exact format, since the real ones
are not here) and MNIST through the IDX reader: facts, shapes, one-line errors, models for them,
a sweep of each."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
from conftest import compose_cfg, metrics, run_cli, synthetic_arrays, write_idx_files

from actbench.data import CIFAR10, MNIST
from actbench.data.cifar10 import BATCHES, FOLDER, MEAN
from actbench.errors import ConfigError, DataError
from actbench.model import model_class


def write_cifar(root, n: int = 20, seed: int = 0):
    """CIFAR-10's six batch files (pickled dicts of bytes keys, numpy uint8 rows) with n images each."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True)
    for names in BATCHES.values():
        for name in names:
            batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                     b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def cifar(root, tmp_path, **keys) -> CIFAR10:
    data = CIFAR10([0, 1], root=str(root), cache_dir=str(tmp_path / "cache"), val_size=10, **keys)
    data.prepare()
    return data


def test_cifar10_reads_its_pickles_as_colour_images(tmp_path):
    folder = write_cifar(tmp_path / "data")
    data = cifar(tmp_path / "data", tmp_path, normalize="scale")
    assert CIFAR10.INPUT_SHAPE == (3, 32, 32) and CIFAR10.sizes(None) == {"train": 50000, "test": 10000}
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32) and data.train_idx.shape == (2, 90)
    with (folder / "data_batch_1").open("rb") as f:
        first = pickle.load(f, encoding="bytes")
    assert torch.equal(data.train_x[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)).float() / 255)
    assert data.train_y[:20].tolist() == first[b"labels"]
    standard = cifar(tmp_path / "data", tmp_path)  # per channel, by CIFAR-10's own mean and std
    assert torch.allclose(standard.train_x[0, 1], (data.train_x[0, 1] - MEAN[1]) / 0.2435)


def test_a_truncated_or_foreign_cifar_file_is_one_line(tmp_path):
    folder = write_cifar(tmp_path / "data")
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=rf"^{re.escape(str(batch))}: unreadable, truncated or not a CIFAR-10 batch"):
        cifar(tmp_path / "data", tmp_path)
    batch.write_bytes(pickle.dumps(os.system))  # a pickle that would run something: refused, not run
    with pytest.raises(DataError, match="asks for posix.system"):
        cifar(tmp_path / "data", tmp_path)


def test_missing_cifar_names_both_ways(tmp_path):
    with pytest.raises(DataError) as e:
        cifar(tmp_path / "nowhere", tmp_path)
    assert "CIFAR-10 not found in" in str(e.value) and "data.download=true" in str(e.value) and "\n" not in str(e.value)


def test_mnist_reads_the_idx_files_and_refuses_fashion_mnists(tmp_path, real_data_dir):
    write_idx_files(tmp_path / "mnist", synthetic_arrays(60, 20))
    data = MNIST([0], root=str(tmp_path / "mnist"), cache_dir=None, val_size=10)
    data.prepare()
    assert data.train_x.shape == (60, 1, 28, 28) and MNIST.INPUT_SHAPE == (1, 28, 28)
    fashion = MNIST([0], root=None, system_dirs=[str(real_data_dir)], cache_dir=None)
    with pytest.raises(DataError, match="holds Fashion-MNIST, not MNIST"):
        fashion.prepare()


def test_missing_mnist_names_both_ways(tmp_path):
    with pytest.raises(DataError, match=r"^MNIST not found in .*MNIST/raw.* or let torchvision download it with `data.download=true`"):
        MNIST([0], root=str(tmp_path / "nowhere")).prepare()


@pytest.mark.parametrize("model, keys, ok", [("cnn", [], True), ("mlp", [], True), ("vit", ["model.patch=8"], True),
                                             ("vit", [], False), ("cnn1d", [], False)])
def test_models_for_colour_images(model, keys, ok):
    cfg = compose_cfg("data=cifar10", f"model={model}", *keys)
    if ok:
        model_class(cfg).check(CIFAR10.INPUT_SHAPE, 10)
    else:
        with pytest.raises(ConfigError):
            model_class(cfg).check(CIFAR10.INPUT_SHAPE, 10)


@pytest.mark.slow
def test_a_cifar_sweep_writes_the_usual_runs(tmp_path):
    write_cifar(tmp_path / "data", n=40)
    r = run_cli("-m", "experiment=blog_cifar", f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
                f"out_dir={tmp_path / 'runs'}", "data.val_size=40", "trainer.max_epochs=1", "activation=relu,gelu", "seed=0",
                "data.probe_size=64")
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics(next((tmp_path / "runs" / "blog_cifar").glob("activation=gelu,*")))
    assert m["status"] == "finished" and m["hparams"]["data"] == "cifar10" and m["hparams"]["model"] == "cnn"
    assert (tmp_path / "runs" / "blog_cifar" / "report.md").exists()


@pytest.mark.slow
def test_an_mnist_sweep_writes_the_usual_runs(tmp_path):
    write_idx_files(tmp_path / "data", synthetic_arrays(120, 40))
    r = run_cli("-m", "data=mnist", f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'runs'}",
                "name=m", "data.val_size=40", "trainer.max_epochs=1", "activation=relu,gelu", "seed=0", "data.probe_size=32")
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics(next((tmp_path / "runs" / "m").glob("activation=gelu,*")))
    assert m["status"] == "finished" and m["hparams"]["data"] == "mnist" and m["final"]["test_acc"] > 0
    assert "test_acc" in (tmp_path / "runs" / "m" / "report.md").read_text()
