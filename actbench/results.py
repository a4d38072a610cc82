"""What runs wrote, read back: a run directory's `metrics.json` (this module owns its schema on
the reading side; actbench.record writes it), the runs under a sweep directory, why a run stays
out of the tables, and runs grouped into configurations (overrides minus the seed).

Probe values are looked up by `probe_values` alone, under the names actbench.probes gives them,
so a renamed tag keeps its old files readable by one entry in PROBE_ALIASES; and files written
before the probes' tags had their common prefix (`dead/layer1` for `probes/dead/layer1`) are read
under their old names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actbench.errors import UserError
from actbench.ownership import INTERRUPTED, owner
from actbench.stats import gmean_positive, nanmedian
from actbench.tags import ACC, DEAD, GRAD_RATIO, LOSS, PREFIX, TEST, TRAIN, VAL, grad_norm_tag, json_name, layer_tag, metric_tag

SCHEMA = 1  # metrics.json's layout; a file of a newer one reads as corrupt, older ones stay readable
METRICS_FILE = "metrics.json"
# metrics.json's names of a run's losses and accuracies (the tags' names there), in `curves` and `final`
TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, TEST_LOSS, TEST_ACC = (json_name(metric_tag(m, s)) for s in (TRAIN, VAL, TEST) for m in (LOSS, ACC))
# metrics.json's `final`: those, then the counts
FINAL_KEYS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, TEST_LOSS, TEST_ACC, "epochs", "steps")
# what a report may rank by (`Run.value`): a final metric, or a run's seconds from `timing`
METRICS = (*(k for k in FINAL_KEYS if k not in ("epochs", "steps")), "epoch_s_median", "fit_s", "startup_s", "wall_s")
PROBE_ALIASES: dict[str, tuple[str, ...]] = {}  # a probe tag -> the names older metrics.json files have for it


class Status:
    """A run's status: what metrics.json says (actbench.record writes the first five), or what
    reading it back makes of it."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # told to stop, or said running while nobody owns the run any more
    MISSING = "missing"  # no metrics.json
    CORRUPT = "corrupt"  # one that cannot be read, or of a newer schema
    UNKNOWN = "unknown"  # one that says no status


class NoRunsError(UserError):
    """A directory that is not a sweep (nor a run): nothing in it has a metrics.json."""


def read_metrics(run_dir: Path) -> dict | None:
    """A run directory's metrics.json, or None when it is missing or unreadable."""
    try:
        m = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def as_float(x) -> float:
    """A JSON number as a float; NaN for null, booleans and anything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """One run directory as read back."""

    name: str
    status: str  # a `Status`: metrics.json's, or missing / corrupt when it cannot be read
    error: str | None = None
    overrides: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def section(self, key: str) -> dict:
        value = self.metrics.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def seed(self):
        return self.overrides.get("seed", self.section("hparams").get("seed"))

    @property
    def activation(self) -> str | None:
        return self.overrides.get("activation", self.section("hparams").get("activation"))

    def value(self, metric: str) -> float:
        """A final metric, or a timing entry (e.g. epoch_s_median); NaN when absent."""
        final, timing = self.section("final"), self.section("timing")
        return as_float(final[metric] if metric in final else timing.get(metric))

    def epoch_s(self) -> float:
        """Seconds per epoch of this run: the median epoch of its job, shared by a pack's members."""
        value = self.value("epoch_s_median")
        if math.isnan(value):
            value = nanmedian([as_float(v) for v in self.section("curves").get("epoch_s") or []])
        members = self.section("timing").get("members")
        return value / members if isinstance(members, int) and members > 1 else value


def _parse_value(text: str):
    # Only for runs without a readable metrics.json, whose identity must come from the dir name.
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _parse_name(name: str) -> dict:
    return {k: _parse_value(v) for k, _, v in (p.partition("=") for p in name.split(",") if "=" in p)}


