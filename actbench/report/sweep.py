"""The sweep report: the table of every configuration (overrides minus seed), each one compared
with its baseline activation, and the files: report.md, results.csv (one row per run),
comparisons.csv (one row per comparison) and the figures drawn by actbench.figures, all in the
sweep directory. The numbers come from actbench.stats, the runs from actbench.results.

Written by `python -m actbench.report SWEEP_DIR` and after a multirun (actbench.report).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from actbench import root_events, stats
from actbench.conf import option
from actbench.errors import UserError
from actbench.runs import MEASURED_HPARAMS
from actbench.results import (
    FINAL_KEYS,
    TEST_ACC,
    TRAIN_LOSS,
    VAL_LOSS,
    Config,
    Run,
    dead_final,
    exclusion_reason,
    grad_ratio_gmean,
    group_runs,
    load_runs,
    rank_metric,
    varying_keys,
)


# the report's settings where a caller gives none: conf/report/default.yaml's, the one place they are set
DEFAULTS: dict = option("report")
COMPARISON_FIELDS = [
    "config", "baseline", "metric", "test", "n_pairs", "n_config", "n_baseline", "diff", "diff_low", "diff_high",
    "boot_low", "boot_high", "p", "p_holm", "p_wilcoxon", "p_improve", "p_improve_low", "p_improve_high", "reading",
    "mde", "effect", "seeds_needed", "alpha", "power", "mde_alpha", "eq_low", "eq_high", "equivalent", "note",
]


class ReportError(UserError):
    """A problem with the input (unknown metric, bad setting) that the CLI reports in one line."""


@dataclass
class Comparison:
    config: Config
    baseline: Config | None
    n: str = ""  # "n=3" (pairs) or "n=3 vs 2"
    diff: float = math.nan  # config minus baseline, in the metric's own units
    result: stats.Difference | None = None  # None when no test was possible
    p_holm: float = math.nan
    note: str = ""  # why there is no test

    @property
    def test(self) -> str | None:
        return self.result.t.test if self.result else None


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


def shown(metric: str) -> tuple[float, str]:
    """How the report shows a metric's differences: (factor, unit); accuracies in pp."""
    return (100.0, " pp") if is_fraction(metric) else (1.0, "")


def _show(x: float, metric: str, sign: bool = True) -> str:
    scale, _ = shown(metric)
    spec = ("+" if sign else "") + (".2f" if is_fraction(metric) else ".4g")
    return _fmt(scale * x if x is not None else None, spec)


def summarize(configs: list[Config], metric: str = TEST_ACC) -> list[dict]:
    """One row per configuration with runs in the table, best first by the metric's mean."""
    rows = []
    for c in configs:
        if not c.runs:
            continue
        mean, std, lo, hi = stats.mean_ci(c.values(metric))
        dead = [dead_final(r.metrics) for r in c.runs]
        rows.append(
            {
                "config": c,
                "n": len(c.values(metric)),  # seeds: a seed run twice counts once
                "mean": mean,
                "std": std,
                "ci_low": lo,
                "ci_high": hi,
                TRAIN_LOSS: stats.nanmean(c.values(TRAIN_LOSS)),
                VAL_LOSS: stats.nanmean(c.values(VAL_LOSS)),
                "epoch_s": stats.nanmedian([r.epoch_s() for r in c.runs]),
                **{k: c.runs[0].section("hparams").get(k) for k in MEASURED_HPARAMS},  # params, flops
                "dead_mean": stats.nanmean([d[0] for d in dead]),
                "dead_max": stats.nanmean([d[1] for d in dead]),
                "grad_ratio": stats.gmean_positive([grad_ratio_gmean(r.metrics) for r in c.runs]),
            }
        )
    sign = -1 if higher_is_better(metric) else 1
    return sorted(rows, key=lambda row: sign * row["mean"])


def cell(config: Config, tuned: tuple = ()) -> tuple:
    """The keys that place a configuration among the others: all but its activation and the
    `tuned` ones (a study's confirm stage: each activation at its own selected rate)."""
    return tuple((k, json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)  # hashable: model.channels=[4]
                 for k, v in config.key if k != "activation" and k not in tuned)


