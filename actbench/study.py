"""A fair comparison of activations, as the Deep Learning Tuning Playbook asks: the activation is
the scientific hyperparameter, the learning rate (and any other `study.nuisance` key) a nuisance
one, tuned for each activation on its own, the baseline included, on the validation split of the
tune seeds; then each activation is confirmed at its own selection on fresh seeds, whose runs
alone carry the test metrics that the report compares.

This module owns the study's plan and its decisions: the settings and their checks, the grid and
its boundary rule, the Optuna search for further nuisance keys, a tune point's score from its
runs' metrics.json, and the selection (`study.json`). The sweeper
(hydra_plugins/actbench_sweeper/study_sweeper.py) launches what it plans; the report presents it.
Everything is recomputed from the runs on disk, so the same command resumes a study and reaches
the same selection.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from actbench.errors import ConfigError
from actbench.packing import is_member_key, override_key
from actbench.results import VAL_ACC, VAL_LOSS, Status, read_metrics
from actbench.runs import identity_overrides, run_name

STUDY_FILE = "study.json"
STAGES = ("tune", "confirm")
SELECT = {VAL_LOSS: False, VAL_ACC: True}  # metric -> higher is better
LR_KEY = "optimizer.lr"


@dataclass(frozen=True)
class Settings:
    lrs: tuple[float, ...]
    tune_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    select: str = VAL_LOSS
    max_extend: int = 2
    nuisance: dict = field(default_factory=dict)  # key -> {low, high, log}; empty: the learning-rate grid
    trials: int = 0
    sampler: str = "qmc"
    sampler_seed: int = 0

    @property
    def higher_is_better(self) -> bool:
        return SELECT[self.select]

    @property
    def searched(self) -> bool:
        """Optuna's search (learning rate and the nuisance keys) instead of the grid."""
        return bool(self.nuisance)


def settings(study) -> Settings:
    """The study's settings from its config node, checked: one line naming the key when wrong."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(study, resolve=True) if OmegaConf.is_config(study) else dict(study)

    def ints(key):
        values = node.get(key)
        if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ConfigError(f"study.{key}={values!r}: must be a non-empty list of integers >= 0")
        if len(set(values)) != len(values):
            raise ConfigError(f"study.{key}={values!r}: each seed may appear once")
        return tuple(values)

    lrs = node.get("lrs")
    if not isinstance(lrs, list) or not lrs or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lrs):
        raise ConfigError(f"study.lrs={lrs!r}: must be a non-empty list of learning rates > 0")
    tune, seeds = ints("tune_seeds"), ints("seeds")
    if set(tune) & set(seeds):
        raise ConfigError(f"study.tune_seeds and study.seeds share {sorted(set(tune) & set(seeds))}: the confirming seeds must play no part in the choice")
    select = node.get("select", VAL_LOSS)
    if select not in SELECT:
        raise ConfigError(f"study.select={select!r}: must be one of {', '.join(SELECT)}")
    extend = node.get("max_extend", 2)
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise ConfigError(f"study.max_extend={extend!r}: must be an integer >= 0")
    nuisance = node.get("nuisance") or {}
    for key, spec in nuisance.items():
        if not isinstance(spec, dict) or not all(isinstance(spec.get(b), (int, float)) for b in ("low", "high")) or not spec["low"] < spec["high"]:
            raise ConfigError(f"study.nuisance.{key}={spec!r}: must be {{low: a, high: b, log: true|false}} with a < b")
        if spec.get("log") and spec["low"] <= 0:
            raise ConfigError(f"study.nuisance.{key}: a log range must be > 0")
    trials = node.get("trials", 0)
    if nuisance and (not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"study.trials={trials!r}: searching study.nuisance needs a budget of trials >= 1")
    sampler = node.get("sampler", "qmc")
    if sampler not in ("qmc", "tpe"):
        raise ConfigError(f"study.sampler={sampler!r}: must be qmc or tpe")
    return Settings(tuple(sorted(float(v) for v in lrs)), tune, seeds, select, extend, dict(nuisance), int(trials or 0), sampler,
                    int(node.get("sampler_seed", 0)))


# ---------------------------------------------------------------- the cells and arms of a study


@dataclass(frozen=True)
class Arm:
    """One activation in one cell of the sweep (the other swept keys, e.g. model.depth=8)."""

    cell: tuple[str, ...]  # every other override of its jobs
    activation: tuple[str, ...]  # its member overrides: activation=..., activation.<key>=...
    shown: tuple[str, ...] = ()  # the cell's overrides that differ between cells, for its label

    @property
    def name(self) -> str | None:
        """The activation's name (its `activation=` override), None where the arm keeps the default."""
        return dict(o.split("=", 1) for o in self.activation).get("activation")

    @property
    def label(self) -> str:
        act = self.name or "default"
        extra = [o.removeprefix("activation.").lstrip("+~") for o in self.activation if override_key(o) != "activation"]
        return act + (f"({','.join(extra)})" if extra else "") + (f" [{', '.join(self.shown)}]" if self.shown else "")


