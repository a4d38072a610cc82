"""The report's figures: loss curves, test accuracy per configuration, the probability of
improvement over the baseline, the activations and their derivatives, and the probes (dead
units, per-layer gradient norms, gradient ratio vs depth).

Each configuration is a `Series` built by actbench.report; each figure function writes one PNG
and returns (path or None, note), None meaning the data for it is absent. Colours follow the
activation (Okabe-Ito, then Paul Tol's muted colours: both colour-blind safe) and stay the same
in every figure; line styles tell apart the other swept keys (e.g. depth).
matplotlib and torch are imported inside the functions so that importing actbench stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from actbench.results import (
    TEST_ACC,
    TRAIN_LOSS,
    VAL_LOSS,
    as_float,
    grad_norm_tags,
    has_probes,
    layer_tags,
    probe_epochs,
    probe_values,
    recorded_config,
)
from actbench.stats import GAMMA, READING_MIN_SEEDS, TOO_FEW, gmean_positive, mean_ci
from actbench.tags import DEAD, LOSS, PROBES, SATURATED, report_tag

# Fixed per shipped activation, so a colour means the same activation in every report.
COLORS = {
    "relu": "#000000",
    "gelu": "#0072B2",
    "gelu_tanh": "#56B4E9",
    "gelu_sigmoid": "#009E73",
    "leaky": "#E69F00",
    "sigmoid": "#D55E00",
    "tanh": "#CC79A7",
    "silu": "#882255",
    "elu": "#332288",
    "mish": "#999933",
    "selu": "#AA4499",
    "softplus": "#44AA99",
}
SPARE_COLORS = ["#DDCC77", "#CC6677", "#88CCEE", "#117733", "#F0E442", "#777777"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DPI = 130


@dataclass
class Series:
    """One configuration, as the figures need it."""

    label: str
    activation: str | None
    variant: dict = field(default_factory=dict)  # the other varying keys, e.g. {"model.depth": 4}
    runs: list[dict] = field(default_factory=list)  # metrics.json contents, one per seed
    values: list[float] = field(default_factory=list)  # the report's metric per run, as plotted
    grad_ratio: float = math.nan  # the configuration's summary grad ratio
    p_improve: float = math.nan  # P(better than the baseline); NaN for the baseline and the untested
    p_improve_ci: tuple[float, float] = (math.nan, math.nan)
    reading: str = ""  # the report's reading of that interval (stats.TOO_FEW ... when it has none)


class Style(NamedTuple):
    """How one configuration is drawn: colour and marker by activation, line style by the other
    keys. Activations drawn earlier get wider lines and larger markers, so that one whose curve
    lies on another's (gelu and gelu_tanh) still shows around it."""

    color: str
    linestyle: object
    rank: int  # the activation's place among the series' activations

    @property
    def marker(self) -> str:
        return MARKERS[self.rank % len(MARKERS)]

    def line(self, scale: float = 1.0) -> dict:
        """Keyword arguments of Axes.plot."""
        shrink = max(0.4, 1.0 - 0.15 * self.rank)
        # every other activation's markers hollow: a filled one under them still shows through
        edge = {"fillstyle": "none", "mew": 1.4 * scale} if self.rank % 2 else {"mec": "white", "mew": 0.5}
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker, **edge,
                "lw": 3.0 * shrink * scale, "ms": 8.0 * shrink * scale}


def activation_colors(activations) -> dict:
    """activation -> its colour: the shipped ones' own, the spare ones in turn for the others."""
    spare = itertools.cycle(SPARE_COLORS)
    return {a: COLORS.get(str(a)) or next(spare) for a in dict.fromkeys(activations)}


def styles(series: list[Series]) -> dict[str, Style]:
    """label -> its Style."""
    colors = activation_colors(s.activation for s in series)
    variants: dict = {}
    ranks = {a: i for i, a in enumerate(colors)}
    for s in sorted(series, key=_variant_order):
        variants.setdefault(_variant_id(s), len(variants))
    return {
        s.label: Style(colors[s.activation], LINESTYLES[variants[_variant_id(s)] % len(LINESTYLES)], ranks[s.activation])
        for s in series
    }


def _variant_id(s: Series) -> str:
    return json.dumps(s.variant, sort_keys=True, default=str)