def _schema_error(m: dict) -> str | None:
    """Why this actbench cannot read metrics.json `m`'s layout, or None. Files without a schema
    predate it and are read."""
    schema = m.get("schema", 0)
    if isinstance(schema, bool) or not isinstance(schema, int):
        return f"{METRICS_FILE} schema {schema!r} is not a schema version"
    if schema > SCHEMA:
        return f"{METRICS_FILE} schema {schema} is newer than this actbench reads ({SCHEMA})"
    return None


def load_run(d: Path) -> Run:
    """The run in directory d; a missing or unreadable metrics.json, or one of a newer schema, gives
    status missing/corrupt, and one that says running while no process owns the run any more reads
    as interrupted."""
    path = d / METRICS_FILE
    if not path.is_file():
        return Run(d.name, Status.MISSING, f"no {METRICS_FILE}", _parse_name(d.name))
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return Run(d.name, Status.CORRUPT, f"unreadable {METRICS_FILE}: {e}", _parse_name(d.name))
    if (why := _schema_error(m)) is not None:
        # its fields may mean something else now: no table or figure should use them
        return Run(d.name, Status.CORRUPT, why, _parse_name(d.name))
    overrides = m.get("overrides")
    if not isinstance(overrides, dict):
        overrides = _parse_name(d.name)
    error = m.get("error")
    error = None if error is None else str(error)
    status = str(m.get("status") or Status.UNKNOWN)
    if status == Status.RUNNING:
        # what the file said when it was written; whether it still is, the owner says (asked once:
        # each answer may take seconds, and two could disagree)
        who = owner(d)
        status, error = (Status.INTERRUPTED, INTERRUPTED) if who is None else (status, f"trained by {who}")
    return Run(d.name, status, error, overrides, m)


def data_section(datamodule) -> dict:
    """metrics.json's `data`: what a run read (the dataset's one line) and the metric it ranks by."""
    return {"source": getattr(datamodule, "source", None), "rank_by": datamodule.RANK_BY}


def rank_metric(runs: list[Run]) -> str:
    """The final metric the runs' dataset ranks by (metrics.json's `data.rank_by`: test_acc for a
    classifier, test_loss for a language model); test_acc for runs that do not say."""
    stated = {r.section("data").get("rank_by") for r in runs if r.metrics} - {None}
    if len(stated) > 1:
        raise UserError(f"the runs rank by different metrics ({', '.join(sorted(stated))}): name one with report.metric (--metric)")
    return stated.pop() if stated else TEST_ACC


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run under sweep_dir (a run dir itself counts as a one-run sweep); raises NoRunsError
    when nothing there has a metrics.json."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoRunsError(f"{sweep_dir}: no such directory")
    if (sweep_dir / METRICS_FILE).is_file():
        return [load_run(sweep_dir)]
    # Hidden dirs hold launcher state (.submitit, .packs); a run dir has Hydra's .hydra or metrics.
    dirs = [
        d
        for d in sorted(sweep_dir.iterdir())
        if d.is_dir() and not d.name.startswith(".") and ((d / METRICS_FILE).exists() or (d / ".hydra").is_dir())
    ]
    if not any((d / METRICS_FILE).is_file() for d in dirs):
        raise NoRunsError(f"{sweep_dir}: not a sweep directory (no run subdirectory with {METRICS_FILE})")
    return [load_run(d) for d in dirs]


def exclusion_reason(run: Run, metric: str) -> str | None:
    """Why a run stays out of the table, or None if it belongs in it."""
    if run.status != Status.FINISHED:
        return run.error or f"status {run.status}"
    if not math.isfinite(run.value(metric)):
        return f"finished but final {metric} is missing or not finite"
    return None


# ---------------------------------------------------------------- configurations


