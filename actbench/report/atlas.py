"""The atlas's report at its root (`runs/atlas/report.md`, its figures also in TensorBoard): the
answer across settings in words first (which activations are never significantly worse than the
best, which win where, where the ranking flips), then the forest plot of every activation against
the baseline in every setting, the ranks per setting and their mean with an interval, the ranks
over training, and what each activation costs. Each setting's own fair report
(actbench.report.study) is rewritten into its folder first.

Per setting, the comparison is over its confirm runs (each activation at its own tuned rate, on the
same seeds): paired differences from the baseline, sign-normalised so that > 0 is better whatever
the metric (pp of accuracy, nats of loss), and standardised (over the paired differences' sd) so
that settings share one axis. The aggregate is the mean rank over the settings, with a bootstrap
over seeds within settings (actbench.stats.mean_rank says why not a random-effects meta-analysis).

    python -m actbench.report runs/atlas
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actbench import atlas, root_events, stats, study
from actbench.report.study import write_study_report
from actbench.report.sweep import DEFAULTS, ReportError, compare, higher_is_better, shown
from actbench.results import NoRunsError, group_runs, load_runs, rank_metric
from actbench.tags import report_tag

COST_FILE = "cost.json"


def signed(x: float, unit: str) -> str:
    """A difference as shown: pp to two decimals, a loss's nats to three."""
    return "—" if not math.isfinite(x) else f"{x:+.2f}" if unit == "pp" else f"{x:+.3f}"


@dataclass
class SettingResults:
    """One setting's confirm runs as the atlas compares them: each activation's configuration at
    its selected rate (`groups`), and values[a, s] in the units shown (pp for an accuracy) on the
    seeds every activation finished, for the ranks."""

    name: str
    metric: str
    activations: list[str]
    seeds: list
    values: np.ndarray
    groups: dict = field(default_factory=dict)  # activation -> its results.Config
    tuned: tuple = ()  # the keys the study chose per activation
    planned: int = 0  # confirm runs the study planned (0: unknown)
    lr: dict = field(default_factory=dict)  # activation -> its selected learning rate
    size: dict = field(default_factory=dict)  # activation -> (params, forward FLOPs per example)
    curves: dict = field(default_factory=dict)  # activation -> [seeds, epochs] of the validation metric
    configs: dict = field(default_factory=dict)  # activation -> its activation config node (for its cost)

    @property
    def higher(self) -> bool:
        return higher_is_better(self.metric)

    @property
    def factor(self) -> float:
        return shown(self.metric)[0]

    @property
    def unit(self) -> str:
        return shown(self.metric)[1].strip() or ("nats" if "loss" in self.metric else self.metric)

    @property
    def val_metric(self) -> str:
        return self.metric.replace("test_", "val_")

    @property
    def finished(self) -> int:
        return sum(len(c.runs) for c in self.groups.values())

    def row(self, activation: str) -> np.ndarray:
        return self.values[self.activations.index(activation)]


def read_setting(setting_dir: Path, name: str, metric: str = "auto", order: list | None = None) -> SettingResults:
    """A setting's confirm runs, activations in `order` (the atlas's) where given; raises
    NoRunsError (a UserError) when it has none."""
    runs = load_runs(Path(setting_dir) / "confirm")
    if metric == "auto":
        metric = rank_metric(runs)
    selection = study.read_selection(setting_dir) or {}
    tuned = study.tuned_keys(selection) if selection else (study.LR_KEY,)
    chosen = {tuple(arm.get("activation") or ()): dict(o.split("=", 1) for o in arm.get("chosen") or []) for arm in selection.get("arms", [])}
    groups: dict = {}
    for c in group_runs(runs, metric):  # one configuration per activation: the one at its selected rate
        if not c.runs:
            continue
        pick = chosen.get((f"activation={c.activation}",), {})
        at_choice = all(str(c.get(k)) == v for k, v in pick.items()) if pick else True
        if at_choice and (c.activation not in groups or len(c.runs) > len(groups[c.activation].runs)):
            groups[c.activation] = c
    acts = sorted(groups, key=lambda a: (order or []).index(a) if a in (order or []) else len(order or []))
    factor = shown(metric)[0]
    seeds = sorted(set.intersection(*(set(groups[a].by_seed(metric)) for a in acts))) if acts else []
    values = np.array([[factor * groups[a].by_seed(metric)[s] for s in seeds] for a in acts]).reshape(len(acts), len(seeds))
    planned = len(selection.get("arms", [])) * len((selection.get("settings") or {}).get("seeds") or [])
    out = SettingResults(name, metric, acts, seeds, values, {a: groups[a] for a in acts}, tuned, planned)
    val = out.val_metric
    for a in acts:
        c, first = groups[a], groups[a].runs[0]
        out.lr[a] = c.get(study.LR_KEY, first.section("hparams").get("lr"))
        hp = first.section("hparams")
        out.size[a] = (hp.get("params"), hp.get("flops"))
        out.configs[a] = first.section("config").get("activation")
        seeded = {r.seed: r.section("curves").get(val) or [] for r in c.runs}
        curves = [seeded[s] for s in seeds if s in seeded]
        if curves and len({len(x) for x in curves}) == 1 and len(curves[0]):
            out.curves[a] = factor * np.array(curves, dtype=float)
    return out


