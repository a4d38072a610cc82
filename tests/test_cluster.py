"""Sweeps through Hydra's submitit launchers: local parallel jobs, and a real SLURM when one runs here."""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NAMES_2x2, ROOT, metrics, run_cli

# one worker runs these one after another under `make test` (pytest-xdist): two sweeps at once would
# wait for each other on the one-node SLURM, and the parallel-launcher test wants the cores to itself
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

SLURM_TOOLS = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/spool/slurm-local")) / "bin"  # sacct stand-in
NAMES = NAMES_2x2


def finished_runs(sweep: Path) -> list[str]:
    return sorted(
        p.name for p in sweep.iterdir() if (p / "metrics.json").exists() and metrics(p)["status"] == "finished"
    )


def slurm_up() -> str | None:
    """None where the one-node SLURM answers and its node takes jobs, else why not.

    A node busy with, or still cleaning up after, an earlier job ("allocated", "completing") is up:
    a job submitted now waits in the queue for it; these are the states scripts/slurm-local.sh
    start waits for. A trailing "*" (slurmd does not answer) matches none of them.
    """
    if not shutil.which("sinfo"):
        return "SLURM is not installed (scripts/slurm-local.sh up)"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    states = r.stdout.split()
    if r.returncode or not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"SLURM is not running here (scripts/slurm-local.sh start): {r.stderr.strip() or r.stdout.strip()}"
    return None