def _variant_order(s: Series) -> tuple:
    """Variants in their natural order: depth 1, 2, 4, 8, 16, not as they rank."""
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for _, v in sorted(s.variant.items()))


RC = {"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


def _drawing(fn):
    """Run a figure function under the report's rc settings. Figures are built as plain
    matplotlib.figure.Figure objects, rendered by the Agg canvas: no pyplot, so no global
    backend switch or figure registry in a process (or notebook) that calls the report."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def _new_figure(**kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _align(series: list[tuple[list, list | None]]) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, runs x epochs matrix) from each run's (epochs, values or None), aligned on the
    epoch numbers, NaN where a run lacks one."""
    epochs = sorted({e for ep, values in series if values is not None for e in ep})
    index = {e: i for i, e in enumerate(epochs)}
    out = np.full((len(series), len(epochs)), np.nan)
    for row, (ep, values) in enumerate(series):
        for e, v in zip(ep, values or []):
            if e in index:
                out[row, index[e]] = as_float(v)
    return np.array(epochs, dtype=float), out


def _aligned(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """A curve of metrics.json's `curves` section, aligned as `_align` does."""
    blocks = [r.get("curves") if isinstance(r.get("curves"), dict) else {} for r in runs]
    return _align([(b.get("epoch") or [], b.get(key)) for b in blocks])


def _probe_aligned(runs: list[dict], tag: str) -> tuple[np.ndarray, np.ndarray]:
    return _align([(probe_epochs(r), probe_values(r, tag)) for r in runs])


def _layer_mean(runs: list[dict], stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the mean over hidden layers of a per-layer probe, aligned on probe epochs."""
    tags = max((layer_tags(r, stat) for r in runs), key=len, default=[])
    if not tags:
        return np.array([]), np.empty((len(runs), 0))
    stacks = [_probe_aligned(runs, t) for t in tags]
    epochs = max((s[0] for s in stacks), key=len)
    mats = [m for e, m in stacks if len(e) == len(epochs)]
    with _quiet():
        return epochs, np.nanmean(np.stack(mats), axis=0)


@contextlib.contextmanager
def _quiet():
    """Silence numpy's all-NaN warnings: an all-NaN column is just a gap in the plot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _mean_std(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with _quiet():
        count = np.sum(~np.isnan(mat), axis=0)
        mean = np.nanmean(mat, axis=0)
        std = np.where(count >= 2, np.nanstd(mat, axis=0, ddof=1), np.nan)
    return mean, std


def _variant_label(s: Series) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.variant.items())


def _legend(fig, series: list[Series], style: dict, counts: dict | None = None) -> None:
    """One entry per configuration when only the activation varies; otherwise colour (the
    activation) and line style (the other keys) get separate legends, which stay short."""
    from matplotlib.lines import Line2D

    variants = list(dict.fromkeys(_variant_label(s) for s in sorted(series, key=_variant_order)))
    if len(variants) <= 1:
        handles = [Line2D([], [], **style[s.label].line()) for s in series]
        labels = [s.label + (f" (n={counts[s.label]})" if counts else "") for s in series]
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), frameon=False)
        return
    first = {}
    for s in series:
        first.setdefault(s.activation, s)
        first.setdefault(_variant_label(s), s)
    acts = list(dict.fromkeys(s.activation for s in series))
    fig.legend([Line2D([], [], **{**style[first[a].label].line(), "linestyle": "-"}) for a in acts],
               [str(a) for a in acts],
               loc="outside right upper", title="activation (colour)", frameon=False)
    fig.legend([Line2D([], [], color="0.25", ls=style[first[v].label].linestyle, lw=1.8) for v in variants], variants,
               loc="outside right lower", title="line style", frameon=False)


