"""Where and with what a run trains: CPU threads (and whether other processes leave them the
cores), one GPU per job when jobs share a machine, how many packed seeds fit in memory, whether
the CUDA-graph step applies, and which side owns requeueing on SLURM.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def undo_nvml_check() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import (fork safety for DataLoader
    workers, which actbench does not use). With it, torch.cuda.is_available() probes NVML on every
    call, and Adam calls it on every step: about 50 us per step on a machine without a GPU."""
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse. A pack's per-step tensors (a layer's weight
    gradient, a batch) are megabytes; by default glibc hands the freed top of its heap back to
    the system and takes page faults to get it again at the next step (hundreds of faults a step
    for 16 packed members, a tenth of its time). A no-op where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's ceiling: larger blocks still come from mmap


def side_by_side_jobs() -> int:
    """How many jobs of this sweep share this machine: under the local launcher, the sweeper's
    batch size, or one job per usable core when it has none."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return 1
    return int(HydraConfig.get().sweeper.get("max_batch_size") or usable_cpus())


SMALL_STEP_FLOPS = 50e6


def cpu_threads(cfg: DictConfig, n_seeds: int, recorded: int | None = None) -> int:
    """Torch CPU threads for this job: `threads` if set. With `auto`, a rule on the job's fixed
    facts, not a timing: one thread when a training step of its pack is too small to split
    between cores (the blog's model, ~20 MFLOP a step, runs about 1.5x faster on one thread than
    on two), else the cores this job may use; a resumed run keeps the count it started with
    (`recorded`), since a convolution's gradient sums in another order on another count."""
    if cfg.threads != "auto":
        return int(cfg.threads)
    if recorded:
        return int(recorded)
    from hydra.utils import get_class

    from actbench.model import model_class

    data = get_class(cfg.data._target_)
    # a training step is about three forward passes (forward, then the backward's two products)
    flops = 3 * cfg.data.batch_size * n_seeds * model_class(cfg).flops_per_sample(cfg.model, *data.shape(cfg.data))
    cores = max(1, usable_cpus() // side_by_side_jobs())
    return 1 if flops < SMALL_STEP_FLOPS else cores


def cpu_clock() -> tuple[float, float, float] | None:
    """(busy seconds of the CPUs this process may use, this process's own CPU seconds, wall
    seconds), for `busy_elsewhere`; None where Linux's /proc/stat is not there."""
    try:
        mine = os.sched_getaffinity(0)
        rows = [line.split() for line in Path("/proc/stat").read_text().splitlines() if line.startswith("cpu")]
    except (OSError, AttributeError):
        return None
    busy = 0
    for row in rows:
        if row[0] != "cpu" and int(row[0][3:]) in mine:
            ticks = [int(t) for t in row[1:9]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()


def busy_elsewhere(before, after) -> float | None:
    """How many of this process's CPUs other processes kept busy between two `cpu_clock`
    readings; None when unknown or too short a time to tell."""
    if before is None or after is None or after[2] - before[2] < 0.2:
        return None
    return max(0.0, (after[0] - before[0] - (after[1] - before[1])) / (after[2] - before[2]))


def contention(threads: int, others: float | None, cores: int) -> str | None:
    """A line for a run whose threads would share their cores with other processes' work. Torch's
    threads wait for each other by spinning, so on a busy machine two threads can be several
    times slower than one (measured on 2 cores with two other busy processes: 45.8 s an epoch
    against 13.2 s). Not decided for the user: the thread count changes how sums are split, and
    with it a run's last bits."""
    if others is None or threads <= 1 or threads + others <= cores + 0.5:
        return None
    return (f"other processes kept about {others:.1f} of the {cores} CPUs this run may use busy; its {threads} "
            "threads will wait on each other there (an epoch can take several times longer): threads=1, "
            "or fewer processes at once, is likely faster")


def usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def distributed(cfg) -> bool:
    """Whether the trainer is set to more than one process: a DDP-like strategy, several nodes or devices."""
    t = cfg.trainer
    devices = t.get("devices", 1)
    return (
        any(k in str(t.get("strategy", "")) for k in ("ddp", "fsdp", "deepspeed"))
        or int(t.get("num_nodes", 1) or 1) > 1
        or (isinstance(devices, int) and devices > 1)
        or (not isinstance(devices, (int, str)) and len(devices) > 1)
    )


def trainer_overrides(cfg: DictConfig) -> dict:
    """Per-job placement: one SLURM side owning requeue, and one GPU per job when several are visible."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    extra = {}
    if SLURMEnvironment.detect():
        # submitit checkpoints and requeues on preemption; Lightning's own requeue would race it
        extra["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    gpu = job_gpu(cfg)
    if gpu is not None:
        extra["devices"] = [gpu]
    return extra


def wants_gpu(cfg: DictConfig) -> bool:
    return cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def job_gpu(cfg: DictConfig) -> int | None:
    """The one GPU this job trains on when several are visible (job i of a sweep on GPU i mod N);
    None to leave the choice to Lightning."""
    import torch

    n_gpus = torch.cuda.device_count() if wants_gpu(cfg) else 0
    if n_gpus > 1 and cfg.trainer.devices == 1:
        return HydraConfig.get().job.get("num", 0) % n_gpus
    return None


def available_memory(device) -> int | None:
    """Free bytes on the training device (None if unknown)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) * 1024)
        # a SLURM job or container may have less than the machine: its cgroup's limit
        limit, used = (Path("/sys/fs/cgroup") / f for f in ("memory.max", "memory.current"))
        if limit.exists() and limit.read_text().strip() != "max":
            free.append(int(limit.read_text()) - int(used.read_text()))
    except (OSError, ValueError):
        pass
    return min(free) if free else None