def need_slurm() -> None:
    """Skip without a usable SLURM; fail instead where one was promised (CI sets ACTBENCH_REQUIRE_SLURM)."""
    reason = slurm_up()
    if reason and os.environ.get("ACTBENCH_REQUIRE_SLURM"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


def slurm_env() -> dict:
    env = {"PATH": f"{SLURM_TOOLS}:{os.environ['PATH']}"}
    for var in [v for v in os.environ if v.startswith(("SLURM_", "SBATCH_", "SRUN_", "SUBMITIT_"))]:
        env[var] = None  # the test may itself run inside a SLURM job
    return env


def test_local_launcher_runs_jobs_in_parallel_processes(tiny_run, tmp_path):
    r = run_cli(
        "-m", *tiny_run, "hydra/launcher=local", "hydra.launcher.gpus_per_node=0", "hydra.sweeper.max_batch_size=2",
        "activation=relu,sigmoid", "seed=0,1", "report=none", "pack=false", timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "tiny"
    assert finished_runs(sweep) == NAMES
    ms = [metrics(sweep / n) for n in NAMES]
    assert len({m["host"]["pid"] for m in ms}) == 4  # a fresh process per job
    # and two at a time: some jobs' lives, from process start to the end of training, overlap
    # (one after another, none would)
    spans = [(t["first_step_at"] - t["startup_s"], t["first_step_at"] + t["fit_s"]) for t in (m["timing"] for m in ms)]
    assert any(max(a[0], b[0]) < min(a[1], b[1]) for a, b in itertools.combinations(spans, 2)), spans


def test_the_local_launcher_gets_one_job_per_pack(tiny_run, tmp_path):
    r = run_cli(
        "-m", *tiny_run, "hydra/launcher=local", "hydra.launcher.gpus_per_node=0", "activation=relu,sigmoid", "seed=0,1",
        "optimizer.lr=0.001,0.01", "report=none", timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "tiny"
    runs = [p for p in sweep.iterdir() if (p / "metrics.json").exists()]
    assert len(runs) == 8 and all(metrics(p)["status"] == "finished" for p in runs)
    jobs = {}
    for p in runs:  # one process per job: the members of a pack share one
        jobs.setdefault(metrics(p)["host"]["pid"], set()).add(metrics(p)["hparams"]["lr"])
    assert len(jobs) == 2 and all(len(rates) == 1 for rates in jobs.values())
    assert len([d for d in (sweep / ".submitit").iterdir() if d.name.isdigit()]) == 2  # one folder per job id


@pytest.mark.slurm
def test_slurm_launcher_runs_the_sweep_as_slurm_jobs(tiny_run, tmp_path):
    need_slurm()
    env = slurm_env()
    r = run_cli(
        "-m", *tiny_run, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10", "activation=relu,sigmoid", "seed=0,1",
        timeout=600, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "tiny"
    assert finished_runs(sweep) == NAMES
    for n in NAMES:
        m = metrics(sweep / n)
        assert m["host"]["slurm_job_id"], "the run did not execute inside a SLURM job"
    assert (sweep / "report.md").exists()
    assert list((sweep / ".submitit").iterdir())


@pytest.mark.slurm
def test_a_signalled_slurm_job_is_requeued_by_submitit_and_resumes_from_its_checkpoint(tiny_run, tmp_path):
    """SIGTERM then USR2, as a preemption (submitit's own _interrupt does the same); submitit checkpoints,
    requeues the job and exits; SLURM starts it again and actbench resumes from the run's checkpoint."""
    need_slurm()
    env = slurm_env()
    epochs = "trainer.max_epochs=150"
    slurm = [
        "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10", "report=none",
    ]
    full_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "actbench.train", "-m", *tiny_run, *slurm, epochs],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    metrics_file = tmp_path / "runs" / "tiny" / epochs / "metrics.json"
    try:
        deadline, m = time.time() + 180, {}
        while time.time() < deadline and len(m.get("curves", {}).get("epoch", [])) < 3:
            time.sleep(0.1)
            m = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        assert m.get("status") == "running", f"the job did not get going: {m.get('status')}"
        job = m["host"]["slurm_job_id"]
        for sig in ("TERM", "USR2"):
            subprocess.run(["scancel", "--signal", sig, job], check=True, env=full_env)
        _, err = sweep.communicate(timeout=400)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, err[-3000:]
    m = metrics(metrics_file.parent)
    assert m["status"] == "finished" and m["host"]["slurm_job_id"] == job  # the same job, requeued
    assert m["timing"]["resumed_at_epoch"] >= 2 and len(m["curves"]["epoch"]) == 150
    # and it ends where a run that was never interrupted ends
    r = run_cli(*tiny_run, epochs, "name=plain")
    assert r.returncode == 0, r.stderr[-2000:]
    plain = metrics(tmp_path / "runs" / "plain" / epochs)
    assert m["final"]["test_loss"] == plain["final"]["test_loss"]
    assert m["curves"]["val_loss"] == plain["curves"]["val_loss"]


@pytest.mark.slurm
def test_a_request_slurm_cannot_meet_gets_one_line_naming_the_key(tiny_run, tmp_path):
    need_slurm()
    r = run_cli("-m", *tiny_run, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=512",
                "activation=relu,sigmoid", timeout=300, env=slurm_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("actbench: error: SLURM refused") and "More processors requested than permitted" in last
    assert "hydra.launcher.cpus_per_task=512" in last
    assert not list((tmp_path / "runs").rglob("metrics.json"))


def test_sbatch_refusals_name_the_launcher_keys():
    from actbench.placement import sbatch_refusal

    launcher = {"cpus_per_task": 8, "mem_gb": 32, "gpus_per_node": 1, "partition": "gpu", "tasks_per_node": 1, "constraint": None}
    line = sbatch_refusal("sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification", launcher)
    assert "Invalid generic resource" in line and "hydra.launcher.gpus_per_node=1" in line and "cpus_per_task" not in line
    assert "hydra.launcher.partition=gpu" in sbatch_refusal("sbatch: error: invalid partition specified: gpu", launcher)
    assert "conf/hydra/launcher/slurm.yaml" in sbatch_refusal("sbatch: error: something new", launcher)


@pytest.mark.slurm
def test_an_atlas_sends_every_settings_stage_to_slurm_side_by_side(tiny_atlas, tmp_path):
    need_slurm()
    r = run_cli(*tiny_atlas, "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10", timeout=900, env=slurm_env())
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "runs" / "tiny_atlas"
    for name in ("mlp", "cnn"):
        for stage in ("tune", "confirm"):
            runs = list((sweep / name / stage).glob("activation=*"))
            assert runs and all(metrics(d)["status"] == "finished" and metrics(d)["host"]["slurm_job_id"] for d in runs)
    # each round one array holding both settings' packs (submitit's folders are <array>_<task>)
    tasks = [d.name.split("_") for d in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", d.name)]
    arrays = {a: sorted(t for x, t in tasks if x == a) for a, _ in tasks}
    assert sorted(arrays.values()) == [["0", "1"], ["0", "1"]], arrays  # tune, then confirm: a pack per setting each
    assert (sweep / "report.md").exists()