def find_baseline(config: Config, configs: list[Config], baseline: str, tuned: tuple = ()) -> Config | None:
    """The configuration with activation == baseline in config's cell."""
    for c in configs:
        if c.runs and c.activation == baseline and cell(c, tuned) == cell(config, tuned):
            return c
    return None


def _compare_pair(c: Config, b: Config, metric: str, effect: float | None, alpha: float, power: float) -> Comparison:
    out = Comparison(c, b)
    a_seeds, b_seeds = c.by_seed(metric), b.by_seed(metric)
    common = [s for s in a_seeds if s in b_seeds]
    most = max(len(a_seeds), len(b_seeds))
    # paired where the shared seeds are most of both: pairing two of ten would throw away the rest
    if len(common) >= 2 and 2 * len(common) >= most:
        x, y, paired = [a_seeds[s] for s in common], [b_seeds[s] for s in common], True
        out.n = f"n={len(common)}" + (f" (of {len(a_seeds)} and {len(b_seeds)} seeds)" if len(common) < most else "")
    else:
        x, y, paired = c.values(metric), b.values(metric), False
        out.n = f"n={len(x)} vs {len(y)}"
    out.diff = float(stats.nanmean(x) - stats.nanmean(y))
    if not paired and min(len(x), len(y)) < 2:
        out.note = "no statistics: needs at least 2 seeds per configuration to estimate the seed-to-seed variance"
        return out
    out.result = stats.difference(x, y, paired, higher_is_better(metric), effect, alpha, power)
    if out.result is None:  # identical differences in every pair: t is infinite, not evidence
        same = "the difference is the same on every seed" if paired else "every run of each has the same value"
        out.note = f"no test: {same}, so there is no seed-to-seed spread to weigh it against"
    return out


def compare(configs: list[Config], metric: str = TEST_ACC, baseline: str = "relu", effect: float | None = None,
            alpha: float = stats.ALPHA, power: float = stats.POWER, tuned: tuple = ()) -> tuple[list[Comparison], str | None]:
    """Every configuration (table order) against its baseline, Holm-corrected together; `effect`
    (the difference worth detecting, in the metric's own units) sets seeds_needed. The second
    value is a one-line note when there is nothing to compare against."""
    rows = summarize(configs, metric)
    in_table = [row["config"] for row in rows]
    if not any(c.activation == baseline for c in in_table):
        return [], f"No configuration with activation={baseline} in the table, so there is no baseline to compare against."
    comparisons = [
        _compare_pair(c, b, metric, effect, alpha, power)
        if (b := find_baseline(c, in_table, baseline, tuned))
        else Comparison(c, None, note="no baseline")
        for c in in_table
        if c.activation != baseline
    ]
    return _holm(comparisons, alpha, power), None


def _holm(comparisons: list[Comparison], alpha: float, power: float) -> list[Comparison]:
    """The comparisons' Holm-corrected p-values, and each test's power at the level Holm holds a
    lone real difference to (alpha/m): what the corrected verdict can detect."""
    tested = [cmp for cmp in comparisons if cmp.result]
    for cmp, p in zip(tested, stats.holm([cmp.result.t.p for cmp in tested])):
        cmp.p_holm = p
        cmp.result = stats.at_level(cmp.result, alpha / len(tested), power)
    return comparisons


def compare_pairs(configs: list[Config], pairs: dict, metric: str = TEST_ACC, effect: float | None = None,
                  alpha: float = stats.ALPHA, power: float = stats.POWER, tuned: tuple = ()) -> list[Comparison]:
    """Each configuration whose activation `pairs` names ({activation: its twin}, e.g. reglu: relu)
    against its twin in its cell (table order), Holm-corrected together, apart from the baseline's tests."""
    in_table = [row["config"] for row in summarize(configs, metric)]
    return _holm([_compare_pair(c, b, metric, effect, alpha, power) for c in in_table
                  if c.activation in pairs and (b := find_baseline(c, in_table, pairs[c.activation], tuned))], alpha, power)


