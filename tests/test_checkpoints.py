"""actbench.checkpoints: a packed checkpoint is K ordinary one-seed checkpoints."""

import pytest
import torch

from actbench.checkpoints import CheckpointError, PerSeedCheckpointIO, merge, resume_point, split


def packed_checkpoint(k=3):
    w = torch.arange(k * 6, dtype=torch.float32).view(k * 2, 3)  # seed k owns rows 2k, 2k+1
    return {
        "epoch": 1,
        "global_step": 40,
        "state_dict": {"net.weights.0": w, "net.biases.0": w[:, 0].clone(), "scalar": torch.tensor(7.0)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(40.0), "exp_avg": w * 2, "exp_avg_sq": w * 3}}, "param_groups": [{"lr": 1e-3}]}],
        "loops": {"fit_loop": {"x": 1}},
    }


def test_split_takes_each_seed_slice_and_keeps_shared_values():
    ckpt = packed_checkpoint()
    part = split(ckpt, 1, 3)
    assert part["state_dict"]["net.weights.0"].shape == (2, 3) and part["state_dict"]["net.biases.0"].shape == (2,)
    assert torch.equal(part["state_dict"]["net.weights.0"], ckpt["state_dict"]["net.weights.0"][2:4])
    assert torch.equal(part["optimizer_states"][0]["state"][0]["exp_avg"], ckpt["optimizer_states"][0]["state"][0]["exp_avg"][2:4])
    assert part["optimizer_states"][0]["state"][0]["step"].item() == 40 and part["state_dict"]["scalar"].item() == 7
    assert part["loops"] == ckpt["loops"] and part["global_step"] == 40


def test_merge_inverts_split():
    ckpt = packed_checkpoint()
    back = merge([split(ckpt, k, 3) for k in range(3)])
    for key, t in ckpt["state_dict"].items():
        assert torch.equal(back["state_dict"][key], t)
    for name, t in ckpt["optimizer_states"][0]["state"][0].items():
        assert torch.equal(back["optimizer_states"][0]["state"][0][name], t)


def test_io_writes_one_checkpoint_per_seed_dir_and_reads_them_back(tmp_path):
    dirs = [tmp_path / f"seed={s}" for s in (4, 5, 6)]
    io = PerSeedCheckpointIO(dirs, [4, 5, 6])
    io.save_checkpoint(packed_checkpoint(), tmp_path / "anything" / "last.ckpt")
    for d in dirs:
        assert (d / "checkpoints" / "last.ckpt").exists()
        assert not list((d / "checkpoints").glob(".*tmp"))
    one = torch.load(dirs[2] / "checkpoints" / "last.ckpt", weights_only=False)
    assert one["actbench_seed"] == 6 and one["state_dict"]["net.weights.0"].shape == (2, 3)
    assert resume_point(dirs[0] / "checkpoints" / "last.ckpt") == (40, 2)
    back = io.load_checkpoint(tmp_path / "x" / "last.ckpt")
    assert torch.equal(back["state_dict"]["net.weights.0"], packed_checkpoint()["state_dict"]["net.weights.0"])
    io.remove_checkpoint(tmp_path / "x" / "last.ckpt")
    assert not any((d / "checkpoints" / "last.ckpt").exists() for d in dirs)


def test_io_refuses_mixed_up_or_damaged_checkpoints(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    PerSeedCheckpointIO(dirs, [0, 1]).save_checkpoint(packed_checkpoint(2), tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="checkpoint of seed 0, expected seed 1"):
        PerSeedCheckpointIO(dirs[:1], [1]).load_checkpoint(tmp_path / "last.ckpt")
    (dirs[1] / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        PerSeedCheckpointIO(dirs, [0, 1]).load_checkpoint(tmp_path / "last.ckpt")
    assert resume_point(dirs[1] / "checkpoints" / "last.ckpt") is None


def test_a_full_disk_leaves_every_members_checkpoint_as_it_was(tmpfs):
    import errno

    disk = tmpfs("256k")
    dirs = [disk / f"seed={s}" for s in (0, 1, 2)]
    io = PerSeedCheckpointIO(dirs, [0, 1, 2])
    io.save_checkpoint(packed_checkpoint(), disk / "last.ckpt")
    old = [(d / "checkpoints" / "last.ckpt").read_bytes() for d in dirs]
    big = packed_checkpoint()
    big["state_dict"]["net.weights.0"] = torch.randn(6, 20_000)  # 160 KB a member: the second does not fit
    with pytest.raises(OSError) as caught:
        io.save_checkpoint(big, disk / "last.ckpt")
    assert caught.value.errno == errno.ENOSPC  # the disk's own error, not torch's "unexpected pos"
    assert [(d / "checkpoints" / "last.ckpt").read_bytes() for d in dirs] == old
    assert [p.name for p in disk.rglob("*") if p.is_file() and p.name != "last.ckpt"] == []
    assert io.load_checkpoint(disk / "last.ckpt")["global_step"] == 40
