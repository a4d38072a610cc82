"""Test-only Lightning callbacks, loaded by runs through `+callbacks.<name>._target_=callbacks.<Class>`."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class AtStep(Callback):
    """Does `act` once training reaches `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            self.act(trainer)

    def act(self, trainer):
        raise NotImplementedError


class KillAt(AtStep):
    """SIGKILL the run's own process: a hard crash mid-epoch."""

    def act(self, trainer):
        os.kill(os.getpid(), signal.SIGKILL)


class RaiseAt(AtStep):
    """Raise an ordinary exception: a crashed (not killed) run."""

    def act(self, trainer):
        raise RuntimeError(f"planted failure at step {trainer.global_step}")


class InterruptAt(AtStep):
    """Send the run's own process SIGINT, as Ctrl-C would."""

    def act(self, trainer):
        # a process started in the background by a non-interactive shell inherits SIGINT ignored,
        # and Python then installs no KeyboardInterrupt handler: give it the one a terminal's has
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)


class KillInStage(Callback):
    """SIGKILL the process as soon as a run of the given study stage (its directory's parent) starts."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_start(self, trainer, pl_module):
        if any(f"/{self.stage}/" in str(logger.log_dir) + "/" for logger in trainer.loggers):
            os.kill(os.getpid(), signal.SIGKILL)


class PauseAt(AtStep):
    """Write `signal_file` and wait there, mid-run and owning it, until the test kills the process."""

    def __init__(self, step: int, signal_file: str):
        super().__init__(step)
        self.signal_file = signal_file

    def act(self, trainer):
        import time
        from pathlib import Path

        Path(self.signal_file).write_text(str(os.getpid()))
        while True:
            time.sleep(1)