def power_sentence(cmp: Comparison, metric: str, effect: float | None, power: float = stats.POWER) -> str:
    """What a null result means, against `effect` (metric units): equivalent within +-effect
    (TOST), or inconclusive (the test was able to detect effect, the interval still reaches past
    it), or underpowered (and how many seeds would detect effect); without effect, what the test
    detects."""
    r = cmp.result
    _, unit = shown(metric)
    mde = f"{_show(r.mde, metric, sign=False)}{unit}"
    detects = f"the test detects {mde} at {power:.0%} power"
    if not effect:
        return detects
    within = f"±{_show(effect, metric, sign=False)}{unit}"
    eq_ci = f"{1 - 2 * r.alpha:.0%} CI [{_show(r.eq_ci[0], metric)}, {_show(r.eq_ci[1], metric)}]{unit}"
    if r.equivalent:
        return f"equivalent within {within} (TOST: the {eq_ci} lies inside)"
    if r.mde <= effect:
        return f"inconclusive: {detects}, but the {eq_ci} reaches past {within}"
    seeds = f"about {r.seeds_needed}" if r.seeds_needed < stats.MAX_SEEDS else f"more than {stats.MAX_SEEDS:,}"
    per = "" if r.paired else " per configuration"
    return (f"underpowered: {seeds} seeds{per} would detect a difference of {_show(effect, metric, sign=False)}{unit}"
            f" ({detects})")


def verdict(cmp: Comparison, keys: list[str], metric: str = TEST_ACC, baseline: str = "relu", alpha: float = stats.ALPHA,
            effect: float | None = None, power: float = stats.POWER) -> str:
    """One line, e.g. 'gelu vs relu: +0.42 pp test acc, 95% CI [...] (paired t, n=3, p=0.031, Holm p=0.093):
    not distinguishable from relu at alpha=0.05; underpowered: about 12 seeds would ...'; effect in metric units."""
    name = metric.replace("_", " ")
    if cmp.baseline is None:
        other = {k: v for k, v in cmp.config.key if k != "activation" and k in keys}
        where = " with " + ", ".join(f"{k}={v}" for k, v in other.items()) if other else ""
        return f"{label(cmp.config, keys)}: no {baseline} configuration{where} to compare against"
    head = f"{label(cmp.config, keys)} vs {label(cmp.baseline, keys)}: "
    _, unit = shown(metric)
    diff = f"{_show(cmp.diff, metric)}{unit} {name}"
    if not cmp.result:
        return f"{head}{diff} ({cmp.n}): {cmp.note}"
    r = cmp.result
    ci = f"95% CI [{_show(r.t.ci[0], metric)}, {_show(r.t.ci[1], metric)}]{unit}"
    stats_ = f"{r.t.test}, {cmp.n}, p={r.t.p:.3g}, Holm p={cmp.p_holm:.3g}"
    if r.p_wilcoxon is not None:
        stats_ += f", Wilcoxon p={r.p_wilcoxon:.3g} unadjusted"
    if cmp.p_holm < alpha:
        better = (cmp.diff > 0) == higher_is_better(metric)
        outcome = f"{'better' if better else 'worse'} than {baseline} at alpha={alpha:g}"
    else:
        outcome = f"not distinguishable from {baseline} at alpha={alpha:g}; {power_sentence(cmp, metric, effect, power)}"
    return f"{head}{diff}, {ci} ({stats_}): {outcome}{_left_out(cmp, keys)}"


def _left_out(cmp: Comparison, keys: list[str]) -> str:
    """'; not counted: 3 runs of gelu (diverged)': runs of either side that the test leaves out."""
    parts = []
    for c in (cmp.config, cmp.baseline):
        if c.excluded:
            why = ", ".join(dict.fromkeys(r.status for r in c.excluded))
            parts.append(f"{_plural(len(c.excluded), 'run')} of {label(c, keys)} ({why})")
    return f"; not counted: {' and '.join(parts)}" if parts else ""


# ---------------------------------------------------------------- output


