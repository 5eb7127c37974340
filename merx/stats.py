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

:func:`plain_p` turns a p-value into a sentence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: Below this many discordant songs McNemar's chi-squared approximation is poor: use the exact test.
MCNEMAR_EXACT_BELOW = 25


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
    """``estimate`` = metric(b) - metric(a) on all songs; ``low``/``high`` its percentile interval."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_songs: int
    n_resamples: int

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
        return BootstrapResult(estimate, None, None, confidence, n, 0)
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
        return BootstrapResult(estimate, None, None, confidence, n, n_resamples)
    alpha = (1 - confidence) / 2
    low, high = np.percentile(dist, [100 * alpha, 100 * (1 - alpha)])
    return BootstrapResult(estimate, float(low), float(high), confidence, n, n_resamples)


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
    """Difference of group b minus group a across seeds, and the t-test that judged it."""

    test: str
    n_a: int
    n_b: int
    seeds: list | None
    mean_difference: float | None
    statistic: float | None
    p_value: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def seed_test(a_by_seed: Mapping[int, float | None], b_by_seed: Mapping[int, float | None]) -> SeedTestResult | None:
    """Paired t-test on the seeds both groups ran (at least two), else Welch's t-test when each
    group has at least two seeds, else None. Values are one metric per seed."""
    from scipy import stats

    a = {s: v for s, v in a_by_seed.items() if v is not None and math.isfinite(v)}
    b = {s: v for s, v in b_by_seed.items() if v is not None and math.isfinite(v)}
    common = sorted(set(a) & set(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        if len(common) >= 2:
            xa, xb = np.array([a[s] for s in common]), np.array([b[s] for s in common])
            d = xb - xa
            if np.all(d == d[0]):  # t undefined: zero spread
                p = 1.0 if d[0] == 0 else 0.0
                return SeedTestResult("paired t-test (same seeds)", len(xa), len(xb), common, float(d.mean()),
                                      None, p)
            res = stats.ttest_rel(xb, xa)
            return SeedTestResult("paired t-test (same seeds)", len(xa), len(xb), common, float(d.mean()),
                                  float(res.statistic), float(res.pvalue))
        if len(a) >= 2 and len(b) >= 2:
            xa, xb = np.array(list(a.values())), np.array(list(b.values()))
            res = stats.ttest_ind(xb, xa, equal_var=False)
            return SeedTestResult("Welch t-test (different seeds)", len(xa), len(xb), None,
                                  float(xb.mean() - xa.mean()), _none_if_nan(res.statistic),
                                  _none_if_nan(res.pvalue))
    return None


# -- words ----------------------------------------------------------------------------------

def format_p(p: float | None) -> str:
    if p is None:
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def plain_p(p: float | None, alpha: float = 0.05) -> str:
    """A p-value in words: what it is, and whether it clears ``alpha``."""
    if p is None:
        return "p undefined: not enough data for the test"
    verdict = (f"significant at the {alpha:.0%} level" if p < alpha
               else f"not significant at the {alpha:.0%} level: this could be chance")
    chance = "under 0.1 %" if p < 0.001 else f"{p:.1%}"
    return (f"{format_p(p)} (if both were equally good, a difference at least this large would turn up "
            f"{chance} of the time): {verdict}")
