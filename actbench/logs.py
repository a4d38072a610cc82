"""A run's terminal lines: the `actbench` logger, whose INFO lines go to stdout and warnings and
errors to stderr as plain text, and which, inside a Hydra job, also writes them to the job's
`train.log` with Hydra's time stamps (conf/train.yaml's `hydra.job_logging` sets it up, per job).
Where nothing has set the logger up (logging switched off in Hydra, a script that drives the
Recorder itself), the first line gives it the two plain console handlers, so no line is lost.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("actbench")


class BelowWarning(logging.Filter):
    """Lets through what stdout gets: below WARNING (the rest goes to stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class CurrentStream(logging.StreamHandler):
    """A handler that writes to whatever sys.stdout (or sys.stderr) is at the time of the line,
    not the one of when it was made: redirections (a notebook's, a test's capture) then see it."""

    def __init__(self, name: str):
        self.name_of_stream = name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _console() -> None:
    if log.handlers:
        return
    plain = logging.Formatter("%(message)s")
    out, err = CurrentStream("stdout"), CurrentStream("stderr")
    out.addFilter(BelowWarning())
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(plain)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def say(line: str) -> None:
    """One line of what a run is doing, on stdout."""
    _console()
    log.info(line)


def warn(line: str) -> None:
    """One line about something that went wrong, on stderr."""
    _console()
    log.warning(line)


def error(line: str) -> None:
    """The one line a run ends with when it cannot go on, on stderr."""
    _console()
    log.error(line)
