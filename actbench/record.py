"""A run's outputs: `metrics.json` (status, config, curves, final metrics, timing), TensorBoard
scalars and hparams, the epoch-end checkpoint, and the terminal lines.

One `RunRecord` per seed; the `Recorder` callback writes all of a pack's runs from the module's
per-epoch tensors, copied to the host once per epoch (a copy per tensor, no per-step syncs).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from actbench import hparams_tab
from actbench.files import atomic_write
from actbench.logs import say, warn
from actbench.results import METRICS_FILE, SCHEMA, TRAIN_ACC, TRAIN_LOSS, VAL_ACC, VAL_LOSS, Status, data_section, read_metrics
from actbench.stats import nanmedian
from actbench.tags import ACC, CURVE_GROUPS, EPOCH, EPOCH_S, LOSS, SAMPLES_PER_S, TRAIN, VAL, json_name, metric_tag, step_tag


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean(x):
    """JSON-safe: non-finite floats become null (a diverged run's status says why)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def finite(values: dict) -> dict:
    """The values TensorBoard gets: a NaN or infinity (a diverging seed, a layer without a
    gradient) is a gap in the chart, not a point; metrics.json records it as null."""
    return {k: v for k, v in values.items() if math.isfinite(v)}


def versions() -> dict:
    import hydra
    import lightning

    import actbench

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "hydra": hydra.__version__,
        "actbench": actbench.__version__,
    }


def process_started() -> float:
    """When this process started: from /proc on Linux, so that start-up counts the interpreter and
    imports, also in a launcher's job (whose pickled entry point carries the launching process's
    module globals, not its own); elsewhere, now."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def up_to(table: dict, epoch: int) -> dict:
    """A section's rows of epochs up to `epoch`, by its epoch column: probes switched on at a
    resume start after epoch 0, so a row's place is not its epoch."""
    keep = [i for i, e in enumerate(table.get("epoch", [])) if e is not None and e <= epoch]
    return {k: [v[i] for i in keep] for k, v in table.items()}


