"""actbench.data: finding, verifying, caching, splitting and batching."""

import gzip

import numpy as np
import pytest
import torch

from actbench import data
from actbench.errors import DataError
from conftest import idx_bytes, synthetic_arrays, write_idx_files


def load(root, **kw):
    return data.load_arrays(root=str(root), system_dirs=kw.pop("system_dirs", []), **kw)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_a_plain_folder_gz_or_unpacked(tmp_path, gz):
    arrays = synthetic_arrays(50, 20)
    write_idx_files(tmp_path, arrays, gz=gz)
    got = load(tmp_path)
    for k in arrays:
        assert np.array_equal(got[k], arrays[k])
    assert got["train_x"].shape == (50, 28, 28) and got["test_y"].shape == (20,)


def test_reads_torchvision_layout_first(tmp_path):
    write_idx_files(tmp_path / "FashionMNIST" / "raw", synthetic_arrays(30, 10, seed=1), gz=False)
    write_idx_files(tmp_path, synthetic_arrays(40, 10, seed=2))
    assert len(load(tmp_path)["train_x"]) == 30


def test_root_before_system_dirs(tmp_path):
    write_idx_files(tmp_path / "root", synthetic_arrays(30, 10))
    write_idx_files(tmp_path / "system", synthetic_arrays(40, 10))
    assert len(load(tmp_path / "root", system_dirs=[tmp_path / "system"])["train_x"]) == 30
    assert len(load(tmp_path / "empty", system_dirs=[tmp_path / "system"])["train_x"]) == 40


def test_missing_data_names_both_ways_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        load(tmp_path / "nothing")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "data.download=true" in msg
    assert "\n" not in msg


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://... got URLError")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as e:
        load(tmp_path / "nothing", download=True)
    message = str(e.value)
    assert "could not be downloaded" in message and "apt-get install dataset-fashion-mnist" in message
    assert "Tried https://... got URLError" in message  # the reason, which torchvision gives on its second line
    assert "data.download=true" not in message  # already set: no advice to set it
    assert "\n" not in message


def test_the_data_command_reads_what_a_run_with_its_overrides_would(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # data.root is relative to the working directory, as in a run
    cache = tmp_path / "cache"
    assert data.main(["data.root=data", "data.system_dirs=[]", f"data.cache_dir={cache}"]) == 0
    assert "600 train + 200 test images" in capsys.readouterr().out
    assert any(cache.iterdir())  # it warms the cache a run reads
    assert data.main(["data.root=elsewhere", "data.system_dirs=[]", "data.cache_dir=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install dataset-fashion-mnist" in err and "\n" not in err
    assert data.main(["data.no_such_key=1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_truncated_gzip_names_the_file(tmp_path):
    write_idx_files(tmp_path, synthetic_arrays(50, 20))
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load(tmp_path)


def test_truncated_raw_file_names_the_file(tmp_path):
    write_idx_files(tmp_path, synthetic_arrays(50, 20), gz=False)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*does not match its header"):
        load(tmp_path)


def test_bad_magic_names_the_file(tmp_path):
    write_idx_files(tmp_path, synthetic_arrays(50, 20), gz=False)
    f = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(f.read_bytes())
    raw[3] = 0x03  # claims to be an image file
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: bad magic"):
        load(tmp_path)


def test_label_out_of_range_and_count_mismatch(tmp_path):
    arrays = synthetic_arrays(50, 20)
    arrays["train_y"][3] = 10
    write_idx_files(tmp_path / "a", arrays)
    with pytest.raises(DataError, match="label 10 outside 0..9"):
        load(tmp_path / "a")
    arrays = synthetic_arrays(50, 20)
    arrays["test_y"] = arrays["test_y"][:-1]
    write_idx_files(tmp_path / "b", arrays)
    with pytest.raises(DataError, match="19 labels for 20 images"):
        load(tmp_path / "b")


def test_full_size_file_with_wrong_content_is_refused(tmp_path):
    write_idx_files(tmp_path, synthetic_arrays(50, 20))
    fake = np.zeros(10000, np.uint8)  # the test set's size, not its labels
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(fake)))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((10000, 28, 28), np.uint8))))
    with pytest.raises(DataError, match="not Fashion-MNIST"):
        load(tmp_path)


def test_arrays_cached_unverified_are_never_served_to_a_run_that_verifies(tmp_path):
    write_idx_files(tmp_path / "d", synthetic_arrays(50, 20))
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10000, np.uint8))))
    (tmp_path / "d" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((10000, 28, 28), np.uint8))))
    cache = tmp_path / "cache"
    assert len(load(tmp_path / "d", cache_dir=cache, verify_checksum=False)["test_y"]) == 10000
    with pytest.raises(DataError, match="not Fashion-MNIST"):
        load(tmp_path / "d", cache_dir=cache)


