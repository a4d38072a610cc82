"""The sweep report: reads every run's metrics.json under a sweep directory, groups runs into
configurations (overrides minus seed), compares each configuration with its baseline activation
(paired or Welch t-test, Holm-corrected), and writes report.md, results.csv and the figures
drawn by actbench.figures into the sweep directory.

    python -m actbench.report SWEEP_DIR [--baseline relu] [--metric test_acc]

Statistical choices, stated once so the report can cite them:
- mean, std (ddof=1) and 95% CI (Student t, n-1 df) over seeds, per configuration;
- paired t-test on the seeds both configurations share when there are at least 2 such seeds
  (the same seed means the same initialisation and data order, so pairing removes that noise),
  otherwise Welch's t-test on all runs; Holm correction over every test in the report;
- Wilcoxon signed-rank as a robustness check on paired data with at least 6 pairs: below that
  its exact two-sided p-value cannot go under 0.0625, so it could never reject at alpha=0.05;
- gradient ratio = |grad W1| / |grad W_last|, geometric mean over epochs 1..E and over seeds,
  because it is a ratio that spans orders of magnitude between activations and depths.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actbench.errors import UserError

METRICS = "metrics.json"
ALPHA = 0.05
CONFIDENCE = 0.95
WILCOXON_MIN_PAIRS = 6
FINAL_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epochs", "steps")


class ReportError(UserError):
    """A problem with the input (not a sweep, unknown metric) that the CLI reports in one line."""


@dataclass
class Run:
    name: str
    status: str  # metrics.json's status, or "missing" / "corrupt" when it cannot be read
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
        return _num(final[metric] if metric in final else timing.get(metric))

    def epoch_s(self) -> float:
        value = self.value("epoch_s_median")
        if math.isnan(value):
            value = _nanmedian(self.section("curves").get("epoch_s") or [])
        return value


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
        return np.array([r.value(metric) for r in self.runs], dtype=float)

    def by_seed(self, metric: str) -> dict:
        """Metric per seed; a seed run twice contributes its mean so pairing stays one-to-one."""
        seeds: dict = {}
        for r in self.runs:
            seeds.setdefault(r.seed, []).append(r.value(metric))
        return {s: float(np.mean(v)) for s, v in seeds.items() if s is not None}


@dataclass
class Comparison:
    config: Config
    baseline: Config | None
    test: str | None = None  # "paired t" / "Welch t"; None when no test was possible
    n: str = ""
    diff: float = math.nan  # config minus baseline, in the metric's own units
    ci: tuple[float, float] = (math.nan, math.nan)
    p: float = math.nan
    p_holm: float = math.nan
    p_wilcoxon: float | None = None
    note: str = ""  # why there is no test


# ---------------------------------------------------------------- loading and grouping


def _num(x) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


def _nanmedian(xs) -> float:
    vals = [v for v in map(_num, xs) if not math.isnan(v)]
    return float(np.median(vals)) if vals else math.nan


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


def _load_run(d: Path) -> Run:
    path = d / METRICS
    if not path.is_file():
        return Run(d.name, "missing", f"no {METRICS}", _parse_name(d.name))
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return Run(d.name, "corrupt", f"unreadable {METRICS}: {e}", _parse_name(d.name))
    overrides = m.get("overrides")
    if not isinstance(overrides, dict):
        overrides = _parse_name(d.name)
    error = m.get("error")
    return Run(d.name, str(m.get("status") or "unknown"), None if error is None else str(error), overrides, m)


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run under sweep_dir (a run dir itself counts as a one-run sweep); raises ReportError
    when nothing there has a metrics.json."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such directory")
    if (sweep_dir / METRICS).is_file():
        return [_load_run(sweep_dir)]
    # Hidden dirs hold launcher state (.submitit, .packs); a run dir has Hydra's .hydra or metrics.
    dirs = [
        d
        for d in sorted(sweep_dir.iterdir())
        if d.is_dir() and not d.name.startswith(".") and ((d / METRICS).exists() or (d / ".hydra").is_dir())
    ]
    if not any((d / METRICS).is_file() for d in dirs):
        raise ReportError(f"{sweep_dir}: not a sweep directory (no run subdirectory with {METRICS})")
    return [_load_run(d) for d in dirs]


def exclusion_reason(run: Run, metric: str) -> str | None:
    """Why a run stays out of the table, or None if it belongs in it."""
    if run.status != "finished":
        return run.error or f"status {run.status}"
    if not math.isfinite(run.value(metric)):
        return f"finished but final {metric} is missing or not finite"
    return None


def group_runs(runs: list[Run], metric: str = "test_acc") -> list[Config]:
    """Group runs by their overrides minus seed, keeping the key order of the overrides."""
    # Keys come from readable metrics.json only: a dir-name parse may spell keys differently.
    source = [r for r in runs if r.metrics] or runs
    keys = list(dict.fromkeys(k for r in source for k in r.overrides if k != "seed"))
    groups: dict[str, Config] = {}
    for r in runs:
        values = tuple(r.overrides.get(k) for k in keys)
        ident = json.dumps(values, sort_keys=True, default=str)
        config = groups.setdefault(ident, Config(tuple(zip(keys, values))))
        (config.excluded if exclusion_reason(r, metric) else config.runs).append(r)
    return list(groups.values())


def varying_keys(configs: list[Config]) -> list[str]:
    """The configuration keys whose value is not the same everywhere (the table's columns)."""
    keys = [k for k, _ in configs[0].key] if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def label(config: Config, keys: list[str]) -> str:
    """Short name of a configuration: its activation, then the other varying keys."""
    parts = [str(config.activation)] if config.activation is not None else []
    parts += [f"{k}={config.get(k)}" for k in keys if k != "activation"]
    return ", ".join(parts) or "all runs"


# ---------------------------------------------------------------- statistics


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric and not metric.endswith("_s") and "_s_" not in metric  # losses and seconds: lower


def is_fraction(metric: str) -> bool:
    return metric.endswith("_acc")


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """mean, std (ddof=1), CI low, CI high (Student t); std and CI are NaN below 2 values."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = list(map(float, pvalues))
    m, adjusted, running = len(p), [math.nan] * len(p), 0.0
    for rank, i in enumerate(sorted(range(m), key=p.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p[i]))  # adjusted values never decrease
        adjusted[i] = running
    return adjusted


def dead_final(m: dict) -> tuple[float, float]:
    """Dead-unit fraction at the last probed epoch: mean and max over hidden layers."""
    probes = m.get("probes") if isinstance(m.get("probes"), dict) else {}
    last = [_num(v[-1]) for k, v in probes.items() if k.startswith("dead/") and isinstance(v, list) and v]
    last = [v for v in last if not math.isnan(v)]
    return (float(np.mean(last)), float(np.max(last))) if last else (math.nan, math.nan)


def grad_ratio_gmean(m: dict) -> float:
    """Geometric mean of grad_ratio over epochs 1..E (epoch 0 has no gradient)."""
    probes = m.get("probes") if isinstance(m.get("probes"), dict) else {}
    return _gmean(_num(v) for v in probes.get("grad_ratio") or [])


def _gmean(values) -> float:
    # A zero or infinite ratio (a layer with no gradient at all) has no logarithm: left out.
    logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def summarize(configs: list[Config], metric: str = "test_acc") -> list[dict]:
    """One row per configuration with runs in the table, best first by the metric's mean."""
    rows = []
    for c in configs:
        if not c.runs:
            continue
        mean, std, lo, hi = mean_ci(c.values(metric))
        dead = [dead_final(r.metrics) for r in c.runs]
        rows.append(
            {
                "config": c,
                "n": len(c.runs),
                "mean": mean,
                "std": std,
                "ci_low": lo,
                "ci_high": hi,
                "train_loss": _nanmean(c.values("train_loss")),
                "val_loss": _nanmean(c.values("val_loss")),
                "epoch_s": _nanmedian([r.epoch_s() for r in c.runs]),
                "dead_mean": _nanmean([d[0] for d in dead]),
                "dead_max": _nanmean([d[1] for d in dead]),
                "grad_ratio": _gmean([grad_ratio_gmean(r.metrics) for r in c.runs]),
            }
        )
    sign = -1 if higher_is_better(metric) else 1
    return sorted(rows, key=lambda row: sign * row["mean"])


def _nanmean(xs) -> float:
    vals = [v for v in xs if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def find_baseline(config: Config, configs: list[Config], baseline: str) -> Config | None:
    """The configuration with activation == baseline that matches config on every other key."""
    others = [(k, v) for k, v in config.key if k != "activation"]
    for c in configs:
        if c.runs and c.activation == baseline and [(k, v) for k, v in c.key if k != "activation"] == others:
            return c
    return None


def _compare_pair(c: Config, b: Config, metric: str) -> Comparison:
    # scipy warns on near-identical samples; a zero-variance result is handled below instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _test_pair(c, b, metric)


def _test_pair(c: Config, b: Config, metric: str) -> Comparison:
    from scipy import stats

    out = Comparison(c, b)
    a_seeds, b_seeds = c.by_seed(metric), b.by_seed(metric)
    common = [s for s in a_seeds if s in b_seeds]
    if len(common) >= 2:
        x, y = np.array([a_seeds[s] for s in common]), np.array([b_seeds[s] for s in common])
        res = stats.ttest_rel(x, y)
        out.test, out.n = "paired t", f"n={len(common)}"
        se, df = float(np.std(x - y, ddof=1)) / math.sqrt(len(x)), len(x) - 1
        if len(common) >= WILCOXON_MIN_PAIRS and np.any(x != y):
            out.p_wilcoxon = float(stats.wilcoxon(x, y).pvalue)
    elif len(c.runs) >= 2 and len(b.runs) >= 2:
        x, y = c.values(metric), b.values(metric)
        res = stats.ttest_ind(x, y, equal_var=False)
        out.test, out.n = "Welch t", f"n={len(x)} vs {len(y)}"
        va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else math.nan  # Welch-Satterthwaite
    else:
        out.n = f"n={len(c.runs)} vs {len(b.runs)}"
        out.diff = float(c.values(metric).mean() - b.values(metric).mean())
        out.note = "no statistics: needs at least 2 seeds per configuration to estimate the seed-to-seed variance"
        return out
    out.diff = float(x.mean() - y.mean())
    out.p = float(res.pvalue)
    if math.isnan(out.p) or se == 0:  # identical differences in every pair: t is infinite, not evidence
        out.test, out.note = None, "no statistics: the differences have zero variance"
    else:
        # By hand rather than res.confidence_interval(), which scipy 1.10 lacks for Welch.
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
        out.ci = (out.diff - half, out.diff + half)
    return out


def compare(configs: list[Config], metric: str = "test_acc", baseline: str = "relu") -> tuple[list[Comparison], str | None]:
    """Every configuration (table order) against its baseline, Holm-corrected together.
    The second value is a one-line note when there is nothing to compare against."""
    rows = summarize(configs, metric)
    in_table = [row["config"] for row in rows]
    if not any(c.activation == baseline for c in in_table):
        return [], f"No configuration with activation={baseline} in the table, so there is no baseline to compare against."
    comparisons = [
        _compare_pair(c, b, metric) if (b := find_baseline(c, in_table, baseline)) else Comparison(c, None, note="no baseline")
        for c in in_table
        if c.activation != baseline
    ]
    tested = [cmp for cmp in comparisons if cmp.test]
    for cmp, p in zip(tested, holm([cmp.p for cmp in tested])):
        cmp.p_holm = p
    return comparisons, None


def verdict(cmp: Comparison, keys: list[str], metric: str = "test_acc", baseline: str = "relu", alpha: float = ALPHA) -> str:
    """One line, e.g. 'gelu vs relu: +0.42 pp test acc ... (paired t, n=3, p=0.031, Holm p=0.093): ...'."""
    name = metric.replace("_", " ")
    if cmp.baseline is None:
        other = {k: v for k, v in cmp.config.key if k != "activation" and k in keys}
        where = " with " + ", ".join(f"{k}={v}" for k, v in other.items()) if other else ""
        return f"{label(cmp.config, keys)}: no {baseline} configuration{where} to compare against"
    head = f"{label(cmp.config, keys)} vs {label(cmp.baseline, keys)}: "
    scale, unit = (100, " pp") if is_fraction(metric) else (1, "")
    diff = f"{scale * cmp.diff:+.2f}{unit} {name}" if is_fraction(metric) else f"{cmp.diff:+.4g} {name}"
    if not cmp.test:
        return f"{head}{diff} ({cmp.n}): {cmp.note}"
    lo, hi = (scale * v for v in cmp.ci)
    ci = f"95% CI [{lo:+.2f}, {hi:+.2f}]{unit}" if is_fraction(metric) else f"95% CI [{lo:+.4g}, {hi:+.4g}]"
    stats_ = f"{cmp.test}, {cmp.n}, p={cmp.p:.3g}, Holm p={cmp.p_holm:.3g}"
    if cmp.p_wilcoxon is not None:
        stats_ += f", Wilcoxon p={cmp.p_wilcoxon:.3g} unadjusted"
    if cmp.p_holm < alpha:
        better = (cmp.diff > 0) == higher_is_better(metric)
        outcome = f"{'better' if better else 'worse'} than {baseline} at alpha={alpha:g}"
    else:
        outcome = f"not distinguishable from {baseline} at alpha={alpha:g}"
    return f"{head}{diff}, {ci} ({stats_}): {outcome}"


# ---------------------------------------------------------------- output


def _fmt(x: float, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown_table(rows: list[dict], keys: list[str], metric: str = "test_acc") -> str:
    """The results table, one line per configuration."""
    scale, unit = (100, " %") if is_fraction(metric) else (1, "")
    name = metric.replace("_", " ")
    probes = any(not math.isnan(r["dead_mean"]) or not math.isnan(r["grad_ratio"]) for r in rows)
    header = keys + ["n seeds", f"{name} mean{unit}", "std", "95% CI", "train loss", "val loss", "s/epoch"]
    if probes:
        header += ["dead (mean / max layer)", "grad ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    spec = ".2f" if is_fraction(metric) else ".4g"
    for r in rows:
        c = r["config"]
        n = f"{r['n']} (+{len(c.excluded)} excluded)" if c.excluded else str(r["n"])
        ci = f"[{_fmt(scale * r['ci_low'], spec)}, {_fmt(scale * r['ci_high'], spec)}]" if r["n"] > 1 else "—"
        cells = [str(c.get(k, "—")) for k in keys]
        cells += [n, _fmt(scale * r["mean"], spec), _fmt(scale * r["std"], spec), ci]
        cells += [_fmt(r["train_loss"], ".4f"), _fmt(r["val_loss"], ".4f"), _fmt(r["epoch_s"], ".2f")]
        if probes:
            dead = f"{_fmt(100 * r['dead_mean'], '.1f')}% / {_fmt(100 * r['dead_max'], '.1f')}%"
            cells += [dead if not math.isnan(r["dead_mean"]) else "—", _fmt(r["grad_ratio"], ".3g")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(runs: list[Run], path: Path) -> None:
    """results.csv: one row per run, every run (status tells whether it made the table)."""
    override_keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    final_keys = list(dict.fromkeys([*FINAL_KEYS, *(k for r in runs for k in r.section("final"))]))
    final_keys = [k for k in final_keys if any(k in r.section("final") for r in runs)]
    fields = ["name", "status", "error", *override_keys, *final_keys, "epoch_s_median", "wall_s"]
    fields += ["dead_final_mean", "dead_final_max", "grad_ratio_gmean"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in runs:
            row = {"name": r.name, "status": r.status, "error": r.error or "", **r.overrides}
            row.update({k: r.section("final").get(k) for k in final_keys})
            dead = dead_final(r.metrics)
            row.update(epoch_s_median=r.epoch_s(), wall_s=r.value("wall_s"), dead_final_mean=dead[0])
            row.update(dead_final_max=dead[1], grad_ratio_gmean=grad_ratio_gmean(r.metrics))
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _cell(text) -> str:
    text = " ".join(str(text).split())
    return (text[:300] + "…" if len(text) > 300 else text).replace("|", "\\|")


def _statistics_section(configs: list[Config], keys: list[str], metric: str, baseline: str) -> list[str]:
    comparisons, no_baseline = compare(configs, metric, baseline)
    lines = [no_baseline] if no_baseline else [f"- {verdict(c, keys, metric, baseline)}" for c in comparisons]
    if comparisons and not any(c.test for c in comparisons):
        lines.insert(0, "No statistics can be drawn: at least 2 seeds per configuration are needed to estimate the "
                     "seed-to-seed variance that any test compares the difference against.\n")
    lines = lines or [f"Every configuration in the table is the baseline {baseline}; nothing to compare."]
    return lines + [
        "",
        f"Each configuration is compared with the {baseline} configuration that matches it on every other swept key. "
        "Paired t-test over the seeds both share when there are at least 2 common seeds, else Welch's t-test; "
        f"Holm correction across all tests; Wilcoxon signed-rank added when there are at least {WILCOXON_MIN_PAIRS} "
        "pairs (below that it cannot reach p<0.05). The CI is for the mean difference.",
    ]


def _figures_section(sweep_dir: Path, rows: list[dict], keys: list[str], metric: str) -> list[str]:
    from actbench import figures as figs

    scale = 100 if is_fraction(metric) else 1
    series = [
        figs.Series(
            label=label(r["config"], keys),
            activation=r["config"].activation,
            variant={k: r["config"].get(k) for k in keys if k != "activation"},
            runs=[run.metrics for run in r["config"].runs],
            values=list(scale * r["config"].values(metric)),
            grad_ratio=r["grad_ratio"],
        )
        for r in rows
    ]
    md = []
    metric_label = metric.replace("_", " ") + (" (%)" if is_fraction(metric) else "")
    for title, path, note in figs.make_all(sweep_dir, series, metric, metric_label):
        md += [f"![{title}]({path.name})", ""] if path else []
        md += [f"{title}: {note}", ""] if note else []
    return md


def write_report(sweep_dir: str | Path, baseline: str = "relu", metric: str = "test_acc", figures: bool = True) -> Path:
    """Write report.md, results.csv and (unless figures=False) the figures into sweep_dir;
    returns the report's path. Raises ReportError when sweep_dir holds no runs or no run has the metric."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    if not any(math.isfinite(r.value(metric)) for r in runs):
        raise ReportError(f"{sweep_dir}: no run has a finite final {metric!r} (is the metric name right?)")
    configs = group_runs(runs, metric)
    rows = summarize(configs, metric)
    keys = varying_keys(configs)
    left_out = [(r, exclusion_reason(r, metric)) for r in runs if exclusion_reason(r, metric)]
    table = markdown_table(rows, keys, metric)

    first = next((r for r in runs if r.metrics), Run("", ""))
    versions = ", ".join(f"{k} {v}" for k, v in first.section("versions").items())
    fixed = [f"{k}={v}" for k, v in (configs[0].key if configs else ()) if k not in keys]
    md = [f"# actbench report: {sweep_dir.resolve().name}", ""]
    md.append(
        f"{_plural(len(runs) - len(left_out), 'run')} in {_plural(len(rows), 'configuration')}"
        + (f"; {_plural(len(left_out), 'run')} not in the table (see the end)" if left_out else "")
        + f". Metric: {metric}; baseline: {baseline}."
        + (f" Fixed overrides: {', '.join(fixed)}." if fixed else "")
    )
    if versions:
        md.append(f"Versions: {versions}; device: {first.metrics.get('device', '?')}.")
    md += ["", "## Results", "", table, ""]
    md.append(
        f"Mean and std (ddof=1) over seeds; 95% CI from the t-distribution with n-1 df; best first by mean {metric}. "
        "s/epoch: median over runs of each run's median epoch time."
    )
    if "grad ratio" in table:
        md.append(
            "Dead: fraction of hidden units dead at the final epoch, mean over hidden layers / the worst layer, "
            "averaged over seeds. Grad ratio: |grad W1| / |grad W_last| (first over output layer), "
            "geometric mean over epochs 1..E and over seeds; far below 1 means vanishing gradients."
        )
    md += ["", f"## Statistics against {baseline}", "", *_statistics_section(configs, keys, metric, baseline)]
    if figures and rows:
        md += ["", "## Figures", "", *_figures_section(sweep_dir, rows, keys, metric)]
    if left_out:
        md += ["", "## Runs not in the table", "", "| run | status | error |", "|---|---|---|"]
        md += [f"| {_cell(r.name)} | {r.status} | {_cell(reason)} |" for r, reason in left_out]

    write_csv(runs, sweep_dir / "results.csv")
    report = sweep_dir / "report.md"
    report.write_text("\n".join(md).rstrip() + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (one subdirectory per run)")
    parser.add_argument("--baseline", default="relu", help="activation every other is compared against (default relu)")
    parser.add_argument("--metric", default="test_acc", help="final metric to rank and test (default test_acc)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, args.baseline, args.metric)
    except ReportError as e:
        print(f"actbench.report: {e}", file=sys.stderr)
        return 2
    # The console gets the report minus its figure links, which only make sense next to the PNGs.
    head, _, tail = path.read_text().partition("\n## Figures")
    print(head.rstrip())
    if "\n## Runs not in the table" in tail:
        print("\n## Runs not in the table" + tail.split("\n## Runs not in the table", 1)[1].rstrip())
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