# ---------------------------------------------------------------- the numbers


def effects(settings: list[SettingResults], baseline: str, alpha: float, power: float = stats.POWER) -> dict[str, list[dict]]:
    """Each activation against the baseline in every setting, as each setting's own report tests it
    (report.sweep.compare: paired on the seeds the two share), oriented so that > 0 is better and
    shown in the setting's units, Holm-corrected over every test of the atlas."""
    rows = []
    for s in settings:
        sign = 1.0 if s.higher else -1.0
        comparisons, _ = compare(list(s.groups.values()), s.metric, baseline, None, alpha, power, s.tuned)
        for c in comparisons:
            t = c.result.t if c.result is not None else None
            dz = stats.standardised(t) if t is not None else (math.nan,) * 3
            ci = sorted(sign * s.factor * x for x in t.ci) if t is not None else (math.nan, math.nan)
            rows.append({"setting": s.name, "activation": c.config.activation, "unit": s.unit, "n": c.n,
                         "diff": sign * s.factor * c.diff, "lo": ci[0], "hi": ci[1], "p": t.p if t is not None else math.nan,
                         "dz": sign * dz[0], "dz_lo": min(sign * dz[1], sign * dz[2]), "dz_hi": max(sign * dz[1], sign * dz[2])})
    for r, p in zip(rows, stats.holm([r["p"] for r in rows])):
        r["p_holm"], r["sig"] = p, p < alpha
    return {s.name: [r for r in rows if r["setting"] == s.name] for s in settings}


def behind_best(settings: list[SettingResults], alpha: float) -> dict[str, tuple[str, set[str]]]:
    """Per setting, (the best activation by mean, those significantly worse than it): each tested
    against the best as against the baseline (report.sweep.compare's pairing), Holm-corrected over
    every such test of the atlas."""
    tests, best = [], {}
    for s in settings:
        sign = 1.0 if s.higher else -1.0
        means = {a: sign * float(np.mean(c.values(s.metric))) for a, c in s.groups.items()}
        best[s.name] = max(means, key=means.get)
        comparisons, _ = compare(list(s.groups.values()), s.metric, best[s.name], alpha=alpha, tuned=s.tuned)
        tests += [(s.name, c.config.activation, sign * c.diff, c.result.t.p) for c in comparisons if c.result is not None]
    worse: dict = {n: set() for n in best}
    for (name, a, diff, _), p in zip(tests, stats.holm([t[3] for t in tests])):
        if p < alpha and diff < 0:
            worse[name].add(a)
    return {n: (best[n], worse[n]) for n in best}


