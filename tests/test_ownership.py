"""actbench.ownership: one owner per run between real processes, in each mode; a dead owner is
taken over at once (lock) or once its lifetime lapses (lease); one mode per sweep directory.
The contenders import actbench.ownership only (no torch), so a race costs milliseconds."""

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
from actbench.claims import claimed
from actbench.ownership import INFO_FILE, MODE_FILE, LockingUnavailable, Owned, Owner, busy_line, claim, owner

ROOT = Path(__file__).resolve().parent.parent
FAST_LEASE = 1.0  # seconds: a lease's lifetime in these tests

# a contender: says it is ready, claims on "go", reports, and holds until told to let go (or killed)
CONTENDER = r"""
import json, sys
from actbench.ownership import Owned, claim
run_dir, mode, lease_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
print(json.dumps({"ready": True, "torch": "torch" in sys.modules}), flush=True)
sys.stdin.readline()
try:
    lock = claim(run_dir, mode, lease_s=lease_s)
except Owned as e:
    print(json.dumps({"claimed": False, "host": e.owner.host, "pid": e.owner.pid, "since": e.owner.since}), flush=True)
    sys.exit(0)
print(json.dumps({"claimed": True, "mode": lock.mode}), flush=True)
sys.stdin.readline()
lock.release()
print(json.dumps({"released": True}), flush=True)
"""


