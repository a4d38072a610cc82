"""The atlas's figures: the forest plot (each activation against the baseline in every setting,
right is better) and the ranks over training. Drawn as actbench.figures draws (plain matplotlib
Figures, its colours per activation); the numbers arrive computed (actbench.report.atlas)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from actbench.figures import COLORS, DPI, MARKERS, SPARE_COLORS, _drawing, _new_figure


def colors(activations: list[str]) -> dict[str, str]:
    spare = itertools.cycle(SPARE_COLORS)
    return {a: COLORS.get(a) or next(spare) for a in activations}


@_drawing
def forest(rows: list[dict], path: Path, baseline: str) -> tuple[Path | None, str]:
    """rows: one per (setting, activation), settings in order, each with setting, activation, unit,
    diff, lo, hi (sign-normalised: > 0 is better) and dz, dz_lo, dz_hi (standardised). Left panel:
    the difference in each setting's own units; right: standardised, one axis for all."""
    if not rows:
        return None, f"nothing to draw: no activation besides {baseline} has confirm runs"
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    acts = list(dict.fromkeys(r["activation"] for r in rows))
    color = colors(acts)
    y, ticks, labels, ys, seps = 0.0, [], [], [], []
    for s in settings:  # one block per setting, a gap between blocks
        block = [r for r in rows if r["setting"] == s]
        ticks.append(y - (len(block) - 1) / 2)
        labels.append(f"{s} ({block[0]['unit']})")
        for r in block:
            ys.append(y)
            y -= 1
        seps.append(y + 0.1)
        y -= 0.8
    fig = _new_figure(figsize=(11, 1.2 + 0.28 * len(rows) + 0.25 * len(settings)))
    raw, std = fig.subplots(1, 2, sharey=True)
    for ax, (mid, lo, hi), title in ((raw, ("diff", "lo", "hi"), f"difference from {baseline}, in the setting's units"),
                                     (std, ("dz", "dz_lo", "dz_hi"), f"standardised: difference / sd of the paired differences")):
        for r, yy in zip(rows, ys):
            m = r[mid]
            if not np.isfinite(m):
                continue
            c = color[r["activation"]]
            ax.errorbar([m], [yy], xerr=[[m - r[lo]], [r[hi] - m]] if np.isfinite(r[lo]) else None, fmt=MARKERS[acts.index(r["activation"]) % len(MARKERS)],
                        color=c, ms=5, capsize=2, lw=1.2)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"< worse than {baseline}  |  better than {baseline} >")
    raw.set_yticks(ticks, labels)
    for sep in seps[:-1]:
        for ax in (raw, std):
            ax.axhline(sep, color="0.8", lw=0.6)
    handles = [raw.plot([], [], MARKERS[i % len(MARKERS)], color=color[a], label=a)[0] for i, a in enumerate(acts)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(acts), 8), frameon=False)
    fig.suptitle("Each activation against the baseline at its own tuned rate, 95% CIs over the confirm seeds", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path, ""


@_drawing
def ranks_over_epochs(panels: list[dict], path: Path) -> tuple[Path | None, str]:
    """panels: one per setting, each with setting, metric (the validation metric ranked), epochs
    [E] and ranks {activation: [E]} (1 the best, of the mean over the confirm seeds)."""
    panels = [p for p in panels if p["ranks"] and len(p["epochs"])]
    if not panels:
        return None, "nothing to draw: no confirm run recorded its validation curve"
    from matplotlib.ticker import MaxNLocator

    acts = list(dict.fromkeys(a for p in panels for a in p["ranks"]))
    color = colors(acts)
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig = _new_figure(figsize=(3.2 * cols, 2.6 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, p in zip(axes, panels):
        for i, (a, r) in enumerate(p["ranks"].items()):
            ax.plot(p["epochs"], r, color=color[a], lw=1.3, marker=MARKERS[acts.index(a) % len(MARKERS)] if len(p["epochs"]) <= 12 else None,
                    ms=3, label=a)
        ax.set_title(f"{p['setting']} ({p['metric'].replace('_', ' ')})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("rank (1 = best)")
        ax.set_ylim(len(p["ranks"]) + 0.5, 0.5)
        ax.set_yticks(range(1, len(p["ranks"]) + 1))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [axes[0].plot([], [], color=color[a], lw=1.3, label=a)[0] for a in acts]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(acts), 8), frameon=False)
    fig.suptitle("Ranking at each epoch's validation (mean over the confirm seeds)", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path, ""
