"""Tests for actbench.report and actbench.figures on synthetic sweep directories whose numbers
are chosen here; every expectation is recomputed from those numbers with scipy or by hand."""

from __future__ import annotations

import csv
import json
import math
import statistics
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from actbench import report
from conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_metrics(overrides: dict, test_acc: float, *, status="finished", error=None, epochs=3, probes=True,
                 train_loss=None, epoch_s=2.0) -> dict:
    """A metrics.json with the documented schema; curves and probes are plausible shapes, and
    the numbers the tests check (final metrics, timing) are the ones passed in."""
    rng = np.random.default_rng(zlib.crc32(json.dumps(overrides, sort_keys=True).encode()))
    act, depth = overrides.get("activation", "relu"), int(overrides.get("model.depth", 1))
    e = np.arange(1, epochs + 1)
    err = 1 - test_acc
    train = 0.9 * err * 2.2 + 0.5 / e + rng.normal(0, 0.004, epochs)
    val = 0.9 * err * 2.6 + 0.3 / e + 0.004 * e + rng.normal(0, 0.004, epochs)
    train_loss = float(train[-1]) if train_loss is None else train_loss
    m = {
        "schema": 1,
        "status": status,
        "error": error,
        "name": ",".join(f"{k}={v}" for k, v in overrides.items()),
        "overrides": overrides,
        "hparams": {"activation": act, "seed": overrides.get("seed", 0), "lr": 0.001, "depth": depth, "width": 128},
        "config": {},
        "curves": {"epoch": e.tolist(), "train_loss": train.tolist(), "val_loss": val.tolist(),
                   "train_acc": (1 - train / 3).tolist(), "val_acc": (1 - val / 3).tolist(),
                   "epoch_s": [epoch_s] * epochs, "samples_per_s": [27500.0] * epochs},
        "final": {"train_loss": train_loss, "train_acc": 0.9, "val_loss": float(val[-1]), "val_acc": test_acc + 0.003,
                  "test_loss": 2.5 * err, "test_acc": test_acc, "epochs": epochs, "steps": 1719 * epochs},
        "timing": {"started": "2025-01-01T00:00:00", "ended": "2025-01-01T00:01:00", "wall_s": 60.0,
                   "startup_s": 3.0, "fit_s": 57.0, "epoch_s_median": epoch_s},
        "versions": {"python": "3.11", "torch": "2.x", "lightning": "2.x", "hydra": "1.3", "actbench": "0.1.0"},
        "device": "cpu",
    }
    if probes:
        # Saturating activations lose gradient layer by layer; relu-like ones lose units instead.
        decay = {"sigmoid": 0.25, "tanh": 0.6}.get(act, 0.9)
        dead_end = {"relu": 0.12, "leaky": 0.0}.get(act, 0.0)
        p = {"epoch": list(range(epochs + 1))}
        for layer in range(1, depth + 1):
            p[f"dead/layer{layer}"] = [dead_end * layer * t / epochs / depth for t in range(epochs + 1)]
            p[f"saturated/layer{layer}"] = [(0.3 if act in ("sigmoid", "tanh") else 0.01) * t / epochs for t in range(epochs + 1)]
            p[f"dact_mean/layer{layer}"] = [0.5] * (epochs + 1)
        for w in range(1, depth + 2):
            p[f"grad_norm/w{w}"] = [None] + [float(decay ** (depth + 1 - w) * (1 + 0.1 * rng.random())) for _ in range(epochs)]
        p["grad_ratio"] = [None] + [p["grad_norm/w1"][t] / p[f"grad_norm/w{depth + 1}"][t] for t in range(1, epochs + 1)]
        m["probes"] = p
    return m


def write_run(sweep: Path, overrides: dict, test_acc: float = 0.88, **kw) -> Path:
    d = sweep / ",".join(f"{k}={v}" for k, v in overrides.items())
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "config.yaml").write_text("activation: {}\n")
    (d / "metrics.json").write_text(json.dumps(make_metrics(overrides, test_acc, **kw)))
    return d


def write_sweep(sweep: Path, accs: dict[str, list[float]], seeds: dict[str, list[int]] | None = None, **kw) -> Path:
    for act, values in accs.items():
        for seed, acc in zip((seeds or {}).get(act, range(len(values))), values):
            write_run(sweep, {"activation": act, "seed": seed}, acc, **kw)
    return sweep