def answer(settings: list[SettingResults], effects_by: dict[str, list[dict]], baseline: str, alpha: float, activations: list[str]) -> list[str]:
    """The answer in words."""
    if not settings:
        return ["No setting has confirm runs yet: the same command continues the atlas."]
    verdicts = behind_best(settings, alpha)
    everywhere = [a for a in activations if all(a in s.groups for s in settings)]
    never = [a for a in everywhere if not any(a in worse for _, worse in verdicts.values())]
    level = f"t-tests over the confirm seeds, paired on the seeds two activations share as in each setting's report, Holm-corrected over all the atlas's tests of their kind, at {alpha:g}"
    out = [f"Never significantly worse than the best in any of the {len(settings)} settings ({level}): "
           + (", ".join(f"**{a}**" for a in never) if never else "none: every activation trails the best somewhere") + "."]
    bests = {name: best for name, (best, _) in verdicts.items()}
    if len(set(bests.values())) == 1:
        out.append(f"The best mean in every setting: **{next(iter(bests.values()))}**.")
    else:
        out.append("The best mean moves between settings: " + "; ".join(f"{n}: {b}" for n, b in bests.items()) + ".")

    def significant(rows: list[dict], sign: int) -> list[dict]:  # better (+1) or worse (-1) than the baseline
        return [r for r in rows if r["sig"] and r["diff"] * sign > 0]

    for s in settings:
        rows = effects_by.get(s.name) or []
        better, worse = ([f"{r['activation']} ({signed(r['diff'], s.unit)} {s.unit})" for r in significant(rows, sign)] for sign in (1, -1))
        missing = [a for a in activations if a not in s.groups]
        line = (f"- {s.name}: significantly better than {baseline}: {', '.join(better) or 'none'}; significantly worse: {', '.join(worse) or 'none'}"
                if any(math.isfinite(r["p"]) for r in rows) else f"- {s.name}: no test against {baseline} (no baseline runs, or fewer than 2 seeds)")
        if missing:
            line += f"; no finished confirm run of {', '.join(missing)}"
        if s.planned and s.finished < s.planned:
            line += f"; in progress ({s.finished} of {s.planned} confirm runs finished)"
        out.append(line + ".")
    flips = []
    for a in everywhere:
        up, down = ([s for s, rows in effects_by.items() if any(r["activation"] == a for r in significant(rows, sign))] for sign in (1, -1))
        if up and down:
            flips.append(f"{a} beats {baseline} in {', '.join(up)} and loses to it in {', '.join(down)}")
    out.append("Where the answer flips: " + ("; ".join(flips) if flips else
                                           f"no activation is significantly better than {baseline} in one setting and significantly worse in another") + ".")
    return out


def rank_table(settings: list[SettingResults]) -> list[str]:
    """Ranks per setting (by the mean over the confirm seeds) and the mean rank with its bootstrap interval."""
    usable = [s for s in settings if len(s.seeds) >= 2]
    acts = [a for a in settings[0].activations if all(a in s.activations for s in usable)]
    if not acts or not usable:
        return ["No activation has confirm runs on two seeds or more in every setting."]
    per = {s.name: stats.ranks(np.array([np.mean(s.row(a)) for a in acts]), s.higher) for s in usable}
    mean, lo, hi = stats.mean_rank([(np.array([s.row(a) for a in acts]), s.higher) for s in usable], stats.CONFIDENCE)
    order = np.argsort(mean, kind="stable")
    lines = [f"| activation | {' | '.join(s.name for s in usable)} | mean rank | {stats.CONFIDENCE:.0%} interval |",
             "|---|" + "---|" * (len(usable) + 2)]
    for i in order:
        lines.append(f"| {acts[i]} | " + " | ".join(f"{per[s.name][i]:g}" for s in usable) + f" | {mean[i]:.2f} | [{lo[i]:.2f}, {hi[i]:.2f}] |")
    left = [a for a in dict.fromkeys(a for s in settings for a in s.activations) if a not in acts]
    short = [f"{s.name} ({len(s.seeds)})" for s in usable if s.planned and len(s.seeds) * len(s.activations) < s.planned]
    note = ("Rank 1 is the best mean in a setting (ties share their mean rank), on the seeds every activation of it finished"
            + (f" (fewer than planned in {', '.join(short)})" if short else "") + ". The interval resamples the confirm seeds within "
            f"each setting ({stats.N_RESAMPLES} resamples, the same seeds for every activation of a setting) and averages the "
            "ranks over the settings: it says how much the mean rank over these settings depends on the seeds. It is not a "
            "random-effects meta-analysis: with a handful of settings, chosen rather than sampled, the between-setting variance "
            "such a model needs cannot be estimated, and an interval that claims to reach settings not run would be a guess. "
            "A percentile bootstrap over a few seeds is narrower than it should be, and it leaves out the uncertainty of each "
            "activation's tuned rate: read it as a lower bound on the spread.")
    out = lines + ["", note] + ([f"Left out of the ranks (not in every setting): {', '.join(left)}."] if left else [])
    return out + ([f"Settings with fewer than 2 seeds, left out: {', '.join(s.name for s in settings if s not in usable)}."]
                  if len(usable) < len(settings) else [])


