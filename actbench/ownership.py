"""Who trains a run (or a pack of runs) right now: one owner per run directory at a time.

The owner holds an exclusive POSIX record lock (fcntl F_SETLK) on `<run>/.owner.lock`. The kernel
drops it when the process dies, SIGKILL included, so a lock whose owner is gone never blocks
anyone; and POSIX locks are the kind NFS forwards to the server (NLM on NFSv3, the protocol's own
on NFSv4), so the lock holds between nodes. Beside it, `<run>/.owner.json` says who the owner is
(host, pid, since when, SLURM job), written atomically, so that whoever finds the run taken can say
by whom.

Where the filesystem refuses locks (ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL), or with `mode="lease"`,
`.owner.json` is a lease instead: it carries an expiry that a daemon thread of the owner pushes
forward every `renew_s` seconds, and a lease past its expiry belongs to nobody. Taking one over is
settled by writing a claim with a unique token, waiting a moment and reading it back: only the
process whose token is there owns the run.

POSIX locks belong to the process and are dropped when the process closes ANY descriptor of the
file, so this module keeps one open descriptor per lock for the lock's lifetime, and nothing else
may open `.owner.lock`; `owner()` asked from the owning process answers without opening it.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from actbench.errors import UserError
from actbench.files import atomic_write

LOCK_FILE = ".owner.lock"
INFO_FILE = ".owner.json"
MODES = ("auto", "lock", "lease")
LEASE_S = 300.0
RENEW_S = 30.0
SETTLE_S = 1.0
INTERRUPTED = "its process is gone; the same command resumes it"

# what a filesystem answers when it cannot lock at all (EINVAL: lockf on some FUSE and overlay setups)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
_BUSY = {errno.EACCES, errno.EAGAIN}
_FLOCK = "hhqqi"  # Linux's struct flock: l_type, l_whence, l_start, l_len, l_pid (natively aligned)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Owner:
    """Who owns a run: enough to find the process (host, pid, SLURM job) and say since when."""

    host: str | None
    pid: int | None
    since: str | None  # ISO-8601, UTC
    slurm_job_id: str | None = None
    mode: str = "lock"  # "lock" or "lease"
    token: str = ""
    expires: float | None = None  # a lease's end, seconds since the epoch
    settle_until: float | None = None  # a new lease claim may still lose to a concurrent one until then

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid else "a process"
        who += f" on host {self.host}" if self.host else " on another host"
        if self.slurm_job_id:
            who += f" (SLURM job {self.slurm_job_id})"
        if self.since:
            who += f" since {self.since}"
        return who

    @property
    def same_job(self) -> bool:
        """The owner is an earlier attempt of this SLURM job (a requeued job whose first attempt is
        still being stopped): worth waiting for."""
        return bool(self.slurm_job_id) and self.slurm_job_id == os.environ.get("SLURM_JOB_ID")

    def to_json(self) -> str:
        d = asdict(self)
        if self.expires is not None:
            d["expires_at"] = iso(self.expires)  # for people reading the file
        return json.dumps(d, indent=1)


def busy_line(name: str, owner: Owner) -> str:
    """The line a process prints when it finds a run owned by another and leaves it alone."""
    return f"{name}: trained by {owner}; skipped"


class Owned(Exception):
    """The run is owned by another live process (or by an unexpired lease)."""

    def __init__(self, run_dir: Path, owner: Owner):
        self.run_dir, self.owner = Path(run_dir), owner
        super().__init__(f"{self.run_dir.name}: trained by {owner}")


class LockingUnavailable(UserError):
    """`mode="lock"` on a filesystem that refuses locks."""


def _identity(mode: str, token: str, expires: float | None = None) -> Owner:
    return Owner(
        host=socket.gethostname(),
        pid=os.getpid(),
        since=iso(time.time()),
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        mode=mode,
        token=token,
        expires=expires,
    )


def _number(v) -> float | None:
    return None if v is None else float(v)


def _read_info(run_dir: Path) -> Owner | None:
    try:
        d = json.loads((run_dir / INFO_FILE).read_text())
        return Owner(
            host=d.get("host"),
            pid=None if d.get("pid") is None else int(d["pid"]),
            since=d.get("since"),
            slurm_job_id=d.get("slurm_job_id"),
            mode=d.get("mode", "lock"),
            token=d.get("token", ""),
            expires=_number(d.get("expires")),
            settle_until=_number(d.get("settle_until")),
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _live_lease(info: Owner | None) -> bool:
    return info is not None and info.mode == "lease" and info.expires is not None and info.expires > time.time()


# ---------------------------------------------------------------- the locks this process holds

# (st_dev, st_ino) of a lock file -> the RunLock holding it. Also serialises every open of a lock
# file in this process, so that no thread closes a descriptor while another holds the lock.
_held: dict[tuple[int, int], RunLock] = {}
_held_guard = threading.RLock()


def _key(lock_path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(lock_path)  # stat opens nothing, so it cannot drop a lock
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _held_here(run_dir: Path) -> RunLock | None:
    with _held_guard:
        key = _key(run_dir / LOCK_FILE)
        return _held.get(key) if key else None


def _share(fd: int, st: os.stat_result, run_dir: Path) -> None:
    """Let whoever may write the run directory take its lock too (a sweep directory shared by a
    group): a lock needs the file open for writing, and the umask usually leaves it writable by its
    creator alone."""
    try:
        wanted = st.st_mode | (os.stat(run_dir).st_mode & 0o022)
        if st.st_uid == os.geteuid() and wanted != st.st_mode:
            os.fchmod(fd, wanted & 0o7777)
    except OSError:
        pass


def _lock_test(lock_path: Path) -> tuple[bool | None, int]:
    """(whether another process holds the lock, its pid as this host sees it, 0 if unknown);
    None for the first where the lock cannot be tested here. Takes no lock: a probe that locked
    and unlocked would make a claimer racing with it give up on a run nobody trains."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, 0
    except OSError:
        return None, 0
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query.ljust(64, b"\0"))
        l_type, _, _, _, l_pid = struct.unpack(_FLOCK, answer[: len(query)])
        return l_type != fcntl.F_UNLCK, max(l_pid, 0)
    except OSError:
        return None, 0
    finally:
        os.close(fd)


