"""merx.stats against hand computations: t intervals, McNemar, the paired bootstrap, seed tests."""

import itertools
import math

import numpy as np
import pytest

from merx.stats import MIN_SEED_PAIRS, holm, mcnemar, paired_bootstrap, plain_p, seed_test, summarize, t_interval

T_975_2DF = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)


def mae(t, p):
    return float(np.mean(np.abs(t - p)))


def test_mean_std_and_t_interval_by_hand():
    s = summarize([0.5, 0.6, 0.7, None, float("nan")])  # None and NaN are left out
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    half = T_975_2DF * 0.1 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.6 - half, 0.6 + half))
    assert summarize([0.42]).std is None and summarize([0.42]).ci_low is None
    assert summarize([]).mean is None
    assert t_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)  # no spread: a point, not nan


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 7 songs only run a gets right, 1 only run b, 3 both, 2 neither.
    a = [1] * 7 + [0] + [1] * 3 + [0] * 2
    b = [0] * 7 + [1] + [1] * 3 + [0] * 2
    res = mcnemar(a, b)
    assert (res.only_a, res.only_b, res.both, res.neither) == (7, 1, 3, 2)
    assert res.method == "exact binomial"
    # two-sided: 2 * P(X <= 1), X ~ Binomial(8, 1/2)
    assert res.p_value == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2 ** 8)
    assert res.p_value == pytest.approx(0.0703125)
    assert mcnemar(b, a).p_value == pytest.approx(res.p_value)  # symmetric


def test_mcnemar_chi_squared_with_continuity_correction_by_hand():
    a = np.array([1] * 30 + [0] * 12 + [1] * 50, dtype=bool)
    b = np.array([0] * 30 + [1] * 12 + [1] * 50, dtype=bool)
    res = mcnemar(a, b)
    assert res.method == "chi-squared with continuity correction"
    chi2 = (abs(30 - 12) - 1) ** 2 / (30 + 12)
    assert res.statistic == pytest.approx(chi2)
    assert res.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))  # chi-squared, 1 df, upper tail
    assert mcnemar(a, b, exact=True).p_value == pytest.approx(2 * sum(math.comb(42, k) for k in range(13)) / 2 ** 42)


def test_mcnemar_without_discordant_songs_is_p_one():
    res = mcnemar([1, 0, 1], [1, 0, 1])
    assert res.p_value == 1.0 and res.only_a == res.only_b == 0
    with pytest.raises(ValueError, match="same songs"):
        mcnemar([1, 0], [1, 0, 1])


# A known prediction table: 5 songs, true value and the two runs' predictions.
TRUE = np.array([0.2, 0.8, 0.3, 0.7, 0.9])
PRED_A = np.array([0.5, 0.5, 0.1, 0.4, 0.6])
PRED_B = np.array([0.25, 0.7, 0.4, 0.75, 0.8])


def test_paired_bootstrap_matches_the_exact_bootstrap_distribution():
    d = np.abs(TRUE - PRED_B) - np.abs(TRUE - PRED_A)  # per-song change of the absolute error
    assert d.tolist() == pytest.approx([-0.25, -0.2, -0.1, -0.25, -0.2])
    # Every one of the 5^5 equally likely resamples of the songs, enumerated by hand.
    resamples = np.array(list(itertools.product(range(5), repeat=5)))
    exact = d[resamples].mean(axis=1)
    low, high = np.percentile(exact, [2.5, 97.5])
    assert (low, high) == pytest.approx((-0.24, -0.15))
    res = paired_bootstrap(mae, TRUE, PRED_A, PRED_B, n_resamples=20000, seed=3)
    assert res.estimate == pytest.approx(d.mean()) == pytest.approx(-0.2)
    assert (res.low, res.high) == pytest.approx((low, high), abs=1e-9)
    assert res.excludes_zero and res.n_songs == 5
    # No resample reaches 0, yet p is not 0: 20000 resamples cannot show a chance below ~1/20000.
    assert res.p_value == pytest.approx(2 / 20001)


def test_paired_bootstrap_keeps_the_pairing():
    # b beats a by exactly 0.1 on every song: unpaired resampling would spread the difference,
    # paired resampling cannot.
    t = np.linspace(0, 1, 12)
    res = paired_bootstrap(mae, t, t + 0.3, t + 0.2, n_resamples=500)
    assert (res.low, res.estimate, res.high) == pytest.approx((-0.1, -0.1, -0.1))
    # no spread to weigh the difference against: no p-value, rather than p = 0
    assert res.p_value is None and "every resample of the songs gives the same difference, -0.1" in res.p_undefined