def arms(jobs: list[list[str]]) -> list[Arm]:
    """The study's arms from the jobs Hydra's grammar expanded: seeds and learning rates are the
    study's to choose, every other swept key makes a cell of its own."""
    split = []
    for job in jobs:
        own = tuple(o for o in job if is_member_key(override_key(o)) and override_key(o) != "seed")
        cell = tuple(o for o in job if not is_member_key(override_key(o)) and override_key(o) not in (LR_KEY, "seeds"))
        split.append((cell, own))
    cells = {c for c, _ in split}
    varying = {o for c in cells for o in c if any(o not in other for other in cells)}
    out = []
    for cell, own in split:
        arm = Arm(cell, own, tuple(o for o in cell if o in varying))
        if arm not in out:
            out.append(arm)
    return out


def fmt(value: float) -> str:
    """A value as it appears in overrides and run names: 3 significant digits."""
    return f"{value:.3g}"


@dataclass(frozen=True)
class Point:
    """One nuisance setting of one arm: the overrides it adds (always the learning rate)."""

    arm: Arm
    values: tuple[tuple[str, str], ...]  # (key, formatted value), the learning rate first

    @property
    def lr(self) -> float:
        return float(dict(self.values)[LR_KEY])

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values]

    def jobs(self, seeds, stage_dir: Path) -> list[list[str]]:
        return [[*self.arm.cell, *self.arm.activation, *self.overrides(), f"seed={s}", f"hydra.sweep.dir={stage_dir}"] for s in seeds]


def lr_point(arm: Arm, lr: float) -> Point:
    return Point(arm, ((LR_KEY, fmt(lr)),))


# ---------------------------------------------------------------- scores from the runs on disk


def run_dir(job: list[str], exclude) -> Path:
    """Where the run of `job` lives, as actbench.runs names it."""
    stage = Path(next(o.split("=", 1)[1] for o in job if o.startswith("hydra.sweep.dir=")))
    return stage / run_name(identity_overrides([o for o in job if not o.startswith("hydra.")], exclude))


@dataclass
class Score:
    """A tune point's score: the mean over the tune seeds of the selection metric on validation.
    A tune run that failed or diverged makes it the worst score there is; None until all ran."""

    value: float | None
    per_seed: list[float]
    bad: list[str]  # runs that failed or diverged


def score(point: Point, s: Settings, stage_dir: Path, exclude) -> Score:
    worst = -math.inf if s.higher_is_better else math.inf
    values, bad, pending = [], [], False
    for job in point.jobs(s.tune_seeds, stage_dir):
        d = run_dir(job, exclude)
        m = read_metrics(d) or {}
        status = m.get("status")
        if status in (Status.FAILED, Status.DIVERGED):
            bad.append(f"{d.name}: {status}")
        elif status != Status.FINISHED:
            pending = True
        else:
            v = (m.get("final") or {}).get(s.select)
            if isinstance(v, (int, float)) and math.isfinite(v):
                values.append(float(v))
            else:
                bad.append(f"{d.name}: no {s.select}")
    if bad:
        return Score(worst, values, bad)
    if pending:
        return Score(None, values, bad)
    return Score(sum(values) / len(values), values, bad)