@_drawing
def loss_curves(series: list[Series], path: Path) -> tuple[Path | None, str]:
    """Training and validation loss per epoch: mean over seeds with a +-1 std band."""
    if not any(_aligned(s.runs, TRAIN_LOSS)[0].size for s in series):
        return None, "skipped: no run recorded loss curves"
    style = styles(series)
    fig = _new_figure(figsize=(11, 4.6))
    axes = fig.subplots(1, 2, sharex=True)
    counts: dict = {}
    for ax, key, title in zip(axes, [TRAIN_LOSS, VAL_LOSS], ["training loss", "validation loss"]):
        for s in series:
            epochs, mat = _aligned(s.runs, key)
            if not epochs.size:
                continue
            mean, std = _mean_std(mat)
            counts[s.label] = int(np.sum(~np.isnan(mat).all(axis=1)))
            ax.plot(epochs, mean, **style[s.label].line(0.8))
            ax.fill_between(epochs, mean - std, mean + std, color=style[s.label].color, alpha=0.15, lw=0)
        ax.set(title=title, xlabel="epoch", ylabel="cross-entropy loss")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Loss per epoch: line = mean over seeds, band = ±1 std over seeds")
    _legend(fig, series, style, counts)
    fig.savefig(path, dpi=DPI)
    return path, ""


