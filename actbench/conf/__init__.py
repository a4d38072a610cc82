"""actbench's configs (every knob), shipped in the package so that an installed actbench finds them;
Hydra reads them from here (`config_path="conf"` in actbench.train). The `conf/` at the repository's top is a link to this folder."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent


def option(group: str, name: str = "default") -> dict:
    """One config file of a group as plain values (`option("report")`: conf/report/default.yaml),
    for code that needs a config's defaults outside Hydra, so that they are set in conf/ alone."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
