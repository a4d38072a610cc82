"""Tests for actbench.stats: known numbers from hand computations, scipy called directly, and the
standard power table; then calibration on simulated sweeps (seeded, no training): the tests
reject a true null at about alpha and detect a true difference equal to the MDE about 80% of
the time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from actbench import stats

# ---------------------------------------------------------------- summaries and Holm


def test_mean_ci_is_the_t_interval():
    x = [0.880, 0.884, 0.879]
    mean, sd, lo, hi = stats.mean_ci(x)
    half = st.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert (mean, sd) == pytest.approx((np.mean(x), np.std(x, ddof=1)))
    assert (lo, hi) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert stats.mean_ci([0.9])[0] == 0.9 and all(math.isnan(v) for v in stats.mean_ci([0.9])[1:])


def test_holm_known_example():
    # m=4, sorted p 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []
    # a NaN is no test: it stays NaN and does not count among the m tests
    assert stats.holm([0.04, math.nan, 0.01]) == pytest.approx([0.04, math.nan, 0.02], nan_ok=True)


def test_geometric_mean_leaves_out_what_has_no_logarithm():
    assert stats.gmean_positive([1.0, 4.0, 0.0, math.inf, math.nan]) == pytest.approx(2.0)
    assert math.isnan(stats.gmean_positive([0.0, -1.0]))
    assert stats.gmean_positive(np.array([[1.0, 9.0], [4.0, 0.0]]), axis=0) == pytest.approx([2.0, 9.0])
    assert math.isnan(stats.nanmean([math.nan])) and stats.nanmedian([3.0, math.nan, 1.0]) == 2.0


# ---------------------------------------------------------------- tests of a difference

A = np.array([0.886, 0.889, 0.883, 0.884, 0.887, 0.882])
B = np.array([0.880, 0.884, 0.879, 0.885, 0.881, 0.878])


def test_paired_and_welch_against_scipy():
    paired = stats.paired_t(A, B)
    ref = st.ttest_rel(A, B)
    ci = ref.confidence_interval(0.95)
    assert (paired.test, paired.p, paired.diff) == ("paired t", pytest.approx(ref.pvalue), pytest.approx(np.mean(A - B)))
    assert paired.ci == pytest.approx((ci.low, ci.high))
    welch = stats.welch_t(A, B[:4])
    ref = st.ttest_ind(A, B[:4], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (welch.test, welch.p) == ("Welch t", pytest.approx(ref.pvalue))
    assert welch.ci == pytest.approx((ci.low, ci.high))


def test_equivalence_is_the_tost_interval_inside_the_margin():
    d = stats.difference(A, B, paired=True, effect=0.01)
    ci = st.ttest_rel(A, B).confidence_interval(0.90)
    assert d.eq_ci == pytest.approx((ci.low, ci.high)) and d.equivalent  # the 90% interval lies inside +-0.01
    assert not stats.difference(A, B, paired=True, effect=0.005).equivalent  # it reaches past +-0.005
    assert not stats.difference(A, B, paired=True).equivalent  # no margin, no equivalence


def test_at_level_moves_only_the_detectable_effect():
    d = stats.difference(A, B, paired=True, effect=0.002)
    strict = stats.at_level(d, 0.01)
    sd = np.std(A - B, ddof=1)
    assert strict.mde == pytest.approx(stats.mde_paired(sd, 6, 0.01)) and strict.mde > d.mde
    assert strict.seeds_needed == stats.seeds_needed_paired(0.002, sd, 0.01) >= d.seeds_needed
    assert (strict.t, strict.eq_ci, strict.mde_alpha) == (d.t, d.eq_ci, 0.01)


def test_zero_spread_is_no_test():
    assert not stats.paired_t([0.9, 0.8, 0.7], [0.8, 0.7, 0.6]).valid  # every pair differs by exactly 0.1
    assert stats.difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], paired=True) is None
    assert stats.difference([0.9], [0.8], paired=False) is None


def test_wilcoxon_from_six_pairs_only():
    assert stats.wilcoxon_p(A[:5], B[:5]) is None
    assert stats.wilcoxon_p(A, B) == pytest.approx(st.wilcoxon(A, B).pvalue)
    assert stats.wilcoxon_p(A, A) is None
    tied = A.copy()
    tied[0] = B[0]  # 6 pairs, one a tie: scipy drops it, and 5 could never reach p < 0.05
    assert stats.wilcoxon_p(tied, B) is None


# ---------------------------------------------------------------- P(A better than B)


def test_probability_of_improvement_paired_counts_ties_half():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]  # better, tie, worse, better
    assert stats.prob_improvement(a, b, paired=True) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert stats.prob_improvement(a, b, paired=True, higher_is_better=False) == pytest.approx((0 + 0.5 + 1 + 0) / 4)


def test_probability_of_improvement_unpaired_is_mann_whitney():
    a, b = [1.0, 2.0, 3.0], [2.0, 2.0, 0.0, 5.0]
    by_hand = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / 12  # 1 + 2 + 3 = 6 of 12
    assert by_hand == 0.5
    assert stats.prob_improvement(a, b, paired=False) == pytest.approx(by_hand)
    assert stats.prob_improvement(a, b, paired=False) == pytest.approx(st.mannwhitneyu(a, b).statistic / 12)
    assert stats.prob_improvement(a, b, paired=False, higher_is_better=False) == pytest.approx(1 - by_hand)


@pytest.mark.parametrize("paired", [True, False])
def test_probability_interval_is_scipys_percentile_bootstrap(paired):
    def p_improve(x, y):  # written independently of the module's vectorised statistics
        if paired:
            return np.mean((x > y) + 0.5 * (x == y))
        return np.mean([(u > v) + 0.5 * (u == v) for u in x for v in y])

    a, b = A, (B if paired else B[:4])
    ref = st.bootstrap((a, b), p_improve, paired=paired, vectorized=False, method="percentile",
                       random_state=np.random.default_rng(stats.BOOTSTRAP_SEED)).confidence_interval
    assert stats.prob_improvement_ci(a, b, paired) == pytest.approx((ref.low, ref.high))
    assert stats.prob_improvement_ci(a, b, paired) == stats.prob_improvement_ci(a, b, paired)  # reproducible


def test_difference_interval_is_scipys_percentile_bootstrap():
    ref = st.bootstrap((A, B), lambda x, y: np.mean(x - y), paired=True, vectorized=False, method="percentile",
                       random_state=np.random.default_rng(0)).confidence_interval
    assert stats.diff_bootstrap_ci(A, B, paired=True) == pytest.approx((ref.low, ref.high))


@pytest.mark.parametrize("low, high, reading", [
    (0.55, 0.95, "better, meaningful"), (0.52, 0.7, "better, not meaningful"), (0.4, 0.9, "undecided"),
    (0.0, 0.2, "worse, meaningful"), (0.3, 0.45, "worse, not meaningful"), (0.5, 0.75, "undecided"),
])
def test_bouthillier_reading(low, high, reading):
    assert stats.improvement_reading(low, high) == reading


# ---------------------------------------------------------------- power

# Paired t, two-sided, 80% power: the detectable mean difference in SDs of the paired differences.
POWER_TABLE = [(3, 0.05, 3.27), (3, 0.005, 10.4), (5, 0.05, 1.69), (5, 0.005, 3.16), (10, 0.05, 1.00),
               (10, 0.005, 1.49), (20, 0.05, 0.67), (20, 0.005, 0.92), (30, 0.05, 0.53), (30, 0.005, 0.72)]


@pytest.mark.parametrize("n, alpha, d_z", POWER_TABLE)
def test_mde_matches_the_power_table(n, alpha, d_z):
    assert stats.mde_paired(1.0, n, alpha) == pytest.approx(d_z, rel=0.02)  # the table is rounded
    assert stats.mde_paired(0.5, n, alpha) == pytest.approx(0.5 * stats.mde_paired(1.0, n, alpha))


@pytest.mark.parametrize("n, alpha, d_z", POWER_TABLE)
def test_seeds_needed_inverts_the_mde(n, alpha, d_z):
    mde = stats.mde_paired(1.0, n, alpha)
    assert stats.seeds_needed_paired(mde * 1.0001, 1.0, alpha) == n
    assert stats.seeds_needed_paired(mde * 0.999, 1.0, alpha) == n + 1


def test_the_blog_sweep_figures():
    # paired GELU-ReLU differences spread by about 0.22 pp: 3 seeds detect about 0.7 pp, 10 about 0.22
    assert stats.mde_paired(0.22, 3) == pytest.approx(0.72, abs=0.01)
    assert stats.mde_paired(0.22, 10) == pytest.approx(0.22, abs=0.005)
    assert stats.seeds_needed_paired(0.22, 0.22) == 10


def test_welch_mde_with_equal_spreads_is_the_two_sample_table():
    # equal SDs and sizes: Welch's df is 2(n-1), its MDE the two-sample t's d = 1.3249 at n = 10 per group
    assert stats.mde_welch(1.0, 1.0, 10, 10) == pytest.approx(1.3249, abs=1e-3)
    assert stats.seeds_needed_welch(stats.mde_welch(1.0, 1.0, 10, 10) * 1.0001, 1.0, 1.0) == 10


def test_power_at_the_mde_is_the_asked_power():
    for df in (1, 2, 7.3, 40):
        nc = stats.detectable_nc(df, 0.05, 0.9)
        crit = st.t.ppf(0.975, df)
        assert st.nct.sf(crit, df, nc) + st.nct.sf(crit, df, -nc) == pytest.approx(0.9, abs=1e-8)


# ---------------------------------------------------------------- calibration on simulated sweeps

N_SWEEPS = 400


def simulated_p(rng, n, shift, paired, sd=1.0):
    """The p-values of N_SWEEPS simulated comparisons of n seeds each (a seed's noise shared by
    both configurations when paired, as the same initialisation and data order make it)."""
    out = []
    for _ in range(N_SWEEPS):
        if paired:
            seed_noise = rng.normal(0, 3 * sd, n)  # cancels in the pairs
            a = seed_noise + shift + rng.normal(0, sd / math.sqrt(2), n)
            b = seed_noise + rng.normal(0, sd / math.sqrt(2), n)
            out.append(stats.paired_t(a, b).p)
        else:
            out.append(stats.welch_t(rng.normal(shift, sd, n), rng.normal(0, sd, n)).p)
    return np.array(out)


@pytest.mark.parametrize("n, paired", [(3, True), (5, True), (10, False)])
def test_false_positives_stay_near_alpha(n, paired):
    rate = np.mean(simulated_p(np.random.default_rng(n), n, 0.0, paired) < 0.05)
    assert 0.02 <= rate <= 0.09


@pytest.mark.parametrize("n, paired", [(3, True), (5, True), (10, False)])
def test_a_difference_equal_to_the_mde_is_detected_80_percent_of_the_time(n, paired):
    # the MDE from the true spread: SD 1 for the paired differences, SD 1 in each configuration unpaired
    mde = stats.mde_paired(1.0, n) if paired else stats.mde_welch(1.0, 1.0, n, n)
    rate = np.mean(simulated_p(np.random.default_rng(100 + n), n, mde, paired) < 0.05)
    assert 0.72 <= rate <= 0.88


def test_no_reading_of_the_probability_of_improvement_from_too_few_seeds():
    assert stats.improvement_reading(1.0, 1.0, n=3).startswith("too few seeds")
    assert stats.improvement_reading(1.0, 1.0, n=stats.READING_MIN_SEEDS) == "better, meaningful"
    assert stats.improvement_reading(0.0, 0.3, n=10) == "worse, meaningful"
    d = stats.difference([0.9, 0.91, 0.92], [0.8, 0.81, 0.83], paired=True)
    assert d.p_improve_ci == (1.0, 1.0) and d.reading.startswith("too few seeds")


# ---------------------------------------------------------------- across settings


def test_the_mean_rank_and_its_interval_on_a_hand_checked_example():
    # setting 1 (higher better): a > b > c on every seed, ranks 1, 2, 3; setting 2 (lower better):
    # means a 0.2, b 0.3, c 0.1, ranks 2, 3, 1; mean ranks a 1.5, b 2.5, c 2
    s1 = np.array([[0.9, 0.91, 0.92], [0.8, 0.81, 0.82], [0.7, 0.71, 0.72]])
    s2 = np.array([[0.2, 0.21, 0.19], [0.3, 0.31, 0.29], [0.1, 0.11, 0.09]])
    mean, lo, hi = stats.mean_rank([(s1, True), (s2, False)])
    assert mean.tolist() == [1.5, 2.5, 2.0]
    assert lo.tolist() == hi.tolist() == [1.5, 2.5, 2.0]  # the ranks hold on every resample of the seeds
    # two activations that swap places seed by seed: the resamples put either first
    swap = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    mean, lo, hi = stats.mean_rank([(swap, True)])
    assert mean.tolist() == [1.5, 1.5] and lo.tolist() == [1.0, 1.0] and hi.tolist() == [2.0, 2.0]


def test_the_standardised_effect_is_t_over_root_n_with_a_noncentral_t_interval():
    a, b = np.array([2.0, 3.0, 4.0, 6.0]), np.array([1.0, 1.0, 1.0, 1.0])  # differences 1, 2, 3, 5: mean 2.75, sd 1.708
    t = stats.paired_t(a, b)
    dz, lo, hi = stats.standardised(t)
    assert dz == pytest.approx(2.75 / np.std([1, 2, 3, 5], ddof=1))
    observed = t.diff / t.se  # at the interval's ends the observed t is the 97.5% and 2.5% quantile
    assert st.nct.cdf(observed, 3, lo * 2) == pytest.approx(0.975, abs=1e-6) and st.nct.cdf(observed, 3, hi * 2) == pytest.approx(0.025, abs=1e-6)
    assert lo < dz < hi
    zero = stats.standardised(stats.paired_t(a, a - 1.0))  # the same difference on every pair: no spread, no scale
    assert all(np.isnan(zero)) and all(np.isnan(stats.standardised(stats.welch_t(a, b))))
    assert stats.ranks([0.1, 0.3, 0.3], higher_is_better=True).tolist() == [3.0, 1.5, 1.5]


def test_the_bootstrap_of_ranks_resamples_the_same_seeds_for_every_activation():
    # seeds differ a lot (offsets 0, 10, 20, ...), activations by a small constant: a beats b on
    # every seed, so every resample that draws the same seeds for both ranks a first; drawn apart,
    # b would often come first
    offsets = np.arange(8) * 10.0
    mean, lo, hi = stats.mean_rank([(np.array([offsets + 0.1, offsets]), True)])
    assert mean.tolist() == [1.0, 2.0] and lo.tolist() == [1.0, 2.0] and hi.tolist() == [1.0, 2.0]