@dataclass
class Config:
    """The runs sharing one set of overrides apart from seed."""

    key: tuple[tuple[str, object], ...]
    runs: list[Run] = field(default_factory=list)  # the ones in the table
    excluded: list[Run] = field(default_factory=list)

    def get(self, key: str, default=None):
        return dict(self.key).get(key, default)

    @property
    def activation(self) -> str | None:
        everyone = self.runs + self.excluded
        return self.get("activation", everyone[0].activation if everyone else None)

    def values(self, metric: str) -> np.ndarray:
        """The metric, one value per seed (`by_seed`): a seed run twice counts once."""
        unseeded = [r.value(metric) for r in self.runs if r.seed is None]
        return np.array([*self.by_seed(metric).values(), *unseeded], dtype=float)

    def by_seed(self, metric: str) -> dict:
        """Metric per seed; a seed run twice contributes its mean so pairing stays one-to-one."""
        seeds: dict = {}
        for r in self.runs:
            seeds.setdefault(r.seed, []).append(r.value(metric))
        return {s: float(np.mean(v)) for s, v in seeds.items() if s is not None}


def group_runs(runs: list[Run], metric: str = TEST_ACC) -> list[Config]:
    """Group runs by their overrides minus seed, keeping the key order of the overrides."""
    # Keys come from readable metrics.json only: a dir-name parse may spell keys differently.
    source = [r for r in runs if r.metrics] or runs
    keys = list(dict.fromkeys(k for r in source for k in r.overrides if k != "seed"))
    groups: dict[str, Config] = {}
    for r in runs:
        # a run started without `activation=` (the plain default run beside a sweep of it) is still its activation's
        values = tuple(r.activation if k == "activation" and k not in r.overrides else r.overrides.get(k) for k in keys)
        ident = json.dumps(values, sort_keys=True, default=str)
        config = groups.setdefault(ident, Config(tuple(zip(keys, values))))
        (config.excluded if exclusion_reason(r, metric) else config.runs).append(r)
    return list(groups.values())


def varying_keys(configs: list[Config]) -> list[str]:
    """The configuration keys whose value is not the same everywhere (the table's columns)."""
    keys = [k for k, _ in configs[0].key] if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


# ---------------------------------------------------------------- probes


def probe_values(m: dict, tag: str) -> list | None:
    """metrics.json's probe series `tag` (one value per entry of probe_epochs), or None."""
    probes = m.get("probes")
    if not isinstance(probes, dict) or not probes:
        return None
    values = probes.get(tag)
    if isinstance(values, list):
        return values
    for name in _old_names(tag):
        values = probes.get(name)
        if isinstance(values, list):
            return values
    return None


def _old_names(tag: str) -> tuple[str, ...]:
    return (*PROBE_ALIASES.get(tag, ()), tag.removeprefix(PREFIX))


def probe_epochs(m: dict) -> list:
    """The epochs the probe series are aligned on (0 = at initialisation)."""
    return probe_values(m, "epoch") or []


def has_probes(m: dict) -> bool:
    return bool(probe_epochs(m))


def layer_tags(m: dict, stat: str) -> list[str]:
    """The tags of a per-layer probe (actbench.tags.DEAD, ...) present in m, layer 1 first."""
    tags = []
    while probe_values(m, tag := layer_tag(stat, len(tags) + 1)) is not None:
        tags.append(tag)
    return tags


def recorded_config(m: dict, key: str):
    """The value at a dotted key of the config a run recorded (metrics.json's `config`), or None."""
    node = m.get("config") or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def grad_norm_tags(m: dict) -> list[str]:
    """The per-weight-matrix gradient-norm tags present in m, the first layer's first."""
    tags = []
    while probe_values(m, tag := grad_norm_tag(len(tags) + 1)) is not None:
        tags.append(tag)
    return tags


def dead_final(m: dict) -> tuple[float, float]:
    """Dead-unit fraction at the last probed epoch: mean and max over hidden layers."""
    last = [as_float(v[-1]) for v in (probe_values(m, t) for t in layer_tags(m, DEAD)) if v]
    last = [v for v in last if not math.isnan(v)]
    return (float(np.mean(last)), float(np.max(last))) if last else (math.nan, math.nan)


def grad_ratio_gmean(m: dict) -> float:
    """Geometric mean of grad_ratio over epochs 1..E (epoch 0 has no gradient)."""
    return gmean_positive([as_float(v) for v in probe_values(m, GRAD_RATIO) or []])
