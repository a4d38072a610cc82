"""Who trains a run (or a pack of runs) right now: one owner per run directory at a time.

The owner holds an exclusive POSIX record lock (fcntl F_SETLK) on `<run>/.owner.lock`. The kernel
drops it when the process dies, SIGKILL included, so a lock whose owner is gone never blocks
anyone; and POSIX locks are the kind NFS forwards to the server (NLM on NFSv3, the protocol's own
on NFSv4), so the lock holds between nodes. Beside it, `<run>/.owner.json` says who the owner is
(host, pid, since when, SLURM job), written atomically, so that whoever finds the run taken can say
by whom.

Where the filesystem refuses locks (ENOLCK, EOPNOTSUPP, ENOSYS, EINVAL), or with `mode="lease"`,
`.owner.json` is a lease instead: it carries an expiry that a daemon thread of the owner pushes
forward every `renew_s` seconds, and a lease past its expiry belongs to nobody.

Every taker, lock or lease, writes its `.owner.json` with a unique token (a lock taker once it
holds the lock), waits `settle_s` and reads the file back: only the process whose token is there
owns the run. Two takers who both saw the run free both write; the later rename wins and the other
sees the winner's token, provided no taker takes longer than `settle_s` between its look and its
write. A pack's members settle together, so a pack waits `settle_s` once.

Mixed modes (one process on a sweep locking, another holding leases) must not give a run two
owners, yet a lease taker may not see a lock: where its mount refuses locks it cannot test one, and
a node-local lock (Lustre `localflock`, NFS `local_lock`) taken on another host looks free from
here. So a lock owner's `.owner.json` carries an expiry too, renewed like a lease's, and:

- a lock seen free proves a lock owner's record stale only to a process on the owner's host, which
  sees every lock taken there, or to one that relies on locks (a lock taker, whose mode says its
  locks reach every node; `owner()` asked by a reader). A lease taker on another host, and anyone
  who cannot test the lock, counts an unexpired lock record as the owner unless its process is
  gone from this host. We chose an expiry over never taking a lock record over unseen, which would
  leave a run whose owner died on another host to nobody for good: here a lock owner killed on
  another host holds lease takers off until its record lapses, as a lease does, and lock takers
  not at all;
- a lock taker backs off before an unexpired lease, a claim still settling included, and the
  read-back settles a lock taker racing a lease taker as it settles two lease takers, whether or
  not either can see the other's lock. A lease taker that sees the lock held after its delay
  backs off as well (taking its claim back), for a lock taker that read back before the claim
  landed (a `settle_s` shorter than the lease taker's, or an older actbench);
- a lock owner puts its record back when it finds it gone, and gives the run up (`lost`) when it
  finds another's settled claim there, written only over a record that had lapsed unrenewed, or
  by a lock taker on a node-local lock: two such takers can both lock, which is why such mounts
  take the lease mode.

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
    expires: float | None = None  # when the record lapses unless renewed, seconds since the epoch
    settle_until: float | None = None  # a new claim may still lose to a concurrent one until then

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


_NOBODY = Owner(host=None, pid=None, since=None)  # an owner nothing is known of


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


def _identity(mode: str, token: str, expires: float, settle_until: float | None = None) -> Owner:
    return Owner(
        host=socket.gethostname(),
        pid=os.getpid(),
        since=iso(time.time()),
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        mode=mode,
        token=token,
        expires=expires,
        settle_until=settle_until,
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


def _gone(pid: int | None) -> bool:
    """Whether no process of this host has that pid."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # EPERM: it exists, as another user's
    return False


def _live(info: Owner | None, held: bool | None, trust_locks: bool) -> bool:
    """Whether the record `info` names a live owner, its lock tested here as `held` (None: cannot be
    tested). See the module docstring for who may take a lock seen free as proof."""
    if info is None or info.expires is None or info.expires <= time.time():
        return False  # records without an expiry come from lock owners of older versions
    if info.mode == "lease" or held:
        return True
    here = info.host == socket.gethostname()
    if held is False and (here or trust_locks):
        return False
    return not (here and _gone(info.pid))


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


