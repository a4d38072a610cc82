"""The atlas's figures: the forest plot (each activation against the baseline in every setting,
right is better) and the ranks over training. Drawn as actbench.figures draws (plain matplotlib
Figures, its colours per activation); the numbers arrive computed (actbench.report.atlas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actbench.figures import DPI, MARKERS, _drawing, _new_figure
from actbench.figures import activation_colors as colors


def _point(ax, r: dict, y: float, keys: tuple[str, str, str], color: str, marker: str) -> None:
    mid, lo, hi = (r[k] for k in keys)
    if np.isfinite(mid):
        err = [[mid - lo], [hi - mid]] if np.isfinite(lo) and np.isfinite(hi) else None
        ax.errorbar([mid], [y], xerr=err, fmt=marker, color=color, ms=5, capsize=2, lw=1.2)


@_drawing
def forest(rows: list[dict], path: Path, baseline: str) -> tuple[Path | None, str]:
    """rows: one per (setting, activation), settings in order, each with setting, activation, unit,
    diff, lo, hi (sign-normalised: > 0 is better) and dz, dz_lo, dz_hi (standardised). Left: each
    setting on an axis of its own units; right: all of them standardised, on one axis."""
    if not rows:
        return None, f"nothing to draw: no activation besides {baseline} has confirm runs"
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    blocks = {s: [r for r in rows if r["setting"] == s] for s in settings}
    acts = list(dict.fromkeys(r["activation"] for r in rows))
    color = colors(acts)
    marker = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(acts)}
    fig = _new_figure(figsize=(11, 1.3 + 0.3 * len(rows) + 0.35 * len(settings)))
    grid = fig.add_gridspec(len(settings), 2, height_ratios=[len(b) + 0.6 for b in blocks.values()])
    right = fig.add_subplot(grid[:, 1])
    y, ticks = 0.0, []
    for i, (s, block) in enumerate(blocks.items()):
        ax = fig.add_subplot(grid[i, 0])
        for j, r in enumerate(block):
            _point(ax, r, -j, ("diff", "lo", "hi"), color[r["activation"]], marker[r["activation"]])
            _point(right, r, y - j, ("dz", "dz_lo", "dz_hi"), color[r["activation"]], marker[r["activation"]])
        ax.set_yticks([-j for j in range(len(block))], [r["activation"] for r in block], fontsize=8)
        ax.set_ylim(-len(block) + 0.4, 0.6)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_ylabel(f"{s}\n({block[0]['unit']})", fontsize=8, rotation=0, ha="right", va="center")
        if i == 0:
            ax.set_title(f"difference from {baseline}, in each setting's units", fontsize=9)
        ticks.append((y - (len(block) - 1) / 2, s))
        y -= len(block)
        if i < len(settings) - 1:
            right.axhline(y + 0.3 - 0.5, color="0.8", lw=0.6)
        y -= 0.6
    ax.set_xlabel(f"< worse than {baseline}  |  better than {baseline} >")
    right.set_yticks([t for t, _ in ticks], [name for _, name in ticks], fontsize=8)
    right.axvline(0, color="0.3", lw=0.8)
    right.set_title("standardised: difference / sd of the paired differences (d_z)", fontsize=9)
    right.set_xlabel(f"< worse than {baseline}  |  better than {baseline} >")
    handles = [right.plot([], [], marker[a], color=color[a], label=a)[0] for a in acts]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(acts), 8), frameon=False)
    fig.suptitle("Each activation against the baseline at its own tuned rate, 95% intervals over the confirm seeds", fontsize=10)
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
    marker = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(acts)}
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig = _new_figure(figsize=(3.2 * cols, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, panels):
        for a, r in p["ranks"].items():
            ax.plot(p["epochs"], r, color=color[a], lw=1.3, marker=marker[a] if len(p["epochs"]) <= 12 else None,
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
