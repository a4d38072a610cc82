"""The Hydra entry point: compose the config, build data + model + Trainer, fit, test, record.

    python -m actbench.train                       # one run
    python -m actbench.train -m activation=relu,gelu seed=0,1,2
    python -m actbench.train -m experiment=blog    # the blog's sweep

A run is idempotent: one whose metrics.json says finished (or diverged) is skipped, an
unfinished one resumes from its checkpoint, and a directory holding a run of another
configuration is refused (a failed one that left no checkpoint starts afresh). A packed job
(`members=...` from the packing sweeper, or `seeds=[...]`) trains its runs as one batched model,
each in its own run directory, exactly as if run apart.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig

from actbench.claims import LEADER_ENV, claimed, ddp_follower, follow, still_owned
from actbench.errors import UserError
from actbench.logs import error, say, warn
from actbench.placement import (
    busy_elsewhere, contention, distributed, cpu_clock, cpu_threads, keep_freed_memory, pack_limit, trainer_overrides, training_device,
    undo_nvml_check, usable_cpus, use_cuda_graph,
)
from actbench.runs import pending, plan_runs, write_member_hydra_dirs  # (registers the run-name resolver)


def quiet() -> None:
    """A normal run prints its own lines, not Lightning's set-up chatter."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches.*log_every_n_steps.*")


def activations_of(runs) -> list:
    """Each member's `activation()`: one factory per distinct activation config, built once here,
    so that a bad one is one line before anything is written."""
    from actbench.model_facts import activation_factory
    from actbench.packing import activation_key

    factories: dict = {}
    for r in runs:
        if activation_key(r.cfg) not in factories:
            make = factories[activation_key(r.cfg)] = activation_factory(r.cfg.activation)
            try:
                make()
            except (ImportError, AttributeError, TypeError, ValueError) as e:
                raise UserError(f"activation: {e}") from None
    return [factories[activation_key(r.cfg)] for r in runs]


def build_net(runs, members: list, data):
    """The pack: the configured plain model, packed by actbench with each member's activation."""
    from actbench.model import model_class

    cfg = runs[0].cfg
    return model_class(cfg).pack(cfg.model, [r.seed for r in runs], members, *data.shape(cfg.data))