def _holder(run_dir: Path, pid: int) -> Owner:
    """The identity of a live lock holder. Right after taking the lock it may not have written
    `.owner.json` yet (what is there names the previous owner, or nobody): wait a moment for it."""
    host = socket.gethostname()
    deadline = time.monotonic() + 1.0
    while True:
        info = _read_info(run_dir)
        if info is not None and info.mode == "lock" and (info.host != host or not pid or info.pid == pid):
            return info
        if time.monotonic() > deadline:
            if _live_lease(info):
                return info  # a lock holder backing off before a live lease
            return info if info is not None and info.mode == "lock" else Owner(host=None, pid=pid or None, since=None)
        time.sleep(0.05)


def owner(run_dir: Path | str) -> Owner | None:
    """Who owns the run now: a live lock holder, or an unexpired lease; None if nobody does (stale
    `.owner.json` files from dead processes included)."""
    run_dir = Path(run_dir)
    with _held_guard:
        mine = _held_here(run_dir)
        if mine is not None:
            return mine.identity
        held, pid = _lock_test(run_dir / LOCK_FILE)
    if held:
        return _holder(run_dir, pid)
    info = _read_info(run_dir)
    # a lease claimed a moment ago may yet lose to a claim written beside it: name the one that stays
    deadline = time.monotonic() + 10.0
    while _live_lease(info) and (info.settle_until or 0) > time.time() and time.monotonic() < deadline:
        time.sleep(min(info.settle_until - time.time(), 1.0) + 0.02)
        info = _read_info(run_dir)
    return info if _live_lease(info) else None


def live_status(run_dir: Path | str, status: str | None) -> str | None:
    """A metrics.json status as it stands now: 'running' while nobody owns the run is 'interrupted'
    (say `INTERRUPTED` beside it: its process is gone; the same command resumes it)."""
    if status == "running" and owner(run_dir) is None:
        return "interrupted"
    return status


