"""The atlas's sweeper (`experiment=atlas`): the fair study's sweeper, once per setting.

Before anything trains, each setting of `atlas.settings` is composed with its first job and
checked (a bad value ends the sweep in one line naming the setting) and its data is looked for:
a setting whose data is missing is skipped with one line, the others go on. Then each setting's
study runs in `<sweep>/<setting>/` (tune, then confirm, as `experiment=fair`), the settings side
by side: every round, the packs of each setting's next stage go to the configured launcher in one
batch (on a cluster, all at once), skipping finished runs and resuming unfinished ones as every
sweep does.
"""

import sys
from dataclasses import dataclass
from typing import List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.actbench_sweeper.packing_sweeper import PackingSweeperConf
from hydra_plugins.actbench_sweeper.study_sweeper import StudySweeper


@dataclass
class AtlasSweeperConf(PackingSweeperConf):
    _target_: str = "hydra_plugins.actbench_sweeper.atlas_sweeper.AtlasSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="atlas", node=AtlasSweeperConf, provider="actbench")


class AtlasSweeper(StudySweeper):
    def sweep(self, arguments: List[str]):
        from actbench import atlas
        from actbench import study as st
        from actbench.errors import UserError

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        base = [*self._parse_config(), *arguments]
        planned, self._looked_for = [], {}
        try:
            for setting in atlas.settings(self.config.get("atlas")):
                where = f"atlas.settings.{setting.name}"
                try:
                    s = st.settings(atlas.study_node(self.config.get("study"), setting))
                    (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(setting.jobs(base)), None)
                    report, missing = self._check(jobs[0])
                except UserError as e:
                    raise type(e)(f"{where}: {e}") from None
                except Exception as e:  # noqa: BLE001 - Hydra's own refusals of an override, as one line
                    raise UserError(f"{where}: {' '.join(str(e).split())}") from None
                planned.append((setting, s, jobs, report, missing))
                if missing:
                    print(f"atlas: {setting.name}: skipped, {missing}", flush=True)
        except UserError as e:
            print(f"actbench: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        sweep_dir = self.begin()
        activations = [arm.name for arm in st.arms(planned[0][2])] if planned else []
        atlas.write(sweep_dir, activations, {setting.name: {"overrides": list(setting.overrides) + list(setting.study), "report": report,
                                                            "skipped": missing} for setting, _, _, report, missing in planned})
        for setting, _, _, _, missing in planned:
            if not missing:
                print(f"atlas: {setting.name}: {' '.join(setting.overrides) or 'the atlas preset as it is'}", flush=True)
        # the settings side by side: each round, every setting's next stage goes out in one batch
        self.drive([self.study(jobs, s, sweep_dir / setting.name, f" {setting.name}") for setting, s, jobs, _, missing in planned if not missing])
        return self.returns

    def _check(self, job: List[str]):
        """(the setting's report settings, why its data cannot be had or None), composing its first
        job as a run would; a bad value raises ConfigError. Settings on the same data (most are on
        Fashion-MNIST) look for it once."""
        import json

        from hydra.utils import instantiate

        from actbench.errors import DataError

        with self.composed(job) as cfg:
            report = OmegaConf.to_container(cfg.report, resolve=True) if cfg.get("report") else None
            data = OmegaConf.to_container(cfg.data, resolve=True)
            key = json.dumps(data, sort_keys=True, default=str)
            if key not in self._looked_for:
                try:
                    instantiate(cfg.data, seeds=[0]).load()
                    self._looked_for[key] = None
                except DataError as e:
                    self._looked_for[key] = str(e)
        return report, self._looked_for[key]