def rates_table(settings: list[SettingResults]) -> list[str]:
    """Each activation's selected learning rate per setting: what the study tuned."""
    acts = list(dict.fromkeys(a for s in settings for a in s.activations))
    lines = [f"| activation | {' | '.join(s.name for s in settings)} |", "|---|" + "---|" * len(settings)]
    return lines + [f"| {a} | " + " | ".join(f"{s.lr[a]:g}" if isinstance(s.lr.get(a), (int, float)) else "—" for s in settings) + " |"
                    for a in acts]


def epoch_ranks(s: SettingResults) -> dict:
    """The ranking at each epoch's validation, of the mean over the confirm seeds."""
    acts = [a for a in s.activations if a in s.curves]
    lengths = {s.curves[a].shape[1] for a in acts}
    if len(acts) < 2 or len(lengths) != 1:
        return {"setting": s.name, "metric": s.val_metric, "epochs": [], "ranks": {}}
    means = np.array([s.curves[a].mean(axis=0) for a in acts])  # [A, E]
    r = stats.ranks(means.T, higher_is_better(s.val_metric)).T
    return {"setting": s.name, "metric": s.val_metric, "epochs": list(range(1, means.shape[1] + 1)), "ranks": dict(zip(acts, r.tolist()))}


# ---------------------------------------------------------------- cost


def costs(sweep_dir: Path, settings: list[SettingResults]) -> tuple[list, str]:
    """Each activation's cost (actbench.cost) on the device of the machine that writes the report
    (a GPU where there is one), measured once and kept in cost.json; built from the activation
    config its runs recorded, so a user's own is measured too."""
    import torch

    from actbench import activations as acts
    from actbench import cost

    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = list(dict.fromkeys(a for s in settings for a in s.activations))
    nodes = {a: next(s.configs[a] for s in settings if a in s.configs) for a in names}
    path = Path(sweep_dir) / COST_FILE
    try:
        kept = json.loads(path.read_text())
        if sorted(kept["activations"]) == sorted(names) and kept["device"] == device and kept.get("configs") == nodes:
            return [cost.Cost(**c) for c in kept["costs"]], kept["on"]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    built = {a: acts.build(node) if isinstance(node, dict) else acts.from_name(a) for a, node in nodes.items()}
    measured, on = cost.compare(built, device, min_run_time=0.3), cost.device_name(device)
    path.write_text(json.dumps({"activations": names, "device": device, "on": on, "configs": nodes, "costs": [c.__dict__ for c in measured]},
                               indent=1))
    return measured, on


def cost_tables(sweep_dir: Path, settings: list[SettingResults]) -> list[str]:
    try:
        measured, on = costs(sweep_dir, settings)
    except Exception as e:  # noqa: BLE001 - the report stands without it
        return [f"Not measured: {type(e).__name__}: {' '.join(str(e).split())}"]
    from actbench import cost

    md = [cost.table(measured, on), "", "`python -m actbench.cost NAME ...` measures any list of activations, yours included."]
    md += ["", "Each setting's model, one member (forward FLOPs per example by torch.utils.flop_counter; a backward pass costs "
           "about twice that):", "", "| setting | parameters | MFLOPs per example |", "|---|---|---|"]
    for s in settings:
        params = sorted({p for p, _ in s.size.values() if isinstance(p, int)})
        flops = sorted({f for _, f in s.size.values() if isinstance(f, (int, float))})
        span = (lambda v, fmt: "—" if not v else fmt(v[0]) if len(v) == 1 else f"{fmt(v[0])}-{fmt(v[-1])}")
        md.append(f"| {s.name} | {span(params, lambda p: f'{p:,}')} | {span(flops, lambda f: f'{f / 1e6:.3g}')} |")
    return md


# ---------------------------------------------------------------- the report


