"""The statistics behind ``merx compare``: is a difference between two models real?

Three questions, three tools (scipy does the arithmetic):

* Two runs, the same test songs, a metric such as MAE or macro-F1: a **paired bootstrap**
  resamples the songs (the same songs for both runs) and recomputes the metric difference, so
  its interval holds for any metric, not only means (:func:`paired_bootstrap`).
* Two runs, right or wrong per song (a quadrant): **McNemar's test** counts the songs only one
  of them gets right (:func:`mcnemar`); exact binomial when those are few, chi-squared with
  continuity correction otherwise.
* Two groups of seeds: **mean ± std and a t-based 95 % interval** per group
  (:func:`summarize`), and a **paired t-test across seeds** run with the same seeds
  (:func:`seed_test`; Welch's t-test when the seeds differ).

Many tests at once inflate the chance that one of them looks significant by luck: :func:`holm`
adjusts a family of p-values (Holm's step-down). A p-value is None, never 0, when the data
cannot give one (no spread at all); :func:`plain_p` turns a p-value into a sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Below this many discordant songs McNemar's chi-squared approximation is poor: use the exact test.
MCNEMAR_EXACT_BELOW = 25

#: Fewest seed pairs (or seeds per group, unpaired) whose t-test may be called significant. With
#: two, the t-test has one degree of freedom: its validity rests wholly on the differences being
#: normal, which two numbers cannot show, and a "significant" p mostly means that two seeds
#: happened to agree. The p-value is still reported.
MIN_SEED_PAIRS = 3


def _no_spread(x: np.ndarray) -> bool:
    """All values equal up to float noise: 0.3 - 0.2 and 0.2 - 0.1 differ in the last bit, and a
    t-test or bootstrap p-value on such a difference would be a confident 0 made of rounding."""
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))))


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# -- one sample: mean, spread, interval ----------------------------------------------------

@dataclass
class Summary:
    """Mean, sample standard deviation (n - 1) and t-based confidence interval of ``values``.

    ``std`` and the interval are None with fewer than two values."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    values: list

    def to_dict(self) -> dict:
        return asdict(self)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean: mean ± t(1 - α/2, n - 1) · s / √n (None if n < 2)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) < 2:
        return None
    if np.all(x == x[0]):  # no spread: scipy would answer nan
        return float(x[0]), float(x[0])
    low, high = stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(low), float(high)


def summarize(values: Sequence[float | None], confidence: float = 0.95) -> Summary:
    """Mean ± std and t interval of the finite values (None and NaN are left out)."""
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not x:
        return Summary(0, None, None, None, None, confidence, [])
    arr = np.asarray(x)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    ci = t_interval(arr, confidence)
    return Summary(len(arr), float(arr.mean()), std, ci[0] if ci else None, ci[1] if ci else None,
                   confidence, x)


# -- paired bootstrap -----------------------------------------------------------------------

