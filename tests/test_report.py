"""Tests for actbench.report on synthetic sweep directories whose numbers are chosen here; every
expectation is recomputed from those numbers with scipy or by hand."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from actbench import report, results
from conftest import make_metrics, run_cli, write_run, write_sweep


def configs_by_activation(sweep: Path, metric="test_acc") -> dict:
    return {c.activation: c for c in results.group_runs(results.load_runs(sweep), metric)}


def comparison(sweep: Path, activation: str, metric="test_acc", **where) -> report.Comparison:
    comparisons, note = report.compare(results.group_runs(results.load_runs(sweep), metric), metric)
    assert note is None
    found = [c for c in comparisons if c.config.activation == activation and all(c.config.get(k) == v for k, v in where.items())]
    assert len(found) == 1
    return found[0]


ACCS = {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889, 0.883], "sigmoid": [0.850, 0.861, 0.855]}


# ---------------------------------------------------------------- table


def test_table_mean_std_ci_and_order(tmp_path):
    write_sweep(tmp_path, ACCS, train_loss=0.3)
    rows = report.summarize(results.group_runs(results.load_runs(tmp_path)))
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
    (config,) = results.group_runs(results.load_runs(tmp_path))
    runs = [r.metrics["probes"] for r in config.runs]
    row = report.summarize([config])[0]
    # Hand computation: final dead fraction mean over layers, then over seeds.
    dead = [np.mean([p["probes/dead/layer1"][-1], p["probes/dead/layer2"][-1]]) for p in runs]
    assert row["dead_mean"] == pytest.approx(np.mean(dead))
    assert row["dead_max"] == pytest.approx(np.mean([p["probes/dead/layer2"][-1] for p in runs]))
    ratios = [v for p in runs for v in p["probes/grad_ratio"][1:]]  # equal epoch counts: pooled geo mean is the same
    assert row["grad_ratio"] == pytest.approx(stats.gmean(ratios))


def test_a_sweep_written_with_the_old_probe_names_still_reports(tmp_path):
    accs = {"relu": [0.880, 0.884, 0.879], "leaky": [0.883, 0.886, 0.881]}
    old, new = tmp_path / "old", tmp_path / "new"
    for sweep, legacy in ((old, True), (new, False)):
        for act, values in accs.items():
            for seed, acc in enumerate(values):
                write_run(sweep, {"activation": act, "model.depth": 2, "seed": seed}, acc, old_probe_names=legacy)
    assert "dead/layer1" in results.load_runs(old)[0].metrics["probes"]  # the names files had before the prefix
    assert "probes/dead/layer1" in results.load_runs(new)[0].metrics["probes"]
    texts = [report.write_report(d).read_text() for d in (old, new)]
    table = [t.split("## Results", 1)[1].split("## Statistics", 1)[0] for t in texts]
    assert table[0] == table[1]
    relu = next(line for line in table[0].splitlines() if line.startswith("| relu"))
    assert "9.0% / 12.0%" in relu and relu.split("|")[-2].strip() not in ("", "—")  # dead units, grad ratio
    # the figures read them too: the same probes panel from both
    assert (old / "probes.png").read_bytes() == (new / "probes.png").read_bytes()


# ---------------------------------------------------------------- statistics


def test_paired_t_when_seeds_match(tmp_path):
    write_sweep(tmp_path, ACCS, seeds={"gelu": [2, 0, 1]})  # same seeds, written in another order
    cmp = comparison(tmp_path, "gelu")
    gelu_by_seed = dict(zip([2, 0, 1], ACCS["gelu"]))
    gelu = [gelu_by_seed[s] for s in (0, 1, 2)]
    assert cmp.test == "paired t"
    assert cmp.result.t.p == pytest.approx(stats.ttest_rel(gelu, ACCS["relu"]).pvalue)
    d = np.subtract(gelu, ACCS["relu"])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert cmp.diff == pytest.approx(d.mean())
    assert cmp.result.t.ci == pytest.approx((d.mean() - half, d.mean() + half))
    assert cmp.result.p_wilcoxon is None  # 3 pairs: below the Wilcoxon rule


def test_welch_when_seeds_differ(tmp_path):
    write_sweep(tmp_path, ACCS, seeds={"gelu": [3, 4, 5]})
    cmp = comparison(tmp_path, "gelu")
    welch = stats.ttest_ind(ACCS["gelu"], ACCS["relu"], equal_var=False)
    assert cmp.test == "Welch t"
    assert cmp.result.t.p == pytest.approx(welch.pvalue)
    ci = welch.confidence_interval(0.95)
    assert cmp.result.t.ci == pytest.approx((ci.low, ci.high))


def test_pairs_are_the_common_seeds(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889, 0.870]}, seeds={"gelu": [0, 1, 7]})
    cmp = comparison(tmp_path, "gelu")
    assert (cmp.test, cmp.n) == ("paired t", "n=2 (of 3 and 3 seeds)")
    assert cmp.result.t.p == pytest.approx(stats.ttest_rel([0.886, 0.889], [0.880, 0.884]).pvalue)


def test_a_few_shared_seeds_among_many_are_not_paired(tmp_path):
    relu, gelu = 0.880 + 0.002 * np.sin(np.arange(10)), 0.884 + 0.002 * np.cos(np.arange(10))
    write_sweep(tmp_path, {"relu": list(relu), "gelu": list(gelu)}, seeds={"gelu": list(range(8, 18))})
    cmp = comparison(tmp_path, "gelu")  # seeds 8 and 9 shared: pairing them would drop 16 runs
    assert (cmp.test, cmp.n) == ("Welch t", "n=10 vs 10")
    assert cmp.result.t.p == pytest.approx(stats.ttest_ind(gelu, relu, equal_var=False).pvalue)


def test_differences_equal_up_to_float32_rounding_are_no_evidence(tmp_path):
    # metrics.json holds float32 accuracies: +10 test images on every seed differ in their last bits
    correct = np.array([8686, 8712, 8655, 8701, 8690, 8679])
    relu, gelu = (np.float32(c / 10_000).astype(float) for c in (correct, correct + 10))
    assert np.std(gelu - relu, ddof=1) > 0  # the rounding the test must not take for spread
    write_sweep(tmp_path, {"relu": list(relu), "gelu": list(gelu)})
    cmp = comparison(tmp_path, "gelu")
    assert cmp.result is None and "the same on every seed" in cmp.note
    text = report.write_report(tmp_path, figures=False).read_text()
    assert "No statistics can be drawn" not in text  # 6 seeds are enough; the spread is what is missing


def test_wilcoxon_from_six_pairs(tmp_path):
    relu = [0.880, 0.884, 0.879, 0.882, 0.881, 0.878]
    gelu = [0.886, 0.887, 0.881, 0.889, 0.883, 0.884]
    write_sweep(tmp_path, {"relu": relu, "gelu": gelu})
    cmp = comparison(tmp_path, "gelu")
    assert cmp.result.p_wilcoxon == pytest.approx(stats.wilcoxon(gelu, relu).pvalue)


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
    assert "not distinguishable from relu at alpha=0.05; " in line["tanh"]


def null_line(sweep: Path, effect: float) -> str:
    text = report.write_report(sweep, figures=False, effect=effect).read_text()
    return next(x for x in text.splitlines() if x.startswith("- tanh vs relu"))


def test_a_null_verdict_says_equivalent_underpowered_or_inconclusive(tmp_path):
    relu, tanh = np.array([0.880, 0.884, 0.879, 0.883]), np.array([0.881, 0.882, 0.880, 0.885])
    write_sweep(tmp_path, {"relu": list(relu), "tanh": list(tanh)})
    d = tanh - relu
    sd, se = np.std(d, ddof=1), np.std(d, ddof=1) / 2
    tost = stats.ttest_rel(tanh, relu).confidence_interval(0.90)  # TOST at alpha 0.05
    grid = np.arange(0, 20, 1e-3)  # the noncentrality at which a paired t on 4 pairs has 80% power
    mde = grid[np.argmax(power(grid, 3) >= 0.8)] * se
    assert -0.01 < tost.low and tost.high < 0.01  # inside +-1 pp
    assert tost.high > 0.001 and mde > 0.001  # not inside +-0.1 pp, which the test cannot detect either

    line = null_line(tmp_path, effect=1.0)  # 1 pp: the 90% interval lies inside +-1 pp
    assert line.endswith(f"not distinguishable from relu at alpha=0.05; equivalent within ±1.00 pp "
                         f"(TOST: the 90% CI [{100 * tost.low:+.2f}, {100 * tost.high:+.2f}] pp lies inside)")
    line = null_line(tmp_path, effect=0.1)  # 0.1 pp: neither shown nor detectable with 4 seeds
    n = next(n for n in range(2, 10_000) if power(0.001 * math.sqrt(n) / sd, n - 1) >= 0.8)
    said = re.search(r"underpowered: about (\d+) seeds would detect a difference of 0\.10 pp \(the test detects ([0-9.]+) pp "
                     r"at 80% power\)$", line)
    assert said and int(said[1]) == n and float(said[2]) == pytest.approx(100 * mde, abs=0.006)


def test_an_inconclusive_null_is_not_called_equivalent(tmp_path):
    z = np.random.default_rng(3).normal(size=10)
    relu = 0.88 + 0.002 * np.sin(np.arange(10))
    d = 0.0008 + 0.0016 * (z - z.mean()) / z.std(ddof=1)  # t = 1.58 on 9 df: p = 0.15
    tanh = relu + d
    write_sweep(tmp_path, {"relu": list(relu), "tanh": list(tanh)})
    res = stats.ttest_rel(tanh, relu)
    tost = res.confidence_interval(0.90)
    se = np.std(d, ddof=1) / math.sqrt(10)
    grid = np.arange(0, 20, 1e-3)
    mde = grid[np.argmax(power(grid, 9) >= 0.8)] * se
    effect = (mde + tost.high) / 2  # the test could detect it, yet the interval reaches past it
    assert res.pvalue > 0.05 and mde < effect < tost.high
    line = null_line(tmp_path, effect=100 * effect)
    assert "not distinguishable from relu at alpha=0.05; inconclusive: the test detects" in line
    assert f"but the 90% CI [{100 * tost.low:+.2f}, {100 * tost.high:+.2f}] pp reaches past ±" in line and "equivalent" not in line


def test_the_detectable_effect_is_at_holms_level_for_several_tests(tmp_path):
    write_sweep(tmp_path, {"relu": ACCS["relu"], "tanh": [0.881, 0.882, 0.880], "gelu": [0.882, 0.881, 0.883]})
    one = comparison(tmp_path, "tanh")
    sd = np.std(np.subtract([0.881, 0.882, 0.880], ACCS["relu"]), ddof=1)
    assert one.result.mde_alpha == 0.025  # two tests: alpha / 2
    assert power(one.result.mde / (sd / math.sqrt(3)), 2, 0.025) == pytest.approx(0.8, abs=1e-6)


def test_runs_left_out_are_named_in_the_verdict(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "tanh": [0.881, 0.882, 0.880]})
    write_run(tmp_path, {"activation": "tanh", "seed": 3}, float("nan"), status="diverged", error="loss is nan")
    line = null_line(tmp_path, effect=0.2)
    assert line.endswith("; not counted: 1 run of tanh (diverged)")


def test_unpaired_verdict_counts_seeds_per_configuration(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.881, 0.886, 0.878]}, seeds={"gelu": [5, 6, 7]})
    text = report.write_report(tmp_path, figures=False, effect=0.01).read_text()
    line = next(x for x in text.splitlines() if x.startswith("- gelu vs relu"))
    assert "Welch t, n=3 vs 3" in line and "seeds per configuration would detect a difference of 0.01 pp" in line


def test_comparisons_csv_recomputed(tmp_path):
    write_sweep(tmp_path, ACCS, seeds={"sigmoid": [0, 1, 9]})  # gelu paired on 3 seeds, sigmoid on 2
    write_sweep(tmp_path, {"tanh": [0.870, 0.875]}, seeds={"tanh": [20, 21]})  # no common seed: Welch
    report.write_report(tmp_path, figures=False, effect=0.2)
    rows = {r["config"]: r for r in csv.DictReader((tmp_path / "comparisons.csv").open())}
    wanted = ["config", "baseline", "metric", "n_pairs", "diff", "diff_low", "diff_high", "p", "p_holm", "p_improve",
              "p_improve_low", "p_improve_high", "mde", "seeds_needed", "test", "boot_low", "boot_high"]
    assert set(wanted) <= set(next(csv.reader((tmp_path / "comparisons.csv").open())))
    assert set(rows) == {"gelu", "sigmoid", "tanh"}
    relu = np.array(ACCS["relu"])

    gelu, sig = np.array(ACCS["gelu"]), np.array(ACCS["sigmoid"][:2])
    tanh = np.array([0.870, 0.875])
    p = {"gelu": stats.ttest_rel(gelu, relu).pvalue, "sigmoid": stats.ttest_rel(sig, relu[:2]).pvalue,
         "tanh": stats.ttest_ind(tanh, relu, equal_var=False).pvalue}
    order = sorted(p, key=p.get)
    holm = dict(zip(order, np.maximum.accumulate([min(1, (3 - i) * p[k]) for i, k in enumerate(order)])))

    def boot(x, y, stat, paired):
        ci = stats.bootstrap((x, y), stat, paired=paired, vectorized=False, method="percentile",
                             random_state=np.random.default_rng(0)).confidence_interval
        return ci.low, ci.high

    for name, x, y, paired in [("gelu", gelu, relu, True), ("sigmoid", sig, relu[:2], True), ("tanh", tanh, relu, False)]:
        row = rows[name]
        assert (row["baseline"], row["metric"]) == ("relu", "test_acc")
        assert row["test"] == ("paired t" if paired else "Welch t")
        assert row["n_pairs"] == (str(len(x)) if paired else "")
        assert (int(row["n_config"]), int(row["n_baseline"])) == (len(x), len(y))
        assert float(row["diff"]) == pytest.approx(x.mean() - y.mean())
        res = stats.ttest_rel(x, y) if paired else stats.ttest_ind(x, y, equal_var=False)
        ci = res.confidence_interval(0.95)
        assert (float(row["diff_low"]), float(row["diff_high"])) == pytest.approx((ci.low, ci.high))
        assert float(row["p"]) == pytest.approx(p[name])
        assert float(row["p_holm"]) == pytest.approx(holm[name])
        assert (float(row["boot_low"]), float(row["boot_high"])) == pytest.approx(
            boot(x, y, lambda a, b: a.mean() - b.mean(), paired))
        wins = wins_paired if paired else wins_unpaired
        assert float(row["p_improve"]) == pytest.approx(wins(x, y))
        assert (float(row["p_improve_low"]), float(row["p_improve_high"])) == pytest.approx(boot(x, y, wins, paired))
        # the MDE is where the test's power is 80%; seeds_needed the first n where 0.2 pp reaches it
        se, df = se_df(x, y, paired, len(x), len(y))
        # at alpha/3: Holm holds a lone real difference among 3 tests to that level
        assert float(row["mde_alpha"]) == pytest.approx(0.05 / 3)
        assert power(float(row["mde"]) / se, df, 0.05 / 3) == pytest.approx(0.8, abs=1e-6)
        needed = int(row["seeds_needed"])
        assert power_at(needed, x, y, paired, alpha=0.05 / 3) >= 0.8
        assert needed == 2 or power_at(needed - 1, x, y, paired, alpha=0.05 / 3) < 0.8
        assert (float(row["effect"]), float(row["alpha"]), float(row["power"])) == (0.002, 0.05, 0.8)
        # TOST's interval: the 90% t interval
        tost = res.confidence_interval(0.90)
        assert (float(row["eq_low"]), float(row["eq_high"])) == pytest.approx((tost.low, tost.high))
        assert row["equivalent"] == str(-0.002 < tost.low and tost.high < 0.002)


def wins_paired(a, b) -> float:
    return np.mean((a > b) + 0.5 * (a == b))


def wins_unpaired(a, b) -> float:
    return np.mean([(u > v) + 0.5 * (u == v) for u in a for v in b])


def se_df(x, y, paired: bool, n_x: int, n_y: int) -> tuple[float, float]:
    """Standard error and df of the test with n_x and n_y seeds, at the samples' spreads."""
    if paired:
        return np.std(x - y, ddof=1) / math.sqrt(n_x), n_x - 1
    va, vb = x.var(ddof=1) / n_x, y.var(ddof=1) / n_y
    return math.sqrt(va + vb), (va + vb) ** 2 / (va**2 / (n_x - 1) + vb**2 / (n_y - 1))