# ---------------------------------------------------------------- claiming


class RunLock:
    """Exclusive ownership of one run directory; a context manager.

    `mode`: "auto" (a lock, a lease where the filesystem refuses locks), "lock" or "lease".
    `acquire()` raises `Owned` (carrying the owner) when a live process has the run; with `wait_s`
    it first waits that long for the owner to go. `on_lost` is called (from the renewing thread)
    if a lease is found taken over, which only happens to an owner that failed to renew in time.
    """

    def __init__(
        self,
        run_dir: Path | str,
        mode: str = "auto",
        *,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        settle_s: float = SETTLE_S,
        on_lost: Callable[[RunLock], None] | None = None,
    ):
        if mode not in MODES:
            raise UserError(f"ownership mode {mode!r}: expected one of {', '.join(MODES)}")
        if not lease_s > 2 * renew_s > 0:
            raise UserError(f"a lease of {lease_s} s renewed every {renew_s} s: it must outlast two renewals")
        self.run_dir = Path(run_dir)
        self.requested_mode = mode
        self.lease_s, self.renew_s, self.settle_s = float(lease_s), float(renew_s), float(settle_s)
        self.on_lost = on_lost
        self.mode: str | None = None  # what it holds: "lock" or "lease"
        self.identity: Owner | None = None
        self.lost = False
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.mode is not None and not self.lost

    def __enter__(self) -> RunLock:
        if self.mode is None:  # `with claim(...)` enters a lock already taken
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r}, mode={self.mode or self.requested_mode!r}, held={self.held})"

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> RunLock:
        if self.mode is not None:
            raise RuntimeError(f"{self.run_dir} is already claimed by this lock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._acquire_once()
                return self
            except Owned:
                if time.monotonic() + poll_s > deadline:
                    raise
                time.sleep(poll_s)

    def _acquire_once(self) -> None:
        if self.requested_mode != "lease":
            try:
                self._take_lock()
                return
            except LockingUnavailable:
                if self.requested_mode == "lock":
                    raise
        self._take_lease()

    # ------------------------------------------------------------ the lock

    def _take_lock(self) -> None:
        lock_path = self.run_dir / LOCK_FILE
        for _ in range(3):  # the holder may let go between our attempt and our look at it
            with _held_guard:
                mine = _held_here(self.run_dir)
                if mine is not None:
                    # a second descriptor of this file, closed later, would drop the first's lock
                    raise Owned(self.run_dir, mine.identity)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    os.close(fd)  # we hold no lock on this file, so closing drops nothing
                    if e.errno in _NO_LOCKS:
                        msg = f"{lock_path}: this filesystem refuses locks ({e.strerror}); use the lease mode"
                        raise LockingUnavailable(msg) from None
                    if e.errno not in _BUSY:
                        raise
                else:
                    st = os.fstat(fd)
                    _share(fd, st, self.run_dir)
                    self._fd, self._key = fd, (st.st_dev, st.st_ino)
                    self.mode = "lock"
                    self.identity = _identity("lock", uuid.uuid4().hex)
                    _held[self._key] = self
                    break
            holder = owner(self.run_dir)
            if holder is not None:
                raise Owned(self.run_dir, holder)
        else:
            raise Owned(self.run_dir, owner(self.run_dir) or Owner(host=None, pid=None, since=None))
        info = _read_info(self.run_dir)
        if _live_lease(info):  # a process in lease mode has it (mixed modes on one sweep)
            self.release()
            raise Owned(self.run_dir, info)
        try:
            atomic_write(self.run_dir / INFO_FILE, self.identity.to_json())
        except OSError:
            pass  # the lock is what owns the run; without the file, others see only its pid

    # ------------------------------------------------------------ the lease

    def _lease_identity(self, token: str, since: str | None = None) -> Owner:
        me = _identity("lease", token, expires=time.time() + self.lease_s)
        return me if since is None else Owner(**{**asdict(me), "since": since, "settle_until": self.identity.settle_until})

    def _take_lease(self) -> None:
        holder = owner(self.run_dir)
        if holder is not None:
            raise Owned(self.run_dir, holder)
        me = Owner(**{**asdict(self._lease_identity(uuid.uuid4().hex)), "settle_until": time.time() + self.settle_s})
        atomic_write(self.run_dir / INFO_FILE, me.to_json())
        # two takers who both saw the lease free both write; the later rename wins, and each must
        # see the winner's token after a delay longer than the gap between a read and a write
        time.sleep(self.settle_s)
        now = _read_info(self.run_dir)
        if now is None or now.token != me.token:
            raise Owned(self.run_dir, owner(self.run_dir) or now or Owner(host=None, pid=None, since=None))
        self.mode, self.identity, self.lost = "lease", me, False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.run_dir.name}", daemon=True)
        self._renewer.start()
        _leases.add(self)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._renew()
            except OSError:
                continue  # a full disk or a hiccup of the server: try again next time, the lease has slack
            if self.lost:
                return

    def _renew(self) -> None:
        now = _read_info(self.run_dir)
        if now is not None and now.token == self.identity.token:
            me = self._lease_identity(self.identity.token, since=self.identity.since)
            atomic_write(self.run_dir / INFO_FILE, me.to_json())
            self.identity = me
            return
        if now is None and self.identity.expires > time.time():
            return  # unreadable for a moment (being replaced, or the server is slow): ours still
        self.lost = True
        taker = f"by {now}" if now is not None else "(its file is gone)"
        print(f"{self.run_dir.name}: lost its lease, taken over {taker}", file=sys.stderr, flush=True)
        if self.on_lost is not None:
            self.on_lost(self)

    # ------------------------------------------------------------ letting go

    def release(self) -> None:
        """Give the run up: remove `.owner.json` if it is ours, then let go of the lock or lease."""
        if self.mode is None:
            return
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        self._renewer = None
        _leases.discard(self)
        info = _read_info(self.run_dir)
        if info is not None and self.identity is not None and info.token == self.identity.token:
            try:
                # before unlocking: once the lock is free, the file may already be the next owner's
                (self.run_dir / INFO_FILE).unlink()
            except OSError:
                pass
        if self._fd is not None:
            with _held_guard:
                _held.pop(self._key, None)
                os.close(self._fd)  # drops the lock
            self._fd = self._key = None
        self.mode = None