@dataclass
class BootstrapResult:
    """``estimate`` = metric(b) - metric(a) on all songs; ``low``/``high`` its percentile interval;
    ``p_value`` the two-sided p of "no difference" read off the same resamples (None, with
    ``p_undefined`` saying why, when the resamples cannot give one)."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_songs: int
    n_resamples: int
    p_value: float | None = None
    p_undefined: str | None = None

    @property
    def excludes_zero(self) -> bool:
        # A bound that is zero up to rounding (a mean of differences that cancel) touches 0.
        eps = 1e-12
        return self.low is not None and self.high is not None and (self.low > eps or self.high < -eps)

    def to_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def paired_bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], truth, pred_a, pred_b,
                     n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Percentile bootstrap interval of ``metric(truth, pred_b) - metric(truth, pred_a)``.

    ``truth``, ``pred_a`` and ``pred_b`` are arrays whose first axis is the song (the same songs,
    in the same order). Each resample draws songs with replacement and evaluates both runs on
    that same draw, which keeps the pairing: a hard song counts against both."""
    from scipy import stats

    truth, pred_a, pred_b = np.asarray(truth), np.asarray(pred_a), np.asarray(pred_b)
    n = len(truth)
    if not (len(pred_a) == len(pred_b) == n) or n == 0:
        raise ValueError(f"paired_bootstrap needs the same non-empty songs for both runs, got {len(truth)}, "
                         f"{len(pred_a)} and {len(pred_b)} rows")

    def difference(idx):
        return metric(truth[idx], pred_b[idx]) - metric(truth[idx], pred_a[idx])

    def batch(idx, axis=-1):
        # scipy hands over many resamples at once; the metric itself takes one at a time
        # (macro-F1, R² are not means), but the loop is ours, without scipy's per-call cost.
        idx = np.asarray(idx, dtype=int)
        rows = idx.reshape(-1, idx.shape[-1])
        return np.array([difference(r) for r in rows]).reshape(idx.shape[:-1])

    estimate = _none_if_nan(difference(np.arange(n)))
    if n < 2:
        return BootstrapResult(estimate, None, None, confidence, n, 0,
                               p_undefined=f"{n} song: nothing to resample")
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # nan metric on a degenerate resample
        # Resampling song indices is resampling the (truth, a, b) triples together.
        res = stats.bootstrap((np.arange(n),), batch, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method="percentile", rng=seed)
    # Percentiles of the defined resamples: a metric such as R² is undefined on a resample whose
    # true values are all equal, and one such draw must not void the whole interval.
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    dist = dist[np.isfinite(dist)]
    if len(dist) < 0.5 * n_resamples:
        return BootstrapResult(estimate, None, None, confidence, n, n_resamples,
                               p_undefined="the metric is undefined on most resamples of these songs")
    alpha = (1 - confidence) / 2
    low, high = np.percentile(dist, [100 * alpha, 100 * (1 - alpha)])
    p, why = bootstrap_p(dist)
    return BootstrapResult(estimate, float(low), float(high), confidence, n, n_resamples, p, why)


def bootstrap_p(dist: np.ndarray) -> tuple[float | None, str | None]:
    """Two-sided p-value of "no difference" from a bootstrap distribution of differences, and
    why it is None when it is.

    It inverts the percentile interval (the smallest α whose 1 - α interval leaves out 0), so
    the p-value and the interval shown beside it agree: 2 · (k + 1) / (B + 1), k the resamples
    on the less populated side of 0 (ties at 0 count on both sides), B the resamples. The + 1
    keeps it above 0: B resamples cannot show a chance smaller than about 1 / B.

    A distribution without spread (identical predictions, or a difference that is the same on
    every song) gives no p-value at all: the resamples show no chance variation to weigh the
    difference against, and "p = 0" would be a claim the data do not make."""
    dist = np.asarray(dist, dtype=float)
    if len(dist) == 0:
        return None, "no defined resample"
    if _no_spread(dist):
        if dist[0] == 0:
            return None, "both runs score the same on every resample of the songs (identical predictions?)"
        return None, f"every resample of the songs gives the same difference, {dist[0]:+.6g}"
    # A resample whose two metrics tie is a difference of 0 give or take the last bit of a float
    # sum: it sits on both sides, not on whichever the rounding picked.
    dist = np.where(np.abs(dist) <= 1e-12, 0.0, dist)
    k = min(int(np.sum(dist <= 0)), int(np.sum(dist >= 0)))
    return min(1.0, 2 * (k + 1) / (len(dist) + 1)), None


# -- McNemar --------------------------------------------------------------------------------