def test_cache_is_written_reused_and_rebuilt_when_damaged(tmp_path):
    arrays = synthetic_arrays(50, 20)
    write_idx_files(tmp_path / "d", arrays)
    cache = tmp_path / "cache"
    first = load(tmp_path / "d", cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    assert all(np.array_equal(load(tmp_path / "d", cache_dir=cache)[k], first[k]) for k in arrays)
    files[0].write_bytes(b"garbage")
    assert np.array_equal(load(tmp_path / "d", cache_dir=cache)["train_x"], arrays["train_x"])


def test_split_is_seeded_disjoint_and_complete():
    tr, va = data.split_indices(100, 20, seed=0)
    assert len(va) == 20 and len(tr) == 80
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(100))
    tr2, va2 = data.split_indices(100, 20, seed=0)
    assert torch.equal(va, va2)
    assert not torch.equal(va, data.split_indices(100, 20, seed=1)[1])


def make_batches(seeds, n=100, batch=8, steps=3, epoch=0):
    x = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 784).contiguous()
    y = torch.arange(n) % 10
    idx = torch.stack([data.split_indices(n, 10, s)[0] for s in seeds])
    return data.TrainBatches(x, y, idx, list(seeds), batch, steps, lambda: epoch)


def stacked(batches):
    """Every chunk's batches as x [S, K, B, 784], y [S, K, B]."""
    out = []
    for chunk in batches:
        steps = [chunk[s] for s in range(len(chunk))]
        out.append((torch.stack([x for x, _ in steps]), torch.stack([y for _, y in steps])))
    return out


def test_train_batches_cover_each_training_index_once_per_epoch():
    b = make_batches([0, 1])
    chunks = stacked(b)
    assert len(chunks) == len(b)
    assert all(x.shape[1:] == (2, x.shape[2], 784) for x, _ in chunks)
    seen = torch.cat([x[:, :, :, 0].transpose(0, 1).reshape(2, -1) for x, _ in chunks], dim=1)
    for k, s in enumerate([0, 1]):
        assert sorted(seen[k].long().tolist()) == sorted(data.split_indices(100, 10, s)[0].tolist())
    # 90 samples in batches of 8: 11 full batches (chunks of 3: 3,3,3,2) then one of 2
    assert [x.shape[0] for x, _ in chunks] == [3, 3, 3, 2, 1] and chunks[-1][0].shape[2] == 2


def test_a_seed_order_does_not_depend_on_its_pack_but_on_its_epoch():
    alone = torch.cat([x[:, 0, :, 0].flatten() for x, _ in stacked(make_batches([1]))])
    packed = torch.cat([x[:, 1, :, 0].flatten() for x, _ in stacked(make_batches([0, 1]))])
    assert torch.equal(alone, packed)
    later = torch.cat([x[:, 0, :, 0].flatten() for x, _ in stacked(make_batches([1], epoch=1))])
    assert not torch.equal(alone, later)


def test_labels_travel_with_their_images():
    for x, y in stacked(make_batches([0, 3])):
        assert torch.equal(y, x[..., 0].long() % 10)


def test_one_seed_batches_keep_the_member_dimension():
    x, y = next(iter(make_batches([5])))[0]
    assert x.shape == (1, 8, 784) and y.shape == (1, 8)


def test_eval_batches_shared_and_per_seed():
    x = torch.arange(30, dtype=torch.float32)[:, None].expand(30, 784)
    y = torch.arange(30) % 10
    shared = list(data.EvalBatches(x, y, None, 3, 16))
    assert [b[0].shape for b in shared] == [(3, 16, 784), (3, 14, 784)]
    idx = torch.tensor([[0, 1, 2], [5, 6, 7]])
    (bx, by), = data.EvalBatches(x, y, idx, 2, 16)
    assert bx[1, :, 0].tolist() == [5, 6, 7] and by[1].tolist() == [5, 6, 7]


@pytest.mark.slow
def test_real_fashion_mnist_loads_and_verifies(real_data_dir, tmp_path):
    arrays = data.load_arrays(None, [real_data_dir], cache_dir=tmp_path)
    assert arrays["train_x"].shape == (60000, 28, 28) and arrays["test_x"].shape == (10000, 28, 28)
    assert np.bincount(arrays["train_y"]).tolist() == [6000] * 10
    assert np.bincount(arrays["test_y"]).tolist() == [1000] * 10


def test_a_cache_on_a_full_disk_is_skipped_and_leaves_nothing_behind(tmp_path, tmpfs):
    arrays = synthetic_arrays()  # 600 + 200 images: a 620 KB cache
    write_idx_files(tmp_path / "d", arrays)
    disk = tmpfs("256k")
    got = load(tmp_path / "d", cache_dir=disk / "cache")
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)
    assert [p.name for p in (disk / "cache").iterdir()] == []  # no partial cache, no temporary file