class Contender:
    def __init__(self, run_dir, mode="lock", lease_s=FAST_LEASE, wait=True, env=None):
        self.proc = subprocess.Popen([sys.executable, "-c", CONTENDER, str(run_dir), mode, str(lease_s)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        if wait:
            self.ready()

    def ready(self):
        assert self.read() == {"ready": True, "torch": False}

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
        started.append(Contender(*args, **kwargs))
        return started[-1]

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


@pytest.mark.parametrize("mode", ["lock", "lease"])
def test_processes_racing_for_a_pack_never_both_own_a_run(tmp_path, contenders, mode):
    """Three processes claim the same run at the same moment, 20 times over: one owner each time,
    and the others name it."""
    for attempt in range(20):
        run_dir = tmp_path / "sweep" / f"activation=relu,seed={attempt}"
        procs = [contenders(run_dir, mode, lease_s=30, wait=False) for _ in range(3)]
        for c in procs:
            c.ready()
        for c in procs:  # all are waiting on stdin already: they try within a millisecond
            c.send()
        answers = [c.read() for c in procs]
        winners = [c for c, a in zip(procs, answers, strict=True) if a["claimed"]]
        assert len(winners) == 1, (attempt, answers)
        for a in answers:
            if not a["claimed"]:
                assert (a["host"], a["pid"]) == (socket.gethostname(), winners[0].pid)
                datetime.fromisoformat(a["since"].replace("Z", "+00:00"))
        assert owner(run_dir).pid == winners[0].pid
        winners[0].send()
        assert winners[0].read() == {"released": True}
        assert owner(run_dir) is None and not (run_dir / INFO_FILE).exists()
        for c in procs:
            c.stop()
    assert (tmp_path / "sweep" / MODE_FILE).read_text().strip() == mode


def test_a_claim_that_loses_names_an_owner_still_writing_its_record(tmp_path, monkeypatch):
    """The winner writes its record just after taking the lock; a loser that looks in between, and
    finds no record or one left by a dead process of this host, reads again rather than name it."""
    run_dir = tmp_path / "sweep" / "run"
    run_dir.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = Owner(socket.gethostname(), int(gone.stdout), "2026-01-01T00:00:00Z")
    (run_dir / INFO_FILE).write_text(json.dumps(stale.__dict__))
    holder = ownership._kernel_lock(run_dir / ownership.LOCK_FILE)
    holder.acquire()  # another open file: the kernel refuses this process's claim as it would another's
    late = threading.Timer(0.6, lambda: (run_dir / INFO_FILE).write_text(json.dumps(Owner.me("lock").__dict__)))
    late.start()
    try:
        with pytest.raises(Owned) as e:
            claim(run_dir)
        assert e.value.owner.pid == os.getpid()
    finally:
        late.join()
        holder.release()
    (run_dir / INFO_FILE).unlink()  # let go between the attempt and the look: taken at the next attempt
    monkeypatch.setattr(ownership.time, "sleep", lambda s: pytest.fail(f"waited {s} s for the record of a run let go"))
    assert ownership._holder(run_dir, "lock") is None
    take, lost = ownership.RunLock._take, iter([True])  # the first attempt lost to an owner who has let go since
    monkeypatch.setattr(ownership.RunLock, "_take", lambda self: not next(lost, False) and take(self))
    with claim(run_dir) as lock:
        assert lock.held and owner(run_dir).pid == os.getpid()


def test_a_killed_lock_owner_is_taken_over_at_once(tmp_path, contenders):
    run_dir = tmp_path / "run"
    first = contenders(run_dir)
    assert first.claim() == {"claimed": True, "mode": "lock"}
    assert owner(run_dir).pid == first.pid  # a run that says running is running
    first.kill()
    # its .owner.json is left behind, naming a dead process; the kernel has dropped the lock
    assert json.loads((run_dir / INFO_FILE).read_text())["pid"] == first.pid
    assert owner(run_dir) is None  # one that says running is interrupted (results.load_run)
    second = contenders(run_dir)
    assert second.claim() == {"claimed": True, "mode": "lock"}
    assert owner(run_dir).pid == second.pid


def test_a_killed_lease_owner_is_taken_over_once_its_lifetime_lapses(tmp_path, contenders):
    run_dir = tmp_path / "run"
    holder = contenders(run_dir, "lease", lease_s=FAST_LEASE)
    assert holder.claim() == {"claimed": True, "mode": "lease"}
    time.sleep(2 * FAST_LEASE)  # past its first lifetime: its refreshes keep it
    assert owner(run_dir).pid == holder.pid
    with pytest.raises(Owned):
        claim(run_dir, "lease", lease_s=FAST_LEASE)
    holder.kill()
    # when its last refresh said it lapses (a loaded machine may have refreshed it later than every 0.2 s)
    lapses = (run_dir / ownership.LEASE_FILE).stat().st_mtime
    with pytest.raises(Owned):  # dead, but its lifetime has not lapsed: not taken over yet
        claim(run_dir, "lease", lease_s=FAST_LEASE)
    assert until(lambda: owner(run_dir) is None, timeout=FAST_LEASE + ownership.SLOP_S + 2)
    with claim(run_dir, "lease", lease_s=FAST_LEASE, wait_s=3) as lock:
        assert time.time() >= lapses + ownership.SLOP_S  # flufl.lock's allowance for clocks between nodes
        assert lock.held and owner(run_dir).pid == os.getpid()


def test_an_owner_whose_lapsed_lease_was_taken_over_notices(tmp_path, contenders):
    run_dir = tmp_path / "run"
    lock = claim(run_dir, "lease", lease_s=0.5)
    lock._stop.set()  # as a process paused for longer than its lease: no refresh
    try:
        time.sleep(0.6 + ownership.SLOP_S)
        taker = contenders(run_dir, "lease", lease_s=30)
        assert taker.claim()["claimed"]
        lock._stop.clear()  # it wakes up: its next refresh finds the lease another's
        threading.Thread(target=lock._refresh, daemon=True).start()
        assert until(lambda: not lock.held, timeout=2)
    finally:
        lock.release()
    assert owner(run_dir).pid == taker.pid  # releasing a lost lease leaves the taker's alone


def test_a_process_of_the_other_mode_is_refused_in_one_line(tmp_path):
    a, b = tmp_path / "sweep" / "seed=0", tmp_path / "sweep" / "seed=1"
    with claim(a, "lease", lease_s=FAST_LEASE):
        pass
    with pytest.raises(LockingUnavailable) as caught:
        claim(b, "lock")
    said = str(caught.value)
    assert "\n" not in said and "ownership.mode=lease" in said and "ownership.mode=lock" in said
    with claim(b, "auto", lease_s=FAST_LEASE) as lock:  # auto follows the sweep's mode
        assert lock.mode == "lease"


def test_where_kernel_locks_are_refused_auto_records_leases(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "_free", lambda path: None)
    run_dir = tmp_path / "sweep" / "seed=0"
    with claim(run_dir, "auto", lease_s=FAST_LEASE) as lock:
        assert lock.mode == "lease" and json.loads((run_dir / INFO_FILE).read_text())["mode"] == "lease"
        with pytest.raises(Owned):
            claim(run_dir, "auto")
    assert (tmp_path / "sweep" / MODE_FILE).read_text().strip() == "lease"


def test_the_owning_process_asking_or_claiming_again_keeps_its_lock(tmp_path, contenders):
    run_dir = tmp_path / "run"
    with claim(run_dir, "lock") as lock:
        assert lock.mode == "lock" and lock.held
        for _ in range(3):
            assert owner(run_dir).pid == os.getpid()
        with pytest.raises(Owned) as again:
            claim(run_dir, "lock")
        assert again.value.owner.pid == os.getpid()
        answer = contenders(run_dir).claim()
        assert (answer["claimed"], answer["pid"]) == (False, os.getpid())
    assert owner(run_dir) is None
    assert contenders(run_dir).claim()["claimed"]


def test_owned_names_host_pid_slurm_job_and_since():
    o = Owner(host="node7", pid=1234, since="2026-12-01T10:00:00Z", slurm_job_id="998")
    assert busy_line("activation=relu,seed=0", o) == (
        "activation=relu,seed=0: trained by pid 1234 on host node7 (SLURM job 998) since 2026-12-01T10:00:00Z; skipped"
    )
    assert str(Owned(Path("runs/blog/activation=relu,seed=0"), o)) == "activation=relu,seed=0: trained by " + str(o)


def test_nobody_owns_a_run_with_only_stale_files(tmp_path):
    run_dir = tmp_path / "run"
    assert owner(run_dir) is None  # not even created
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True)
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "since": "2026-01-01T00:00:00Z", "mode": "lock"}
    (run_dir / INFO_FILE).write_text(json.dumps(stale))
    assert owner(run_dir) is None  # no one holds its kernel lock
    (run_dir / INFO_FILE).write_text(json.dumps({**stale, "mode": "lease"}))
    assert owner(run_dir) is None  # no lease file
    (run_dir / INFO_FILE).write_text("{half a fi")
    assert owner(run_dir) is None
    with claim(run_dir) as lock:
        assert lock.mode == "lock"