@dataclass
class RunRecord:
    """One run's directory and the metrics.json it accumulates (a packed job has one per member)."""

    name: str
    dir: Path
    seed: int
    overrides: dict
    hparams: dict
    config: dict
    metrics: dict = field(default_factory=dict)
    config_hash: str = ""  # what the run computes; a rerun skips it only for the same
    writes: bool = True  # False on every DDP process but the first
    cfg: Any = None  # its composed config (DictConfig), which training reads
    task_overrides: list = field(default_factory=list)  # as an unpacked job of it would have them
    choices: dict = field(default_factory=dict)  # its config-group choices, as Hydra's runtime.choices

    def start(self, resume_epoch: int, device: str, started: float) -> None:
        """Begin (or resume at `resume_epoch`) the metrics; curves past the checkpoint are dropped."""
        old = read_metrics(self.dir) if resume_epoch else None
        curves = (old or {}).get("curves", {})
        probes = (old or {}).get("probes", {})
        if old:
            curves, probes = up_to(curves, resume_epoch), up_to(probes, resume_epoch)
        self.metrics = {
            "schema": SCHEMA,
            "status": Status.RUNNING,
            "error": None,
            "name": self.name,
            "config_hash": self.config_hash,
            "overrides": self.overrides,
            "hparams": self.hparams,
            "config": self.config,
            "curves": curves,
            "probes": probes,
            "final": {},
            "timing": {"started": (old or {}).get("timing", {}).get("started", now()), "resumed_at_epoch": resume_epoch or None},
            "versions": versions(),
            "device": device,
            "threads": torch.get_num_threads() if device == "cpu" else None,  # the bits of a CPU run depend on it
            "host": {"hostname": platform.node(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")},
        }
        self._t_start = started
        self.write()

    def append(self, section: str, values: dict) -> None:
        """Add one epoch's row; a value missing this epoch (validation skipped, a probe switched
        on later) is null, so every list stays aligned with the `epoch` list."""
        table = self.metrics[section]
        n = len(table.get("epoch", []))
        for k, v in values.items():
            table.setdefault(k, [None] * n).append(v)
        for column in table.values():
            if len(column) == n:
                column.append(None)

    def end(self, status: str, error: str | None = None, **timing) -> None:
        self.metrics["status"] = status
        self.metrics["error"] = error
        self.metrics["timing"].update(ended=now(), **timing)
        self.write()

    def write(self) -> None:
        if not self.writes:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # readers never see half a file, and a full disk leaves the last good one and no temporary file
        atomic_write(self.dir / METRICS_FILE, json.dumps(clean(self.metrics), indent=1))


def write_hparams(logger, run: RunRecord) -> None:
    """The run's HParams session (the experiment is the sweep's, declared at its root by
    actbench.hparams_tab); the tab reads the metrics from the scalars of the declared tags."""
    hparams_tab.write_session_start(logger.experiment.file_writer, hparams_tab.session_hparams(run.hparams, run.overrides))


class Recorder(Callback):
    """Writes every run of the pack: start, each epoch, the end; saves the checkpoint each epoch."""

    def __init__(
        self,
        runs: list[RunRecord],
        checkpoint_path: Path,
        log_every_n_steps: int = 50,
        resume_epoch: int = 0,
        diverged_loss: float = math.inf,
        t_process: float | None = None,
    ):
        self.runs, self.checkpoint_path, self.every = runs, Path(checkpoint_path), max(1, log_every_n_steps)
        self.resume_epoch, self.diverged_loss = resume_epoch, diverged_loss
        self.t_job = time.time()
        self.t_first = t_process or self.t_job
        self.t_first_step = None
        self.fit_s = 0.0
        self.diverged = [False] * len(runs)
        self.speaks = True

    @property
    def label(self) -> str:
        if len(self.runs) == 1:
            return self.runs[0].name
        return f"{self.runs[0].name} (+{len(self.runs) - 1} packed)"

    # ---------------------------------------------------------------- fit

    def on_fit_start(self, trainer, pl_module) -> None:
        self.speaks = trainer.is_global_zero
        for run in self.runs:
            run.writes = trainer.is_global_zero
        device = str(trainer.strategy.root_device)
        if device.startswith("cuda"):
            device += f" ({torch.cuda.get_device_name(trainer.strategy.root_device)})"
        data = trainer.datamodule
        for run, logger in zip(self.runs, trainer.loggers):
            run.start(self.resume_epoch, device, self.t_job)
            run.metrics["data"] = data_section(data)
            # Lightning writes them to hparams.yaml after this hook (once: a resumed run keeps its file)
            logger.log_hyperparams({"hparams": run.hparams, "config": run.config})
            if not self.resume_epoch and self.speaks:
                write_hparams(logger, run)

    def on_train_start(self, trainer, pl_module) -> None:
        # what probes measured at initialisation (epoch 0); nothing else is in the log yet
        if pl_module.epoch_log and trainer.current_epoch == 0:
            self._flush(trainer, pl_module.epoch_log, epoch=0)
        pl_module.epoch_log = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.t_first_step is None:
            self.t_first_step = time.time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t_epoch = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        steps = pl_module.train_epoch_steps()
        host = {k: v.detach().float().cpu() for k, v in pl_module.epoch_log.items()}  # the epoch's copies to the host
        epoch_s = time.perf_counter() - self.t_epoch
        self.fit_s += epoch_s
        n_samples = trainer.datamodule.examples_per_epoch  # per seed
        host[EPOCH_S] = torch.full((len(self.runs),), epoch_s)
        host[SAMPLES_PER_S] = torch.full((len(self.runs),), n_samples / epoch_s)
        self._log_steps(trainer, {k: v.cpu() for k, v in steps.items()})
        self._flush(trainer, host, epoch=trainer.current_epoch + 1)
        # under DDP each process sees its own share of the batches: decide on the first and tell the
        # others, or some would stop and some would not
        loss = trainer.strategy.broadcast(host[metric_tag(LOSS, TRAIN)], src=0)
        for k, run in enumerate(self.runs):
            if not self.diverged[k] and not float(loss[k]) <= self.diverged_loss:  # NaN fails <= too
                self.diverged[k] = True
                run.end(Status.DIVERGED, f"training loss became {float(loss[k])} in epoch {trainer.current_epoch + 1}", fit_s=self.fit_s)
                if self.speaks:
                    hparams_tab.write_session_end(trainer.loggers[k].experiment.file_writer, hparams_tab.FAILURE)
                say(f"{run.name}: diverged in epoch {trainer.current_epoch + 1} (loss {float(loss[k])}); recorded as diverged")
        if all(self.diverged):
            trainer.should_stop = True
        if self.speaks:
            self._print_epoch(trainer, host)
        trainer.save_checkpoint(self.checkpoint_path)

    def _flush(self, trainer, host: dict, epoch: int) -> None:
        step = trainer.global_step
        columns = {name: v.tolist() for name, v in host.items()}  # indexing tensors per value costs ~100x more
        for k, (run, logger) in enumerate(zip(self.runs, trainer.loggers)):
            values = {name: column[k] for name, column in columns.items()}
            if not self.diverged[k]:
                logger.log_metrics({**finite(values), EPOCH: epoch}, step=step)
            curves = {json_name(n): v for n, v in values.items() if n.startswith(CURVE_GROUPS)}
            probes = {n: v for n, v in values.items() if not n.startswith(CURVE_GROUPS)}
            if curves:
                run.append("curves", {"epoch": epoch, **curves})
            if probes:
                run.append("probes", {"epoch": epoch, **probes})
            if not self.diverged[k]:
                run.write()
            logger.experiment.flush()

    def _log_steps(self, trainer, steps: dict) -> None:
        """Per-step training curves, as means over windows of log_every_n_steps."""
        n = steps["loss"].shape[0]
        if not n:
            return
        first = trainer.global_step - n
        starts = range(0, n, self.every)
        # [windows, K] per curve as plain lists: one conversion instead of windows x K tensor reads
        windows = {
            step_tag(name): torch.stack([v[s : s + self.every].mean(0) for s in starts]).tolist()
            for name, v in steps.items()
        }
        for k, logger in enumerate(trainer.loggers):
            if self.diverged[k]:
                continue
            for w, start in enumerate(starts):
                logger.log_metrics(finite({tag: rows[w][k] for tag, rows in windows.items()}), step=first + min(start + self.every, n))

    def _print_epoch(self, trainer, host: dict) -> None:
        def mean(key):
            return float(host[key].nanmean()) if key in host else float("nan")

        # a pack's line gives its members' means: each member's own numbers are in its metrics.json
        of = f"  mean of {len(self.runs)}:" if len(self.runs) > 1 else ""
        say(
            f"{self.label}  epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{of}"
            f"  train loss {mean(metric_tag(LOSS, TRAIN)):.4f} acc {100 * mean(metric_tag(ACC, TRAIN)):.2f}%"
            f"  val loss {mean(metric_tag(LOSS, VAL)):.4f} acc {100 * mean(metric_tag(ACC, VAL)):.2f}%"
            f"  {mean(EPOCH_S):.2f}s ({mean(SAMPLES_PER_S) * len(self.runs) / 1000:.1f}k samples/s)"
        )

    # ---------------------------------------------------------------- test and the end

    def on_test_end(self, trainer, pl_module) -> None:
        host = {k: v.detach().float().cpu() for k, v in pl_module.epoch_log.items()}
        timing = {
            "wall_s": round(time.time() - self.t_job, 3),
            "startup_s": round((self.t_first_step or time.time()) - self.t_first, 3),
            "fit_s": round(self.fit_s, 3),
            "first_step_at": self.t_first_step,
        }
        for k, (run, logger) in enumerate(zip(self.runs, trainer.loggers)):
            if self.diverged[k]:
                continue
            final = {json_name(name): float(v[k]) for name, v in host.items()}
            logger.log_metrics(finite({name: float(v[k]) for name, v in host.items()}), step=trainer.global_step)
            if self.speaks:
                hparams_tab.write_session_end(logger.experiment.file_writer, hparams_tab.SUCCESS)
            logger.experiment.flush()
            curves = run.metrics["curves"]
            final.update(
                {key: curves[key][-1] for key in (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC) if curves.get(key)},
                epochs=len(curves.get("epoch", [])),
                steps=trainer.global_step,
            )
            run.metrics["final"] = final
            # a pack's epoch is its members' together: `members` says how many shared it
            timing_k = dict(timing, epoch_s_median=nanmedian(curves.get("epoch_s", [])), members=len(self.runs))
            run.end(Status.FINISHED, **timing_k)
            if self.speaks:
                say(f"{run.name}: {trainer.datamodule.summary(final)}  logs: {run.dir}")

    def fail(self, error: BaseException) -> None:
        """Mark every unfinished run of the pack failed, keeping its curves and the traceback; or
        interrupted, when the process was told to stop (Ctrl-C, or submitit requeueing a preempted
        SLURM job): no error of the run's own, and the same command resumes it."""
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        msg = f"{type(error).__name__}: {error}".strip().rstrip(":")
        resumes = "the same command resumes it from its last checkpoint"
        if interrupted and self.speaks:  # Lightning turns Ctrl-C into a quiet exit: say what became of the runs
            warn(f"{self.label}: interrupted ({msg}); {resumes}")
        for run in self.runs:
            try:
                if not run.metrics:
                    run.start(self.resume_epoch, "unknown", self.t_job)  # keeps the curves up to the checkpoint
                if run.metrics.get("status") != Status.RUNNING:
                    continue
                if interrupted:
                    run.end(Status.INTERRUPTED, f"{msg}; {resumes}", fit_s=self.fit_s)
                else:
                    run.metrics["traceback"] = "".join(traceback.format_exception(error))
                    run.end(Status.FAILED, msg, fit_s=self.fit_s)
            except OSError as e:
                # the disk that failed the run may refuse this write too: the caller reports the first
                # error, and the metrics.json left in place (a good one) says running, which reads as
                # interrupted once this process is gone
                warn(f"{run.name}: could not record it as {'interrupted' if interrupted else 'failed'} "
                     f"({e.strerror or type(e).__name__})")