@_drawing
def metric_points(series: list[Series], path: Path, metric_label: str = "test acc (%)") -> tuple[Path | None, str]:
    """The metric per configuration: every seed as a jittered point, mean with a 95% t CI bar."""
    if not any(s.values for s in series):
        return None, "skipped: no finished runs"
    style = styles(series)
    rng = np.random.default_rng(0)  # fixed jitter, so re-running the report gives the same figure
    fig = _new_figure(figsize=(8, 1.2 + 0.42 * len(series)))
    ax = fig.subplots()
    for i, s in enumerate(series):
        color = style[s.label].color
        y = np.array(s.values, dtype=float)
        ax.scatter(y, i + rng.uniform(-0.18, 0.18, len(y)), s=22, color=color, alpha=0.6, lw=0, zorder=2)
        mean, _, low, _ = mean_ci(y)
        ax.errorbar(mean, i, xerr=mean - low if len(y) > 1 else None, fmt="D", ms=6, color=color, mec="white",
                    capsize=4, lw=1.6, zorder=3)
        ax.annotate(f"{mean:.2f}  (n={len(y)})", (1.0, i), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(series)), [s.label for s in series])
    ax.invert_yaxis()  # best first, as in the table
    ax.margins(x=0.08)
    ax.set_xlabel(metric_label)
    ax.grid(axis="y", visible=False)
    ax.set_title(f"{metric_label}: points = seeds, diamond = mean, bar = 95% CI (t)", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path, ""


@_drawing
def improvement(series: list[Series], path: Path, baseline: str = "relu") -> tuple[Path | None, str]:
    """P(configuration better than the baseline) with its bootstrap interval, one row per
    configuration compared, and the lines of Bouthillier et al.'s reading (as rliable draws it):
    0.5, above which the interval says better, and GAMMA (0.75), which it reaches when the gain is meaningful."""
    rows = [s for s in series if math.isfinite(s.p_improve)]
    if not rows:
        return None, f"skipped: no configuration was tested against {baseline} (it needs 2 seeds each)"
    unread = [s.reading.startswith(TOO_FEW) for s in rows]  # an interval of a handful of seeds is no evidence: drawn hollow
    style = styles(series)
    fig = _new_figure(figsize=(8, 1.5 + 0.36 * len(rows)))
    ax = fig.subplots()
    for i, (s, hollow) in enumerate(zip(rows, unread)):
        color = style[s.label].color
        low, high = s.p_improve_ci
        if math.isfinite(low) and math.isfinite(high):
            ax.barh(i, high - low, left=low, height=0.6, lw=1 if hollow else 0, zorder=2, edgecolor=color,
                    facecolor="none" if hollow else color, alpha=0.6 if hollow else 0.3, hatch="//" if hollow else None)
        ax.plot([s.p_improve] * 2, [i - 0.3, i + 0.3], color=color, lw=2.5, zorder=3)
        ax.annotate(f"{s.p_improve:.2f} [{low:.2f}, {high:.2f}]" + (f"  {TOO_FEW}" if hollow else ""), (1.0, i),
                    xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.axvline(0.5, color="0.35", lw=1.0, linestyle="--", zorder=1)
    ax.axvline(GAMMA, color="0.35", lw=1.0, linestyle=":", zorder=1)
    ax.set_yticks(range(len(rows)), [s.label for s in rows])
    ax.set_ylim(len(rows) - 0.4, -0.6)  # best first, as in the table, with room for a lone row
    ax.set_xlim(-0.03, 1.03)  # a point at 0 or 1 stays visible
    ax.set_xticks(np.linspace(0, 1, 5))
    ax.grid(axis="y", visible=False)
    same = " with the same other keys" if any(s.variant for s in rows) else ""
    ax.set_xlabel(f"P(a run of the configuration beats a run of {baseline}{same})")
    ax.set_title(f"Probability of improvement over {baseline}: bar = 95% bootstrap interval over seeds\n"
                 f"better when the bar lies right of 0.5 (dashed), meaningful when it reaches {GAMMA:g} (dotted)"
                 + (f"\nhatched: under {READING_MIN_SEEDS} seeds, too few to read"
                    if any(unread) else ""), fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path, ""


@_drawing
def activations(series: list[Series], path: Path) -> tuple[Path | None, str]:
    """f(x) and f'(x) on [-4, 4] for the sweep's activations, each built as its runs recorded it
    (so a user's own activation is drawn as trained), and how far GELU's two approximations are
    from the exact GELU (invisible at the scale of the first two panels)."""
    import torch

    from actbench import activations as acts

    built, unknown = {}, []
    for s in series:
        if s.activation is None or str(s.activation) in built:
            continue
        recorded = next((a for r in s.runs if (a := recorded_config(r, "activation"))), None)
        try:
            built[str(s.activation)] = acts.build(recorded) if recorded else acts.from_name(str(s.activation))
        except Exception as e:  # noqa: BLE001 - e.g. a user's module not importable here: the others are still drawn
            unknown.append(f"{s.activation} ({type(e).__name__}: {e})")
    style = styles(series)
    color = {s.activation: style[s.label].color for s in series}
    x = torch.linspace(-4, 4, 801)
    fig = _new_figure(figsize=(14, 4.4))
    axes = fig.subplots(1, 3)
    for i, (name, fn) in enumerate(built.items()):
        if acts.in_per_out(fn) > 1:  # a gated unit of two inputs: its gate's curve
            if not isinstance(getattr(fn, "gate", None), torch.nn.Module):
                unknown.append(f"{name} (a gated unit without a `gate`)")
                continue
            fn, name = fn.gate, f"{name} (gate)"
            color[name] = color[name.split(" ")[0]]
        with torch.no_grad():
            y = fn(x)
        # Near-identical curves (gelu / gelu_tanh, relu / leaky) would hide each other if all solid.
        line = {"color": color[name], "lw": 2.2 - 0.25 * (i % 4), "linestyle": LINESTYLES[i % 4], "label": name}
        axes[0].plot(x, y, **line)
        axes[1].plot(x, acts.derivative(fn, x), **line)
    axes[0].set(title="f(x)", xlabel="x", ylim=(-2.0, 4.2))
    axes[1].set(title="f'(x)", xlabel="x", ylim=(-0.2, 1.3))
    axes[0].legend(frameon=False, fontsize=8)

    exact = acts.from_name("gelu")
    for name, c in [("gelu_tanh", COLORS["gelu_tanh"]), ("gelu_sigmoid", COLORS["gelu_sigmoid"])]:
        approx = acts.from_name(name)
        with torch.no_grad():
            err = (approx(x) - exact(x)).abs()
        derr = (acts.derivative(approx, x) - acts.derivative(exact, x)).abs()
        axes[2].semilogy(x, err, color=c, lw=1.8, label=f"|{name} − gelu|")
        axes[2].semilogy(x, derr, color=c, lw=1.2, linestyle="--", label=f"|{name}' − gelu'|")
    axes[2].set(title="GELU approximations vs exact GELU (log scale)", xlabel="x", ylim=(1e-7, 0.2))
    axes[2].legend(frameon=False, fontsize=8)
    fig.savefig(path, dpi=DPI)
    note = f"not drawn, as they could not be built here: {'; '.join(unknown)}" if unknown else ""
    return path, note


def _depth_key(series: list[Series]) -> str | None:
    """The swept key, numeric, along which the number of layers the probes follow changes: the
    MLP's model.depth, or a model's own (model.blocks, say)."""
    for k in sorted({k for s in series for k in s.variant}):
        raw = [s.variant.get(k) for s in series]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            continue  # a list (model.channels), a name, a key some configurations lack
        values = set(raw)
        if len(values) < 2:
            continue
        layers = {v: {len(grad_norm_tags(r)) for s in series if s.variant.get(k) == v for r in s.runs} for v in values}
        if len({frozenset(n) for n in layers.values()}) > 1:
            return k
    return None


@_drawing
def probes(series: list[Series], path: Path) -> tuple[Path | None, str]:
    """Dead and saturated units by epoch, per-layer gradient norms at the final epoch, and,
    when depth is swept, the first/last-layer gradient ratio against depth."""
    with_probes = [s for s in series if any(has_probes(r) for r in s.runs)]
    if not with_probes:
        return None, "skipped: no run recorded probes"
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    style = styles(series)
    depth = _depth_key(with_probes)
    saturated = any(layer_tags(r, SATURATED) for s in with_probes for r in s.runs)
    fractions = [DEAD, SATURATED] if saturated else [DEAD]
    panels = fractions + ["grad_norm"] + (["ratio"] if depth else [])
    rows = 2 if len(panels) == 4 else 1  # four panels in a row would be too wide to read
    cols = len(panels) // rows
    fig = _new_figure(figsize=(4.8 * cols, 4.0 * rows + 0.6))
    ax = dict(zip(panels, np.ravel(fig.subplots(rows, cols))))

    for s in with_probes:
        line = style[s.label].line()
        runs = [r for r in s.runs if has_probes(r)]
        for kind in fractions:
            epochs, per_run = _layer_mean(runs, kind)
            if epochs.size:
                with _quiet():
                    ax[kind].plot(epochs, np.nanmean(per_run, axis=0), **line)
        layers, norms = _final_grad_norms(runs)
        if layers:
            with _quiet():
                ax["grad_norm"].semilogy(layers, gmean_positive(norms, axis=0), **line)
    tols = {recorded_config(r, "probes.activations.saturation_tol") for s in with_probes for r in s.runs}
    threshold = f"{tols.pop():g}" if len(tols) == 1 and None not in tols else "the threshold"
    titles = {DEAD: "dead units or channels (mean over layers, seeds)",
              SATURATED: f"|f'| < {threshold}: saturated, or a ReLU's\nflat side (mean over layers, seeds)"}
    for kind in fractions:
        ax[kind].set(title=titles[kind], xlabel="epoch (0 = at initialisation)", ylabel=f"{kind} fraction")
        ax[kind].yaxis.set_major_formatter(PercentFormatter(1.0))
        ax[kind].xaxis.set_major_locator(MaxNLocator(integer=True))
    ax["grad_norm"].set(title="weight-gradient norm per layer, final epoch", xlabel="layer (last = output layer)",
                        ylabel="‖∇W‖ (geometric mean over seeds)")
    ax["grad_norm"].xaxis.set_major_locator(MaxNLocator(integer=True))
    if depth:
        _ratio_vs_depth(ax["ratio"], with_probes, depth, style)
    _legend(fig, with_probes, style)
    fig.savefig(path, dpi=DPI)
    return path, ""


def _final_grad_norms(runs: list[dict]) -> tuple[list[int], np.ndarray]:
    """Layer indices 1..D+1 and a runs x layers matrix of each layer's gradient norm at the last epoch."""
    tags = max((grad_norm_tags(r) for r in runs), key=len, default=[])
    layers = list(range(1, len(tags) + 1))
    return layers, np.array([[_last(probe_values(r, t)) for t in tags] for r in runs])


def _last(values) -> float:
    vals = [as_float(v) for v in values or []]
    vals = [v for v in vals if not math.isnan(v)]
    return vals[-1] if vals else math.nan


def _ratio_vs_depth(ax, series: list[Series], depth: str, style: dict) -> None:
    """One line per activation (and per value of any other swept key) across depths."""
    lines: dict = {}
    for s in series:
        rest = {k: v for k, v in s.variant.items() if k != depth}
        lines.setdefault((s.activation, json.dumps(rest, sort_keys=True, default=str)), []).append(s)
    for (activation, rest), members in lines.items():
        members = sorted(members, key=lambda s: as_float(s.variant[depth]))
        x = [as_float(s.variant[depth]) for s in members]
        y = [s.grad_ratio for s in members]
        extra = json.loads(rest)
        name = str(activation) + ("".join(f", {k}={v}" for k, v in extra.items()))
        line = style[members[0].label].line()
        ax.semilogy(x, y, **{**line, "linestyle": line["linestyle"] if extra else "-"}, label=name)
    ax.axhline(1.0, color="grey", lw=0.8, linestyle=":")
    ax.set(title="gradient ratio vs depth (geometric mean\nover epochs 1..E and seeds)", xlabel=depth,
           ylabel="‖∇W1‖ / ‖∇W_last‖")
    depths = sorted({as_float(s.variant[depth]) for s in series})
    ax.set_xticks(depths, [f"{d:g}" for d in depths])


@_drawing
def isolation(arms: list[dict], path: Path, score_label: str = "val loss", edges: tuple[float, float] | None = None,
              higher_is_better: bool = False) -> tuple[Path | None, str]:
    """The study's isolation plot (the Tuning Playbook's): each activation's tune score against the
    learning rate, mean over the tune seeds with their range as a band, the selected rate starred,
    the configured grid's edges dashed. `arms` are study.json's rows."""
    drawn = [a for a in arms if any(pt.get("score") is not None and math.isfinite(pt["score"]) for pt in a.get("points", []))]
    if not drawn:
        return None, "skipped: no tune point has a score yet"
    style = styles([Series(a["arm"], a["arm"].split("(")[0].split(" [")[0]) for a in drawn])
    fig = _new_figure(figsize=(8.5, 5.2))
    ax = fig.subplots()
    for a in drawn:
        color = style[a["arm"]].color
        pts = sorted((pt for pt in a["points"] if pt.get("score") is not None and math.isfinite(pt["score"])), key=lambda pt: pt["lr"])
        lr = np.array([pt["lr"] for pt in pts])
        mean = np.array([pt["score"] for pt in pts])
        low = np.array([min(pt["per_seed"] or [pt["score"]]) for pt in pts])
        high = np.array([max(pt["per_seed"] or [pt["score"]]) for pt in pts])
        ax.plot(lr, mean, **style[a["arm"]].line(0.8), label=a["arm"])
        ax.fill_between(lr, low, high, color=color, alpha=0.15, lw=0)
        failed = [pt["lr"] for pt in a["points"] if pt.get("bad")]
        for x in failed:
            ax.axvline(x, color=color, lw=0.8, linestyle=":", alpha=0.6)
        if a.get("lr") is not None and a.get("score") is not None and math.isfinite(a["score"]):
            ax.plot([a["lr"]], [a["score"]], marker="*", ms=15, color=color, mec="black", mew=0.8, zorder=4)
    if edges:
        for x in edges:
            ax.axvline(x, color="0.4", lw=1.0, linestyle="--", zorder=1)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel=f"{score_label} (mean over tune seeds; band = their range)")
    better = "higher" if higher_is_better else "lower"
    ax.set_title(f"Isolation plot: each activation at every rate tried ({better} is better)\n"
                 "star = its selected rate; dashed = the configured grid's edges; dotted = a rate whose tune runs failed",
                 fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.savefig(path, dpi=DPI)
    return path, ""


class Figure(NamedTuple):
    """A drawn figure: its title, its PNG (None when skipped), a note, and its TensorBoard tag."""

    title: str
    path: Path | None
    note: str
    tag: str


def make_all(
    out_dir: Path, series: list[Series], metric: str = TEST_ACC, metric_label: str = "test acc (%)", baseline: str = "relu"
) -> list[Figure]:
    """Every figure into out_dir, each with the tag it has in TensorBoard (the group of what it shows)."""
    out_dir = Path(out_dir)
    jobs = [
        ("Loss curves", loss_curves, "loss_curves.png", report_tag(LOSS)),
        (f"{metric} per configuration", lambda s, p: metric_points(s, p, metric_label), f"{metric}.png", report_tag(metric)),
        (f"Probability of improvement over {baseline}", lambda s, p: improvement(s, p, baseline), "improvement.png",
         report_tag(metric, "p_better")),
        ("Activations and derivatives", activations, "activations.png", report_tag(PROBES, "activations")),
        ("Probes", probes, "probes.png", report_tag(PROBES)),
    ]
    out = []
    for title, fn, name, tag in jobs:
        try:
            out.append(Figure(title, *fn(series, out_dir / name), tag))
        except Exception as e:  # noqa: BLE001 - a broken figure must not cost the sweep its table
            out.append(Figure(title, None, f"not drawn, {type(e).__name__}: {e}", tag))
    return out
