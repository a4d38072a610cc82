"""The Hydra entry point: compose the config, build data + model + Trainer, fit, test, record.

    python -m actbench.train                       # one run
    python -m actbench.train -m activation=relu,gelu seed=0,1,2
    python -m actbench.train -m experiment=blog    # the blog's sweep

A run is idempotent: one whose metrics.json says finished is skipped, an unfinished one
resumes from its checkpoint. With `seeds=[...]` one process trains several seeds packed,
each in its own run directory, exactly as if run apart.
"""

from __future__ import annotations

import time

T_PROCESS = time.time()

import gc  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from hydra.experimental.callback import Callback as HydraCallback  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from actbench.errors import UserError  # noqa: E402

PACKS_DIR = ".packs"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def identity_overrides(overrides, exclude) -> list[str]:
    """The overrides that define what a run computes: not the excluded keys, nor keys under them."""
    exclude = set(exclude)
    return [o for o in overrides if not any(k in exclude for k in _prefixes(override_key(o)))]


def _prefixes(key: str):
    parts = key.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts) + 1))


def run_name(overrides: list[str], seed: int | None = None) -> str:
    """`key=value,...` sorted by key, as Hydra names a job's directory; a packed seed's `seed`
    replaces `seeds=` (and any `seed=`, which a pack ignores)."""
    items = [o for o in overrides if not (seed is not None and override_key(o) in ("seeds", "seed"))]
    if seed is not None:
        items.append(f"seed={seed}")
    items.sort(key=override_key)
    return ",".join(items) or "default"


def job_dirname(task_overrides, exclude) -> str:
    """A job's directory, named by its identity overrides; a pack of seeds goes under .packs/,
    since each of its seeds gets the directory an unpacked run of that seed would have."""
    overrides = identity_overrides(list(task_overrides), list(exclude))
    name = run_name(overrides)
    return f"{PACKS_DIR}/{name}" if any(override_key(o) == "seeds" for o in overrides) else name


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)


def parse_overrides(overrides: list[str]) -> dict:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.value() for o in parsed}


def activation_label(choice: str, overrides: list[str]) -> str:
    """The activation's config name, with any of its keys the command line changed:
    `leaky(negative_slope=0.2)`, `relu(_target_=torch.nn.Softsign)`; so such runs never pass for
    the shipped activation."""
    changed = [o.split("=", 1) for o in overrides if override_key(o).startswith("activation.")]
    if not changed:
        return choice
    args = ",".join(f"{key.split('.', 1)[1]}={value}" for key, value in changed)
    return f"{choice}({args})"


def hparams(cfg: DictConfig, choices, seed: int, overrides: list[str]) -> dict:
    """The flat, fixed set of hyperparameters every run logs, for TensorBoard's HParams tab."""
    lr = cfg.optimizer.get("lr")
    return {
        "activation": activation_label(choices.get("activation"), overrides),
        "seed": seed,
        "lr": float(lr) if lr is not None else "none",
        "batch_size": int(cfg.data.batch_size),
        "depth": int(cfg.model.depth),
        "width": int(cfg.model.width),
        "init": str(cfg.model.init),
        "dropout": float(cfg.model.dropout),
        "optimizer": choices.get("optimizer"),
        "max_epochs": int(cfg.trainer.max_epochs),
        "val_size": int(cfg.data.val_size),
        "experiment": choices.get("experiment") or "none",
    }


def plan_runs(cfg: DictConfig):
    """One entry per seed: (seed, run dir, name, overrides)."""
    from actbench.record import Run

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    overrides = identity_overrides(hc.overrides.task, hc.job.config.override_dirname.exclude_keys)
    packed = cfg.seeds is not None
    seeds = list(cfg.seeds) if packed else [int(cfg.seed)]
    base = job_dir.parent.parent if job_dir.parent.name == PACKS_DIR else job_dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    runs = []
    for seed in seeds:
        name = run_name(overrides, seed if packed else None)
        run_dir = base / name if packed else job_dir
        ov = parse_overrides([o for o in overrides if not (packed and override_key(o) in ("seeds", "seed"))])
        if packed:
            ov["seed"] = seed
        config = {**resolved, "seed": seed, "seeds": None}
        run = Run(name, run_dir, seed, ov, hparams(cfg, hc.runtime.choices, seed, overrides), config)
        run.config_hash = config_hash(config, hc.job.config.override_dirname.exclude_keys)
        runs.append(run)
    return runs


