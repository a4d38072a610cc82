"""actbench's configs (every knob), shipped in the package so that an installed actbench finds them;
Hydra reads them from here (`config_path="conf"` in actbench.train). The `conf/` at the repository's top is a link to this folder.
And the small helpers that read configs outside a job: a group's file, what a `_target_` names, `${hydra:...}`."""

from contextlib import contextmanager
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent


def option(group: str, name: str = "default") -> dict:
    """One config file of a group as plain values (`option("report")`: conf/report/default.yaml),
    for code that needs a config's defaults outside Hydra, so that they are set in conf/ alone."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))


@contextmanager
def resolving_as_job(cfg):
    """Within it, `${hydra:...}` in `cfg` (a composed config holding its `hydra` node) resolves as in
    the job it describes (data.root's `${hydra:runtime.cwd}`), also outside a running job."""
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    before = instance.cfg
    instance.set_config(cfg)
    try:
        yield cfg
    finally:
        instance.cfg = before


def locate(path: str, key: str):
    """The object a `_target_` names (`key` says where it was set), or one line saying why it
    cannot be found; hydra.utils' own lookup logs a multi-line error before it raises."""
    import logging

    from hydra.utils import get_object

    from actbench.errors import ConfigError

    log = logging.getLogger("hydra.utils")
    disabled, log.disabled = log.disabled, True
    try:
        return get_object(path)
    except Exception as e:  # noqa: BLE001 - importing a user's module may raise anything; its message says what
        raise ConfigError(f"{key}={path!r}: {' '.join(str(e).split())}") from None
    finally:
        log.disabled = disabled