def _fmt(x: float, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown_table(rows: list[dict], keys: list[str], metric: str = TEST_ACC) -> str:
    """The results table, one line per configuration."""
    scale, unit = (100, " %") if is_fraction(metric) else (1, "")
    name = metric.replace("_", " ")
    probes = any(not math.isnan(r["dead_mean"]) or not math.isnan(r["grad_ratio"]) for r in rows)
    header = keys + ["n seeds", f"{name} mean{unit}", "std", "95% CI", "train loss", "val loss", "s/epoch"]
    sizes = any(r["params"] is not None for r in rows)  # runs of an actbench that did not record them: no columns
    if sizes:
        header += ["params", "MFLOPs/example"]
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
        cells += [_fmt(r[TRAIN_LOSS], ".4f"), _fmt(r[VAL_LOSS], ".4f"), _fmt(r["epoch_s"], ".2f")]
        if sizes:
            cells += [f"{r['params']:,}" if r["params"] is not None else "—", _fmt(r["flops"] / 1e6 if r["flops"] is not None else None, ".3g")]
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


def comparisons_table(comparisons: list[Comparison], keys: list[str], metric: str, effect: float | None) -> str:
    """The comparisons with a baseline, one line each, in the units the report shows."""
    _, unit = shown(metric)
    unit = unit.strip()
    u = f" ({unit})" if unit else ""
    header = ["configuration", "vs", "test", "n", f"diff{u}", "95% CI, t", "95% CI, bootstrap", "p", "Holm p",
              "Wilcoxon p", "P(better) [95% CI]", "P(better) reading", f"MDE{u}"]
    header += [f"seeds for {_show(effect, metric, sign=False)}{shown(metric)[1]}"] if effect else []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for c in comparisons:
        if c.baseline is None:
            continue
        r = c.result
        cells = [label(c.config, keys), label(c.baseline, keys), r.t.test if r else "—", c.n.removeprefix("n="),
                 _show(c.diff, metric)]
        if r:
            cells += [f"[{_show(r.t.ci[0], metric)}, {_show(r.t.ci[1], metric)}]",
                      f"[{_show(r.boot_ci[0], metric)}, {_show(r.boot_ci[1], metric)}]",
                      _fmt(r.t.p, ".3g"), _fmt(c.p_holm, ".3g"), _fmt(r.p_wilcoxon, ".3g"),
                      f"{r.p_improve:.2f} [{_fmt(r.p_improve_ci[0], '.2f')}, {_fmt(r.p_improve_ci[1], '.2f')}]",
                      r.reading or "—", _show(r.mde, metric, sign=False)]
            cells += [str(r.seeds_needed)] if effect else []
        else:
            cells += ["—"] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparisons_csv(comparisons: list[Comparison], keys: list[str], path: Path, metric: str, effect: float | None,
                          alpha: float, power: float) -> None:
    """comparisons.csv: one row per configuration compared (or not) with the baseline, every
    difference in the metric's own units (fractions for accuracies), config minus baseline."""

    def num(x):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COMPARISON_FIELDS)
        writer.writeheader()
        for c in comparisons:
            r = c.result
            row = {"config": label(c.config, keys), "baseline": label(c.baseline, keys) if c.baseline else "",
                   "metric": metric, "diff": num(c.diff), "p_holm": num(c.p_holm), "note": c.note,
                   "effect": num(effect), "alpha": alpha, "power": power}
            if r:
                row.update(test=r.t.test, n_pairs=r.n_a if r.paired else "", n_config=r.n_a, n_baseline=r.n_b,
                           diff_low=r.t.ci[0], diff_high=r.t.ci[1], boot_low=r.boot_ci[0], boot_high=r.boot_ci[1],
                           p=r.t.p, p_wilcoxon=num(r.p_wilcoxon), p_improve=r.p_improve, p_improve_low=num(r.p_improve_ci[0]),
                           p_improve_high=num(r.p_improve_ci[1]), reading=r.reading, mde=r.mde,
                           seeds_needed=num(r.seeds_needed), mde_alpha=r.mde_alpha, eq_low=num(r.eq_ci[0]),
                           eq_high=num(r.eq_ci[1]), equivalent=r.equivalent if effect else "")
            writer.writerow(row)