def config_hash(config: dict, exclude) -> str:
    """What a run computes, as a short hash of its resolved config minus the keys that only say
    where or how fast it runs: a finished run is only skipped for the same computation."""
    import hashlib
    import json

    def strip(node, prefix=""):
        if not isinstance(node, dict):
            return node
        return {k: strip(v, f"{prefix}{k}.") for k, v in node.items() if not any(p in set(exclude) for p in _prefixes(prefix + k))}

    return hashlib.sha1(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_seed_hydra_dirs(runs, job_dir: Path, cfg: DictConfig) -> None:
    """Give each packed seed's run directory the .hydra/ an unpacked run would have."""
    import yaml

    src = job_dir / ".hydra"
    for run in runs:
        dst = run.dir / ".hydra"
        dst.mkdir(parents=True, exist_ok=True)
        seed_cfg = OmegaConf.merge(cfg, {"seed": run.seed, "seeds": None})
        (dst / "config.yaml").write_text(OmegaConf.to_yaml(seed_cfg))
        overrides = yaml.safe_load((src / "overrides.yaml").read_text()) if (src / "overrides.yaml").exists() else []
        overrides = [o for o in overrides if override_key(o) not in ("seeds", "seed")] + [f"seed={run.seed}"]
        (dst / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if (src / "hydra.yaml").exists():
            (dst / "hydra.yaml").write_text((src / "hydra.yaml").read_text())


# ---------------------------------------------------------------- building and fitting


def undo_nvml_check() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import (fork safety for DataLoader
    workers, which actbench does not use). With it, torch.cuda.is_available() probes NVML on every
    call, and Adam calls it on every step: about 50 us per step on a machine without a GPU."""
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def quiet() -> None:
    """A normal run prints its own lines, not Lightning's set-up chatter."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches.*log_every_n_steps.*")


def side_by_side_jobs(cfg: DictConfig) -> int:
    """How many jobs of this sweep share this machine: several under the local launcher."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return 1
    return int(HydraConfig.get().sweeper.get("max_batch_size") or usable_cpus())


SMALL_STEP_FLOPS = 50e6


def cpu_threads(cfg: DictConfig, n_seeds: int) -> int:
    """Torch CPU threads for this job: `threads` if set; with `auto`, one thread when a training
    step is too small to split between cores (the blog's model, ~20 MFLOP a step, runs about 1.5x
    faster on one thread than on two), else the cores this job may use."""
    if cfg.threads != "auto":
        return int(cfg.threads)
    from actbench.model import n_params

    flops = 6 * cfg.data.batch_size * n_seeds * n_params(cfg.model.depth, cfg.model.width)
    cores = max(1, usable_cpus() // side_by_side_jobs(cfg))
    return 1 if flops < SMALL_STEP_FLOPS else cores


def usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def trainer_overrides(cfg: DictConfig) -> dict:
    """Per-job placement: one SLURM side owning requeue, and one GPU per job when jobs share a machine."""
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    extra = {}
    if SLURMEnvironment.detect():
        # submitit checkpoints and requeues on preemption; Lightning's own requeue would race it
        extra["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    n_gpus = torch.cuda.device_count() if cfg.trainer.accelerator in ("auto", "gpu", "cuda") else 0
    if n_gpus > 1 and cfg.trainer.devices == 1:
        extra["devices"] = [HydraConfig.get().job.get("num", 0) % n_gpus]
    return extra


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
    import torch

    if cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def pack_limit(cfg: DictConfig, device) -> int | None:
    """How many seeds fit in one pack on this device, keeping half of its free memory spare."""
    from actbench.model import bytes_per_seed

    free = available_memory(device)
    if free is None:
        return None
    shared = 70_000 * 784 * 4 * 2  # the data set as floats, and a copy while it moves
    per_seed = bytes_per_seed(cfg.model.depth, cfg.model.width, cfg.data.batch_size * cfg.steps_per_execution,
                              min(cfg.data.eval_batch_size, max(cfg.data.val_size, 10_000)), cfg.data.probe_size)
    return max(1, int((free // 2 - shared) // per_seed))


def optimizer_factory(cfg: DictConfig, n_seeds: int):
    """The configured optimizer, as a function of the parameters; a pack needs an elementwise one."""
    from hydra.utils import instantiate

    from actbench.model import ELEMENTWISE_OPTIMIZERS

    factory = instantiate(cfg.optimizer)
    name = getattr(getattr(factory, "func", factory), "__name__", str(factory))
    if n_seeds > 1 and name not in ELEMENTWISE_OPTIMIZERS:
        raise UserError(
            f"optimizer {name} mixes the values of a weight matrix, so packed seeds would not train as apart; "
            f"pack only with {', '.join(ELEMENTWISE_OPTIMIZERS)}, or run the seeds apart: seed=0,1,2"
        )
    return factory


def use_cuda_graph(cfg: DictConfig, device) -> bool:
    """The CUDA-graph step where it applies: on CUDA, without dropout (its masks come from per-seed
    generators that a graph would freeze)."""
    wanted = cfg.cuda_graph
    if wanted is False:
        return False
    reason = (
        "not training on CUDA" if device.type != "cuda"
        else "dropout draws fresh masks each step" if cfg.model.dropout
        else "a gradient scaler (16-bit mixed precision) rescales each step" if str(cfg.trainer.get("precision", "")).startswith("16")
        else None
    )
    if reason and wanted is True:
        print(f"cuda_graph=true: using eager steps ({reason})", flush=True)
    return reason is None


def fit_pack(cfg: DictConfig, runs, resume: tuple[int, int] | None) -> None:
    """Train and test one pack of seeds (often a pack of one) that start from the same point."""
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import TensorBoardLogger

    from actbench import activations
    from actbench.checkpoints import PerSeedCheckpointIO
    from actbench.model import Classifier
    from actbench.record import Recorder

    undo_nvml_check()
    seeds = [r.seed for r in runs]
    torch.set_num_threads(cpu_threads(cfg, len(seeds)))
    torch.set_flush_denormal(bool(cfg.flush_denormal))

    data = instantiate(cfg.data, seeds=seeds, steps_per_execution=int(cfg.steps_per_execution))
    data.prepare()  # bad or missing data fails here, before anything is written
    try:
        act = activations.build(cfg.activation)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise UserError(f"activation: {e}") from None

    loggers = [
        TensorBoardLogger(save_dir=str(r.dir), name="", version="", default_hp_metric=False, purge_step=resume[0] + 1 if resume else 0)
        for r in runs
    ]
    ckpt = runs[0].dir / "checkpoints" / cfg.checkpoint_name
    recorder = Recorder(
        runs,
        ckpt,
        log_every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)),
        resume_epoch=resume[1] if resume else 0,
        diverged_loss=float(cfg.diverged_loss),
        t_process=T_PROCESS if first_job() else None,
    )
    probes = [instantiate(p) for p in cfg.probes.values() if p is not None]
    extra = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    placement = trainer_overrides(cfg)
    plugins = [PerSeedCheckpointIO([r.dir for r in runs], seeds), *placement.pop("plugins", [])]
    trainer = instantiate(
        cfg.trainer,
        logger=loggers,
        callbacks=[*probes, recorder, *extra],  # probes fill the epoch's log that the recorder writes
        plugins=plugins,
        **placement,
    )
    if trainer.world_size > 1:
        # DDP expects one backward per forward: one optimizer step per Lightning step, no graph
        data.steps = 1
    graph = trainer.world_size == 1 and use_cuda_graph(cfg, trainer.strategy.root_device)
    net = instantiate(cfg.model, seeds=seeds, activation=act)
    module = Classifier(net, optimizer_factory(cfg, len(seeds)), cuda_graph=graph)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if resume else None)
        if not all(recorder.diverged):
            trainer.test(module, datamodule=data, verbose=False)
    except BaseException as e:
        recorder.fail(e)
        raise


_jobs_started = 0


def first_job() -> bool:
    return _jobs_started <= 1


def run(cfg: DictConfig):
    from actbench.checks import validate
    from actbench.checkpoints import resume_point
    from actbench.record import read_metrics

    global _jobs_started
    _jobs_started += 1
    validate(cfg)
    quiet()
    runs = plan_runs(cfg)
    if cfg.seeds is not None:
        write_seed_hydra_dirs(runs, Path(HydraConfig.get().runtime.output_dir), cfg)

    groups: dict[tuple | None, list] = {}
    for r in runs:
        done = read_metrics(r.dir) if cfg.skip_finished else None
        if done and done.get("config_hash", r.config_hash) != r.config_hash and done.get("status") != "failed":
            raise UserError(
                f"{r.dir} holds a run of a different configuration (another preset, or conf/ changed); "
                "give this sweep another name= or delete that directory"
            )
        if done and done.get("status") in ("finished", "diverged"):
            acc = done.get("final", {}).get("test_acc")
            what = f"test accuracy {100 * acc:.2f}%" if acc is not None else done["status"]
            print(f"{r.name}: already {done['status']} ({what}), skipped", flush=True)
            continue
        point = resume_point(r.dir / "checkpoints" / cfg.checkpoint_name) if cfg.skip_finished else None
        groups.setdefault(point, []).append(r)

    limit = None
    if cfg.seeds is not None and len(runs) > 1:
        limit = min([n for n in (pack_limit(cfg, training_device(cfg)), cfg.max_pack) if n], default=None)
    failed = []
    for point, group in groups.items():
        packs = [group[i : i + limit] for i in range(0, len(group), limit)] if limit else [group]
        if len(packs) > 1:
            print(f"{len(group)} seeds do not fit in one pack on this device; training them in packs of {limit}", flush=True)
        for pack in packs:
            if point is not None:
                more = f" (+{len(pack) - 1} seeds)" if len(pack) > 1 else ""
                print(f"{pack[0].name}{more}: resuming after epoch {point[1]} (step {point[0]})", flush=True)
            try:
                fit_pack(cfg, pack, point)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - recorded as failed (traceback in metrics.json); the sweep goes on
                failed += pack
                print(f"{pack[0].name}: failed: {type(e).__name__}: {e} (details in its metrics.json)", file=sys.stderr, flush=True)
            finally:
                # a run's trainer, module and data reference each other; free their hundreds of MB
                # now rather than whenever the collector next looks, or a long sweep keeps growing
                gc.collect()
    if failed and HydraConfig.get().mode != RunMode.MULTIRUN:
        raise SystemExit(1)  # in a sweep, the report lists the failed runs and the next rerun retries them
    finals = [read_metrics(r.dir) or {} for r in runs]
    accs = [m.get("final", {}).get("val_acc") for m in finals if m.get("status") == "finished"]
    accs = [a for a in accs if a is not None]
    return sum(accs) / len(accs) if accs else float("nan")  # for Hydra sweepers that optimise


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig):
    try:
        return run(cfg)
    except UserError as e:
        print(f"actbench: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class SweepReport(HydraCallback):
    """After a multirun, write the sweep's report beside its runs."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not config.get("report", True):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from actbench.report import write_report

            path = write_report(sweep_dir, baseline=config.get("baseline", "relu"))
            print(f"report: {path}", flush=True)
        except Exception as e:  # noqa: BLE001 - a report problem must not hide the finished runs
            print(f"actbench: could not write the report for {sweep_dir}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
