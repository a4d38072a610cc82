"""actbench.ownership: one owner per run between real processes; a dead owner blocks nobody; a
lease that stops being renewed expires and is taken over, a fresh one is not."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from actbench import ownership
from actbench.errors import UserError
from actbench.files import atomic_write
from actbench.ownership import (
    INFO_FILE,
    LOCK_FILE,
    LockingUnavailable,
    Owned,
    Owner,
    busy_line,
    claim,
    claim_all,
    owner,
)

ROOT = Path(__file__).resolve().parent.parent
FAST_LEASE = {"lease_s": 1.5, "renew_s": 0.3, "settle_s": 0.2}

# a contender: says it is ready, claims on "go", reports, and holds until told to let go (or killed)
CONTENDER = r"""
import json, sys
from actbench.ownership import Owned, claim
run_dir, mode, lease_s, renew_s, settle_s = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
try:
    lock = claim(run_dir, mode, lease_s=lease_s, renew_s=renew_s, settle_s=settle_s)
except Owned as e:
    print(json.dumps({"claimed": False, "host": e.owner.host, "pid": e.owner.pid, "since": e.owner.since}), flush=True)
    sys.exit(0)
print(json.dumps({"claimed": True, "mode": lock.mode}), flush=True)
sys.stdin.readline()
lock.release()
print(json.dumps({"released": True}), flush=True)
"""


class Contender:
    def __init__(self, run_dir, mode="lock", lease_s=300.0, renew_s=30.0, settle_s=0.2):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(run_dir), mode, str(lease_s), str(renew_s), str(settle_s)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == {"ready": True}

    @property
    def pid(self):
        return self.proc.pid

    def read(self):
        line = self.proc.stdout.readline()
        assert line, f"contender {self.pid} ended early (rc {self.proc.wait()})"
        return json.loads(line)

    def send(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def claim(self):
        self.send()
        return self.read()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def contenders():
    started = []

    def start(*args, **kwargs):
        c = Contender(*args, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def until(condition, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.mark.parametrize("mode", ["lock", "lease", "auto"])
def test_processes_claiming_at_the_same_moment_get_one_owner(tmp_path, contenders, mode):
    run_dir = tmp_path / "activation=relu,seed=0"
    # the settle delay must outlast the gap between a taker's look and its write, even on a busy machine
    procs = [contenders(run_dir, mode, **{**FAST_LEASE, "settle_s": 0.5}) for _ in range(3)]
    for c in procs:  # all are waiting on stdin already: they try within a millisecond
        c.send()
    answers = [c.read() for c in procs]
    winners = [c for c, a in zip(procs, answers, strict=True) if a["claimed"]]
    assert len(winners) == 1, answers
    (winner,) = winners
    for a in answers:
        if not a["claimed"]:
            assert (a["host"], a["pid"]) == (socket.gethostname(), winner.pid)
            datetime.fromisoformat(a["since"].replace("Z", "+00:00"))
    assert owner(run_dir).pid == winner.pid
    winner.send()
    assert winner.read() == {"released": True}
    assert owner(run_dir) is None
    assert not (run_dir / INFO_FILE).exists()


def test_a_killed_owner_blocks_nobody(tmp_path, contenders):
    run_dir = tmp_path / "run"
    first = contenders(run_dir)
    assert first.claim()["claimed"]
    assert owner(run_dir).pid == first.pid  # a run that says running is running
    first.kill()
    # its .owner.json is left behind, naming a dead process; the kernel has dropped the lock
    assert json.loads((run_dir / INFO_FILE).read_text())["pid"] == first.pid
    assert owner(run_dir) is None  # one that says running is interrupted (results.load_run)
    second = contenders(run_dir)
    assert second.claim() == {"claimed": True, "mode": "lock"}
    assert owner(run_dir).pid == second.pid


def test_the_owning_process_asking_or_claiming_again_keeps_its_lock(tmp_path, contenders):
    run_dir = tmp_path / "run"
    with claim(run_dir, "lock") as lock:
        assert lock.mode == "lock" and lock.held
        for _ in range(3):  # would open and close the lock file if it did not know it holds it
            assert owner(run_dir).pid == os.getpid()
        with pytest.raises(Owned) as again:
            claim(run_dir, "lock")
        assert again.value.owner.pid == os.getpid()
        other = contenders(run_dir)
        answer = other.claim()
        assert (answer["claimed"], answer["pid"]) == (False, os.getpid())
    assert owner(run_dir) is None
    assert contenders(run_dir).claim()["claimed"]


def test_owned_names_host_pid_and_since():
    o = Owner(host="node7", pid=1234, since="2026-12-01T10:00:00Z", slurm_job_id="998")
    assert busy_line("activation=relu,seed=0", o) == (
        "activation=relu,seed=0: trained by pid 1234 on host node7 (SLURM job 998) since 2026-12-01T10:00:00Z; skipped"
    )
    assert str(Owned(Path("runs/blog/activation=relu,seed=0"), o)) == "activation=relu,seed=0: trained by " + str(o)


def test_nobody_owns_a_run_with_only_stale_files(tmp_path):
    run_dir = tmp_path / "run"
    assert owner(run_dir) is None  # not even created
    run_dir.mkdir()
    (run_dir / LOCK_FILE).touch()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True)
    stale_lock = Owner(host=socket.gethostname(), pid=int(dead.stdout), since="2026-01-01T00:00:00Z", mode="lock", token="t1")
    atomic_write(run_dir / INFO_FILE, stale_lock.to_json())
    assert owner(run_dir) is None
    expired = Owner(host="node7", pid=4242, since="2026-01-01T00:00:00Z", mode="lease", token="t2", expires=time.time() - 1)
    atomic_write(run_dir / INFO_FILE, expired.to_json())
    assert owner(run_dir) is None
    (run_dir / INFO_FILE).write_text("{half a fi")
    assert owner(run_dir) is None
    with claim(run_dir, "auto", **FAST_LEASE) as lock:
        assert lock.mode == "lock"


def test_a_fresh_lease_is_not_taken_over_and_an_expired_one_is(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    theirs = Owner(host="node7", pid=4242, since="2026-12-01T10:00:00Z", mode="lease", token="theirs", expires=time.time() + 60)
    atomic_write(run_dir / INFO_FILE, theirs.to_json())
    assert owner(run_dir) == theirs
    for mode in ("lease", "auto", "lock"):  # a lock taker backs off before a live lease too
        with pytest.raises(Owned) as caught:
            claim(run_dir, mode, **FAST_LEASE)
        assert caught.value.owner == theirs
        assert "pid 4242 on host node7 since 2026-12-01T10:00:00Z" in str(caught.value)
    assert ownership._lock_test(run_dir / LOCK_FILE) == (False, 0)  # and let go of the lock
    atomic_write(run_dir / INFO_FILE, Owner(**{**theirs.__dict__, "expires": time.time() - 0.1}).to_json())
    with claim(run_dir, "lease", **FAST_LEASE) as lock:
        assert lock.mode == "lease"
        assert owner(run_dir).token == lock.identity.token
    assert not (run_dir / INFO_FILE).exists()


@pytest.mark.slow
def test_a_renewed_lease_holds_and_a_dead_owners_lease_expires(tmp_path, contenders):
    run_dir = tmp_path / "run"
    holder = contenders(run_dir, "lease", **FAST_LEASE)
    assert holder.claim() == {"claimed": True, "mode": "lease"}
    first_expiry = owner(run_dir).expires
    t_end = time.monotonic() + 2 * FAST_LEASE["lease_s"]
    while time.monotonic() < t_end:  # past its first expiry, renewals keep it
        current = owner(run_dir)
        assert current is not None and current.pid == holder.pid
        time.sleep(0.1)
    assert owner(run_dir).expires > first_expiry + FAST_LEASE["lease_s"]
    with pytest.raises(Owned):
        claim(run_dir, "lease", **FAST_LEASE)

    holder.kill()
    left = owner(run_dir)
    assert left is not None and left.pid == holder.pid  # dead, but its lease is fresh: not taken over
    with pytest.raises(Owned):
        claim(run_dir, "lease", **FAST_LEASE)
    assert until(lambda: owner(run_dir) is None, timeout=FAST_LEASE["lease_s"] + 1)
    assert time.time() >= left.expires
    taker = contenders(run_dir, "lease", **FAST_LEASE)
    assert taker.claim() == {"claimed": True, "mode": "lease"}
    assert owner(run_dir).pid == taker.pid


def test_an_owner_whose_lease_was_taken_over_notices(tmp_path):
    run_dir = tmp_path / "run"
    lost = threading.Event()
    lock = claim(run_dir, "lease", lease_s=0.5, renew_s=0.05, settle_s=0.01, on_lost=lambda _: lost.set())
    try:
        taker = Owner(host="node7", pid=4242, since="2026-12-01T10:00:00Z", mode="lease", token="taker", expires=time.time() + 60)
        atomic_write(run_dir / INFO_FILE, taker.to_json())
        assert lost.wait(2)
        assert not lock.held
    finally:
        lock.release()
    assert owner(run_dir) == taker  # releasing removes only its own lease


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL])
def test_where_locks_are_refused_auto_takes_a_lease(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ownership.fcntl, "lockf", refuse)
    run_dir = tmp_path / "run"
    with pytest.raises(LockingUnavailable) as caught:
        claim(run_dir, "lock")
    assert "\n" not in str(caught.value)
    with claim(run_dir, "auto", **FAST_LEASE) as lock:
        assert lock.mode == "lease"
        assert json.loads((run_dir / INFO_FILE).read_text())["mode"] == "lease"
        assert owner(run_dir).pid == os.getpid()
        with pytest.raises(Owned):
            claim(run_dir, "auto", **FAST_LEASE)
    assert owner(run_dir) is None


def test_a_pack_is_claimed_member_by_member(tmp_path, contenders):
    a, b, c = (tmp_path / f"activation=relu,seed={k}" for k in range(3))
    other = contenders(b)
    assert other.claim()["claimed"]
    with claim_all([a, b, c]) as claims:
        assert claims.claimed == [a, c]
        assert list(claims.owned) == [b] and claims.owned[b].pid == other.pid
        assert owner(a).pid == owner(c).pid == os.getpid()
    assert owner(a) is None and owner(c) is None
    assert owner(b).pid == other.pid
    with pytest.raises(RuntimeError), claim_all([a, c]):
        raise RuntimeError("training failed")
    assert owner(a) is None and owner(c) is None


def test_a_claim_can_wait_for_the_owner_to_go(tmp_path, contenders):
    run_dir = tmp_path / "run"
    holder = contenders(run_dir)
    assert holder.claim()["claimed"]
    letting_go = threading.Timer(0.3, holder.send)
    letting_go.start()
    with claim(run_dir, wait_s=5, poll_s=0.05) as lock:
        assert lock.held
    letting_go.join()


def test_bad_settings_are_refused():
    with pytest.raises(UserError):
        ownership.RunLock("x", mode="nfs")
    with pytest.raises(UserError):
        ownership.RunLock("x", mode="lease", lease_s=30, renew_s=30)


# ---------------------------------------------------------------- mixed lock and lease modes


def lock_invisible_here(monkeypatch, view):
    """Make this process see another's lock the way a lease taker on another node may: not at all
    ("untestable": a mount that refuses locks), or seemingly free ("node-local": Lustre localflock
    or NFS local_lock on another host, whose lock this host does not see)."""
    if view == "untestable":
        monkeypatch.setattr(ownership, "_lock_test", lambda path: (None, 0))
    else:
        monkeypatch.setattr(ownership, "_lock_test", lambda path: (False, 0))
        monkeypatch.setattr(ownership.socket, "gethostname", lambda: "node-b")


@pytest.mark.parametrize("view", ["untestable", "node-local"])
def test_a_lease_taker_that_cannot_see_the_lock_leaves_a_live_lock_owner_alone(tmp_path, contenders, monkeypatch, view):
    run_dir = tmp_path / "run"
    holder = contenders(run_dir, "lock", **FAST_LEASE)
    assert holder.claim() == {"claimed": True, "mode": "lock"}
    lock_invisible_here(monkeypatch, view)

    def as_a_lease_taker_sees_it():
        return owner(run_dir, trust_locks=False)

    assert as_a_lease_taker_sees_it().pid == holder.pid
    if view == "untestable":  # nobody who cannot test the lock calls the run free
        assert owner(run_dir).pid == holder.pid
    with pytest.raises(Owned) as caught:
        claim(run_dir, "lease", **FAST_LEASE)
    assert caught.value.owner.pid == holder.pid
    time.sleep(FAST_LEASE["lease_s"] + 0.5)  # past the expiry of its first record: the owner renews it
    with pytest.raises(Owned):
        claim(run_dir, "lease", **FAST_LEASE)
    assert json.loads((run_dir / INFO_FILE).read_text())["pid"] == holder.pid

    holder.kill()  # its record stays behind, unexpired
    if view == "untestable":  # a process of this host that is gone owns nothing
        assert as_a_lease_taker_sees_it() is None
    else:  # from another host the kill cannot be told from a lock this host cannot see: wait for the expiry
        left = as_a_lease_taker_sees_it()
        assert left is not None and left.pid == holder.pid
        assert until(lambda: as_a_lease_taker_sees_it() is None, timeout=FAST_LEASE["lease_s"] + 1)
        assert time.time() >= left.expires
    with claim(run_dir, "lease", **FAST_LEASE) as lock:
        assert lock.mode == "lease"


@pytest.mark.parametrize("lock_settle_s", [0.0, 0.5])
def test_a_lock_taker_between_a_lease_takers_look_and_its_write_leaves_one_owner(tmp_path, contenders, monkeypatch,
                                                                                  lock_settle_s):
    # the lease taker looks (nobody), the lock taker locks and writes its record, then the lease
    # taker writes its claim over that record: whichever settles it, only one of them may own the run
    run_dir = tmp_path / "run"
    locker = contenders(run_dir, "lock", **{**FAST_LEASE, "settle_s": lock_settle_s})
    real_owner, looks = ownership.owner, []

    def look_then_let_the_locker_in(*args, **kwargs):
        who = real_owner(*args, **kwargs)
        if not looks:
            locker.send()
            assert until(lambda: (ownership._read_info(run_dir) or Owner(None, None, None)).pid == locker.pid)
        looks.append(who)
        return who

    monkeypatch.setattr(ownership, "owner", look_then_let_the_locker_in)
    try:
        lock = claim(run_dir, "lease", **{**FAST_LEASE, "settle_s": lock_settle_s + 0.5})
    except Owned as e:
        lock, lost_to = None, e.owner
    answer = locker.read()
    monkeypatch.undo()
    assert looks[0] is None
    if lock_settle_s:  # the lock taker read back the lease taker's claim and let go of its lock
        assert (answer["claimed"], answer["pid"]) == (False, os.getpid())
        assert lock is not None and lock.mode == "lease" and owner(run_dir).token == lock.identity.token
        lock.release()
    else:  # the lock taker owned the run at once; the lease taker saw its lock after the delay
        assert answer == {"claimed": True, "mode": "lock"}
        assert lock is None and lost_to.pid == locker.pid
        # and the lock owner puts back the record the lease claim had replaced
        assert until(lambda: json.loads((run_dir / INFO_FILE).read_text())["pid"] == locker.pid
                     if (run_dir / INFO_FILE).exists() else False)


def test_owner_never_sleeps_a_negative_time_when_its_check_was_long_ago(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    base = time.time()
    clock = [base]

    def slow_clock():  # a process descheduled between any two looks at the clock
        clock[0] += 0.1
        return clock[0]

    monkeypatch.setattr(ownership, "time", SimpleNamespace(time=slow_clock, sleep=time.sleep, monotonic=time.monotonic))
    for k in range(1, 8):  # the claim's settle deadline falls between the k-th and the next look
        theirs = Owner(host="node7", pid=4242, since="2026-12-01T10:00:00Z", mode="lease", token="theirs",
                       expires=base + 100, settle_until=base + 0.1 * k + 0.05)
        atomic_write(run_dir / INFO_FILE, theirs.to_json())
        clock[0] = base
        assert owner(run_dir) == theirs
        clock[0] = base
        with claim_all([run_dir], "lease", **FAST_LEASE) as claims:
            assert claims.owned == {run_dir: theirs} and not claims.claimed


def test_a_pack_settles_its_claims_together(tmp_path):
    dirs = [tmp_path / f"seed={k}" for k in range(4)]
    t0 = time.monotonic()
    with claim_all(dirs, "lease", **{**FAST_LEASE, "settle_s": 0.75}) as claims:
        assert claims.claimed == dirs
        assert time.monotonic() - t0 < 2.0  # one settle delay for the pack, not one per member (3 s)
        assert all(owner(d).pid == os.getpid() for d in dirs)
    assert all(owner(d) is None for d in dirs)


def test_a_lock_owner_that_exits_without_letting_go_leaves_no_record(tmp_path):
    # other hosts honour an unexpired lock record (they may not see the lock): an exit gives it back
    run_dir = tmp_path / "run"
    code = "import sys; from actbench.ownership import claim; lock = claim(sys.argv[1], 'lock', settle_s=0); print(lock.mode)"
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "lock"
    assert (run_dir / LOCK_FILE).exists() and not (run_dir / INFO_FILE).exists()
