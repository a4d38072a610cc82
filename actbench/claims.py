"""A job's claims on its runs (actbench.ownership locks each): every run is claimed before anything
of it is read, a run owned elsewhere is left to its owner with one line, a requeued SLURM job
waits for its earlier attempt, and a pack that lost a lease stops before it writes.

DDP ranks past the first train what rank 0 owns. They learn it from rank 0, not through
torch.distributed: Lightning makes the process group inside `Trainer.fit`, after the runs are
chosen and built into a pack whose shape depends on them. Ranks Lightning's launcher starts read
rank 0's choice from their environment; ranks started beside it (a SLURM job's tasks) wait until
this job owns each run, then read what rank 0 read.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from actbench.errors import UserError
from actbench.logs import say
from actbench.ownership import LEASE_S, Owned, Owner, RunLock, busy_line, claim, iso, owner
from actbench.placement import distributed
from actbench.record import process_started
from actbench.results import Status, read_metrics
from actbench.runs import pending


LEADER_ENV = "ACTBENCH_DDP_PACK"  # what DDP rank 0 trains, for the processes Lightning's launcher starts from it
REQUEUE_WAIT_S = 120.0  # how long a requeued SLURM job waits for its previous attempt to let go of a run
# (a lease is let go when its lifetime lapses: that long, and this margin)
FOLLOWER_WAIT_S = 600.0  # how long a DDP rank started beside rank 0 (a SLURM task) waits for its claims


def ownership_settings(cfg) -> dict:
    """conf's `ownership` keys, as RunLock takes them; a config without them gets RunLock's own defaults."""
    o = cfg.get("ownership") or {}
    return {"mode": o.get("mode", "auto"), "lease_s": float(o.get("lease_s", LEASE_S))}


@dataclass
class Claims:
    """A job's claims: the runs this process owns (their locks), and the owners of the others."""

    locks: dict[Path, RunLock] = field(default_factory=dict)
    owned: dict[Path, Owner] = field(default_factory=dict)


@contextmanager
def claimed(runs, cfg):
    """Own the job's runs, member by member, until the block ends (a requeued SLURM job waiting for
    its earlier attempt); a run owned by a live process elsewhere gets its line (who, since when)
    and is left to it. Yields the `Claims`."""
    settings, claims = ownership_settings(cfg), Claims()

    def take(r, **wait) -> None:
        try:
            claims.locks[r.dir] = claim(r.dir, **settings, **wait)
            claims.owned.pop(r.dir, None)
        except Owned as e:
            claims.owned[r.dir] = e.owner
        except OSError as e:  # the run directory is not writable (the sweep directory was checked)
            raise UserError(f"{e.filename or r.dir}: cannot claim the run here ({e.strerror or type(e).__name__})") from None

    try:
        for r in runs:
            take(r)
        for r in runs:  # then, every other run held, wait for an earlier attempt of this requeued SLURM job
            who = claims.owned.get(r.dir)
            if who is not None and who.same_job:
                take(r, wait_s=REQUEUE_WAIT_S + (settings["lease_s"] if who.mode == "lease" else 0.0), poll_s=2.0)
        for r in runs:
            if r.dir in claims.owned:
                say(busy_line(r.name, claims.owned[r.dir]))
        yield claims
    finally:
        for lock in reversed(list(claims.locks.values())):
            lock.release()


def ddp_follower(cfg) -> bool:
    """Whether this process is a DDP rank other than the first: it claims nothing and trains what
    rank 0 owns. Ranks come from Lightning's launcher (LOCAL_RANK, NODE_RANK), torchrun (RANK) or
    SLURM's tasks (SLURM_PROCID), the last only for a trainer set to more than one process."""
    env = os.environ
    ranks = [env.get("RANK"), env.get("LOCAL_RANK"), env.get("NODE_RANK")]
    if distributed(cfg):
        ranks.append(env.get("SLURM_PROCID"))
    return any(r.isdigit() and int(r) > 0 for r in ranks if r)


def follow(runs, cfg) -> tuple[dict, bool]:
    """What a DDP follower trains, and whether it is already one pack. Started by rank 0's launcher,
    it has rank 0's decision in its environment. Started beside it (a SLURM job's tasks), it waits
    until rank 0, a process of this job no older than this one, owns each run (or the run is
    finished) and then reads the runs' files as rank 0 did: with the runs owned they do not change.
    A follower writes none of them, from the start: one that fails before training (restoring the
    checkpoint, memory) would record rank 0's runs as failed."""
    for r in runs:
        r.writes = False
    plan = os.environ.get(LEADER_ENV)
    if plan:
        p = json.loads(plan)
        pack = [r for r in runs if str(r.dir) in p["runs"]]
        return ({tuple(p["resume"]) if p["resume"] else None: pack} if pack else {}), True
    job, since = os.environ.get("SLURM_JOB_ID"), iso(process_started() - 60)
    waiting, mine = list(runs), []
    deadline = time.monotonic() + FOLLOWER_WAIT_S
    while waiting and time.monotonic() < deadline:
        for r in list(waiting):
            who = owner(r.dir)
            if who is not None and who.slurm_job_id == job and (who.since or "") >= since:
                mine.append(r)
                waiting.remove(r)
            elif who is None and (read_metrics(r.dir) or {}).get("status") in (Status.FINISHED, Status.DIVERGED):
                waiting.remove(r)
        if waiting:
            time.sleep(1.0)
    return pending([r for r in runs if r in mine], cfg, speak=False), False


def still_owned(runs, claims):
    """A callback that stops the pack at an epoch's end if this process lost a run to another (a
    lease it failed to renew in time), before anything of that epoch is written over the new
    owner's files."""

    class StillOwned(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            lost = [r for r in runs if r.dir in claims.locks and not claims.locks[r.dir].held]
            if lost:
                for r in lost:
                    r.writes = False  # metrics.json is the new owner's now
                who = owner(lost[0].dir)
                raise RuntimeError(f"{lost[0].name}: no longer owned by this process" + (f" but by {who}" if who else ""))

    return StillOwned()