def fit_pack(runs, resume: tuple[int, int] | None, claims=None) -> None:
    """Train and test one pack of runs (often a pack of one) that start from the same point and
    agree on everything but their seeds and activations; `claims` (the `claims.Claims` that make
    this process their owner) are checked at every epoch's end."""
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import TensorBoardLogger

    from actbench.checkpoints import PerSeedCheckpointIO
    from actbench.model import Classifier, eval_batch_size
    from actbench.record import Recorder, process_started
    from actbench.results import read_metrics
    from actbench.samples import TextSamples
    from actbench.schedule import instantiable, rate_factor

    cfg = runs[0].cfg
    undo_nvml_check()
    seeds = [r.seed for r in runs]
    threads = cpu_threads(cfg, len(seeds), (read_metrics(runs[0].dir) or {}).get("threads") if resume else None)
    torch.set_num_threads(threads)
    clock = cpu_clock()  # until training starts: what other processes leave of the cores
    torch.set_flush_denormal(bool(cfg.flush_denormal))
    if cfg.keep_freed_memory:
        keep_freed_memory()

    data = instantiate(cfg.data, seeds=seeds, steps_per_execution=int(cfg.steps_per_execution), eval_batch_size=eval_batch_size(cfg))
    data.prepare()  # bad or missing data fails here, before anything is written
    members = activations_of(runs)

    # max_queue: with TensorBoard's default of 10 every add_scalar waits on the writer thread (~75 us
    # per event instead of ~40); a packed run writes thousands per epoch. The recorder flushes each epoch.
    loggers = [
        TensorBoardLogger(
            save_dir=str(r.dir), name="", version="", default_hp_metric=False, purge_step=resume[0] + 1 if resume else 0, max_queue=10_000
        )
        for r in runs
    ]
    ckpt = runs[0].dir / "checkpoints" / cfg.checkpoint_name
    recorder = Recorder(
        runs,
        ckpt,
        log_every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)),
        resume_epoch=resume[1] if resume else 0,
        diverged_loss=float(cfg.diverged_loss),
        t_process=process_started() if first_job() else None,
    )
    probes = [instantiate(p) for p in cfg.probes.values() if p is not None]
    samples = [TextSamples()] if hasattr(data, "decode") else []  # a language model's own words, after its test
    extra = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    placement = trainer_overrides(cfg)
    plugins = [PerSeedCheckpointIO([r.dir for r in runs], seeds), *placement.pop("plugins", [])]
    owned = [still_owned(runs, claims)] if claims is not None else []
    trainer = instantiate(
        instantiable(cfg.trainer, "trainer"),
        logger=loggers,
        # probes fill the epoch's log that the recorder writes; ownership is checked before it writes
        callbacks=[*owned, *probes, *samples, recorder, *extra],
        plugins=plugins,
        **placement,
    )
    if trainer.world_size > 1:
        # DDP expects one backward per forward: one optimizer step per Lightning step, no graph
        data.steps = 1
    graph = trainer.world_size == 1 and use_cuda_graph(cfg, trainer.strategy.root_device)
    if trainer.strategy.root_device.type == "cpu" and trainer.is_global_zero:
        busy = contention(threads, busy_elsewhere(clock, cpu_clock()), usable_cpus())
        if busy:
            warn(f"{runs[0].name}: {busy}")
    try:
        # inside: a model that fails to build (a user's, say) is recorded as failed with its traceback
        try:
            net = build_net(runs, members, data)
        except InstantiationException as e:
            raise e.__cause__ or e  # the model's own error, with its traceback, not Hydra's wrapping of it
        rate = rate_factor(cfg.optimizer.get("schedule"), data.steps_per_epoch * int(cfg.trainer.max_epochs))
        module = Classifier(net, instantiate(instantiable(cfg.optimizer, "optimizer")), cuda_graph=graph, rate=rate,
                            clip_norm=cfg.trainer.get("clip_norm"))
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if resume else None)
        if not all(recorder.diverged):
            trainer.test(module, datamodule=data, verbose=False)
    except BaseException as e:
        recorder.fail(e)
        raise


_jobs_started = 0


def first_job() -> bool:
    return _jobs_started <= 1


def train_packs(todo: dict, cfg, claims=None, speak: bool = True, split: bool = True) -> list:
    """Train what `pending` left, pack by pack; returns the runs that failed (each recorded as
    failed, the sweep goes on)."""
    from actbench.packing import split_packs

    failed = []
    for point, group in todo.items():
        packs = [group]
        if split:
            limit = None
            if len(group) > 1:
                # every DDP rank must train the same packs, and ranks started side by side (SLURM's tasks)
                # each see their own device's free memory: under DDP only max_pack splits a group
                fits = None if distributed(cfg) else pack_limit(group[0].cfg, training_device(cfg))
                limit = min([n for n in (fits, cfg.max_pack) if n], default=None)
            packs, why = split_packs(group, limit)
            if why and speak:
                say(why)
            elif limit and len(group) > limit and speak:
                say(f"{len(group)} runs do not fit in one pack on this device; training them in packs of {limit}")
        for pack in packs:
            if point is not None and speak:
                more = f" (+{len(pack) - 1} packed)" if len(pack) > 1 else ""
                say(f"{pack[0].name}{more}: resuming after epoch {point[1]} (step {point[0]})")
            if claims is not None:
                # the DDP processes Lightning's launcher starts from this one inherit the environment
                os.environ[LEADER_ENV] = json.dumps({"runs": [str(r.dir) for r in pack], "resume": point})
            try:
                fit_pack(pack, point, claims)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - recorded as failed (traceback in metrics.json); the sweep goes on
                failed += pack
                warn(f"{pack[0].name}: failed: {type(e).__name__}: {' '.join(str(e).split())} (details in its metrics.json)")
            finally:
                os.environ.pop(LEADER_ENV, None)
                # a run's trainer, module and data reference each other; free their hundreds of MB
                # now rather than whenever the collector next looks, or a long sweep keeps growing
                gc.collect()
    return failed


