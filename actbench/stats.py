"""Statistics for comparing two configurations over seeds: intervals, tests, Holm's correction,
bootstrap intervals, the probability of improvement and the power of the tests. Pure functions
of numpy arrays (one value per seed); nothing here knows about runs or files.

Choices, stated once so that the report can cite them:
- mean, std (ddof=1) and a Student t interval (n-1 df) per configuration;
- paired t-test on the seeds two configurations share (the same seed means the same initial
  weights, split and order, so pairing removes that noise), else Welch's t-test; Holm's
  correction over every test of a report; intervals are per comparison, not adjusted;
- Wilcoxon signed-rank on paired data from 6 pairs that differ: below that its exact two-sided
  p-value cannot go under 0.0625, so it could never reject at alpha=0.05;
- percentile-bootstrap intervals (scipy's `bootstrap`, a fixed seed, so a report is the same
  every time it is written) of the mean difference and of the probability of improvement;
- probability of improvement P(A better than B) (Bouthillier et al. 2021; Agarwal et al. 2021):
  paired, the share of pairs where A is better, ties counting one half; unpaired, the
  Mann-Whitney U / (n_A n_B), the same count over every (A run, B run) pair. A is better when
  the interval's lower end is above 0.5, meaningfully so when its upper end reaches 0.75;
- minimal detectable effect: the true difference that the two-sided test detects with the given
  power at the given alpha, from the observed spread (SD of the paired differences, or both
  SDs for Welch), solved on the noncentral t distribution; seeds needed: the smallest number of
  seeds per configuration for which the test has that power against a given difference. A
  report of m tests states both at alpha/m, the level Holm's correction holds a lone real
  difference to (`at_level`): at alpha they would promise power that the corrected verdict lacks;
- equivalence (two one-sided tests, TOST): a difference lies within +-effect when the
  1 - 2 alpha t interval does: what "no difference" can mean, where a p-value above alpha cannot.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

# scipy.stats is imported inside the functions that use it: importing this module (the run
# reader does, and so every training run) must not cost the second and more scipy.stats takes

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
GAMMA = 0.75  # Bouthillier et al.'s threshold of a meaningful P(A better than B)
WILCOXON_MIN_PAIRS = 6
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# metrics.json holds float32 values (about 7 significant digits): a spread below this share of
# the values is their rounding, not seed-to-seed variation
ROUNDING = 1e-6
MAX_SEEDS = 1_000_000  # seeds_needed's answer when even this many would not do (an effect ~0 against the spread)


# ---------------------------------------------------------------- one sample


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """mean, std (ddof=1), CI low, CI high (Student t); std and CI are NaN below 2 values."""
    from scipy import stats as st

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(st.t.ppf(0.5 + confidence / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


def gmean_positive(values, axis=None):
    """Geometric mean of the positive finite values (NaN where there are none): a zero or
    infinite gradient ratio has no logarithm and is left out rather than dragging the mean to 0."""
    x = np.asarray(values, dtype=float)
    ok = np.isfinite(x) & (x > 0)
    logs = np.where(ok, np.log(np.where(ok, x, 1.0)), 0.0)
    count = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.exp(logs.sum(axis=axis) / count)
    out = np.where(count > 0, out, np.nan)
    return float(out) if out.ndim == 0 else out


def nanmean(values) -> float:
    """Mean of the finite values, NaN (and no warning) when there are none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def nanmedian(values) -> float:
    """Median of the finite values, NaN (and no warning) when there are none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; a NaN p is no test, and stays NaN."""
    p = list(map(float, pvalues))
    tests = sorted((i for i in range(len(p)) if not math.isnan(p[i])), key=p.__getitem__)
    m, adjusted, running = len(tests), [math.nan] * len(p), 0.0
    for rank, i in enumerate(tests):
        running = max(running, min(1.0, (m - rank) * p[i]))  # adjusted values never decrease
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------- tests of a difference


@dataclass(frozen=True)
class TTest:
    """A t-test of mean(a) - mean(b): the difference, its t interval, p, and what made them."""

    test: str  # "paired t" or "Welch t"
    diff: float
    ci: tuple[float, float]
    p: float
    se: float
    df: float

    @property
    def valid(self) -> bool:
        """False when the spread is zero (every pair differs alike): t is then infinite, not evidence."""
        return self.se > 0 and math.isfinite(self.p)


def _sd(x, *scale) -> float:
    """Standard deviation (ddof=1), zero when it is the values' rounding: accuracies are counts
    over the test set, stored as float32, and equal differences of them differ in their last
    bits, which is no evidence."""
    sd = float(np.std(x, ddof=1))
    return 0.0 if sd <= ROUNDING * max(float(np.max(np.abs(v))) for v in scale) else sd