# leases this process holds: given back at a normal exit (an uncaught error, sys.exit), where a
# lock is dropped by the kernel anyway, so that the next owner need not wait for the expiry
_leases: set[RunLock] = set()


@atexit.register
def _release_leases() -> None:
    for lock in list(_leases):
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - at exit, a lease not given back just expires
            pass


def claim(run_dir: Path | str, mode: str = "auto", *, wait_s: float = 0.0, poll_s: float = 0.5, **kwargs) -> RunLock:
    """Own `run_dir` now (or within `wait_s`) or raise `Owned`; release the returned lock, or use it
    with `with`. Other keywords go to `RunLock`."""
    return RunLock(run_dir, mode, **kwargs).acquire(wait_s=wait_s, poll_s=poll_s)


@dataclass
class Claims:
    """The outcome of claiming a pack: the run directories this process now owns, and the owners of
    the others."""

    claimed: list[Path] = field(default_factory=list)
    owned: dict[Path, Owner] = field(default_factory=dict)
    locks: dict[Path, RunLock] = field(default_factory=dict)

    def release(self) -> None:
        for lock in reversed(list(self.locks.values())):
            lock.release()
        self.locks.clear()


@contextmanager
def claim_all(run_dirs: Iterable[Path | str], mode: str = "auto", **kwargs) -> Iterator[Claims]:
    """Claim every run directory of a pack, each on its own; train the claimed ones and leave the
    others to their owners. Everything claimed is released on leaving the block."""
    claims = Claims()
    try:
        for d in map(Path, run_dirs):
            try:
                claims.locks[d] = claim(d, mode, **kwargs)
                claims.claimed.append(d)
            except Owned as e:
                claims.owned[d] = e.owner
        yield claims
    finally:
        claims.release()
