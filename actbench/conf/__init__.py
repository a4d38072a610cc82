"""actbench's configs (every knob), shipped in the package so that an installed actbench finds them;
Hydra reads them from here (`config_path="conf"` in actbench.train). The `conf/` at the repository's top is a link to this folder."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
