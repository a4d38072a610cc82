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
        os.kill(os.getpid(), signal.SIGINT)