def run(cfg: DictConfig):
    from actbench.checks import validate
    from actbench.results import VAL_ACC, Status, read_metrics

    global _jobs_started
    _jobs_started += 1
    if cfg.get("study") and HydraConfig.get().mode != RunMode.MULTIRUN:
        raise UserError("experiment=fair is a study of many runs (tune, then confirm): start it with -m, "
                        "python -m actbench.train -m experiment=fair")
    validate(cfg)
    quiet()
    runs = plan_runs(cfg)
    for r in runs:
        if r.cfg is not cfg:
            validate(r.cfg)

    if ddp_follower(cfg):
        todo, one_pack = follow(runs, cfg)
        failed = train_packs(todo, cfg, speak=False, split=not one_pack)
    else:
        # claimed before anything of theirs is read: whether a run is finished, or where it resumes,
        # is only settled for its owner
        with claimed(runs, cfg) as claims:
            todo = pending([r for r in runs if r.dir in claims.locks], cfg)
            if len(runs) > 1 or cfg.seeds is not None:
                # only the runs it trains: a finished run keeps its files, a refused one the .hydra/ of what it holds
                write_member_hydra_dirs([r for group in todo.values() for r in group], Path(HydraConfig.get().runtime.output_dir))
            failed = train_packs(todo, cfg, claims)
    if failed and HydraConfig.get().mode != RunMode.MULTIRUN:
        raise SystemExit(1)  # in a sweep, the report lists the failed runs and the next rerun retries them
    finals = [read_metrics(r.dir) or {} for r in runs]
    accs = [m.get("final", {}).get(VAL_ACC) for m in finals if m.get("status") == Status.FINISHED]
    accs = [a for a in accs if a is not None]
    return sum(accs) / len(accs) if accs else float("nan")  # for Hydra sweepers that optimise


class WritableOutput(HydraCallback):
    """Before any job: the run or sweep directory must take a file, else the command ends with one
    line and exit code 2 instead of a traceback from the first job that writes (Hydra creates the
    directory, then the job directories, before actbench's code runs)."""

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config.hydra.sweep.dir)

    @staticmethod
    def _check(directory) -> None:
        from actbench.files import check_writable

        try:
            check_writable(Path(str(directory)))
        except UserError as e:
            error(f"actbench: error: {e}")
            raise SystemExit(2) from None


class SweepWithoutMultirun(HydraCallback):
    """A preset that sweeps (`hydra.sweeper.params`) started without `-m` trains one run of its
    defaults, as Hydra does: say so, in one line, rather than let it pass for the sweep."""

    def on_run_start(self, config, **kwargs) -> None:
        params = config.hydra.sweeper.get("params") or {}
        if params:
            warn(f"actbench: this config sweeps {', '.join(params)}, but without -m it trains one run; "
                 "add -m to run the sweep")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")  # actbench/conf, inside the package
def hydra_main(cfg: DictConfig):
    try:
        return run(cfg)
    except UserError as e:
        error(f"actbench: error: {e}")
        raise SystemExit(2) from None


def main():
    """The command: the config-group choices typed are checked first (one line for an unknown
    one, where Hydra would print a page), then Hydra composes and runs."""
    from actbench.checks import check_choices

    try:
        check_choices(sys.argv[1:])
    except UserError as e:
        error(f"actbench: error: {e}")
        raise SystemExit(2) from None
    hydra_main()


if __name__ == "__main__":
    main()