def configs_by_activation(sweep: Path, metric="test_acc") -> dict:
    return {c.activation: c for c in report.group_runs(report.load_runs(sweep), metric)}


def comparison(sweep: Path, activation: str, metric="test_acc", **where) -> report.Comparison:
    comparisons, note = report.compare(report.group_runs(report.load_runs(sweep), metric), metric)
    assert note is None
    found = [c for c in comparisons if c.config.activation == activation and all(c.config.get(k) == v for k, v in where.items())]
    assert len(found) == 1
    return found[0]


ACCS = {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889, 0.883], "sigmoid": [0.850, 0.861, 0.855]}


# ---------------------------------------------------------------- table


def test_table_mean_std_ci_and_order(tmp_path):
    write_sweep(tmp_path, ACCS, train_loss=0.3)
    rows = report.summarize(report.group_runs(report.load_runs(tmp_path)))
    assert [r["config"].activation for r in rows] == ["gelu", "relu", "sigmoid"]
    for r in rows:
        x = ACCS[r["config"].activation]
        mean, sd = statistics.mean(x), statistics.stdev(x)
        half = stats.t.ppf(0.975, len(x) - 1) * sd / math.sqrt(len(x))
        assert r["n"] == 3
        assert r["mean"] == pytest.approx(mean)
        assert r["std"] == pytest.approx(sd)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((mean - half, mean + half))
        assert r["train_loss"] == pytest.approx(0.3)
        assert r["epoch_s"] == pytest.approx(2.0)


def test_table_in_report_shows_percent(tmp_path):
    write_sweep(tmp_path, ACCS)
    text = report.write_report(tmp_path, figures=False).read_text()
    gelu = next(line for line in text.splitlines() if line.startswith("| gelu"))
    assert f"{100 * statistics.mean(ACCS['gelu']):.2f}" in gelu
    assert f"{100 * statistics.stdev(ACCS['gelu']):.2f}" in gelu


def test_probe_summaries(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, {"activation": "relu", "model.depth": 2, "seed": seed})
    (config,) = report.group_runs(report.load_runs(tmp_path))
    runs = [r.metrics["probes"] for r in config.runs]
    row = report.summarize([config])[0]
    # Hand computation: final dead fraction mean over layers, then over seeds.
    dead = [np.mean([p["dead/layer1"][-1], p["dead/layer2"][-1]]) for p in runs]
    assert row["dead_mean"] == pytest.approx(np.mean(dead))
    assert row["dead_max"] == pytest.approx(np.mean([p["dead/layer2"][-1] for p in runs]))
    ratios = [v for p in runs for v in p["grad_ratio"][1:]]  # equal epoch counts: pooled geo mean is the same
    assert row["grad_ratio"] == pytest.approx(stats.gmean(ratios))


# ---------------------------------------------------------------- statistics


def test_paired_t_when_seeds_match(tmp_path):
    write_sweep(tmp_path, ACCS, seeds={"gelu": [2, 0, 1]})  # same seeds, written in another order
    cmp = comparison(tmp_path, "gelu")
    gelu_by_seed = dict(zip([2, 0, 1], ACCS["gelu"]))
    gelu = [gelu_by_seed[s] for s in (0, 1, 2)]
    assert cmp.test == "paired t"
    assert cmp.p == pytest.approx(stats.ttest_rel(gelu, ACCS["relu"]).pvalue)
    d = np.subtract(gelu, ACCS["relu"])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert cmp.diff == pytest.approx(d.mean())
    assert cmp.ci == pytest.approx((d.mean() - half, d.mean() + half))
    assert cmp.p_wilcoxon is None  # 3 pairs: below the Wilcoxon rule


def test_welch_when_seeds_differ(tmp_path):
    write_sweep(tmp_path, ACCS, seeds={"gelu": [3, 4, 5]})
    cmp = comparison(tmp_path, "gelu")
    welch = stats.ttest_ind(ACCS["gelu"], ACCS["relu"], equal_var=False)
    assert cmp.test == "Welch t"
    assert cmp.p == pytest.approx(welch.pvalue)
    ci = welch.confidence_interval(0.95)
    assert cmp.ci == pytest.approx((ci.low, ci.high))