def test_a_pack_is_claimed_member_by_member(tmp_path, contenders):
    a, b, c = (tmp_path / f"activation=relu,seed={k}" for k in range(3))
    other = contenders(b)
    assert other.claim()["claimed"]
    runs = [SimpleNamespace(dir=d, name=d.name) for d in (a, b, c)]
    with claimed(runs, {}) as claims:
        assert list(claims.locks) == [a, c]
        assert list(claims.owned) == [b] and claims.owned[b].pid == other.pid
        assert owner(a).pid == owner(c).pid == os.getpid()
    assert owner(a) is None and owner(c) is None
    assert owner(b).pid == other.pid
    with pytest.raises(RuntimeError), claimed([runs[0], runs[2]], {}):
        raise RuntimeError("training failed")
    assert owner(a) is None and owner(c) is None


def test_a_requeued_job_holds_its_other_runs_while_it_waits_for_its_earlier_attempt(tmp_path, contenders, monkeypatch):
    a, b, c, d = (tmp_path / "sweep" / f"activation=relu,seed={k}" for k in range(4))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    earlier = contenders(b, env={"SLURM_JOB_ID": "77"})  # this job's first attempt, still being stopped
    other = contenders(d, env={"SLURM_JOB_ID": "78"})
    assert earlier.claim()["claimed"] and other.claim()["claimed"]
    seen = {}

    def let_go():  # while this process waits for b, a and c are already its own
        seen["c held"] = until(lambda: (owner(c) or Owner(None, None, None)).pid == os.getpid())
        earlier.send()

    timer = threading.Thread(target=let_go)
    timer.start()
    runs = [SimpleNamespace(dir=p, name=p.name) for p in (a, b, c, d)]
    with claimed(runs, {}) as claims:
        assert sorted(claims.locks) == [a, b, c] and list(claims.owned) == [d]
        assert claims.owned[d].pid == other.pid
    timer.join()
    assert seen["c held"]


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
    with pytest.raises(UserError, match=r"^ownership.mode='nfs': must be one of auto, lock, lease$"):
        ownership.RunLock("x", mode="nfs")
    with pytest.raises(UserError, match=r"^ownership.lease_s=0: must be"):
        ownership.RunLock("x", mode="lease", lease_s=0)


def test_an_owner_that_exits_without_letting_go_leaves_no_record(tmp_path):
    run_dir = tmp_path / "run"
    code = f"from actbench.ownership import claim; claim({str(run_dir)!r}, 'lock')"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert not (run_dir / INFO_FILE).exists() and owner(run_dir) is None
