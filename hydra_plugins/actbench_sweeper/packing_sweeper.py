"""actbench's default sweeper: Hydra's basic sweeper, whose jobs are packs.

Hydra's grammar, `hydra.sweeper.params` and `max_batch_size` work as in the basic sweeper; the
jobs it expands are then grouped by `actbench.packing.pack_jobs` (runs that differ only in seed
and activation train as one packed model), so every launcher gets one job per pack.
`pack=false` launches one job per run.
"""

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class PackingSweeperConf:
    _target_: str = "hydra_plugins.actbench_sweeper.packing_sweeper.PackingSweeper"
    max_batch_size: Optional[int] = None  # jobs (packs) launched at once
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="packing", node=PackingSweeperConf, provider="actbench")


class PackingSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        launch = self.launcher.launch

        def launch_or_explain(job_overrides, initial_job_idx):
            """The launcher's launch; a job array that sbatch refuses ends the sweep with one line."""
            try:
                return launch(job_overrides, initial_job_idx=initial_job_idx)
            except Exception as e:  # noqa: BLE001 - only sbatch's refusals are explained; the rest go on up
                if "sbatch" not in str(e):
                    raise
                from actbench.placement import sbatch_refusal

                print(f"actbench: error: {sbatch_refusal(str(e), config.hydra.launcher)}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None

        self.launcher.launch = launch_or_explain

    def split_arguments(self, overrides, max_batch_size) -> List[List[List[str]]]:
        from actbench.packing import pack_jobs

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        packs = pack_jobs(jobs, pack=bool(self.config.get("pack", True)), max_pack=self.config.get("max_pack"))
        self.check_all(packs)
        size = max_batch_size or len(packs) or 1
        return [packs[i : i + size] for i in range(0, len(packs), size)]

    def check_all(self, packs: List[List[str]]) -> None:
        """Compose every pack and check its values before any job starts: a bad value in the last
        pack must not wait for the first ones to train. A pack is composed with its first member
        (its other keys are the pack's); the other members' seeds and activations, the keys they
        differ in, are checked without composing each (a composition costs ~0.1 s)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from actbench.checks import RULES, no_such
        from actbench.errors import ConfigError
        from actbench.packing import MEMBERS_KEY, override_key, parse_value

        if getattr(self, "hydra_context", None) is None:
            return  # not set up by Hydra (a sweeper built by hand): nothing to compose with
        loader = self.hydra_context.config_loader
        # with the command's own hydra overrides: a user's hydra.searchpath adds activations
        activations = set(loader.get_group_options("activation", config_name=self.config.hydra.job.config_name,
                                                   overrides=list(self.config.hydra.overrides.hydra)))
        parser = OverridesParser.create()
        try:
            for job in packs:
                members = next((parse_value(o) for o in job if override_key(o) == MEMBERS_KEY), [[]])
                shared = [o for o in job if override_key(o) != MEMBERS_KEY]
                with self.composed(shared + list(members[0])):
                    pass  # composed and checked is all this needs
                for member in members[1:]:
                    for o in parser.parse_overrides(list(member)):
                        key, value = o.key_or_group, o.value()
                        if key == "activation" and value not in activations:
                            raise no_such("activation", value, activations)
                        if key == "seed" and not RULES["seed"][0](value):
                            raise ConfigError(f"seed={value!r}: must be {RULES['seed'][1]}")
        except ConfigError as e:
            print(f"actbench: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    @contextmanager
    def composed(self, overrides: List[str]):
        """A job's config as Hydra composes it for the launcher, checked (ConfigError, one line),
        resolving `${hydra:...}` as in the job."""
        from actbench.checks import validate
        from actbench.conf import resolving_as_job

        cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
        with resolving_as_job(cfg):
            validate(cfg)
            yield cfg

    def validate_batch_is_legal(self, batch) -> None:
        pass  # every pack was composed and checked before the first was launched (check_all)