def owner(run_dir: Path | str, *, trust_locks: bool = True) -> Owner | None:
    """Who owns the run now: a live lock holder, an unexpired lease, or an unexpired lock owner's
    record where its lock cannot be seen; None if nobody does (stale `.owner.json` files from dead
    processes included). `trust_locks=False` is how a lease taker asks: a lock seen free here then
    clears only a record written on this host, since another host's lock may be node-local."""
    run_dir = Path(run_dir)
    deadline = time.monotonic() + 10.0
    while True:
        with _held_guard:
            mine = _held_here(run_dir)
            if mine is not None:
                return mine.identity
            held, pid = _lock_test(run_dir / LOCK_FILE)
        if held:
            return _holder(run_dir, pid)
        info = _read_info(run_dir)
        if not _live(info, held, trust_locks):
            return None
        # a claim written a moment ago may yet lose to one written beside it: name the one that stays
        wait = (info.settle_until or 0.0) - time.time()
        if wait <= 0 or time.monotonic() >= deadline:
            return info
        time.sleep(min(wait, 1.0) + 0.02)


# ---------------------------------------------------------------- claiming


class RunLock:
    """Exclusive ownership of one run directory; a context manager.

    `mode`: "auto" (a lock, a lease where the filesystem refuses locks), "lock" or "lease".
    `acquire()` raises `Owned` (carrying the owner) when a live process has the run; with `wait_s`
    it first waits that long for the owner to go. Either mode's record is renewed every `renew_s`
    and lapses `lease_s` after its last renewal; a claim is read back after `settle_s`. `on_lost` is
    called (from the renewing thread) if the run is found taken over, which only happens to an
    owner that failed to renew its record in time.
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
        self._settled_at: float | None = None  # (monotonic) while a claim written awaits its read-back
        self._written = False  # whether .owner.json got our record (a lock owns the run without it)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.mode is not None and not self.lost and self._settled_at is None

    def __enter__(self) -> RunLock:
        if self.mode is None:  # `with claim(...)` enters a lock already taken
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r}, mode={self.mode or self.requested_mode!r}, held={self.held})"

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.5) -> RunLock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._begin()
                self._settle()
                return self
            except Owned:
                if time.monotonic() + poll_s > deadline:
                    raise
                time.sleep(poll_s)

    def _begin(self) -> None:
        """Take the lock or write the lease claim; `_settle` then decides whether it is ours."""
        if self.mode is not None:
            raise RuntimeError(f"{self.run_dir} is already claimed by this lock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.requested_mode != "lease":
            try:
                self._take_lock()
                return
            except LockingUnavailable:
                if self.requested_mode == "lock":
                    raise
        self._take_lease()

    def _record(self, since: str | None = None) -> Owner:
        """Our `.owner.json`, its expiry `lease_s` from now."""
        me = _identity(self.mode, self.identity.token, time.time() + self.lease_s, self.identity.settle_until)
        return me if since is None else Owner(**{**asdict(me), "since": since})

    def _write_claim(self) -> None:
        self.identity = _identity(self.mode, uuid.uuid4().hex, time.time() + self.lease_s, time.time() + self.settle_s)
        self._settled_at = time.monotonic() + self.settle_s
        _renewing.add(self)  # from here on, an exit gives the claim back
        atomic_write(self.run_dir / INFO_FILE, self.identity.to_json())
        self._written = True

    def _settle(self) -> None:
        """After the settle delay: ours if `.owner.json` still has our token, else let go and raise
        `Owned`."""
        time.sleep(max(0.0, self._settled_at - time.monotonic()))
        now = _read_info(self.run_dir)
        if self._written and now is None and self.mode == "lock":
            # removed, not replaced: a lease taker saw our lock and took back its claim, which had
            # replaced our record; put it back for those who cannot see the lock
            try:
                atomic_write(self.run_dir / INFO_FILE, self.identity.to_json())
            except OSError:
                self._written = False  # the renewals try again
        elif self._written and (now is None or now.token != self.identity.token):
            self.release()
            raise Owned(self.run_dir, owner(self.run_dir) or now or _NOBODY)
        if self.mode == "lease":
            # where locks are visible, a lock taker may have locked since our look: it goes first
            with _held_guard:
                held = _held_here(self.run_dir) is not None or _lock_test(self.run_dir / LOCK_FILE)[0]
            if held:
                self.release()  # removes our claim, which replaced the lock owner's record
                raise Owned(self.run_dir, owner(self.run_dir) or _NOBODY)
        self._settled_at = None
        self.lost = False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"owner {self.run_dir.name}", daemon=True)
        self._renewer.start()

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
                    self.identity = _identity("lock", uuid.uuid4().hex, time.time() + self.lease_s)
                    _held[self._key] = self
                    break
            holder = owner(self.run_dir)
            if holder is not None:
                raise Owned(self.run_dir, holder)
        else:
            raise Owned(self.run_dir, owner(self.run_dir) or _NOBODY)
        info = _read_info(self.run_dir)
        if _live_lease(info):  # a process in lease mode has it, or is settling its claim
            self.release()
            raise Owned(self.run_dir, info)
        try:
            self._write_claim()
        except OSError:
            pass  # the lock owns the run; without the file, others see only its pid, and it is not read back

    # ------------------------------------------------------------ the lease

    def _take_lease(self) -> None:
        holder = owner(self.run_dir, trust_locks=False)
        if holder is not None:
            raise Owned(self.run_dir, holder)
        self.mode = "lease"
        try:
            self._write_claim()
        except BaseException:
            self.release()
            raise

    # ------------------------------------------------------------ renewing

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._renew()
            except OSError:
                continue  # a full disk or a hiccup of the server: try again next time, the record has slack
            if self.lost:
                return

    def _renew(self) -> None:
        now = _read_info(self.run_dir)
        mine = now is not None and now.token == self.identity.token
        if self.mode == "lock" and not mine:
            if now is None or not self._written:
                # gone (a lease taker that saw our lock removed its claim, which had replaced ours)
                # or never written: put it back for those who cannot see the lock
                mine = True
            elif (now.settle_until or 0.0) > time.time():
                return  # a claim still settling: it backs off if it sees our lock; look again next time
        if mine:
            me = self._record(since=self.identity.since)
            atomic_write(self.run_dir / INFO_FILE, me.to_json())
            self.identity, self._written = me, True
            return
        if now is None and self.identity.expires > time.time():
            return  # unreadable for a moment (being replaced, or the server is slow): ours still
        self.lost = True
        taker = f"by {now}" if now is not None else "(its file is gone)"
        what = "lease" if self.mode == "lease" else "lock's record"
        print(f"{self.run_dir.name}: lost its {what}, taken over {taker}", file=sys.stderr, flush=True)
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
        _renewing.discard(self)
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
        self.mode = self._settled_at = None
        self._written = False


# the claims this process holds: given back at a normal exit (an uncaught error, sys.exit), so that
# the next owner need not wait for a record's expiry (a lock owner's too, for those who cannot see
# the lock the kernel drops)
_renewing: set[RunLock] = set()


@atexit.register
def _release_all() -> None:
    for lock in list(_renewing):
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - at exit, a record not given back just expires
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
def claim_all(run_dirs: Iterable[Path | str], mode: str = "auto", *, wait_s: float = 0.0, poll_s: float = 0.5,
              **kwargs) -> Iterator[Claims]:
    """Claim every run directory of a pack, each on its own; train the claimed ones and leave the
    others to their owners. Everything claimed is released on leaving the block. The claims settle
    together (one settle delay for the pack); with `wait_s`, a member found owned is then waited
    for as `claim` waits."""
    claims = Claims()
    try:
        for d in map(Path, run_dirs):
            lock = RunLock(d, mode, **kwargs)
            claims.locks[d] = lock  # released with the others if anything fails
            try:
                lock._begin()
            except Owned as e:
                del claims.locks[d]
                claims.owned[d] = e.owner
        for d, lock in list(claims.locks.items()):
            try:
                lock._settle()
                claims.claimed.append(d)
            except Owned as e:
                del claims.locks[d]
                claims.owned[d] = e.owner
        if wait_s > 0:
            for d in list(claims.owned):
                try:
                    claims.locks[d] = claim(d, mode, wait_s=wait_s, poll_s=poll_s, **kwargs)
                    claims.claimed.append(d)
                    del claims.owned[d]
                except Owned as e:
                    claims.owned[d] = e.owner
        yield claims
    finally:
        claims.release()
