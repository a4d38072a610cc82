"""One owner per run: the process that trains a run holds a lock on its directory, through one of
two well-kept libraries, one mode per sweep directory (recorded in `.ownership` by its first claim;
`auto` follows it, or chooses `lock` where kernel locks work; the other mode is refused in one line).

- `lock` (`filelock`): a kernel lock (flock) on `<run>/.owner.lock`, which the kernel drops when its
  process dies, so a dead owner is taken over at once; NFS clients forward it to the server.
- `lease` (`flufl.lock`): a hard link, `<run>/.owner.lease`, with a lifetime (`lease_s`) its owner
  refreshes, for filesystems whose kernel locks stay on one node (Lustre `localflock`, NFS
  `local_lock`). A dead owner's lease is taken over once its lifetime has lapsed by SLOP_S.

`<run>/.owner.json` says who owns the run (host, pid, since, SLURM job), for whoever finds it taken.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from filelock import FileLock, Timeout
from flufl.lock import Lock as Lease
from flufl.lock import NotLockedError, TimeOutError

from actbench.errors import UserError
from actbench.files import atomic_write

LOCK_FILE, LEASE_FILE, INFO_FILE, MODE_FILE = ".owner.lock", ".owner.lease", ".owner.json", ".ownership"
MODES = ("auto", "lock", "lease")
LEASE_S = 300.0
SLOP_S = 10.0  # flufl.lock breaks a lease this long after its lifetime lapses: its allowance for clocks between nodes
TRY_S = 0.25  # how long one attempt waits: a reader testing a kernel lock holds it for microseconds
INTERRUPTED = "its process is gone; the same command resumes it"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}  # a filesystem without flock


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Owner:
    """Who owns a run: enough to find the process (host, pid, SLURM job) and say since when."""

    host: str | None
    pid: int | None
    since: str | None  # ISO-8601, UTC
    slurm_job_id: str | None = None
    mode: str = "lock"

    @classmethod
    def me(cls, mode: str) -> Owner:
        return cls(socket.gethostname(), os.getpid(), iso(time.time()), os.environ.get("SLURM_JOB_ID"), mode)

    def __str__(self) -> str:
        who = (f"pid {self.pid}" if self.pid else "a process") + (f" on host {self.host}" if self.host else " on another host")
        return who + (f" (SLURM job {self.slurm_job_id})" if self.slurm_job_id else "") + (f" since {self.since}" if self.since else "")

    @property
    def same_job(self) -> bool:
        """The owner is an earlier attempt of this SLURM job (requeued, its first attempt still being stopped)."""
        return bool(self.slurm_job_id) and self.slurm_job_id == os.environ.get("SLURM_JOB_ID")


_NOBODY = Owner(host=None, pid=None, since=None)  # an owner nothing is known of


def busy_line(name: str, owner: Owner) -> str:
    """The line a process prints when it finds a run owned by another and leaves it alone."""
    return f"{name}: trained by {owner}; skipped"


class Owned(Exception):
    """The run is owned by another live process (or by a lease whose lifetime has not lapsed)."""

    def __init__(self, run_dir: Path, owner: Owner):
        self.run_dir, self.owner = Path(run_dir), owner
        super().__init__(f"{self.run_dir.name}: trained by {owner}")


class LockingUnavailable(UserError):
    """`mode=lock` on a filesystem that refuses kernel locks, or a sweep recorded in the other mode."""


def _read_info(run_dir: Path) -> Owner | None:
    try:
        d = json.loads((run_dir / INFO_FILE).read_text())
        return Owner(**{k: d.get(k) for k in ("host", "pid", "since", "slurm_job_id")}, mode=d.get("mode") or "lock")
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _kernel_lock(path: Path) -> FileLock:
    # no soft fallback: a lock the kernel does not enforce is no lock; the file stays, since removing
    # it would let a process holding the old inode and one creating a new file both lock
    return FileLock(path, thread_local=False, fallback_to_soft=False, preserve_lock_file=True)


def _no_locks(e: Exception) -> bool:
    return isinstance(e, NotImplementedError) or getattr(e, "errno", None) in _NO_LOCKS


def _free(path: Path) -> bool | None:
    """Whether no process holds the kernel lock on `path` (taken and let go at once); None where
    the filesystem refuses kernel locks."""
    probe = _kernel_lock(path)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return False
    except (OSError, NotImplementedError) as e:
        if _no_locks(e):
            return None
        raise
    probe.release()
    return True


def _live_lease(run_dir: Path) -> bool:
    """Whether the run's lease is held and not yet breakable: flufl.lock sets the lease file's
    mtime to when its lifetime lapses, and breaks it SLOP_S after that."""
    try:
        return (run_dir / LEASE_FILE).stat().st_mtime + SLOP_S > time.time()
    except OSError as e:  # gone, or (NFS) replaced by another node as flufl.lock allows
        if e.errno in (errno.ENOENT, errno.ESTALE):
            return False
        raise


def sweep_mode(folder: Path, mode: str) -> str:
    """The mode of the sweep in `folder`: recorded by its first claim (the first to create the
    file wins), which `auto` follows and another mode may not contradict."""
    path = folder / MODE_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        chosen = mode  # for auto: lock, where the kernel's locks work (False: another process holds the probe)
        if mode == "auto":
            chosen = "lock" if _free(folder / f"{MODE_FILE}.probe") is not None else "lease"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(chosen + "\n")
        except FileExistsError:
            pass
    for _ in range(50):  # a file just created may be read before its first claimer has written it
        recorded = path.read_text().strip()
        if recorded in MODES[1:]:
            break
        time.sleep(0.02)
    else:
        raise LockingUnavailable(f"{path}: says {recorded!r}, not lock or lease: delete it to let the next claim choose")
    if mode not in ("auto", recorded):
        raise LockingUnavailable(f"{folder}: its runs are owned with ownership.mode={recorded} (its {MODE_FILE} file); "
                                 f"this process asks for ownership.mode={mode}: run it with {recorded} or auto")
    return recorded


def owner(run_dir: Path | str) -> Owner | None:
    """Who owns the run now, or None (no one: a record left by a dead lock owner or a lapsed lease)."""
    run_dir = Path(run_dir)
    info = _read_info(run_dir)
    mine = _HELD.get(run_dir.absolute())
    if info is None or (mine is not None and mine.held):
        return info
    if info.mode == "lease":
        return info if _live_lease(run_dir) else None
    try:
        return None if _free(run_dir / LOCK_FILE) else info
    except (OSError, NotImplementedError):
        return info  # the lock cannot be tested from here: say what the record says


def _holder(run_dir: Path, mode: str, wait_s: float = 2.0) -> Owner | None:
    """Who holds the run that this process could not take, or None if it has been let go since.
    Its holder writes its record just after taking the lock, so while the run is still taken, a
    record that is missing, or (a kernel lock being held by a live process) names a process of
    this host that is gone, is read again for a moment before the line says "a process". A lease
    outlives its owner: one naming a dead process is that process's until it lapses."""
    deadline = time.monotonic() + wait_s
    while True:
        if not (_live_lease(run_dir) if mode == "lease" else _free(run_dir / LOCK_FILE) is False):
            return None
        info = _read_info(run_dir)
        if info is not None and (mode == "lease" or info.host != socket.gethostname() or _alive(info.pid)):
            return info
        if time.monotonic() >= deadline:
            return info or _NOBODY
        time.sleep(0.05)


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, OverflowError):
        pass  # another user's process, or no pid recorded: the record stands
    return True