def write_atlas_report(sweep_dir: str | Path, baseline: str = DEFAULTS["baseline"], alpha: float = DEFAULTS["alpha"],
                       power: float = DEFAULTS["power"], figures: bool = True, cost: bool = True, **_) -> Path:
    """Each setting's fair report, then report.md at the atlas's root; returns its path. One
    baseline and level across the settings; each setting's metric, effect and pairs are its own
    (its report settings, as atlas.json recorded them). `cost=False` leaves out the activations'
    cost (measured once per atlas, some seconds)."""
    from actbench import atlas_figures

    sweep_dir = Path(sweep_dir)
    plan = atlas.read(sweep_dir)
    if plan is None:
        raise ReportError(f"{sweep_dir}: no {atlas.ATLAS_FILE}: not an atlas's directory")
    md = [f"# actbench atlas: {sweep_dir.resolve().name}", ""]
    done, notes = [], []
    for name, entry in plan["settings"].items():
        if entry.get("skipped"):
            notes.append(f"- {name}: skipped, {entry['skipped']}")
            continue
        own = {**DEFAULTS, **{k: v for k, v in (entry.get("report") or {}).items() if k in DEFAULTS},
               "baseline": baseline, "alpha": alpha, "power": power}
        try:
            write_study_report(sweep_dir / name, figures=figures, **own)
            done.append(read_setting(sweep_dir / name, name, own["metric"], plan.get("activations")))
            notes.append(f"- [{name}]({name}/report.md): {' '.join(entry['overrides']) or 'the atlas preset as it is'}")
        except (NoRunsError, ReportError) as e:
            notes.append(f"- {name}: not yet: {e}")
    by = effects(done, baseline, alpha, power)
    md += [f"{len(done)} of {len(plan['settings'])} settings have confirm runs; activations: {', '.join(plan.get('activations') or [])}; "
           f"baseline {baseline}. Each setting is a fair study: every activation's rate tuned on validation, then "
           "confirmed on fresh seeds, whose test metric is compared here (accuracy in pp, a language model's loss in nats).", "",
           "## The answer", "", *answer(done, by, baseline, alpha, plan.get("activations") or []), ""]
    rows = [r for s in done for r in by[s.name]]
    drawn = []
    if figures:
        path, note = atlas_figures.forest(rows, sweep_dir / "forest.png", baseline)
        md += [f"![forest plot]({path.name})" if path else f"Forest plot: {note}", ""]
        drawn.append((report_tag("atlas", "forest"), path))
    md += ["## Against " + baseline + " per setting", "",
           f"Difference from {baseline} (> 0 better; pp of accuracy, nats of loss) with its 95% t interval, as each setting's "
           "own report tests it (paired on the seeds the two share); p Holm-adjusted over all the atlas's tests against "
           f"{baseline} (so larger than in a setting's own report, whose family is its own tests); and the standardised "
           "effect (the mean over the sd of the paired differences, d_z) with its interval from the noncentral t:", "",
           "| setting | activation | difference | 95% CI | p (Holm) | standardised | its interval |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['setting']} | {r['activation']} | {signed(r['diff'], r['unit'])} {r['unit']} | [{signed(r['lo'], r['unit'])}, "
           f"{signed(r['hi'], r['unit'])}] | {r['p_holm']:.3g}"
           f"{' *' if r['sig'] else ''} | {r['dz']:+.2f} | [{r['dz_lo']:+.2f}, {r['dz_hi']:+.2f}] |" for r in rows]
    md += ["", "## Ranks", "", *(rank_table(done) if done else ["No setting has confirm runs yet."]), ""]
    if done:
        md += ["Each activation's learning rate, as its setting's study selected it on validation:", "", *rates_table(done), ""]
    if figures and done:
        path, note = atlas_figures.ranks_over_epochs([epoch_ranks(s) for s in done], sweep_dir / "ranks_over_epochs.png")
        md += [f"![ranks over epochs]({path.name})" if path else f"Ranks over epochs: {note}", ""]
        drawn.append((report_tag("atlas", "ranks_over_epochs"), path))
    if cost:
        md += ["## Cost", "", *(cost_tables(sweep_dir, done) if done else ["Nothing ran yet."]), ""]
    md += ["## Settings", "", *notes, ""]
    if drawn:
        try:  # and in TensorBoard, as images of the atlas directory's own run
            root_events.write_figures(sweep_dir, [(t, p) for t, p in drawn if p])
        except Exception as e:  # noqa: BLE001 - the report stands without them
            md += [f"TensorBoard: the figures were not written to {sweep_dir}, {type(e).__name__}: {e}", ""]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(md).rstrip() + "\n")
    return report