def _statistics_section(comparisons: list[Comparison], no_baseline: str | None, keys: list[str], metric: str, baseline: str,
                        effect: float | None, alpha: float, power: float) -> list[str]:
    lines = []
    if comparisons and all(max(len(c.config.runs), len(c.baseline.runs) if c.baseline else 0) < 2 for c in comparisons):
        lines += [("No statistics can be drawn: at least 2 seeds per configuration are needed to estimate the "
                   "seed-to-seed variance that any test compares the difference against."), ""]
    if any(c.baseline for c in comparisons):
        lines += [comparisons_table(comparisons, keys, metric, effect), ""]
    lines += [no_baseline] if no_baseline else [f"- {verdict(c, keys, metric, baseline, alpha, effect, power)}" for c in comparisons]
    lines = lines or [f"Every configuration in the table is the baseline {baseline}; nothing to compare."]
    scale, unit = shown(metric)
    units = "in pp, " if is_fraction(metric) else ""
    return lines + [
        "",
        f"Each configuration is compared with the {baseline} configuration that matches it on every other swept key; "
        f"differences are configuration minus {baseline} ({units}95% intervals). "
        "Paired t-test over the seeds both share when they are at least 2 and at least half of each side's, else "
        f"Welch's t-test on all runs; Holm correction across all tests (the intervals are per comparison, not "
        f"adjusted); Wilcoxon signed-rank added from {stats.WILCOXON_MIN_PAIRS} pairs that differ "
        "(below that it cannot reach p<0.05). The bootstrap interval of the difference (percentile, seeds resampled, "
        "pairs kept together) does not assume normal differences. "
        f"P(better): the probability that a run of the configuration scores better than a run of {baseline} "
        "(paired: the share of seeds where it is better, ties one half; unpaired: Mann-Whitney U / (n m)), with its "
        "bootstrap interval; read as in Bouthillier et al. 2021: better when the interval lies above 0.5, meaningful "
        f"when it reaches {stats.GAMMA}. With few seeds these bootstrap intervals are too narrow (3 seeds have 10 "
        f"distinct resamples). MDE: the smallest true difference the test detects with {power:.0%} power at "
        f"alpha/m, the level Holm's correction holds a lone real difference to among m tests "
        f"(alpha={alpha:g}, m={sum(1 for c in comparisons if c.result) or '—'}), from the observed spread of the differences, "
        "which with few seeds is itself a rough estimate"
        + (f"; seeds for {_show(effect, metric, sign=False)}{unit}: how many seeds per configuration would detect that "
           f"difference with the same power. Equivalent within ±{_show(effect, metric, sign=False)}{unit}: two one-sided "
           f"tests at alpha={alpha:g} (TOST), that is the {1 - 2 * alpha:.0%} t interval lies inside; a difference "
           "neither shown nor excluded that way is inconclusive" if effect else "")
        + ". comparisons.csv has these numbers in the metric's own units"
        + (" (fractions, not pp)." if scale != 1 else "."),
    ]


def _pairs_section(pairs: list[Comparison], keys: list[str], metric: str, effect: float | None, alpha: float, power: float) -> list[str]:
    named = ", ".join(f"{label(c.config, keys)} - {label(c.baseline, keys)}" for c in pairs)
    lines = [f"Each configuration against the one it differs from in one thing (report.pairs): {named}; "
             f"configuration minus its twin, paired by seed, Holm-corrected across these {len(pairs)} tests.", ""]
    lines += [comparisons_table(pairs, keys, metric, effect), ""]
    return lines + [f"- {verdict(c, keys, metric, c.baseline.activation, alpha, effect, power)}" for c in pairs]


def _figures_section(sweep_dir: Path, rows: list[dict], keys: list[str], metric: str, comparisons: list[Comparison],
                     baseline: str) -> list[str]:
    from actbench import figures as figs

    scale, _ = shown(metric)
    tested = {id(c.config): c.result for c in comparisons if c.result}
    series = []
    for r in rows:
        c, res = r["config"], tested.get(id(r["config"]))
        series.append(
            figs.Series(
                label=label(c, keys),
                activation=c.activation,
                variant={k: c.get(k) for k in keys if k != "activation"},
                runs=[run.metrics for run in c.runs],
                values=list(scale * c.values(metric)),
                grad_ratio=r["grad_ratio"],
                p_improve=res.p_improve if res else math.nan,
                p_improve_ci=res.p_improve_ci if res else (math.nan, math.nan),
                reading=res.reading if res else "",
            )
        )
    md = []
    metric_label = metric.replace("_", " ") + (" (%)" if is_fraction(metric) else "")
    drawn = figs.make_all(sweep_dir, series, metric, metric_label, baseline)
    for title, path, note, _ in drawn:
        md += [f"![{title}]({path.name})", ""] if path else []
        md += [f"{title}: {note}", ""] if note else []
    try:  # and in TensorBoard, as images of the sweep directory's own run, each leading its group
        root_events.write_figures(sweep_dir, [(f.tag, f.path) for f in drawn if f.path])
    except Exception as e:  # noqa: BLE001 - the report stands without them
        md += [f"TensorBoard: the figures were not written to {sweep_dir}, {type(e).__name__}: {e}", ""]
    return md