_HELD: dict[Path, RunLock] = {}  # the runs this process owns: asking again must not lock again


class RunLock:
    """This process's ownership of one run: acquire, then `held` until released (a lease whose
    refresh failed, because another took it over after it lapsed, is no longer held)."""

    def __init__(self, run_dir: Path | str, mode: str = "auto", lease_s: float = LEASE_S):
        if mode not in MODES:
            raise UserError(f"ownership.mode={mode!r}: must be one of {', '.join(MODES)}")
        if not lease_s > 0:
            raise UserError(f"ownership.lease_s={lease_s!r}: must be a number of seconds > 0")
        self.run_dir, self.requested, self.lease_s = Path(run_dir).absolute(), mode, float(lease_s)
        self.mode: str | None = None
        self._lock: FileLock | Lease | None = None
        self._stop, self.lost = threading.Event(), False

    @property
    def held(self) -> bool:
        return self._lock is not None and not self.lost

    def __enter__(self) -> RunLock:
        return self.acquire() if self._lock is None else self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> RunLock:
        if self.run_dir in _HELD:
            raise Owned(self.run_dir, _read_info(self.run_dir) or Owner.me(_HELD[self.run_dir].mode))
        self.mode = sweep_mode(self.run_dir.parent, self.requested)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline, looked = time.monotonic() + wait_s, False
        while not self._take():
            if time.monotonic() >= deadline:
                holder = _holder(self.run_dir, self.mode)
                if holder is not None or looked:
                    raise Owned(self.run_dir, holder or _NOBODY)
                looked = True  # let go while this process looked for its owner: one more attempt
                continue
            time.sleep(poll_s)
        # not fsynced: the record is advice to whoever finds the run taken, and a crash of the machine ends its owner too
        atomic_write(self.run_dir / INFO_FILE, json.dumps(asdict(Owner.me(self.mode)), indent=1), durable=False)
        _HELD[self.run_dir] = self
        if self.mode == "lease":
            threading.Thread(target=self._refresh, daemon=True, name=f"lease {self.run_dir.name}").start()
        return self

    def _take(self) -> bool:
        if self.mode == "lock":
            lock = _kernel_lock(self.run_dir / LOCK_FILE)
            try:
                lock.acquire(timeout=TRY_S, poll_interval=0.05)
            except Timeout:
                return False
            except (OSError, NotImplementedError) as e:
                if _no_locks(e):
                    raise LockingUnavailable(f"{self.run_dir.parent}: this filesystem refuses kernel locks: "
                                             "use ownership.mode=lease") from None
                raise
        else:
            if _live_lease(self.run_dir):  # one attempt's wait (its owner writes its record), not flufl.lock's up to 2 s
                time.sleep(TRY_S)
                return False
            lock = Lease(str(self.run_dir / LEASE_FILE), lifetime=timedelta(seconds=self.lease_s))
            try:
                lock.lock(timeout=timedelta(seconds=TRY_S))
            except TimeOutError:
                return False
        self._lock = lock
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(self.lease_s / 5):
            try:
                self._lock.refresh()  # NotLockedError: it lapsed and another process took it over
            except (NotLockedError, OSError, AttributeError):
                self.lost = not self._stop.is_set()
                return

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is None:
            return
        self._stop.set()
        _HELD.pop(self.run_dir, None)
        if not self.lost:
            info = _read_info(self.run_dir)
            if info is not None and (info.host, info.pid) == (socket.gethostname(), os.getpid()):
                (self.run_dir / INFO_FILE).unlink(missing_ok=True)
            try:
                lock.release() if isinstance(lock, FileLock) else lock.unlock(unconditionally=True)
            except OSError:
                pass  # the process exits soon: the kernel drops the lock, a lease lapses


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


def claim(run_dir: Path | str, mode: str = "auto", *, wait_s: float = 0.0, poll_s: float = 0.5, lease_s: float = LEASE_S) -> RunLock:
    """Own `run_dir` now (or within `wait_s`) or raise `Owned`; release the lock, or use it with `with`."""
    return RunLock(run_dir, mode, lease_s).acquire(wait_s=wait_s, poll_s=poll_s)