def paired_t(a, b, confidence: float = CONFIDENCE) -> TTest:
    """Paired t-test of a[i] - b[i] (at least 2 pairs)."""
    from scipy import stats as st

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    se, df = _sd(d, a, b) / math.sqrt(len(d)), len(d) - 1
    with warnings.catch_warnings():  # scipy warns on (near-)identical samples; `valid` says so instead
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(st.ttest_rel(a, b).pvalue)
    return TTest("paired t", float(d.mean()), _t_interval(float(d.mean()), se, df, confidence), p, se, df)


def welch_t(a, b, confidence: float = CONFIDENCE) -> TTest:
    """Welch's t-test of mean(a) - mean(b) (at least 2 values each)."""
    from scipy import stats as st

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    se, df = _welch_se_df(_sd(a, a), _sd(b, b), len(a), len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(st.ttest_ind(a, b, equal_var=False).pvalue)
    diff = float(a.mean() - b.mean())
    # By hand rather than the result's confidence_interval(), which scipy 1.10 lacks for Welch.
    return TTest("Welch t", diff, _t_interval(diff, se, df, confidence), p, se, df)


def _welch_se_df(sd_a: float, sd_b: float, n_a: float, n_b: float) -> tuple[float, float]:
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)) if se > 0 else math.nan  # Welch-Satterthwaite
    return float(se), float(df)


