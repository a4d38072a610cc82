"""Writing files so that a reader never sees a partial one and a failed write leaves the old file
intact; and telling, before any work, that a directory cannot be written at all.

`atomic_write` writes to `.<name>.<pid>.tmp` beside the target, fsyncs it, and renames it over the
target, so the target is always either the old file or the whole new one. On any failure (disk
full, permission denied, a read-only filesystem, or an exception of the caller's) the temporary
file is removed and the error goes on unchanged. The pid in the name keeps two processes that write
the same target from writing into each other's temporary file, and tells whose it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from actbench.errors import UserError


class NotWritable(UserError):
    """A directory that cannot be written: the message is one line naming it and the reason."""


def temp_path(path: Path | str) -> Path:
    """The temporary name this process writes `path` under."""
    path = Path(path)
    # TensorBoard reads every file whose name holds "tfevents", a half-written one too
    return path.with_name(f".{path.name.replace('tfevents', 'tf-events')}.{os.getpid()}.tmp")


Content = bytes | str | Callable[[BinaryIO], object]


def atomic_write(path: Path | str, content: Content, *, encoding: str = "utf-8", durable: bool = True) -> Path:
    """Replace `path` with `content` all at once, or leave it as it was.

    `content` is bytes, text, or a function that writes into the binary file it is given (e.g.
    `lambda f: torch.save(obj, f)`, `lambda f: np.savez(f, **arrays)`: given a file object, savez
    does not add `.npz` to the name; a writer that takes only a path may write to `f.name`). With
    `durable`, the data and the rename are fsynced, so that after a crash of the machine the target
    holds the old or the new content, not an empty file.
    """
    return atomic_write_all({path: content}, encoding=encoding, durable=durable)[0]


def atomic_write_all(contents: Mapping[Path | str, Content], *, encoding: str = "utf-8", durable: bool = True) -> list[Path]:
    """`atomic_write` for files that belong together (the checkpoints of a pack's seeds): all are
    written in full before any is replaced, so a full disk leaves every old file in place, not some
    old and some new."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, content in contents.items():
            path = Path(path)
            tmp = temp_path(path)
            written.append((tmp, path))
            # "wb" truncates: a temporary file left by an earlier process that had our pid is garbage
            with open(tmp, "wb") as f:
                if callable(content):
                    content(f)
                else:
                    f.write(content.encode(encoding) if isinstance(content, str) else content)
                f.flush()
                if durable:
                    os.fsync(f.fileno())  # a full disk on NFS may only show here or at close
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            try:
                tmp.unlink()
            except OSError:
                pass  # replaced already, never created, or the filesystem went read-only
        raise
    if durable:
        for directory in {path.parent for _, path in written}:
            _fsync_dir(directory)
    return [path for _, path in written]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)


def check_writable(directory: Path | str) -> Path:
    """Create `directory` if needed and write and remove a probe file in it; raise `NotWritable`
    with one line ("runs/blog: cannot write here (Read-only file system)") if that fails."""
    directory = Path(directory)
    probe = directory / f".write-probe.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, b"\n")  # creating an empty file can succeed on a full disk; a block cannot
            os.fsync(fd)
        finally:
            os.close(fd)
            try:
                probe.unlink()
            except FileNotFoundError:
                pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise NotWritable(f"{directory}: cannot write here ({reason})") from None
    return directory