def best(points: list[Point], scores: dict[Point, Score], s: Settings) -> Point:
    """The best-scoring point; ties go to the smaller learning rate, so the choice is deterministic."""
    sign = -1 if s.higher_is_better else 1
    return min(points, key=lambda p: (sign * scores[p].value, p.lr))


# ---------------------------------------------------------------- the grid and its boundary rule


def grid_step(lrs: tuple[float, ...]) -> float:
    """The grid's ratio between neighbours (its geometric mean), by which the boundary rule steps."""
    return (lrs[-1] / lrs[0]) ** (1 / (len(lrs) - 1)) if len(lrs) > 1 else math.sqrt(10)


def extend(tried: list[float], chosen: float, s: Settings) -> float | None:
    """The next rate beyond the edge the chosen rate sits on, while the boundary rule allows it."""
    step = grid_step(s.lrs)
    below = sum(lr < s.lrs[0] for lr in tried)
    above = sum(lr > s.lrs[-1] for lr in tried)
    if chosen == min(tried) and below < s.max_extend:
        return float(fmt(min(tried) / step))
    if chosen == max(tried) and above < s.max_extend:
        return float(fmt(max(tried) * step))
    return None


def edge_note(tried: list[float], chosen: float, s: Settings) -> str:
    """What the report says about the grid's edges for one arm."""
    grew = [lr for lr in tried if lr < s.lrs[0] or lr > s.lrs[-1]]
    notes = []
    if grew:
        notes.append("grid extended to " + ", ".join(fmt(lr) for lr in sorted(grew)))
    if chosen in (min(tried), max(tried)) and len(tried) > 1:
        notes.append(f"best still on the {'lower' if chosen == min(tried) else 'upper'} edge: the optimum may lie beyond")
    return "; ".join(notes)


# ---------------------------------------------------------------- Optuna, for nuisance keys beyond the rate


def searcher(arm: Arm, s: Settings):
    """An Optuna study (ask/tell, in memory) for one arm; every arm starts from the same sampler
    seed, so a quasi-random sampler proposes the same points to every activation, and those pack."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.QMCSampler(seed=s.sampler_seed, scramble=True) if s.sampler == "qmc"
               else optuna.samplers.TPESampler(seed=s.sampler_seed))
    return optuna.create_study(direction="maximize" if s.higher_is_better else "minimize", sampler=sampler)


def distributions(s: Settings) -> dict:
    from optuna.distributions import FloatDistribution

    out = {LR_KEY: FloatDistribution(min(s.lrs), max(s.lrs), log=True)}
    for key, spec in s.nuisance.items():
        out[key] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def ask(arm: Arm, study, s: Settings):
    """(Optuna's trial, the Point it proposes)."""
    trial = study.ask(distributions(s))
    values = tuple((k, fmt(v)) for k, v in trial.params.items())
    return trial, Point(arm, values)


# ---------------------------------------------------------------- the selection, on disk


def write_selection(sweep_dir: Path, s: Settings, rows: list[dict]) -> Path:
    """`study.json` at the sweep's root: the settings and, per arm, every tune point's score and the selection."""
    path = Path(sweep_dir) / STUDY_FILE
    doc = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.__dict__.items()}, "arms": rows}
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


def read_selection(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((Path(sweep_dir) / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return None


def tuned_keys(selection: dict) -> tuple[str, ...]:
    """The keys a study chose per activation (the rate, and any nuisance key searched)."""
    return (LR_KEY, *(selection.get("settings", {}).get("nuisance") or {}))