def test_pairs_are_the_common_seeds(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889, 0.870]}, seeds={"gelu": [0, 1, 7]})
    cmp = comparison(tmp_path, "gelu")
    assert (cmp.test, cmp.n) == ("paired t", "n=2")
    assert cmp.p == pytest.approx(stats.ttest_rel([0.886, 0.889], [0.880, 0.884]).pvalue)


def test_wilcoxon_from_six_pairs(tmp_path):
    relu = [0.880, 0.884, 0.879, 0.882, 0.881, 0.878]
    gelu = [0.886, 0.887, 0.881, 0.889, 0.883, 0.884]
    write_sweep(tmp_path, {"relu": relu, "gelu": gelu})
    cmp = comparison(tmp_path, "gelu")
    assert cmp.p_wilcoxon == pytest.approx(stats.wilcoxon(gelu, relu).pvalue)


def test_holm_known_example():
    # m=4, sorted p 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert report.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert report.holm([]) == []


def test_holm_applied_across_comparisons(tmp_path):
    write_sweep(tmp_path, ACCS)
    p_gelu = stats.ttest_rel(ACCS["gelu"], ACCS["relu"]).pvalue
    p_sig = stats.ttest_rel(ACCS["sigmoid"], ACCS["relu"]).pvalue
    low, high = sorted([p_gelu, p_sig])
    expected = {low: min(1, 2 * low), high: max(min(1, 2 * low), min(1, high))}
    assert comparison(tmp_path, "gelu").p_holm == pytest.approx(expected[p_gelu])
    assert comparison(tmp_path, "sigmoid").p_holm == pytest.approx(expected[p_sig])


def test_verdict_lines(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.890, 0.895, 0.891],
                           "sigmoid": [0.850, 0.861, 0.855], "tanh": [0.881, 0.882, 0.880]})
    text = report.write_report(tmp_path, figures=False).read_text()
    line = {a: next(x for x in text.splitlines() if x.startswith(f"- {a} vs relu")) for a in ("gelu", "sigmoid", "tanh")}
    diff = 100 * (statistics.mean([0.890, 0.895, 0.891]) - statistics.mean([0.880, 0.884, 0.879]))
    assert f"{diff:+.2f} pp test acc" in line["gelu"]
    assert "paired t, n=3" in line["gelu"] and "Holm p=" in line["gelu"]
    assert line["gelu"].endswith("better than relu at alpha=0.05")
    assert line["sigmoid"].endswith("worse than relu at alpha=0.05")
    assert line["tanh"].endswith("not distinguishable from relu at alpha=0.05")


def test_loss_metric_lower_is_better(tmp_path):
    write_sweep(tmp_path, ACCS)
    rows = report.summarize(report.group_runs(report.load_runs(tmp_path), "test_loss"), "test_loss")
    assert [r["config"].activation for r in rows] == ["gelu", "relu", "sigmoid"]  # test_loss = 2.5 * error


def test_one_seed_says_no_statistics(tmp_path):
    write_sweep(tmp_path, {"relu": [0.88], "gelu": [0.89]})
    text = report.write_report(tmp_path, figures=False).read_text()
    stats_section = text.split("## Statistics", 1)[1]
    assert "No statistics can be drawn" in stats_section
    assert "at least 2 seeds" in stats_section
    assert "p=" not in stats_section


def test_no_baseline_is_one_line(tmp_path):
    write_sweep(tmp_path, {"gelu": [0.88, 0.89], "tanh": [0.87, 0.86]})
    text = report.write_report(tmp_path, figures=False).read_text()
    body = text.split("## Statistics against relu", 1)[1].strip().split("\n\n")[0]
    assert body.startswith("No configuration with activation=relu") and "\n" not in body


# ---------------------------------------------------------------- grouping


