"""The fair study's report, at the sweep's root: the answer first (which activation is best at its
own tuned rate, by how much, with what confidence), then each activation's selection with its
tune score and the grid's edges, the isolation plot, and the confirm stage's own report (its
table, statistics and figures, written by actbench.report.sweep into `<sweep>/confirm/`).

    python -m actbench.report runs/fair      # rewrites it (the CLI sees the study)
"""

from __future__ import annotations

import math
from pathlib import Path

from actbench import root_events, stats, study
from actbench.report.sweep import (
    DEFAULTS,
    ReportError,
    cell,
    compare,
    higher_is_better,
    shown,
    summarize,
    verdict,
    write_report,
)
from actbench.results import TEST_ACC, NoRunsError, group_runs, load_runs, rank_metric, varying_keys
from actbench.tags import report_tag


def _num(x, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def selection_table(selection: dict) -> list[str]:
    s = selection["settings"]
    lines = [f"| activation | selected | tune {s['select']} (mean over seeds {s['tune_seeds']}) | range over tune seeds | rates tried | grid's edges |",
             "|---|---|---|---|---|---|"]
    for arm in selection["arms"]:
        chosen = next((pt for pt in arm["points"] if pt["overrides"] == arm.get("chosen")), None)
        spread = f"[{min(chosen['per_seed']):.4f}, {max(chosen['per_seed']):.4f}]" if chosen and chosen["per_seed"] else "—"
        tried = ", ".join(f"{pt['lr']:g}" for pt in sorted(arm["points"], key=lambda pt: pt["lr"]))
        failed = [pt for pt in arm["points"] if pt["bad"]]
        if failed:
            rates = ", ".join(format(pt["lr"], "g") for pt in failed)
            tried += f" ({len(failed)} failed or diverged: {rates})"
        lines.append(f"| {arm['arm']} | {', '.join(arm.get('chosen') or ['—'])} | {_num(arm.get('score'), '.4f')} | {spread} | "
                     f"{tried} | {arm.get('note') or 'inside'} |")
    return lines


def answer(confirm_dir: Path, metric: str, baseline: str, tuned: tuple, effect, alpha: float, power: float) -> list[str]:
    """The verdict as an answer, per cell of the other swept keys (one, in the usual study): the
    best activation at its own rate, against the runner-up of that cell and against the baseline."""
    configs = group_runs(load_runs(confirm_dir), metric)
    rows = summarize(configs, metric)
    if not rows:
        return ["No confirm run has finished yet."]
    keys = varying_keys(configs)
    factor, unit = shown(metric)
    name = metric.replace("_", " ")
    level = "%" if factor == 100 else ""  # a mean accuracy is a percentage; its differences are pp
    comparisons, note = compare(configs, metric, baseline, effect, alpha, power, tuned)
    cells: dict[tuple, list[dict]] = {}
    for row in rows:  # best first within each cell, as in the table
        cells.setdefault(cell(row["config"], tuned), []).append(row)
    out = [note] if note else []
    for where_keys, cell_rows in cells.items():
        where = f"With {', '.join(f'{k}={v}' for k, v in where_keys)}: a" if len(cells) > 1 else "A"
        best = cell_rows[0]["config"]
        at = ", ".join(f"{k}={best.get(k)}" for k in tuned if best.get(k) is not None)
        out.append(f"{where}t its own tuned setting, **{best.activation}** ({at}) has the best mean {name}: "
                   f"{factor * cell_rows[0]['mean']:.2f}{level} over {cell_rows[0]['n']} seeds.")
        if len(cell_rows) > 1:
            second = cell_rows[1]["config"]
            a, b = best.by_seed(metric), second.by_seed(metric)
            common = [k for k in a if k in b]
            d = stats.difference([a[k] for k in common], [b[k] for k in common], True, higher_is_better(metric), None, alpha, power)
            if d is not None:
                lo, hi = (factor * v for v in d.t.ci)
                out.append(f"Against the runner-up {second.activation}: {factor * d.t.diff:+.2f}{unit}, 95% CI [{lo:+.2f}, {hi:+.2f}]{unit} "
                           f"(paired t over {d.n_a} seeds, p={d.t.p:.3g} unadjusted: a pair chosen by its results), "
                           f"P(better) {d.p_improve:.2f} [{d.p_improve_ci[0]:.2f}, {d.p_improve_ci[1]:.2f}]: {d.reading or 'no reading'}.")
        for cmp in comparisons:
            if cmp.config is best:
                out.append(f"Against the baseline: {verdict(cmp, keys, metric, baseline, alpha, effect, power)}.")
        if best.activation == baseline:
            out.append(f"The baseline {baseline} has the best mean itself; how the others compare with it is below.")
    return out


def write_study_report(sweep_dir: str | Path, baseline: str = DEFAULTS["baseline"], metric: str = DEFAULTS["metric"], figures: bool = True,
                       effect: float | None = DEFAULTS["effect"], alpha: float = DEFAULTS["alpha"], power: float = DEFAULTS["power"],
                       pairs: dict | None = None) -> Path:
    """report.md (and isolation.png) at the study's root; the confirm stage's report in confirm/."""
    from actbench import figures as figs

    sweep_dir = Path(sweep_dir)
    selection = study.read_selection(sweep_dir)
    if selection is None:
        raise ReportError(f"{sweep_dir}: no {study.STUDY_FILE}: not a study's directory")
    s = selection["settings"]
    tuned = study.tuned_keys(selection)
    confirm = sweep_dir / "confirm"
    if metric == "auto":
        metric = rank_metric(load_runs(confirm)) if confirm.is_dir() else TEST_ACC
    md = [f"# actbench study: {sweep_dir.resolve().name}", ""]
    md.append(f"Tune: every activation at every rate tried, seeds {s['tune_seeds']}, scored by {s['select']} on the validation "
              f"split (mean over the tune seeds; a failed or diverged tune run makes its rate the worst); an edge's best rate "
              f"grew the grid past it, at most {s['max_extend']} times. Confirm: each activation at its own selection, seeds "
              f"{s['seeds']}, which played no part in the choice; their test metrics are what is compared.")
    md += ["", "## The answer", ""]
    raw_effect = effect / shown(metric)[0] if effect else None
    try:
        md += answer(confirm, metric, baseline, tuned, raw_effect, alpha, power)
        confirm_md = write_report(confirm, baseline, metric, figures, effect, alpha, power, tuned, pairs).read_text()
    except NoRunsError:
        md.append("The confirm stage has not run yet: the same command continues the study.")
        confirm_md = ""
    md += ["", "## Selection (tune stage, validation only)", "", *selection_table(selection), ""]
    if figures:
        edges = (min(s["lrs"]), max(s["lrs"]))
        path, note = figs.isolation(selection["arms"], sweep_dir / "isolation.png", s["select"].replace("_", " "), edges,
                                    study.SELECT[s["select"]])
        md += [f"![isolation plot]({path.name})", ""] if path else [f"Isolation plot: {note}", ""]
        try:  # and in TensorBoard, as the report's figures are
            root_events.write_figures(sweep_dir, [(report_tag(s["select"], "isolation"), path)] if path else [])
        except Exception as e:  # noqa: BLE001 - the report stands without it
            md += [f"TensorBoard: the isolation plot was not written to {sweep_dir}, {type(e).__name__}: {e}", ""]
    if confirm_md:
        body = confirm_md.split("\n", 1)[1] if confirm_md.startswith("# ") else confirm_md
        body = body.replace("](", "](confirm/").replace("](confirm/http", "](http")
        body = "\n".join(("#" + line) if line.startswith("## ") else line for line in body.splitlines())
        md += ["## Confirm stage (test metrics; each activation at its own selection)", body]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(md).rstrip() + "\n")
    return report
