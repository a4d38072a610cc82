"""The fair study's sweeper (`experiment=fair`): a packing sweeper that runs two stages.

Tune: every activation of the sweep at every learning rate of `study.lrs` (or Optuna's trials
over `study.nuisance`) with the tune seeds, scored on validation, the grid growing past an edge
its best rate sits on (`study.max_extend` times at most). Confirm: each activation at its own
selection with `study.seeds`. Runs land in `<sweep>/tune/` and `<sweep>/confirm/`, each an
ordinary run directory; every stage's jobs are packs, launched by the configured launcher. The
decisions are actbench.study's, recomputed from the runs on disk, so the same command resumes.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from hydra_plugins.actbench_sweeper.packing_sweeper import PackingSweeper, PackingSweeperConf


@dataclass
class StudySweeperConf(PackingSweeperConf):
    _target_: str = "hydra_plugins.actbench_sweeper.study_sweeper.StudySweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="study", node=StudySweeperConf, provider="actbench")


class StudySweeper(PackingSweeper):
    def sweep(self, arguments: List[str]):
        from actbench import study as st
        from actbench.errors import UserError

        try:
            s = st.settings(self.config.get("study") or {})
        except UserError as e:
            print(f"actbench: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]), None)
        self.drive([self.study(jobs, s, self.begin())])
        return self.returns

    def begin(self) -> Path:
        """The sweep directory, made, with the sweep's config beside it; the launch counters reset."""
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        self.job_idx, self.returns = 0, []
        return sweep_dir

    def drive(self, studies: list) -> None:
        """Run studies side by side: in each round, the jobs that every unfinished study asks for go
        out together, as packs, so that a cluster trains several studies' stages at once."""
        active = list(studies)
        while active:
            batch = []
            for study in list(active):
                try:
                    batch += next(study)
                except StopIteration:
                    active.remove(study)
            if batch:
                self._launch(batch)

    def study(self, jobs: List[List[str]], s, sweep_dir: Path, label: str = ""):
        """One study in `sweep_dir`, as a generator of its rounds' jobs (tune rounds, then confirm);
        each round's runs are on disk when the next is asked for."""
        from actbench import study as st

        arms = st.arms(jobs)
        chosen, rows = yield from (self._search if s.searched else self._grid)(arms, s, sweep_dir / "tune")
        st.write_selection(sweep_dir, s, rows)
        if chosen is None:
            print(f"study{label}: some tune runs did not finish (another process owns them, or they failed to start); "
                  "the same command continues the study", flush=True)
            return
        for arm in arms:
            print(f"study{label}: {arm.label}: {', '.join(chosen[arm].overrides())}", flush=True)
        yield [job for arm in arms for job in chosen[arm].jobs(s.seeds, sweep_dir / "confirm")]

    def _launch(self, jobs: List[List[str]]) -> None:
        """One stage's jobs, as packs, in batches of max_batch_size."""
        from actbench.packing import pack_jobs

        packs = pack_jobs(jobs, pack=bool(self.config.get("pack", True)), max_pack=self.config.get("max_pack"))
        size = self.max_batch_size or len(packs) or 1
        for i in range(0, len(packs), size):
            batch = packs[i : i + size]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            for r in results:
                _ = r.return_value  # a job that failed to run (not a run that failed) stops the study
            self.job_idx += len(batch)
            self.returns.append(results)

    def _grid(self, arms, s, tune_dir: Path):
        """Every arm at every rate of the grid; then, while an arm's best rate is on an edge, the
        next rate beyond it. Yields each round's jobs; returns ({arm: chosen point} or None while
        runs are missing, rows)."""
        from actbench import study as st

        tried = {arm: list(s.lrs) for arm in arms}
        launched: set = set()
        while True:
            todo = [p for arm in arms for lr in tried[arm] if (p := st.lr_point(arm, lr)) not in launched]
            yield [job for p in todo for job in p.jobs(s.tune_seeds, tune_dir)]
            launched |= set(todo)
            scores = {p: st.score(p, s, tune_dir, self.exclude) for p in launched}
            if any(sc.value is None for sc in scores.values()):
                return None, self._rows(arms, tried, scores, None, s)
            grew = False
            for arm in arms:
                nxt = st.extend(tried[arm], st.best([st.lr_point(arm, lr) for lr in tried[arm]], scores, s).lr, s)
                if nxt is not None:
                    tried[arm].append(nxt)
                    grew = True
            if not grew:
                chosen = {arm: st.best([st.lr_point(arm, lr) for lr in tried[arm]], scores, s) for arm in arms}
                return chosen, self._rows(arms, tried, scores, chosen, s)

    def _search(self, arms, s, tune_dir: Path):
        """`study.trials` rounds of Optuna's ask/tell per arm over the rate and study.nuisance,
        yielding each round's jobs."""
        from optuna.trial import TrialState

        from actbench import study as st

        studies = {arm: st.searcher(arm, s) for arm in arms}
        points: dict = {arm: [] for arm in arms}
        scores: dict = {}
        for _ in range(s.trials):
            asked = {arm: st.ask(arm, studies[arm], s) for arm in arms}
            yield [job for _, p in asked.values() for job in p.jobs(s.tune_seeds, tune_dir)]
            for arm, (trial, p) in asked.items():
                scores[p] = sc = st.score(p, s, tune_dir, self.exclude)
                points[arm].append(p)
                if sc.value is None:
                    return None, self._rows(arms, None, scores, None, s, points)
                if sc.bad:
                    studies[arm].tell(trial, state=TrialState.FAIL)
                else:
                    studies[arm].tell(trial, sc.value)
        chosen = {arm: st.best(points[arm], scores, s) for arm in arms}
        return chosen, self._rows(arms, None, scores, chosen, s, points)

    @staticmethod
    def _rows(arms, tried, scores, chosen, s, points=None) -> list:
        from actbench import study as st

        rows = []
        for arm in arms:
            pts = points[arm] if points else [st.lr_point(arm, lr) for lr in sorted(tried[arm])]
            row = {
                "arm": arm.label, "cell": list(arm.cell), "activation": list(arm.activation),
                "points": [{"overrides": p.overrides(), "lr": p.lr, "score": scores[p].value, "per_seed": scores[p].per_seed,
                            "bad": scores[p].bad} for p in pts if p in scores],
            }
            if chosen is not None:
                c = chosen[arm]
                row.update(chosen=c.overrides(), lr=c.lr, score=scores[c].value,
                           note=st.edge_note(sorted(tried[arm]), c.lr, s) if tried else "")
            rows.append(row)
        return rows