def test_grouping_two_swept_keys(tmp_path):
    accs = {("relu", 1): [0.880, 0.884, 0.879], ("gelu", 1): [0.886, 0.889, 0.883],
            ("relu", 4): [0.870, 0.875, 0.868], ("gelu", 4): [0.879, 0.881, 0.880]}
    for (act, depth), values in accs.items():
        for seed, acc in enumerate(values):
            write_run(tmp_path, {"activation": act, "model.depth": depth, "seed": seed}, acc)
    configs = report.group_runs(report.load_runs(tmp_path))
    assert sorted((c.activation, c.get("model.depth"), len(c.runs)) for c in configs) == sorted(
        (a, d, 3) for a, d in accs
    )
    cmp = comparison(tmp_path, "gelu", **{"model.depth": 4})
    assert cmp.baseline.get("model.depth") == 4 and cmp.baseline.activation == "relu"
    assert cmp.p == pytest.approx(stats.ttest_rel(accs[("gelu", 4)], accs[("relu", 4)]).pvalue)
    table = report.write_report(tmp_path, figures=False).read_text().split("## Results")[1]
    assert "| activation | model.depth | n seeds |" in table


def test_grouping_with_three_keys_and_missing_baseline(tmp_path):
    for act in ("relu", "gelu"):
        for lr in (0.001, 0.01):
            for seed in (0, 1):
                write_run(tmp_path, {"activation": act, "model.depth": 2, "optimizer.lr": lr, "seed": seed}, 0.88 + seed / 1000)
    write_run(tmp_path, {"activation": "gelu", "model.depth": 8, "optimizer.lr": 0.01, "seed": 0}, 0.85)
    configs = report.group_runs(report.load_runs(tmp_path))
    assert len(configs) == 5
    comparisons, _ = report.compare(configs)
    lonely = [c for c in comparisons if c.config.get("model.depth") == 8]
    assert len(lonely) == 1 and lonely[0].baseline is None
    line = report.verdict(lonely[0], report.varying_keys(configs))
    assert "no relu configuration with model.depth=8, optimizer.lr=0.01" in line


# ---------------------------------------------------------------- robustness


def test_bad_runs_are_listed_and_excluded(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889]})
    write_run(tmp_path, {"activation": "gelu", "seed": 2}, 0.5, status="failed", error="RuntimeError: CUDA out of memory")
    write_run(tmp_path, {"activation": "gelu", "seed": 3}, 0.5, status="running")
    write_run(tmp_path, {"activation": "sigmoid", "seed": 0}, float("nan"), status="diverged", error="loss is nan at step 12")
    corrupt = tmp_path / "activation=relu,seed=3"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text('{"schema": 1, "status": "fini')
    missing = tmp_path / "activation=relu,seed=4"
    (missing / ".hydra").mkdir(parents=True)
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    write_run(tmp_path / ".submitit", {"activation": "relu", "seed": 9}, 0.1)  # launcher state, never a run
    (tmp_path / ".packs").mkdir()
    (tmp_path / ".packs" / "metrics.json").write_text(json.dumps(make_metrics({"activation": "relu", "seed": 9}, 0.1)))

    text = report.write_report(tmp_path, figures=False).read_text()
    by_act = configs_by_activation(tmp_path)
    assert len(by_act["relu"].runs) == 3 and len(by_act["gelu"].runs) == 2
    left = text.split("## Runs not in the table", 1)[1]
    for name, status, error in [("activation=gelu,seed=2", "failed", "CUDA out of memory"),
                                ("activation=gelu,seed=3", "running", ""),
                                ("activation=sigmoid,seed=0", "diverged", "loss is nan at step 12"),
                                ("activation=relu,seed=3", "corrupt", "unreadable metrics.json"),
                                ("activation=relu,seed=4", "missing", "no metrics.json")]:
        line = next(x for x in left.splitlines() if x.startswith(f"| {name} |"))
        assert f"| {status} |" in line and error in line
    assert "seed=9" not in text
    table = text.split("## Results", 1)[1].split("##", 1)[0]
    assert "2 (+2 excluded)" in table  # gelu: two in, failed and running out
    assert "sigmoid" not in table  # its only run diverged

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 10  # 5 finished + failed, running, diverged, corrupt, missing
    assert {r["name"]: r["status"] for r in rows}["activation=relu,seed=3"] == "corrupt"
    gelu0 = next(r for r in rows if r["name"] == "activation=gelu,seed=0")
    assert float(gelu0["test_acc"]) == pytest.approx(0.886) and gelu0["seed"] == "0"
    wanted = {"activation", "seed", "test_acc", "train_loss", "epoch_s_median", "dead_final_mean", "grad_ratio_gmean"}
    assert wanted <= set(rows[0])