def _t_interval(diff: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    from scipy import stats as st

    if not se > 0:
        return math.nan, math.nan
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return diff - half, diff + half


def wilcoxon_p(a, b, min_pairs: int = WILCOXON_MIN_PAIRS) -> float | None:
    """Wilcoxon signed-rank p of paired a, b; None below min_pairs pairs that differ (scipy drops
    the ties, and the rest could not reach p < 0.05)."""
    from scipy import stats as st

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.count_nonzero(a != b) < min_pairs:
        return None
    return float(st.wilcoxon(a, b).pvalue)


# ---------------------------------------------------------------- bootstrap and P(A better than B)


def bootstrap_ci(a, b, statistic, paired: bool, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                 n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap interval of statistic(a, b, axis): paired resamples the pairs, unpaired
    resamples each sample on its own. NaN below 2 values per sample."""
    from scipy import stats as st

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        # every resample giving the same value (A better on every seed) is an answer, not a problem
        warnings.simplefilter("ignore")
        res = st.bootstrap((a, b), statistic, paired=paired, vectorized=True, confidence_level=confidence,
                           method="percentile", n_resamples=n_resamples, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_difference(a, b, axis=-1):
    """mean(a) - mean(b), along axis (a bootstrap statistic; paired, it is the mean of a - b)."""
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def diff_bootstrap_ci(a, b, paired: bool, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                      n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean difference, without the t interval's normality."""
    return bootstrap_ci(a, b, mean_difference, paired, confidence, seed, n_resamples)


def _oriented(a, b, higher_is_better: bool):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return (a, b) if higher_is_better else (-a, -b)


def _p_paired(a, b, axis=-1):
    return np.mean((np.sign(a - b) + 1) / 2, axis=axis)  # better 1, tie 1/2, worse 0


def _p_unpaired(a, b, axis=-1):
    from scipy import stats as st

    u = st.mannwhitneyu(a, b, axis=axis).statistic  # U of a: pairs where a is larger, ties one half
    return u / (a.shape[axis] * b.shape[axis])


def prob_improvement(a, b, paired: bool, higher_is_better: bool = True) -> float:
    """P(A better than B) for a run of A and a run of B: paired, the share of pairs where a is
    better (ties 1/2); unpaired, Mann-Whitney U / (n_A n_B)."""
    x, y = _oriented(a, b, higher_is_better)
    if min(len(x), len(y)) == 0:
        return math.nan
    return float((_p_paired if paired else _p_unpaired)(x, y))


def prob_improvement_ci(a, b, paired: bool, higher_is_better: bool = True, confidence: float = CONFIDENCE,
                        seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap interval of prob_improvement over seeds."""
    x, y = _oriented(a, b, higher_is_better)
    return bootstrap_ci(x, y, _p_paired if paired else _p_unpaired, paired, confidence, seed, n_resamples)


READING_MIN_SEEDS = 6  # below this a percentile bootstrap of P(A better) cannot be read (see improvement_reading)
TOO_FEW = "too few seeds to read"  # improvement_reading's answer below READING_MIN_SEEDS


def improvement_reading(low: float, high: float, gamma: float = GAMMA, n: int | None = None) -> str:
    """Bouthillier et al.'s reading of an interval of P(A better than B): better when it lies
    above 0.5, meaningful when it reaches gamma; worse by the same rules mirrored. With fewer
    than READING_MIN_SEEDS seeds (pairs) there is no reading: a percentile bootstrap of a share
    is [1, 1] whenever A wins every pair, which with 3 seeds happens by chance one time in eight
    (and a sign test over n wins out of n reaches p < 0.05 from 6)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    if n is not None and n < READING_MIN_SEEDS:
        return f"{TOO_FEW} (under {READING_MIN_SEEDS})"
    if low > 0.5:
        return "better, meaningful" if high >= gamma else "better, not meaningful"
    if high < 0.5:
        return "worse, meaningful" if low <= 1 - gamma else "worse, not meaningful"
    return "undecided"


# ---------------------------------------------------------------- power


def t_power(nc: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test with df degrees of freedom when the true noncentrality is nc."""
    from scipy import stats as st

    crit = float(st.t.ppf(1 - alpha / 2, df))
    # Both tails as survival functions: nct.cdf's lower tail returns NaN where it is ~1e-20.
    return float(st.nct.sf(crit, df, nc) + st.nct.sf(crit, df, -nc))


def detectable_nc(df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The noncentrality at which the two-sided t-test with df degrees of freedom has this power."""
    from scipy import optimize

    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1), got power={power}, alpha={alpha}")
    hi = 1.0
    while t_power(hi, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda nc: t_power(nc, df, alpha) - power, 0.0, hi, xtol=1e-10))


def mde_paired(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a paired t-test on n pairs detects with this power, for paired
    differences with standard deviation sd (in sd's units)."""
    if n < 2:
        return math.nan
    return detectable_nc(n - 1, alpha, power) * sd / math.sqrt(n)


def mde_welch(sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference of means Welch's t-test on n_a and n_b values detects with this
    power, for samples with these standard deviations (df by Welch-Satterthwaite)."""
    if min(n_a, n_b) < 2:
        return math.nan
    se, df = _welch_se_df(sd_a, sd_b, n_a, n_b)
    return detectable_nc(df, alpha, power) * se if se > 0 else 0.0


def seeds_needed_paired(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Smallest number of pairs (seeds) with which a paired t-test detects a true difference of
    `effect` with this power, for paired differences with standard deviation sd."""
    if not sd > 0:
        return 2
    return _smallest_n(lambda n: t_power(abs(effect) * math.sqrt(n) / sd, n - 1, alpha), power)


def seeds_needed_welch(effect: float, sd_a: float, sd_b: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Smallest number of seeds per configuration (the same for both) with which Welch's t-test
    detects a true difference of `effect` with this power, for these standard deviations."""
    if not (sd_a > 0 or sd_b > 0):
        return 2

    def power_at(n):
        se, df = _welch_se_df(sd_a, sd_b, n, n)
        return t_power(abs(effect) / se, df, alpha)

    return _smallest_n(power_at, power)


def _smallest_n(power_at, power: float) -> int:
    """The smallest n >= 2 with power_at(n) >= power, power_at growing with n."""
    if power_at(2) >= power:
        return 2
    lo, hi = 2, 4
    while power_at(hi) < power:
        if hi >= MAX_SEEDS:
            return MAX_SEEDS
        lo, hi = hi, min(2 * hi, MAX_SEEDS)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid, hi)
    return hi


# ---------------------------------------------------------------- one comparison, all of it


@dataclass(frozen=True)
class Difference:
    """Configuration A against B over seeds; differences are A minus B in the values' units."""

    t: TTest
    n_a: int  # values of A in the test (when paired, the pairs)
    n_b: int
    sd: tuple[float, ...]  # the spread the test saw: (SD of the paired differences,) or (SD of A, SD of B)
    boot_ci: tuple[float, float]
    p_wilcoxon: float | None
    p_improve: float  # P(A better than B)
    p_improve_ci: tuple[float, float]
    alpha: float  # the level of the equivalence test
    eq_ci: tuple[float, float]  # the 1 - 2 alpha t interval, which TOST holds against +-effect
    mde: float  # at `power` and `mde_alpha`
    mde_alpha: float  # the level mde and seeds_needed are at (alpha/m in a report of m tests)
    effect: float | None  # the difference worth detecting, as given
    seeds_needed: int | None  # seeds per configuration to detect `effect`

    @property
    def paired(self) -> bool:
        return self.t.test == "paired t"

    @property
    def reading(self) -> str:
        return improvement_reading(*self.p_improve_ci, n=min(self.n_a, self.n_b))

    @property
    def equivalent(self) -> bool:
        """Whether TOST shows |A - B| < effect: the 1 - 2 alpha interval lies inside +-effect."""
        return bool(self.effect) and -abs(self.effect) < self.eq_ci[0] and self.eq_ci[1] < abs(self.effect)


def _detectable(sd: tuple[float, ...], n_a: int, n_b: int, effect: float | None, alpha: float, power: float):
    """(MDE, seeds needed for effect or None) of the paired (one SD) or Welch (two) test."""
    if len(sd) == 1:
        return mde_paired(sd[0], n_a, alpha, power), seeds_needed_paired(effect, sd[0], alpha, power) if effect else None
    return mde_welch(*sd, n_a, n_b, alpha, power), seeds_needed_welch(effect, *sd, alpha, power) if effect else None


def at_level(d: Difference, alpha: float, power: float = POWER) -> Difference:
    """The same comparison with its MDE and seeds needed at level alpha (alpha/m for m tests)."""
    mde, needed = _detectable(d.sd, d.n_a, d.n_b, d.effect, alpha, power)
    return replace(d, mde=mde, mde_alpha=alpha, seeds_needed=needed)


def difference(a, b, paired: bool, higher_is_better: bool = True, effect: float | None = None, alpha: float = ALPHA,
               power: float = POWER, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> Difference | None:
    """Everything the report says about A against B: paired (a[i] and b[i] share seed i) or not.
    None when the spread cannot be estimated: fewer than 2 values (pairs) or zero spread. MDE and
    seeds needed are at alpha here; a report of several tests moves them to its level (`at_level`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        return None
    t = paired_t(a, b, confidence) if paired else welch_t(a, b, confidence)
    if not t.valid:
        return None
    sd = (t.se * math.sqrt(len(a)),) if paired else (_sd(a, a), _sd(b, b))
    mde, needed = _detectable(sd, len(a), len(b), effect, alpha, power)
    return Difference(
        t=t,
        n_a=len(a),
        n_b=len(b),
        sd=sd,
        boot_ci=diff_bootstrap_ci(a, b, paired, confidence, seed),
        p_wilcoxon=wilcoxon_p(a, b) if paired else None,
        p_improve=prob_improvement(a, b, paired, higher_is_better),
        p_improve_ci=prob_improvement_ci(a, b, paired, higher_is_better, confidence, seed),
        alpha=alpha,
        eq_ci=_t_interval(t.diff, t.se, t.df, 1 - 2 * alpha),
        mde=mde,
        mde_alpha=alpha,
        effect=effect,
        seeds_needed=needed,
    )


# ---------------------------------------------------------------- across settings (the atlas)


def standardised(t: TTest, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A paired t-test's difference over the paired differences' sd (Cohen's d_z = t / sqrt(n))
    and its interval, from inverting the noncentral t distribution of the observed t (so it
    widens with the effect, as the sd's own uncertainty asks). NaNs for an unpaired or invalid test."""
    from scipy import optimize
    from scipy import stats as st

    if t.test != "paired t" or not t.valid:
        return math.nan, math.nan, math.nan
    n = t.df + 1
    observed = t.diff / t.se

    def nc_at(q: float) -> float:
        """The noncentrality under which the observed t is the q quantile. Through the survival
        function, which rises with nc from 0 to 1 (nct.cdf's far tail returns NaN)."""
        g = lambda nc: float(st.nct.sf(observed, t.df, nc)) - (1 - q)  # noqa: E731
        width = 10.0 + abs(observed)
        while g(observed - width) > 0 or g(observed + width) < 0:  # heavy tails (two seeds) need a wider bracket
            width *= 2
        return optimize.brentq(g, observed - width, observed + width)

    tail = (1 - confidence) / 2
    return observed / math.sqrt(n), nc_at(1 - tail) / math.sqrt(n), nc_at(tail) / math.sqrt(n)


def ranks(means, higher_is_better: bool) -> np.ndarray:
    """Ranks along the last axis, 1 the best; ties share their mean rank."""
    from scipy.stats import rankdata

    means = np.asarray(means, dtype=float)
    return rankdata(-means if higher_is_better else means, axis=-1)


def mean_rank(settings: list[tuple[np.ndarray, bool]], confidence: float = CONFIDENCE, resamples: int = N_RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each activation's rank averaged over settings, and a percentile interval from resampling the
    seeds within each setting: `settings` holds, per setting, its values [activations, seeds] (the
    same activations in the same order everywhere) and whether higher is better. A resample draws
    seed indices once for all of a setting's activations, which share their seeds. Returns (mean
    rank, low, high), one entry per activation. The interval is over seeds only: the settings are
    the ones chosen, not a sample of all there are."""
    rng = np.random.default_rng(seed)
    point = np.mean([ranks(v.mean(axis=1), hib) for v, hib in settings], axis=0)
    total = np.zeros((resamples, len(point)))
    for values, hib in settings:
        idx = rng.integers(0, values.shape[1], size=(resamples, values.shape[1]))
        total += ranks(values[:, idx].mean(axis=-1).T, hib)
    total /= len(settings)
    lo, hi = np.percentile(total, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return point, lo, hi