def training_device(cfg: DictConfig):
    """The device this job trains on (for sizing its packs)."""
    import torch

    if wants_gpu(cfg) and torch.cuda.is_available():
        gpu = job_gpu(cfg)
        return torch.device("cuda", torch.cuda.current_device() if gpu is None else gpu)
    return torch.device("cpu")


def pack_limit(cfg: DictConfig, device) -> int | None:
    """How many seeds fit in one pack on this device, keeping half of its free memory spare."""
    from hydra.utils import get_class

    from actbench.model import eval_batch_size, model_class

    free = available_memory(device)
    if free is None:
        return None
    data = get_class(cfg.data._target_)
    # a chunk gathers one batch per step, so a training step holds batch_size rows per member
    rows = max(int(cfg.data.batch_size), data.eval_rows(cfg.data, eval_batch_size(cfg)), int(cfg.data.probe_size))
    per_member = model_class(cfg).bytes_per_member(cfg.model, rows, *data.shape(cfg.data))
    return max(1, int((free // 2 - data.bytes_on_device(cfg.data)) // per_member))


def use_cuda_graph(cfg: DictConfig, device) -> bool:
    """The CUDA-graph step where it applies: on CUDA, without dropout (its masks come from per-seed
    generators that a graph would freeze) and with a constant rate (a graph would freeze it too)."""
    from actbench.model import model_class
    from actbench.schedule import is_constant

    wanted = cfg.cuda_graph
    if wanted is False:
        return False
    reason = (
        "not training on CUDA" if device.type != "cuda"
        else "the model draws random numbers each step (dropout)" if model_class(cfg).draws_random(cfg.model)
        else "a gradient scaler (16-bit mixed precision) rescales each step" if str(cfg.trainer.get("precision", "")).startswith("16")
        else "the rate changes each step (optimizer.schedule)" if not is_constant(cfg.optimizer.get("schedule"))
        else None
    )
    if reason and wanted is True:
        from actbench.logs import say

        say(f"cuda_graph=true: using eager steps ({reason})")
    return reason is None


# what to change when sbatch refuses a job array: (a phrase of its message, the launcher keys to look at)
SBATCH_HINTS = (
    ("More processors requested than permitted", "cpus_per_task", "tasks_per_node"),
    ("Requested node configuration is not available", "cpus_per_task", "mem_gb", "gpus_per_node", "constraint"),
    ("Memory required by task is not available", "mem_gb"),
    ("memory specification", "mem_gb"),
    ("Invalid generic resource", "gpus_per_node"),
    ("invalid partition", "partition"),
    ("Invalid account", "account"),
    ("Invalid qos", "qos"),
    ("time limit", "timeout_min"),
)


def sbatch_refusal(message: str, launcher) -> str:
    """One line for a job array that sbatch refused: its own message, and which launcher keys to
    lower or set (with their values in this sweep)."""
    said = " ".join(message.split()).removeprefix("sbatch: error: ")
    for phrase, *keys in SBATCH_HINTS:
        if phrase.lower() in said.lower():
            values = ", ".join(f"hydra.launcher.{k}={launcher.get(k)}" for k in keys)
            return f"SLURM refused the sweep's jobs ({said}): lower or change {values}"
    return f"SLURM refused the sweep's jobs ({said}); see conf/hydra/launcher/slurm.yaml for the launcher's keys"
