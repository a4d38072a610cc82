"""actbench.files: a failed write leaves the old file byte-identical and no temporary file behind;
a directory that cannot be written says so in one line."""

import errno
import os
import subprocess

import numpy as np
import pytest

from actbench.errors import UserError
from actbench.files import NotWritable, atomic_write, atomic_write_all, check_writable, temp_path

OLD = b"the previous, good content\n" * 40


def leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs: a real disk that fills up (root only; skipped with the reason elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)], check=False, capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def remount_readonly(mnt):
    r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=False, capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot remount the tmpfs read-only: {r.stderr.strip()}")


def test_writes_text_bytes_and_a_callback(tmp_path):
    target = tmp_path / "metrics.json"
    assert atomic_write(target, '{"status": "running"}') == target
    assert target.read_text() == '{"status": "running"}'
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, lambda f: f.write(b"from a callback"))
    assert target.read_bytes() == b"from a callback"
    assert leftovers(tmp_path, {"metrics.json"}) == []


def test_the_temporary_file_is_beside_the_target_and_names_the_pid(tmp_path):
    target = tmp_path / "last.ckpt"
    seen = []
    atomic_write(target, lambda f: seen.append(f.name))
    assert seen == [str(tmp_path / f".last.ckpt.{os.getpid()}.tmp")] == [str(temp_path(target))]


def test_numpy_savez_keeps_the_target_name(tmp_path):
    # given a path, savez would append .npz to the temporary name; given the file, it cannot
    target = tmp_path / "arrays.npz"
    atomic_write(target, lambda f: np.savez(f, x=np.arange(5)))
    assert np.load(target)["x"].tolist() == [0, 1, 2, 3, 4]
    assert leftovers(tmp_path, {"arrays.npz"}) == []


@pytest.mark.parametrize("error", [ValueError("half written"), KeyboardInterrupt()])
def test_a_failure_midway_keeps_the_old_file(tmp_path, error):
    target = tmp_path / "last.ckpt"
    target.write_bytes(OLD)

    def half_then_fail(f):
        f.write(b"half of a new checkpoint")
        f.flush()
        assert os.path.getsize(f.name) > 0  # the half really reached the temporary file
        raise error

    with pytest.raises(type(error)) as caught:
        atomic_write(target, half_then_fail)
    assert caught.value is error
    assert target.read_bytes() == OLD
    assert leftovers(tmp_path, {"last.ckpt"}) == []


def test_a_full_disk_keeps_the_old_file(small_tmpfs):
    target = small_tmpfs / "metrics.json"
    target.write_bytes(OLD)
    with pytest.raises(OSError) as caught:
        atomic_write(target, os.urandom(200_000))
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == OLD
    assert leftovers(small_tmpfs, {"metrics.json"}) == []
    # the failed write's space came back: a write that fits goes through
    atomic_write(target, b"x" * 10_000)
    assert target.read_bytes() == b"x" * 10_000


def test_files_written_together_are_all_new_or_all_old(small_tmpfs):
    # a pack's checkpoints: with the disk full at the third, the first two must not be new either
    targets = [small_tmpfs / f"seed={k}" / "last.ckpt" for k in range(3)]
    for t in targets:
        t.parent.mkdir()
        t.write_bytes(OLD)
    with pytest.raises(OSError) as caught:
        atomic_write_all({t: os.urandom(25_000) for t in targets})
    assert caught.value.errno == errno.ENOSPC
    for t in targets:
        assert t.read_bytes() == OLD
        assert leftovers(t.parent, {"last.ckpt"}) == []
    assert atomic_write_all({t: b"new" for t in targets}) == targets
    assert [t.read_bytes() for t in targets] == [b"new"] * 3


def test_a_full_disk_fails_the_directory_check(small_tmpfs):
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(NotWritable) as caught:
        check_writable(small_tmpfs)
    assert str(caught.value) == f"{small_tmpfs}: cannot write here (No space left on device)"


def test_a_read_only_directory_gives_one_line(small_tmpfs):
    target = small_tmpfs / "metrics.json"
    target.write_bytes(OLD)
    remount_readonly(small_tmpfs)
    for directory in (small_tmpfs, small_tmpfs / "blog"):  # as it is, and a sweep directory to create in it
        with pytest.raises(NotWritable) as caught:
            check_writable(directory)
        assert str(caught.value) == f"{directory}: cannot write here (Read-only file system)"
        assert "\n" not in str(caught.value)
        assert isinstance(caught.value, UserError)
    with pytest.raises(OSError) as caught:
        atomic_write(target, b"new")
    assert caught.value.errno == errno.EROFS
    assert target.read_bytes() == OLD
    assert leftovers(small_tmpfs, {"metrics.json"}) == []


def test_a_directory_without_write_permission_gives_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes through permissions (root); the read-only mount test covers it")
        with pytest.raises(NotWritable) as caught:
            check_writable(locked)
        assert str(caught.value) == f"{locked}: cannot write here (Permission denied)"
    finally:
        locked.chmod(0o755)


def test_the_directory_check_creates_the_directory_and_leaves_nothing(tmp_path):
    sweep = tmp_path / "runs" / "blog"
    assert check_writable(sweep) == sweep
    assert sweep.is_dir()
    assert list(sweep.iterdir()) == []


def test_a_half_written_events_file_is_not_one_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.io_wrapper import IsSummaryEventsFile

    target = tmp_path / "events.out.tfevents.00001.host.42.hparams"
    assert IsSummaryEventsFile(str(target)) and not IsSummaryEventsFile(str(temp_path(target)))