def test_paired_bootstrap_of_identical_predictions_has_no_p_value():
    t = np.linspace(0, 1, 12)
    res = paired_bootstrap(mae, t, t + 0.1, t + 0.1, n_resamples=300)
    assert (res.low, res.estimate, res.high) == (0, 0, 0)
    assert res.p_value is None and "identical predictions" in res.p_undefined
    assert "p undefined: both runs score the same" in plain_p(res.p_value, why=res.p_undefined)


def test_paired_bootstrap_of_a_metric_that_is_not_a_mean_and_undefined_resamples():
    from merx.metrics import r2_score

    # Two of three songs share a true value: a resample drawing only those has R² undefined
    # (nan); the interval comes from the defined resamples instead of turning nan.
    t = np.array([0.1, 0.1, 0.9])
    a, b = np.array([0.3, 0.2, 0.5]), np.array([0.1, 0.2, 0.8])
    res = paired_bootstrap(r2_score, t, a, b, n_resamples=400)
    assert res.estimate == pytest.approx(r2_score(t, b) - r2_score(t, a))
    assert res.low is not None and res.low <= res.estimate <= res.high


def test_paired_t_test_across_seeds_by_hand():
    a = {0: 0.60, 1: 0.62, 2: 0.58}
    b = {0: 0.65, 1: 0.64, 2: 0.68, 9: 0.99}  # seed 9 has no partner: left out
    res = seed_test(a, b)
    d = np.array([0.05, 0.02, 0.10])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert res.test.startswith("paired") and res.seeds == [0, 1, 2]
    assert res.mean_difference == pytest.approx(d.mean()) and res.statistic == pytest.approx(t)
    from scipy import stats

    assert res.p_value == pytest.approx(2 * stats.t.sf(t, 2))


def test_seed_pairs_without_spread_have_no_p_value():
    # 0.2 - 0.1 and 0.3 - 0.2 differ by float rounding only: scipy would answer t = 1e15, p = 0.
    res = seed_test({0: 0.1, 1: 0.1, 2: 0.2}, {0: 0.2, 1: 0.2, 2: 0.3})
    assert res.p_value is None and res.statistic is None and res.mean_difference == pytest.approx(0.1)
    assert res.p_undefined == "every seed pair differs by exactly +0.1"
    assert seed_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).p_undefined == "every seed pair differs by exactly +0"


def test_fewer_than_three_seed_pairs_are_not_enough():
    assert MIN_SEED_PAIRS == 3
    two = seed_test({0: 0.2, 1: 0.3}, {0: 0.3, 1: 0.401})
    assert two.n_pairs == 2 and not two.enough_seeds and two.p_value < 0.05  # p is still computed
    assert seed_test({0: 0.2, 1: 0.3, 2: 0.25}, {0: 0.3, 1: 0.401, 2: 0.35}).enough_seeds


def test_holm_matches_a_hand_computation():
    # Sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04;
    # step-down keeps them non-decreasing, so 0.04 becomes max(0.06, 0.04) = 0.06.
    # Back in the given order: 0.01 -> 0.03, 0.04 -> 0.06, 0.03 -> 0.06, 0.005 -> 0.02.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1; an undefined p stays None and is not counted: m = 2 here.
    assert holm([0.6, None, 0.01]) == pytest.approx([0.6, None, 0.02])
    assert holm([0.7, 0.8]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_welch_when_the_seeds_differ_and_none_without_enough_seeds():
    res = seed_test({0: 0.5, 1: 0.6}, {5: 0.7, 6: 0.8})
    assert res.test.startswith("Welch") and res.mean_difference == pytest.approx(0.2)
    assert seed_test({0: 0.5}, {0: 0.6}) is None


def test_p_values_in_words():
    assert "not significant at the 5% level" in plain_p(0.0703125)
    assert "p = 0.070" in plain_p(0.0703125) and "7.0% of the time" in plain_p(0.0703125)
    assert "significant at the 5% level" in plain_p(0.01) and "not" not in plain_p(0.01)
    assert "p < 0.001" in plain_p(1e-6)
    assert "undefined" in plain_p(None)
