"""The atlas (`experiment=atlas`): the fair study (actbench.study) in each setting of a list, over
one list of activations, so that one report can say where an answer holds and where it flips.

This module owns the atlas's plan: its settings (`atlas.settings`, each a name and the overrides
that make it) and their checks, which of a setting's overrides go to its jobs and which to its
study, where a setting's runs live (`<sweep>/<setting>/`, an ordinary study directory), and
`atlas.json` at the sweep's root (each setting's overrides, report settings, and why one was
skipped). The sweeper (hydra_plugins/actbench_sweeper/atlas_sweeper.py) runs the studies;
actbench.report.atlas presents the answer across them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from actbench.errors import ConfigError
from actbench.packing import is_member_key, override_key, parse_value

ATLAS_FILE = "atlas.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# keys that are the atlas's to set, not a setting's: one list of activations and seeds across all
NOT_A_SETTINGS = ("seed", "seeds", "members", "name", "out_dir")


@dataclass(frozen=True)
class Setting:
    name: str
    overrides: tuple[str, ...]  # for its jobs: `experiment=vit` runs it with that preset's recipe
    study: tuple[str, ...] = ()  # `study.*` overrides: its own grid of rates, say

    def jobs(self, base: list[str]) -> list[str]:
        """The atlas's overrides for every job (`base`) with this setting's on top: a key the
        setting sets is its own, and its `experiment=` replaces the atlas's preset. The study's and
        the atlas's keys stay with the sweeper: another preset's config has neither."""
        mine = {override_key(o) for o in self.overrides}
        return [o for o in base if override_key(o) not in mine and override_key(o).split(".")[0] not in ("study", "atlas")] + list(self.overrides)


def settings(atlas) -> list[Setting]:
    """The settings to run, from the `atlas` config node, checked: one line naming the key when wrong.
    `atlas.only` (a list of names) runs some of them."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(atlas, resolve=True) if OmegaConf.is_config(atlas) else dict(atlas or {})
    given = node.get("settings")
    if not isinstance(given, dict) or not given:
        raise ConfigError(f"atlas.settings={given!r}: must map each setting's name to its overrides, e.g. {{cnn: [model=cnn]}}")
    out = []
    for name, overrides in given.items():
        if not NAME.fullmatch(str(name)):
            raise ConfigError(f"atlas.settings.{name}: a setting's name is a folder's: letters, digits, _ . -")
        overrides = overrides or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"atlas.settings.{name}={overrides!r}: must be a list of overrides, e.g. [model=cnn, model.norm=batch]")
        for o in overrides:
            key = override_key(o)
            if is_member_key(key) or key in NOT_A_SETTINGS or key.startswith(("hydra.", "hydra/", "atlas")):
                raise ConfigError(f"atlas.settings.{name}: {o!r} is the atlas's to set for every setting, not one setting's")
        study = tuple(o for o in overrides if override_key(o).startswith("study."))
        out.append(Setting(str(name), tuple(o for o in overrides if o not in study), study))
    only = node.get("only")
    if only is not None:
        names = [s.name for s in out]
        if not isinstance(only, list) or not only or any(n not in names for n in only):
            raise ConfigError(f"atlas.only={only!r}: must list settings of atlas.settings ({', '.join(names)})")
        out = [s for s in out if s.name in only]
    return out


def study_node(study, setting: Setting) -> dict:
    """The atlas's `study` node with the setting's own `study.*` overrides applied."""
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(study, resolve=True) if OmegaConf.is_config(study) else dict(study or {}))
    for o in setting.study:
        OmegaConf.update(node, override_key(o).removeprefix("study."), parse_value(o.lstrip("+~")), force_add=True)
    return OmegaConf.to_container(node)


# ---------------------------------------------------------------- atlas.json


def write(sweep_dir: Path, activations: list[str], entries: dict[str, dict]) -> Path:
    """`atlas.json`: the activations and, per setting, {overrides, report, skipped}; settings
    recorded by an earlier command (`atlas.only` runs some) stay, the ones planned now replace theirs."""
    path = Path(sweep_dir) / ATLAS_FILE
    before = (read(sweep_dir) or {}).get("settings") or {}
    path.write_text(json.dumps({"activations": activations, "settings": {**before, **entries}}, indent=1, default=str))
    return path


def read(sweep_dir: Path) -> dict | None:
    try:
        doc = json.loads((Path(sweep_dir) / ATLAS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("settings"), dict) else None
