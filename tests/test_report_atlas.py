"""actbench.report.atlas: the answer across settings from synthetic atlas directories whose
differences the test chooses (no training)."""

import json
import re

import numpy as np
import pytest

from actbench import atlas, study
from actbench.report.atlas import effects, read_setting, write_atlas_report
from conftest import events, write_run

SEEDS = 6
NOISE = np.random.default_rng(0).normal(0, 0.0005, size=(3, SEEDS))  # per activation: far below the effects chosen


def write_setting(root, name, shifts: dict[str, float], metric="test_acc", base=0.85):
    """A study's directory whose confirm runs have `base + shift` (+ a little noise) per activation,
    the same base per seed for every activation (seeds shared, as in a study)."""
    d = root / name
    d.mkdir(parents=True)
    study.write_selection(d, study.settings({"lrs": [1e-3], "tune_seeds": [100], "seeds": list(range(SEEDS))}), [])
    per_seed = base + np.linspace(-0.01, 0.01, SEEDS)
    for i, (act, shift) in enumerate(shifts.items()):
        for seed in range(SEEDS):
            value = float(per_seed[seed] + shift + NOISE[i, seed])
            run = write_run(d / "confirm", {"activation": act, "optimizer.lr": 0.001, "seed": seed}, value if metric == "test_acc" else 0.8)
            if metric == "test_loss":
                m = json.loads((run / "metrics.json").read_text())
                m["final"]["test_loss"] = value
                m["data"] = {"source": "a text", "rank_by": "test_loss"}
                m["curves"]["val_loss"] = [value + 1.0, value + 0.5, value]
                (run / "metrics.json").write_text(json.dumps(m))
    return d


@pytest.fixture
def three_settings(tmp_path):
    """gelu 1 pp better than relu in A and equal in B; sigmoid equal in A and 1 pp better in B; in
    the loss setting C (lower is better) gelu 0.05 nats lower than relu, sigmoid 0.05 higher."""
    root = tmp_path / "atlas"
    write_setting(root, "A", {"relu": 0, "gelu": 0.01, "sigmoid": 0})
    write_setting(root, "B", {"relu": 0, "gelu": 0, "sigmoid": 0.01})
    write_setting(root, "C", {"relu": 0, "gelu": -0.05, "sigmoid": 0.05}, metric="test_loss", base=1.5)
    atlas.write(root, ["relu", "gelu", "sigmoid"], {
        n: {"overrides": [f"setting={n}"], "report": None, "skipped": None} for n in "ABC"} | {
        "D": {"overrides": ["data=cifar10"], "report": None, "skipped": "CIFAR-10 not found"}})
    return root


def test_differences_are_oriented_so_that_positive_is_better_in_each_settings_units(three_settings):
    by = effects([read_setting(three_settings / n, n) for n in "ABC"], "relu", 0.05)
    rows = {(r["setting"], r["activation"]): r for n in "ABC" for r in by[n]}
    assert rows["A", "gelu"]["diff"] == pytest.approx(1.0, abs=0.05) and rows["A", "gelu"]["sig"] and rows["A", "gelu"]["unit"] == "pp"
    assert not rows["B", "gelu"]["sig"] and abs(rows["B", "gelu"]["diff"]) < 0.1
    assert rows["C", "gelu"]["diff"] == pytest.approx(0.05, abs=0.005) and rows["C", "gelu"]["sig"] and rows["C", "gelu"]["unit"] == "nats"
    assert rows["C", "sigmoid"]["diff"] == pytest.approx(-0.05, abs=0.005) and rows["C", "sigmoid"]["sig"]
    # standardised: the same sign, and the mean over the paired differences' sd
    assert rows["A", "gelu"]["dz"] > 5 and rows["C", "sigmoid"]["dz"] < -5 and rows["C", "gelu"]["dz_lo"] > 0


def test_the_report_says_who_wins_where_and_where_it_flips(three_settings):
    text = write_atlas_report(three_settings, figures=False, cost=False).read_text()
    lines = text.splitlines()
    a = next(line for line in lines if line.startswith("- A:"))
    b = next(line for line in lines if line.startswith("- B:"))
    assert re.search(r"better than relu: gelu \(\+(0\.9[5-9]|1\.0[0-5]) pp\); significantly worse: none", a)  # gelu wins in A...
    assert re.search(r"better than relu: sigmoid \(\+(0\.9[5-9]|1\.0[0-5]) pp\)", b) and "gelu" not in b  # ...not in B, equal there
    c = next(line for line in lines if line.startswith("- C:"))
    assert "better than relu: gelu (+0.050 nats)" in c and "worse: sigmoid (-0.050 nats)" in c  # lower loss reads as better
    assert "sigmoid beats relu in B and loses to it in C" in text
    assert "any of the 3 settings" in text and "none: every activation trails the best somewhere" in text
    assert "The best mean moves between settings: A: gelu; B: sigmoid; C: gelu." in text
    assert "- D: skipped, CIFAR-10 not found" in text
    rank_rows = lines[lines.index("## Ranks"):lines.index("## Ranks") + 8]  # its table: activation, A, B, C, mean rank, interval
    ranks = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in rank_rows if line.startswith("| ")}
    assert [ranks["gelu"][0], ranks["gelu"][2], ranks["sigmoid"][1], ranks["sigmoid"][2]] == ["1", "1", "1", "3"]
    assert {ranks["gelu"][1], ranks["relu"][1]} == {"2", "3"}  # equal in B: the noise orders them
    assert "| gelu | 0.001 | 0.001 | 0.001 |" in text  # the rate each setting's study selected
    assert (three_settings / "A" / "report.md").exists()  # each setting's own fair report, beside it


@pytest.mark.slow
def test_figures_are_drawn_and_in_tensorboard(three_settings):
    text = write_atlas_report(three_settings, cost=False).read_text()
    assert "![forest plot](forest.png)" in text and "![ranks over epochs](ranks_over_epochs.png)" in text
    for name in ("forest.png", "ranks_over_epochs.png"):
        assert (three_settings / name).read_bytes().startswith(b"\x89PNG")
    assert sorted(events(three_settings).Tags()["images"]) == ["atlas/_report_forest", "atlas/_report_ranks_over_epochs"]


def test_the_cli_writes_the_atlas_report_and_measures_the_cost_once(three_settings, capsys):
    from actbench.report import main

    assert main([str(three_settings)]) == 0  # measures, into cost.json
    kept = json.loads((three_settings / "cost.json").read_text())
    assert sorted(kept["activations"]) == ["gelu", "relu", "sigmoid"]
    capsys.readouterr()
    kept.update(on="a kept measurement", costs=[{"name": a, "seconds": 1e-3 * (i + 1), "saved_bytes": 4.0, "relative": i + 1.0}
                                                for i, a in enumerate(["relu", "gelu", "sigmoid"])])
    (three_settings / "cost.json").write_text(json.dumps(kept))
    assert main([str(three_settings)]) == 0  # reads the kept measurement, measures nothing
    out = capsys.readouterr().out
    assert main([str(three_settings), "--metric", "val_acc"]) == 2  # each setting ranks by its own
    assert "is an atlas: each setting is ranked by its own metric" in capsys.readouterr().err
    assert "## The answer" in out and "on a kept measurement" in out and "| sigmoid | 2.86 | 3.00 | 4 |" in out  # 3 ms over 256 x 4096 elements