def test_single_run_dir_is_a_one_run_sweep(tmp_path):
    run = write_run(tmp_path, {"activation": "gelu", "seed": 0}, 0.885)
    text = report.write_report(run, figures=False).read_text()
    assert "1 run in 1 configuration." in text
    assert "| 1 | 88.50 |" in text  # n seeds, mean %
    assert (run / "results.csv").exists()


@pytest.mark.parametrize("kind", ["absent", "empty", "no_metrics", "hidden_only"])
def test_not_a_sweep_exits_2_with_one_line(tmp_path, kind):
    target = tmp_path / "sweep"
    if kind != "absent":
        target.mkdir()
    if kind == "no_metrics":
        (target / "activation=relu,seed=0" / ".hydra").mkdir(parents=True)
        (target / "notes").mkdir()
    if kind == "hidden_only":
        write_run(target / ".submitit", {"activation": "relu", "seed": 0})
    proc = run_cli(str(target), module="actbench.report", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert str(target) in proc.stderr


def test_unknown_metric_is_an_error(tmp_path):
    write_sweep(tmp_path, ACCS)
    with pytest.raises(report.ReportError, match="tset_acc"):
        report.write_report(tmp_path, metric="tset_acc", figures=False)


def test_cli_prints_table_and_path(tmp_path, capsys, monkeypatch):
    write_sweep(tmp_path, ACCS, probes=False)
    import actbench.figures as figures

    monkeypatch.setattr(figures, "make_all", lambda *a, **k: [])  # figures are tested below
    assert report.main([str(tmp_path), "--baseline", "gelu"]) == 0
    out = capsys.readouterr().out
    assert "| activation | n seeds |" in out
    assert "- relu vs gelu:" in out
    assert out.strip().endswith(f"report: {tmp_path / 'report.md'}")


# ---------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def figure_sweep(tmp_path_factory):
    """5 activations x 2 depths x 2 seeds with probes, rendered once for the figure tests."""
    sweep = tmp_path_factory.mktemp("figs")
    accs = {"relu": 0.885, "gelu": 0.888, "gelu_tanh": 0.887, "sigmoid": 0.86, "my_act": 0.87}
    for act, acc in accs.items():
        for depth in (1, 3):
            for seed in (0, 1):
                write_run(sweep, {"activation": act, "model.depth": depth, "seed": seed}, acc - 0.004 * depth + 0.002 * seed)
    return sweep, report.write_report(sweep).read_text()


@pytest.mark.parametrize("name", ["loss_curves.png", "test_acc.png", "activations.png", "probes.png"])
def test_figure_written_and_linked(figure_sweep, name):
    sweep, text = figure_sweep
    data = (sweep / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert f"]({name})" in text


def test_unshipped_activation_noted(figure_sweep):
    _, text = figure_sweep
    assert "not shipped" in text and "my_act" in text.split("## Figures")[1]


def test_probe_figure_skipped_without_probes(tmp_path):
    write_sweep(tmp_path, {"relu": [0.88, 0.881], "gelu": [0.885, 0.886]}, probes=False)
    text = report.write_report(tmp_path).read_text()
    assert not (tmp_path / "probes.png").exists()
    assert "Probes: skipped: no run recorded probes" in text
    assert (tmp_path / "loss_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_figure_colours_follow_activation():
    from actbench.figures import Series, styles

    series = [Series("relu, d=1", "relu", {"d": 1}), Series("relu, d=4", "relu", {"d": 4}),
              Series("gelu, d=1", "gelu", {"d": 1}), Series("mine", "mine", {"d": 1})]
    s = styles(series)
    assert s["relu, d=1"][0] == s["relu, d=4"][0] != s["gelu, d=1"][0]
    assert s["relu, d=1"][1] != s["relu, d=4"][1] and s["relu, d=1"][1] == s["gelu, d=1"][1]
    assert s["mine"][0] not in {s["relu, d=1"][0], s["gelu, d=1"][0]}
