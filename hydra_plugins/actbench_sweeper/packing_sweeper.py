"""actbench's default sweeper: Hydra's basic sweeper, whose jobs are packs.

Hydra's grammar, `hydra.sweeper.params` and `max_batch_size` work as in the basic sweeper; the
jobs it expands are then grouped by `actbench.packing.pack_jobs` (runs that differ only in seed
and activation train as one packed model), so every launcher gets one job per pack.
`pack=false` launches one job per run.
"""

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
    def split_arguments(self, overrides, max_batch_size) -> List[List[List[str]]]:
        from actbench.packing import pack_jobs

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        packs = pack_jobs(jobs, pack=bool(self.config.get("pack", True)), max_pack=self.config.get("max_pack"))
        size = max_batch_size or len(packs) or 1
        return [packs[i : i + size] for i in range(0, len(packs), size)]