def write_report(sweep_dir: str | Path, baseline: str = DEFAULTS["baseline"], metric: str = DEFAULTS["metric"], figures: bool = True,
                 effect: float | None = DEFAULTS["effect"], alpha: float = DEFAULTS["alpha"], power: float = DEFAULTS["power"],
                 tuned: tuple = (), pairs: dict | None = None) -> Path:
    """Write report.md, results.csv, comparisons.csv and (unless figures=False) the figures into
    sweep_dir; returns the report's path. `effect` is the difference worth detecting in the units
    the report shows (pp for accuracies), None for none; `pairs` ({activation: its twin}) adds
    those comparisons in a section of their own; `tuned` keys (a study's selected
    nuisance values) need not match between a configuration and its baseline. Raises UserError (ReportError,
    NoRunsError) when sweep_dir holds no runs, no run has the metric, or a setting is out of range."""
    sweep_dir = Path(sweep_dir)
    if not 0 < alpha < power < 1:
        raise ReportError(f"report settings: need 0 < alpha < power < 1, got alpha={alpha}, power={power}")
    if effect is not None and not effect > 0:
        raise ReportError(f"report settings: effect must be > 0 (or none), got {effect}")
    runs = load_runs(sweep_dir)
    if metric == "auto":
        metric = rank_metric(runs)
    if not any(math.isfinite(r.value(metric)) for r in runs):
        raise ReportError(f"{sweep_dir}: no run has a finite final {metric!r} (is the metric name right?)")
    configs = group_runs(runs, metric)
    rows = summarize(configs, metric)
    keys = varying_keys(configs)
    left_out = [(r, exclusion_reason(r, metric)) for r in runs if exclusion_reason(r, metric)]
    table = markdown_table(rows, keys, metric)
    raw_effect = effect / shown(metric)[0] if effect else None
    comparisons, no_baseline = compare(configs, metric, baseline, raw_effect, alpha, power, tuned)
    twins = compare_pairs(configs, dict(pairs or {}), metric, raw_effect, alpha, power, tuned)

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
        "s/epoch: median over runs of each run's median epoch time (a packed run's share of its pack's epoch)."
        + (" Params: one model's parameters; MFLOPs/example: its forward pass's multiply-adds x 2 (matrix products, "
           "convolutions, attention), counted by torch.utils.flop_counter; a backward pass costs about twice that." if "MFLOPs" in table else "")
    )
    if "grad ratio" in table:
        md.append(
            "Dead: fraction of hidden units (of a convolution: channels) dead at the final epoch, mean over hidden layers / the worst layer, "
            "averaged over seeds. Grad ratio: |grad W1| / |grad W_last| (first over output layer), "
            "geometric mean over epochs 1..E and over seeds; far below 1 means vanishing gradients."
        )
    md += ["", f"## Statistics against {baseline}", ""]
    md += _statistics_section(comparisons, no_baseline, keys, metric, baseline, raw_effect, alpha, power)
    if twins:
        md += ["", "## Pairs", "", *_pairs_section(twins, keys, metric, raw_effect, alpha, power)]
    if figures and rows:
        md += ["", "## Figures", "", *_figures_section(sweep_dir, rows, keys, metric, comparisons, baseline)]
    if left_out:
        md += ["", "## Runs not in the table", "", "| run | status | error |", "|---|---|---|"]
        md += [f"| {_cell(r.name)} | {r.status} | {_cell(reason)} |" for r, reason in left_out]

    write_csv(runs, sweep_dir / "results.csv")
    write_comparisons_csv(comparisons + twins, keys, sweep_dir / "comparisons.csv", metric, raw_effect, alpha, power)
    report = sweep_dir / "report.md"
    report.write_text("\n".join(md).rstrip() + "\n")
    return report