@dataclass
class McNemarResult:
    """``only_a``: songs run a gets right and b wrong; ``only_b`` the reverse."""

    only_a: int
    only_b: int
    both: int
    neither: int
    statistic: float | None
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar(correct_a, correct_b, exact: bool | None = None) -> McNemarResult:
    """McNemar's test on two runs' per-song correctness (boolean arrays over the same songs).

    ``exact`` None chooses: the exact binomial test when fewer than 25 songs are discordant,
    else chi-squared (1 df) with continuity correction, (|b - c| - 1)² / (b + c)."""
    from scipy import stats

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar needs the same songs for both runs, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    both, neither = int(np.sum(a & b)), int(np.sum(~a & ~b))
    discordant = only_a + only_b
    if exact is None:
        exact = discordant < MCNEMAR_EXACT_BELOW
    if discordant == 0:
        return McNemarResult(only_a, only_b, both, neither, None, 1.0,
                             "no song is right for one run and wrong for the other")
    if exact:
        p = stats.binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue
        return McNemarResult(only_a, only_b, both, neither, None, float(min(1.0, p)), "exact binomial")
    chi2 = (abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemarResult(only_a, only_b, both, neither, float(chi2), float(stats.chi2.sf(chi2, 1)),
                         "chi-squared with continuity correction")


# -- across seeds ---------------------------------------------------------------------------

@dataclass
class SeedTestResult:
    """Difference of group b minus group a across seeds, and the t-test that judged it.

    ``p_value`` is None when the test is undefined, ``p_undefined`` then says why; ``n_pairs``
    counts the seed pairs of a paired test (for Welch's, the smaller group)."""

    test: str
    n_a: int
    n_b: int
    seeds: list | None
    mean_difference: float | None
    statistic: float | None
    p_value: float | None
    p_undefined: str | None = None
    n_pairs: int = 0

    @property
    def enough_seeds(self) -> bool:
        return self.n_pairs >= MIN_SEED_PAIRS

    def to_dict(self) -> dict:
        return asdict(self)


def seed_test(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None]) -> SeedTestResult | None:
    """Paired t-test on the seeds both groups ran (at least two), else Welch's t-test when each
    group has at least two seeds, else None. Values are one metric per seed.

    When every seed pair differs by the same amount the t statistic divides by zero: the p-value
    is None (scipy would answer p = 0 with t = inf, or a tiny p from rounding noise)."""
    from scipy import stats

    a = {s: v for s, v in a_by_seed.items() if v is not None and math.isfinite(v)}
    b = {s: v for s, v in b_by_seed.items() if v is not None and math.isfinite(v)}
    common = sorted(set(a) & set(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        if len(common) >= 2:
            xa, xb = np.array([a[s] for s in common]), np.array([b[s] for s in common])
            d = xb - xa
            if _no_spread(d):
                return SeedTestResult("paired t-test (same seeds)", len(xa), len(xb), common, float(d.mean()),
                                      None, None, f"every seed pair differs by exactly {d[0]:+.6g}", len(d))
            res = stats.ttest_rel(xb, xa)
            return SeedTestResult("paired t-test (same seeds)", len(xa), len(xb), common, float(d.mean()),
                                  float(res.statistic), float(res.pvalue), None, len(d))
        if len(a) >= 2 and len(b) >= 2:
            xa, xb = np.array(list(a.values())), np.array(list(b.values()))
            n = min(len(xa), len(xb))
            if _no_spread(xa) and _no_spread(xb):
                return SeedTestResult("Welch t-test (different seeds)", len(xa), len(xb), None,
                                      float(xb.mean() - xa.mean()), None, None,
                                      "no seed changes the result within either group", n)
            res = stats.ttest_ind(xb, xa, equal_var=False)
            return SeedTestResult("Welch t-test (different seeds)", len(xa), len(xb), None,
                                  float(xb.mean() - xa.mean()), _none_if_nan(res.statistic),
                                  _none_if_nan(res.pvalue), None, n)
    return None


# -- many tests at once ---------------------------------------------------------------------

def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values, in their original order.

    The i-th smallest of m p-values is multiplied by m - i + 1, and the adjusted values are made
    non-decreasing in that order (capped at 1): rejecting where the adjusted p < α keeps the
    chance of any false claim in the family at most α, without Bonferroni's cost for the
    smaller p-values. None (no test possible) stays None and is not counted in m: a test that
    cannot reject cannot produce a false claim."""
    order = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    m = len(order)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


# -- words ----------------------------------------------------------------------------------

def format_p(p: float | None) -> str:
    if p is None:
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def plain_p(p: float | None, alpha: float = 0.05, why: str | None = None) -> str:
    """A p-value in words: what it is, and whether it clears ``alpha``; ``why`` says why it is
    undefined when ``p`` is None."""
    if p is None:
        return f"p undefined: {why or 'not enough data for the test'}"
    verdict = (f"significant at the {alpha:.0%} level" if p < alpha
               else f"not significant at the {alpha:.0%} level: this could be chance")
    chance = "under 0.1 %" if p < 0.001 else f"{p:.1%}"
    return (f"{format_p(p)} (if both were equally good, a difference at least this large would turn up "
            f"{chance} of the time): {verdict}")