def power_at(n: int, x, y, paired: bool, effect: float = 0.002, alpha: float = 0.05) -> float:
    se, df = se_df(x, y, paired, n, n)
    return power(effect / se, df, alpha)


def power(nc: float, df: float, alpha: float = 0.05) -> float:
    """Two-sided t-test power at noncentrality nc, from scipy's noncentral t (the lower tail as the
    upper tail at -nc: scipy's nct.cdf returns NaN for some far tails)."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc)


def test_comparisons_table_shows_the_csv_numbers(tmp_path):
    write_sweep(tmp_path, ACCS)
    text = report.write_report(tmp_path, figures=False).read_text()
    row = next(r for r in csv.DictReader((tmp_path / "comparisons.csv").open()) if r["config"] == "gelu")
    line = next(x for x in text.split("## Statistics", 1)[1].splitlines() if x.startswith("| gelu | relu |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["gelu", "relu", "paired t", "3", f"{100 * float(row['diff']):+.2f}"]
    assert cells[5] == f"[{100 * float(row['diff_low']):+.2f}, {100 * float(row['diff_high']):+.2f}]"
    assert cells[6] == f"[{100 * float(row['boot_low']):+.2f}, {100 * float(row['boot_high']):+.2f}]"
    assert cells[10] == f"{float(row['p_improve']):.2f} [{float(row['p_improve_low']):.2f}, {float(row['p_improve_high']):.2f}]"
    assert cells[12:] == [f"{100 * float(row['mde']):.2f}", row["seeds_needed"]]
    assert "| MDE (pp) | seeds for 0.20 pp |" in text
    assert "comparisons.csv" in text and "fractions" in text  # the units the CSV uses are said


def test_probability_of_improvement_follows_the_metric_direction(tmp_path):
    write_sweep(tmp_path, ACCS)  # test_loss = 2.5 * error: gelu has the lower loss on every seed
    report.write_report(tmp_path, metric="test_loss", figures=False)
    rows = {r["config"]: r for r in csv.DictReader((tmp_path / "comparisons.csv").open())}
    assert float(rows["gelu"]["diff"]) < 0 and float(rows["gelu"]["p_improve"]) == 1.0
    assert float(rows["sigmoid"]["p_improve"]) == 0.0
    assert rows["sigmoid"]["reading"].startswith("too few seeds")  # 3 seeds: the [0, 0] interval is no evidence


def test_loss_metric_lower_is_better(tmp_path):
    write_sweep(tmp_path, ACCS)
    rows = report.summarize(results.group_runs(results.load_runs(tmp_path), "test_loss"), "test_loss")
    assert [r["config"].activation for r in rows] == ["gelu", "relu", "sigmoid"]  # test_loss = 2.5 * error


def test_a_language_models_report_ranks_by_its_loss_lower_first(tmp_path):
    """Runs whose dataset ranks by test_loss (metrics.json's data.rank_by) are ranked and tested on
    it by default, lower better, even where their accuracies say the opposite."""
    losses = {"relu": [1.50, 1.52, 1.51], "gelu": [1.61, 1.60, 1.64], "swiglu": [1.45, 1.46, 1.44]}
    write_sweep(tmp_path, {"relu": [0.50] * 3, "gelu": [0.60] * 3, "swiglu": [0.40] * 3})
    for d in tmp_path.iterdir():
        m = json.loads((d / "metrics.json").read_text())
        m["data"] = {"source": "a text", "rank_by": "test_loss"}
        m["final"]["test_loss"] = losses[m["overrides"]["activation"]][m["overrides"]["seed"]]
        (d / "metrics.json").write_text(json.dumps(m))
    text = report.write_report(tmp_path, metric="auto", effect=0.02, figures=False).read_text()
    assert "Metric: test_loss" in text
    order = [line.split("|")[1].strip() for line in text.split("## Results")[1].splitlines() if line.startswith("| ") and "n seeds" not in line]
    assert order[:3] == ["swiglu", "relu", "gelu"]
    assert re.search(r"swiglu vs relu: -0\.06 test loss.*better than relu", text)
    assert re.search(r"gelu vs relu: \+0\.1067 test loss.*worse than relu", text)
    with pytest.raises(report.UserError, match="rank by different metrics"):
        write_run(tmp_path, {"activation": "tanh", "seed": 0}, 0.5)
        m = json.loads((tmp_path / "activation=tanh,seed=0" / "metrics.json").read_text())
        m["data"] = {"rank_by": "test_acc"}
        (tmp_path / "activation=tanh,seed=0" / "metrics.json").write_text(json.dumps(m))
        report.write_report(tmp_path, figures=False)


def test_pairs_compare_each_gated_unit_with_its_twin(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "reglu": [0.890, 0.895, 0.888], "gelu": [0.886, 0.889, 0.883],
                           "geglu": [0.887, 0.888, 0.884]})
    text = report.write_report(tmp_path, pairs={"reglu": "relu", "geglu": "gelu", "swiglu": "silu"}, figures=False).read_text()
    pairs = text.split("## Pairs")[1]
    assert "reglu - relu, geglu - gelu" in pairs and "swiglu" not in pairs  # a twin not in the sweep: no pair
    assert re.search(r"reglu vs relu: \+1\.00 pp test acc", pairs) and re.search(r"geglu vs gelu: \+0\.03 pp test acc", pairs)
    rows = [r for r in csv.DictReader((tmp_path / "comparisons.csv").open()) if r["baseline"] != "relu" or r["config"] == "reglu"]
    assert {(r["config"], r["baseline"]) for r in rows} >= {("reglu", "relu"), ("geglu", "gelu")}


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
    configs = results.group_runs(results.load_runs(tmp_path))
    assert sorted((c.activation, c.get("model.depth"), len(c.runs)) for c in configs) == sorted(
        (a, d, 3) for a, d in accs
    )
    cmp = comparison(tmp_path, "gelu", **{"model.depth": 4})
    assert cmp.baseline.get("model.depth") == 4 and cmp.baseline.activation == "relu"
    assert cmp.result.t.p == pytest.approx(stats.ttest_rel(accs[("gelu", 4)], accs[("relu", 4)]).pvalue)
    table = report.write_report(tmp_path, figures=False).read_text().split("## Results")[1]
    assert "| activation | model.depth | n seeds |" in table


def test_grouping_with_three_keys_and_missing_baseline(tmp_path):
    for act in ("relu", "gelu"):
        for lr in (0.001, 0.01):
            for seed in (0, 1):
                write_run(tmp_path, {"activation": act, "model.depth": 2, "optimizer.lr": lr, "seed": seed}, 0.88 + seed / 1000)
    write_run(tmp_path, {"activation": "gelu", "model.depth": 8, "optimizer.lr": 0.01, "seed": 0}, 0.85)
    configs = results.group_runs(results.load_runs(tmp_path))
    assert len(configs) == 5
    comparisons, _ = report.compare(configs)
    lonely = [c for c in comparisons if c.config.get("model.depth") == 8]
    assert len(lonely) == 1 and lonely[0].baseline is None
    line = report.verdict(lonely[0], results.varying_keys(configs))
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
                                ("activation=gelu,seed=3", "interrupted", "its process is gone"),  # nobody owns it
                                ("activation=sigmoid,seed=0", "diverged", "loss is nan at step 12"),
                                ("activation=relu,seed=3", "corrupt", "unreadable metrics.json"),
                                ("activation=relu,seed=4", "missing", "no metrics.json")]:
        line = next(x for x in left.splitlines() if x.startswith(f"| {name} |"))
        assert f"| {status} |" in line and error in line
    assert "seed=9" not in text
    table = text.split("## Results", 1)[1].split("##", 1)[0]
    assert "2 (+2 excluded)" in table  # gelu: two in, failed and interrupted out
    assert "sigmoid" not in table  # its only run diverged

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 10  # 5 finished + failed, interrupted, diverged, corrupt, missing
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


# ---------------------------------------------------------------- after a multirun


def test_sweep_callback_uses_the_report_group(tmp_path, capsys):
    from omegaconf import OmegaConf

    from conftest import compose_cfg

    write_sweep(tmp_path, ACCS, probes=False)
    cfg = compose_cfg("report.metric=val_acc", "report.effect=1.5", "report.alpha=0.01")
    settings = OmegaConf.to_container(cfg.report)
    assert settings == {"baseline": "relu", "metric": "val_acc", "effect": 1.5, "alpha": 0.01, "power": 0.8, "pairs": {}}
    config = OmegaConf.create({"report": settings, "hydra": {"sweep": {"dir": str(tmp_path)}}})
    report.SweepReport().on_multirun_end(config)
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'report.md'}"
    text = (tmp_path / "report.md").read_text()
    assert "Metric: val_acc; baseline: relu." in text and "at alpha=0.01" in text and "seeds for 1.50 pp" in text
    rows = list(csv.DictReader((tmp_path / "comparisons.csv").open()))
    assert {(r["metric"], r["effect"], r["alpha"]) for r in rows} == {("val_acc", "0.015", "0.01")}


def test_sweep_callback_skips_with_report_none(tmp_path):
    from omegaconf import OmegaConf

    from conftest import compose_cfg

    write_sweep(tmp_path, ACCS, probes=False)
    settings = OmegaConf.to_container(compose_cfg("report=none").report)
    report.SweepReport().on_multirun_end(OmegaConf.create({"report": settings, "hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / "report.md").exists()


def test_cli_effect_and_bad_settings(tmp_path, capsys, monkeypatch):
    write_sweep(tmp_path, ACCS, probes=False)
    from actbench import figures

    monkeypatch.setattr(figures, "make_all", lambda *a, **k: [])
    assert report.main([str(tmp_path), "--effect", "0.05"]) == 0
    assert "| seeds for 0.05 pp |" in capsys.readouterr().out
    assert report.main([str(tmp_path), "--power", "0.01"]) == 2
    assert "alpha < power" in capsys.readouterr().err


def test_a_run_owned_by_a_live_process_is_running_and_a_stale_one_interrupted(tmp_path):
    import socket
    import subprocess
    import sys

    from actbench.ownership import INTERRUPTED

    write_sweep(tmp_path, {"relu": [0.880, 0.884], "gelu": [0.886, 0.889]})
    live = write_run(tmp_path, {"activation": "gelu", "seed": 2}, 0.5, status="running")
    stale = write_run(tmp_path, {"activation": "gelu", "seed": 3}, 0.5, status="running")  # its process is gone
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from actbench.ownership import claim; claim(sys.argv[1]); print('owned', flush=True); "
         "sys.stdin.read()", str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "owned\n"
        text = report.write_report(tmp_path, figures=False).read_text()
        rows = {r["name"]: r for r in csv.DictReader((tmp_path / "results.csv").open())}
    finally:
        holder.stdin.close()
        holder.wait()
    left = text.split("## Runs not in the table", 1)[1]
    line = next(x for x in left.splitlines() if x.startswith(f"| {live.name} |"))
    assert f"| running | trained by pid {holder.pid} on host {socket.gethostname()} since " in line
    assert f"| {stale.name} | interrupted | {INTERRUPTED} |" in left
    assert (rows[live.name]["status"], rows[stale.name]["status"]) == ("running", "interrupted")
    assert "2 (+2 excluded)" in text.split("## Results", 1)[1].split("##", 1)[0]  # neither is averaged in
    # once the owner has let go, its run reads as interrupted too
    assert results.load_run(live).status == "interrupted"


def test_the_plain_default_run_beside_a_sweep_is_its_activation_and_a_seed_counts_once(tmp_path):
    write_sweep(tmp_path, {"relu": [0.880, 0.884, 0.879], "gelu": [0.886, 0.889, 0.883]})
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "metrics.json").write_text(json.dumps(make_metrics({}, 0.882)))  # relu, seed 0 by default
    rows = report.summarize(results.group_runs(results.load_runs(tmp_path)))
    relu = next(r for r in rows if r["config"].activation == "relu")
    assert [r["config"].activation for r in rows] == ["gelu", "relu"]  # no configuration of None
    assert relu["n"] == 3 and relu["mean"] == pytest.approx(np.mean([(0.880 + 0.882) / 2, 0.884, 0.879]))
