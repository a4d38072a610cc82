"""Test-only Lightning callbacks, loaded by runs through `+callbacks.<name>._target_=callbacks.<Class>`."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """SIGKILL the run's own process once training reaches `step`: a hard crash mid-epoch."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RaiseAt(Callback):
    """Raise an ordinary exception at `step`: a crashed (not killed) run."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError(f"planted failure at step {trainer.global_step}")


class InterruptAt(Callback):
    """Send the run's own process SIGINT at `step`, as Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGINT)
