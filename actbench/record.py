"""A run's outputs: `metrics.json` (status, config, curves, final metrics, timing), TensorBoard
scalars and hparams, the epoch-end checkpoint, and the terminal lines.

One `Run` per seed; the `Recorder` callback writes all of a pack's runs from the module's
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

from actbench.results import METRICS_FILE, SCHEMA, read_metrics

DECLARED_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss")  # what TensorBoard's HParams tab compares
CURVE_PREFIXES = ("train/", "val/", "time/")


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


def curve_name(tag: str) -> str:
    """metrics.json's name for a TensorBoard tag: train/loss -> train_loss, time/epoch_s -> epoch_s."""
    return tag.removeprefix("time/").replace("/", "_")


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


@dataclass
class Run:
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

    def start(self, resume_epoch: int, device: str, started: float) -> None:
        """Begin (or resume at `resume_epoch`) the metrics; curves past the checkpoint are dropped."""
        old = read_metrics(self.dir) if resume_epoch else None
        curves = (old or {}).get("curves", {})
        probes = (old or {}).get("probes", {})
        if old:
            curves = {k: v[:resume_epoch] for k, v in curves.items()}
            probes = {k: v[: resume_epoch + 1] for k, v in probes.items()}
        self.metrics = {
            "schema": SCHEMA,
            "status": "running",
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
        path = self.dir / METRICS_FILE
        tmp = path.with_name(f".{METRICS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(clean(self.metrics), indent=1))
        os.replace(tmp, path)  # readers never see half a file


def write_hparams(logger, hparams: dict) -> None:
    """Declare the run's hparams and the metrics they are compared on, without placeholder values:
    the HParams tab reads the metrics from the scalars of the same names."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    flat = {k: ("none" if v is None else v) for k, v in hparams.items()}
    exp, ssi, sei = hparams_summary(flat, {m: 0.0 for m in DECLARED_METRICS})
    writer = logger.experiment.file_writer
    for summary in (exp, ssi, sei):
        writer.add_summary(summary)


class Recorder(Callback):
    """Writes every run of the pack: start, each epoch, the end; saves the checkpoint each epoch."""

    def __init__(
        self,
        runs: list[Run],
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
        for run, logger in zip(self.runs, trainer.loggers):
            run.start(self.resume_epoch, device, self.t_job)
            if not self.resume_epoch and self.speaks:
                write_hparams(logger, run.hparams)

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
        n_samples = trainer.datamodule.train_idx.shape[1]  # per seed
        host["time/epoch_s"] = torch.full((len(self.runs),), epoch_s)
        host["time/samples_per_s"] = torch.full((len(self.runs),), n_samples / epoch_s)
        self._log_steps(trainer, {k: v.cpu() for k, v in steps.items()})
        self._flush(trainer, host, epoch=trainer.current_epoch + 1)
        # under DDP each process sees its own share of the batches: decide on the first and tell the
        # others, or some would stop and some would not
        loss = trainer.strategy.broadcast(host["train/loss"], src=0)
        for k, run in enumerate(self.runs):
            if not self.diverged[k] and not float(loss[k]) <= self.diverged_loss:  # NaN fails <= too
                self.diverged[k] = True
                run.end("diverged", f"training loss became {float(loss[k])} in epoch {trainer.current_epoch + 1}", fit_s=self.fit_s)
                print(f"{run.name}: diverged in epoch {trainer.current_epoch + 1} (loss {float(loss[k])}); recorded as diverged", flush=True)
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
                logger.log_metrics(values, step=step)
            curves = {curve_name(n): v for n, v in values.items() if n.startswith(CURVE_PREFIXES)}
            probes = {n: v for n, v in values.items() if not n.startswith(CURVE_PREFIXES)}
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
            f"train/{name}_step": torch.stack([v[s : s + self.every].mean(0) for s in starts]).tolist()
            for name, v in steps.items()
        }
        for k, logger in enumerate(trainer.loggers):
            if self.diverged[k]:
                continue
            for w, start in enumerate(starts):
                logger.log_metrics({tag: rows[w][k] for tag, rows in windows.items()}, step=first + min(start + self.every, n))

    def _print_epoch(self, trainer, host: dict) -> None:
        def mean(key):
            return float(host[key].nanmean()) if key in host else float("nan")

        print(
            f"{self.label}  epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            f"  train loss {mean('train/loss'):.4f} acc {100 * mean('train/acc'):.2f}%"
            f"  val loss {mean('val/loss'):.4f} acc {100 * mean('val/acc'):.2f}%"
            f"  {mean('time/epoch_s'):.2f}s ({mean('time/samples_per_s') * len(self.runs) / 1000:.1f}k samples/s)",
            flush=True,
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
            final = {name.replace("/", "_"): float(v[k]) for name, v in host.items()}
            logger.log_metrics({name: float(v[k]) for name, v in host.items()}, step=trainer.global_step)
            logger.experiment.flush()
            curves = run.metrics["curves"]
            final.update(
                {key: curves[key][-1] for key in ("train_loss", "train_acc", "val_loss", "val_acc") if curves.get(key)},
                epochs=len(curves.get("epoch", [])),
                steps=trainer.global_step,
            )
            run.metrics["final"] = final
            epoch_s = sorted(curves.get("epoch_s", []))
            timing_k = dict(timing, epoch_s_median=epoch_s[len(epoch_s) // 2] if epoch_s else None)
            run.end("finished", **timing_k)
            if self.speaks:
                print(f"{run.name}: test accuracy {100 * final.get('test_acc', float('nan')):.2f}%  logs: {run.dir}", flush=True)

    def fail(self, error: BaseException) -> None:
        """Mark every unfinished run of the pack failed, keeping its curves and the traceback; or
        interrupted, when the process was told to stop (Ctrl-C, or submitit requeueing a preempted
        SLURM job): no error of the run's own, and the same command resumes it."""
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        msg = f"{type(error).__name__}: {error}".strip().rstrip(":")
        for run in self.runs:
            if not run.metrics:
                run.start(self.resume_epoch, "unknown", self.t_job)  # keeps the curves up to the checkpoint
            if run.metrics.get("status") != "running":
                continue
            if interrupted:
                run.end("interrupted", f"{msg}; the same command resumes it from its last checkpoint", fit_s=self.fit_s)
            else:
                run.metrics["traceback"] = "".join(traceback.format_exception(error))
                run.end("failed", msg, fit_s=self.fit_s)
