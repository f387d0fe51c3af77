"""Statistics for model comparison (evaluation/stats.py, evaluation/comparison.py): published values, exact
identities, brute-force enumerations and fixed-seed simulations. Pure, no ROS; the whole file runs in ~1-2 s."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest

from h1_training.evaluation.comparison import MODE_AB, MODE_DETAILED, Comparison
from h1_training.evaluation.stats import (
    Arm,
    Verdict,
    bayesian_comparison,
    betainc,
    chi2_cdf,
    chi2_sf,
    chi_square_homogeneity,
    decide,
    effect_size,
    fisher_exact,
    gammainc_lower,
    gammainc_upper,
    holm_adjust,
    mann_whitney_u,
    newcombe_difference_interval,
    norm_cdf,
    norm_ppf,
    pairwise_comparisons,
    prob_b_beats_a,
    required_trials_per_arm,
    sequential_test,
    t_cdf,
    t_two_sided_p,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)

# ----------------------------------------------------------------------------------------------------------------
# Special functions: exact identities
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x", [1e-6, 0.03, 0.3, 0.5, 0.77, 0.999])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.5, 17.0])
def test_incomplete_beta_identities(x, p):
    assert betainc(p, 1.0, x) == pytest.approx(x**p, rel=1e-12, abs=1e-300)  # I_x(a,1) = x^a
    assert betainc(1.0, p, x) == pytest.approx(1.0 - (1.0 - x) ** p, rel=1e-12)  # I_x(1,b) = 1-(1-x)^b
    assert betainc(p, 3.0, x) + betainc(3.0, p, 1.0 - x) == pytest.approx(1.0, abs=1e-13)  # symmetry


def test_incomplete_beta_arcsine_and_large_parameters():
    for x in (0.01, 0.2, 0.5, 0.9):  # I_x(1/2, 1/2) = (2/pi) asin(sqrt(x)), the arcsine law
        assert betainc(0.5, 0.5, x) == pytest.approx(2.0 / math.pi * math.asin(math.sqrt(x)), rel=1e-12)
    assert betainc(500.0, 500.0, 0.5) == pytest.approx(0.5, abs=1e-12)  # symmetric Beta: median 1/2
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        betainc(0.0, 1.0, 0.5)


@pytest.mark.parametrize("x", [0.0, 0.1, 1.0, 2.0, 5.99, 30.0])
def test_incomplete_gamma_identities(x):
    assert gammainc_lower(1.0, x) == pytest.approx(1.0 - math.exp(-x), abs=1e-14)  # P(1,x) = 1 - e^-x
    assert gammainc_lower(0.5, x) == pytest.approx(math.erf(math.sqrt(x)), abs=1e-14)  # P(1/2,x) = erf(sqrt x)
    assert chi2_cdf(x, 2) == pytest.approx(1.0 - math.exp(-x / 2.0), abs=1e-14)  # chi2(2) is Exp(1/2)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2.0), rel=1e-12)  # tail without cancellation
    assert gammainc_lower(7.5, x) + gammainc_upper(7.5, x) == pytest.approx(1.0, abs=1e-14)


def test_distribution_table_values():
    assert norm_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-13)
    for p in (1e-12, 0.01, 0.3, 0.5, 0.9, 1 - 1e-9):
        assert norm_cdf(norm_ppf(p)) == pytest.approx(p, rel=1e-12)
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-13)  # chi2(1) 95 % point = 1.96^2
    assert t_cdf(2.228138851986, 10) == pytest.approx(0.975, abs=1e-10)  # t table, 10 dof
    for t in (-30.0, -1.3, 0.0, 0.4, 6.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)  # df 1: Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)  # df 2 closed form
    assert t_cdf(1.7, 1e7) == pytest.approx(norm_cdf(1.7), abs=1e-7)  # df -> inf: normal
    assert t_two_sided_p(0.0, 5) == 1.0 and t_two_sided_p(math.inf, 5) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Proportions
# ----------------------------------------------------------------------------------------------------------------

# Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison of seven methods",
# Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction), 95 %.
NEWCOMBE_1998_WILSON = [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
                        (1, 29, 0.0061, 0.1718)]


@pytest.mark.parametrize(("s", "n", "low", "high"), NEWCOMBE_1998_WILSON)
def test_wilson_newcombe_table_1(s, n, low, high):
    ci = wilson_interval(s, n)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)


def test_wilson_edges():
    assert (wilson_interval(0, 0).low, wilson_interval(0, 0).high) == (0.0, 1.0)
    full = wilson_interval(7, 7)
    assert full.high == 1.0 and 0.6 < full.low < 0.7  # all successes: upper end exactly 1, lower end below 1
    one = wilson_interval(1, 1)
    assert 0.0 < one.low < one.high == 1.0
    assert wilson_interval(30, 100, 0.99).low < wilson_interval(30, 100, 0.9).low  # wider at higher confidence
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(-1, 3)
    with pytest.raises(ValueError):
        wilson_interval(1, 3, confidence=1.0)
    with pytest.raises(TypeError):
        wilson_interval(True, 3)


# Newcombe RG (1998) "Interval estimation for the difference between independent proportions: comparison of
# eleven methods", Stat Med 17:873-890, Table II, method 10 (hybrid score, no continuity correction), 95 %.
# Rows are (s1, n1, s2, n2, low, high) for p1 - p2; here p1 is arm B.
NEWCOMBE_1998_DIFFERENCE = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    (10, 10, 0, 10, 0.6075, 1.0000),
]


@pytest.mark.parametrize(("s1", "n1", "s2", "n2", "low", "high"), NEWCOMBE_1998_DIFFERENCE)
def test_newcombe_difference_table_2(s1, n1, s2, n2, low, high):
    ci = newcombe_difference_interval(s2, n2, s1, n1)  # (A, B) = (row's p2, row's p1)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)


def test_newcombe_difference_edges():
    ci = newcombe_difference_interval(0, 0, 0, 0)
    assert -1.0 <= ci.low < 0.0 < ci.high <= 1.0
    ci = newcombe_difference_interval(0, 0, 3, 3)
    assert math.isfinite(ci.low) and ci.low < ci.high


def _fisher_by_enumeration(sa: int, na: int, sb: int, nb: int) -> Fraction:
    """Independent reference: exact rational hypergeometric probabilities, sum of tables <= observed."""
    k, n = sa + sb, na + nb
    probs = {x: Fraction(math.comb(na, x) * math.comb(nb, k - x), math.comb(n, k))
             for x in range(max(0, k - nb), min(na, k) + 1)}
    return sum((p for p in probs.values() if p <= probs[sa]), Fraction(0))


def test_fisher_lady_tasting_tea():
    # Fisher (1935) The Design of Experiments: 8 cups, table [[3, 1], [1, 3]]; two-sided p = 0.4857 (= 17/35),
    # as R's fisher.test(TeaTasting) reports.
    r = fisher_exact(3, 4, 1, 4)
    assert round(r.p_value, 4) == 0.4857
    assert r.p_value == pytest.approx(17 / 35, rel=1e-12)


def test_fisher_r_convictions_example():
    # R documentation of fisher.test, "Convictions" (Fisher 1962): Dizygotic 2 convicted / 15 not, Monozygotic
    # 10 / 3. R: alternative = "less" p = 0.0004652, two-sided p = 0.0005367.
    r = fisher_exact(2, 17, 10, 13)
    assert round(r.p_value, 7) == 0.0005367
    lower = sum(math.comb(17, x) * math.comb(13, 12 - x) for x in range(0, 3)) / math.comb(30, 12)
    assert round(lower, 7) == 0.0004652  # same table orientation as R's one-sided value


def test_fisher_matches_exact_rational_enumeration():
    rng = np.random.default_rng(3)
    cases = [(2, 5, 3, 5), (1, 4, 3, 4), (5, 10, 5, 10), (0, 7, 7, 7), (12, 40, 20, 40)]  # ties of probability
    cases += [(int(rng.integers(0, na + 1)), na, int(rng.integers(0, nb + 1)), nb)
              for na, nb in rng.integers(1, 30, size=(25, 2))]
    for case in cases:
        assert fisher_exact(*case).p_value == pytest.approx(float(_fisher_by_enumeration(*case)), rel=1e-9), case


def test_fisher_and_z_edges():
    for case in [(0, 0, 0, 0), (0, 0, 3, 5), (4, 4, 6, 6), (0, 4, 0, 6), (1, 1, 0, 1)]:
        for test in (fisher_exact, two_proportion_z_test):
            r = test(*case)
            assert 0.0 <= r.p_value <= 1.0, (test, case)
            assert not math.isnan(r.statistic) and math.isfinite(r.effect), (test, case)
    assert fisher_exact(4, 4, 6, 6).defined is False and fisher_exact(4, 4, 6, 6).p_value == 1.0
    assert fisher_exact(1, 1, 0, 1).p_value == 1.0  # n = 1 per arm: the only two tables are equally likely
    with pytest.raises(ValueError):
        fisher_exact(3, 2, 1, 2)


def test_z_test_squared_is_chi_square_for_two_arms():
    z = two_proportion_z_test(30, 60, 42, 60)
    chi = chi_square_homogeneity([Arm("a", 30, 60), Arm("b", 42, 60)])
    assert z.statistic**2 == pytest.approx(chi.statistic, rel=1e-12)
    assert z.p_value == pytest.approx(chi.p_value, rel=1e-10)
    assert z.statistic > 0 and z.effect == pytest.approx(0.2)  # sign follows B - A


def test_bayesian_probability_exact():
    # Hand integral: A 0/1 -> Beta(1,2), B 1/1 -> Beta(2,1); P(pB > pA) = int 2(1-x)(1-x^2) dx = 5/6.
    assert prob_b_beats_a(0, 1, 1, 1) == pytest.approx(5 / 6, rel=1e-12)
    assert prob_b_beats_a(7, 20, 7, 20) == pytest.approx(0.5, abs=1e-12)  # symmetry
    assert prob_b_beats_a(0, 0, 0, 0) == pytest.approx(0.5, abs=1e-12)  # two uniform priors
    assert prob_b_beats_a(3, 10, 8, 12) + prob_b_beats_a(8, 12, 3, 10) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    mc = np.mean(rng.beta(9, 5, 200_000) > rng.beta(4, 8, 200_000))  # B 8/12 vs A 3/10
    assert prob_b_beats_a(3, 10, 8, 12) == pytest.approx(mc, abs=0.005)
    assert prob_b_beats_a(0, 100, 100, 100) == pytest.approx(1.0, abs=1e-12)


def test_bayesian_credible_interval_is_reproducible():
    one, two = bayesian_comparison(10, 20, 15, 20, seed=7), bayesian_comparison(10, 20, 15, 20, seed=7)
    assert one == two
    assert one.interval.low < one.mean_difference < one.interval.high
    assert one.mean_difference == pytest.approx(16 / 22 - 11 / 22)
    sym = bayesian_comparison(5, 10, 5, 10)
    assert sym.interval.low == pytest.approx(-sym.interval.high, abs=0.02)
    empty = bayesian_comparison(0, 0, 0, 0)
    assert -1.0 <= empty.interval.low < 0.0 < empty.interval.high <= 1.0


# ----------------------------------------------------------------------------------------------------------------
# Continuous metrics
# ----------------------------------------------------------------------------------------------------------------


def test_welch_wikipedia_example():
    # Wikipedia "Welch's t-test", Examples, example 1 (equal sizes, unequal variances): t = 2.46 (sign depends on
    # the order), df = 25.0, p = 0.021.
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    r = welch_t_test(a1, a2)
    assert (round(r.statistic, 2), round(r.df, 1), round(r.p_value, 3)) == (2.46, 25.0, 0.021)


def test_welch_hand_example():
    # By hand: means 3 and 6, variances 2.5 and 10, n 5 each: se^2 = 0.5 + 2 = 2.5, t = 3 / sqrt(2.5) = 1.8974,
    # df = 2.5^2 / (0.5^2/4 + 2^2/4) = 6.25 / 1.0625 = 5.8824.
    r = welch_t_test([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert r.statistic == pytest.approx(3 / math.sqrt(2.5), rel=1e-12)
    assert r.df == pytest.approx(6.25 / 1.0625, rel=1e-12)
    assert r.p_value == pytest.approx(2 * (1 - t_cdf(r.statistic, r.df)), rel=1e-10)
    assert 0.10 < r.p_value < 0.11  # t table, ~6 dof: t = 1.94 at two-sided 0.10


def test_welch_edges():
    assert welch_t_test([3.0], [1.0, 2.0]).defined is False
    assert welch_t_test([3.0], [1.0, 2.0]).p_value == 1.0
    assert welch_t_test([], []).p_value == 1.0
    same = welch_t_test([2.0, 2.0], [2.0, 2.0, 2.0])
    assert same.p_value == 1.0 and same.statistic == 0.0
    apart = welch_t_test([2.0, 2.0], [3.0, 3.0])
    assert apart.p_value == 0.0 and apart.statistic == math.inf
    with pytest.raises(ValueError):
        welch_t_test([1.0, float("nan")], [1.0, 2.0])


def _exact_rank_sum_p_by_enumeration(a, b) -> float:
    """Reference: all C(n, n_B) relabellings of the pooled sample, mid-ranks, two-sided by |W - E W|."""
    pooled = list(a) + list(b)
    order = sorted(pooled)
    rank = {v: (order.index(v) + 1 + len(order) - order[::-1].index(v)) / 2 for v in pooled}
    ranks = [rank[v] for v in pooled]
    n, k = len(pooled), len(b)
    expected = k * sum(ranks) / n
    observed = abs(sum(ranks[len(a):]) - expected)
    sums = [sum(ranks[i] for i in idx) for idx in combinations(range(n), k)]
    return sum(abs(s - expected) >= observed - 1e-9 for s in sums) / len(sums)


def test_mann_whitney_exact_tiny_example():
    # n = 3 + 3: C(6, 3) = 20 equally likely splits; complete separation is 1 of 20 per side: p = 2/20 = 0.1.
    r = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert r.p_value == pytest.approx(0.1, rel=1e-12) and r.statistic == 9.0 and r.effect == 0.5
    # Normal approximation, as R's wilcox.test(exact = FALSE): z = (4.5 - 0.5) / sqrt(5.25), p = 0.08086.
    approx = mann_whitney_u([1, 2, 3], [4, 5, 6], exact=False)
    assert round(approx.p_value, 5) == 0.08086


def test_mann_whitney_exact_with_ties_matches_enumeration():
    a, b = [1, 2, 2, 3, 5, 7], [2, 3, 3, 4, 6, 6, 8]
    assert mann_whitney_u(a, b).p_value == pytest.approx(_exact_rank_sum_p_by_enumeration(a, b), rel=1e-12)
    a, b = [4.1, 4.1, 5.0, 3.3], [4.1, 6.2, 7.0, 5.0, 5.0]
    assert mann_whitney_u(a, b).p_value == pytest.approx(_exact_rank_sum_p_by_enumeration(a, b), rel=1e-12)


def test_mann_whitney_normal_approximation_close_to_exact_and_edges():
    rng = np.random.default_rng(1)
    a, b = np.round(rng.normal(10, 2, 25), 1), np.round(rng.normal(11.5, 2, 28), 1)  # rounding makes ties
    exact, approx = mann_whitney_u(a, b, exact=True), mann_whitney_u(a, b, exact=False)
    assert exact.statistic == approx.statistic
    assert approx.p_value == pytest.approx(exact.p_value, rel=0.2)  # n = 53: the approximation is ~10 % off
    assert mann_whitney_u([1.0], [2.0]).p_value == 1.0  # n = 1 each: both orders equally likely
    assert mann_whitney_u([], [1.0]).defined is False
    assert mann_whitney_u([5, 5, 5], [5, 5], exact=False).p_value == 1.0  # all tied


def test_effect_sizes_by_hand():
    # Means 2 and 4, pooled SD 1: d = 2; df 4: J = Gamma(2) / (sqrt(2) Gamma(1.5)) = 0.797885.
    e = effect_size([1, 2, 3], [3, 4, 5])
    assert e.cohens_d == pytest.approx(2.0)
    assert e.hedges_g == pytest.approx(2.0 / (math.sqrt(2) * math.gamma(1.5)), rel=1e-12)
    assert abs(e.hedges_g - 2.0 * (1 - 3 / (4 * 4 - 1))) < 0.01  # Hedges' approximation 1 - 3/(4 df - 1)
    assert effect_size([1.0], [2.0]) == effect_size([], [])  # no variance estimate: zeros
    assert effect_size([1.0], [2.0]).cohens_d == 0.0
    assert effect_size([1.0, 1.0], [1.0]).cohens_d == 0.0


# ----------------------------------------------------------------------------------------------------------------
# Several models
# ----------------------------------------------------------------------------------------------------------------


def test_holm_hand_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06,
    # 0.06; back in input order:
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0]
    assert holm_adjust([]) == []
    with pytest.raises(ValueError):
        holm_adjust([0.1, 1.5])


def test_chi_square_homogeneity_hand_example():
    # 10/20, 15/20, 5/20: pooled 1/2, every expected count 10, X^2 = 4 * 25/10 = 10, dof 2: p = exp(-5).
    r = chi_square_homogeneity([Arm("a", 10, 20), Arm("b", 15, 20), Arm("c", 5, 20)])
    assert r.statistic == pytest.approx(10.0) and r.df == 2
    assert r.p_value == pytest.approx(math.exp(-5.0), rel=1e-12)
    assert chi_square_homogeneity([Arm("a", 3, 3), Arm("b", 4, 4)]).p_value == 1.0  # all successes
    assert chi_square_homogeneity([Arm("a", 0, 0), Arm("b", 2, 4)]).defined is False


def test_pairwise_families():
    arms = [Arm("base", 40, 100), Arm("v2", 60, 100), Arm("v3", 45, 100), Arm("v4", 75, 100)]
    vs_base = pairwise_comparisons(arms, baseline=0)
    assert [(p.a, p.b) for p in vs_base] == [("base", "v2"), ("base", "v3"), ("base", "v4")]
    assert holm_adjust([p.p_value for p in vs_base]) == [p.p_adjusted for p in vs_base]
    assert [p.significant for p in vs_base] == [True, False, True]
    everything = pairwise_comparisons(arms, baseline=None)
    assert len(everything) == 6 and all(p.p_adjusted >= p.p_value for p in everything)
    assert everything[0].difference == pytest.approx(0.2) and everything[0].interval.low > 0
    with pytest.raises(ValueError):
        pairwise_comparisons(arms[:1])
    with pytest.raises(ValueError):
        Arm("x", 3, 2)


# ----------------------------------------------------------------------------------------------------------------
# Planning and stopping
# ----------------------------------------------------------------------------------------------------------------


def test_required_trials_matches_r_power_prop_test():
    # R documentation of power.prop.test: power.prop.test(p1 = .50, p2 = .75, power = .90) gives n = 76.7.
    assert required_trials_per_arm(0.5, 0.25, alpha=0.05, power=0.9) == 77
    assert required_trials_per_arm(0.5, 0.1) > required_trials_per_arm(0.5, 0.2) > required_trials_per_arm(0.5, 0.3)
    assert required_trials_per_arm(0.7, -0.2) == required_trials_per_arm(0.5, 0.2)  # same pair of rates
    with pytest.raises(ValueError):
        required_trials_per_arm(0.9, 0.2)
    with pytest.raises(ValueError):
        required_trials_per_arm(0.5, 0.0)


def test_sequential_threshold_by_hand():
    # E_m = 2^m k! (m-k)! / (m+1)!; all discordant pairs won by B: E_10 = 1024/11 = 93 < 100 <= E_11 = 2048/12.
    r10 = sequential_test([False] * 10, [True] * 10, alpha=0.01)
    assert r10.e_value == pytest.approx(1024 / 11) and r10.crossed_at is None
    r11 = sequential_test([False] * 11 + [True], [True] * 11 + [True], alpha=0.01)
    assert r11.crossed_at == 11 and r11.direction == "B" and r11.pairs == 12 and r11.discordant == 11
    assert sequential_test([True] * 20, [False] * 20, alpha=0.01).direction == "A"
    assert sequential_test([True] * 30, [True] * 5).e_value == 1.0  # concordant pairs: no evidence
    assert sequential_test([], []).p_value == 1.0


def _simulate_h0(rate: float, experiments: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((experiments, n)) < rate, rng.random((experiments, n)) < rate


def test_sequential_rule_keeps_alpha_while_naive_peeking_does_not():
    """300 A/A experiments (both arms 50 %), 100 trials each, looked at again and again as trials come in."""
    alpha, n = 0.05, 100
    a, b = _simulate_h0(0.5, 300, n, seed=11)
    sequential_fp = decide_fp = naive_z_fp = naive_fisher_fp = 0
    for xa, xb in zip(a.tolist(), b.tolist()):
        sequential_fp += sequential_test(xa, xb, alpha).crossed_at is not None  # looked at after every pair
        decide_fp += decide(xa, xb, n, alpha).winner != ""
        ca, cb = np.cumsum(xa).tolist(), np.cumsum(xb).tolist()
        # Naive: a fixed-horizon test after every trial from n = 10 (z-test), or every 10 trials (Fisher, which
        # alone is conservative); stop at the first p < alpha.
        naive_z_fp += any(two_proportion_z_test(ca[t - 1], t, cb[t - 1], t).p_value < alpha for t in range(10, n + 1))
        naive_fisher_fp += any(fisher_exact(ca[t - 1], t, cb[t - 1], t).p_value < alpha for t in range(10, n + 1, 10))
    assert sequential_fp / 300 <= alpha  # measured 0.010
    assert decide_fp / 300 <= alpha  # the whole procedure (sequential share + one final Fisher test): 0.017
    assert naive_z_fp / 300 > 2 * alpha  # 91 looks: 0.27
    assert naive_fisher_fp / 300 > alpha  # even 10 looks with an exact test: 0.073


def test_decide_detects_a_real_difference_early_and_never_the_wrong_way():
    rng = np.random.default_rng(5)
    early = 0
    for _ in range(40):
        xa, xb = (rng.random(100) < 0.3).tolist(), (rng.random(100) < 0.8).tolist()
        d = decide(xa, xb, 100)
        assert d.verdict is Verdict.B_BETTER
        early += d.sequential.crossed_at is not None and d.sequential.crossed_at < 100
    assert early >= 30  # a 50-point gap is usually clear long before 100 trials


def test_decide_states():
    assert decide([], [], 10).verdict is Verdict.NOT_ENOUGH and decide([], [], 10).p_value == -1.0
    d = decide([True, False] * 4, [False, True] * 4, 10)
    assert d.verdict is Verdict.NOT_ENOUGH and "8 of 10" in d.message
    # 50 vs 70 of 100, the 80 discordant pairs interleaved (B A B A B B A B: 50 won by B, 30 by A), then 20 pairs
    # where both succeed: too weak for the sequential rule, clear for the one Fisher test at the planned size
    # (p = 0.006 < 0.04).
    pattern = "BABABBAB" * 10 + "=" * 20
    a = [c in "A=" for c in pattern]
    b = [c in "B=" for c in pattern]
    assert (sum(a), sum(b)) == (50, 70)
    d = decide(a, b, 100)
    assert d.sequential.crossed_at is None
    assert d.verdict is Verdict.B_BETTER and d.winner == "B" and d.p_value < 0.01
    assert d.p_value == fisher_exact(50, 100, 70, 100).p_value
    assert decide(b, a, 100).verdict is Verdict.A_BETTER
    # Trials after the planned size change nothing (that would be peeking again).
    assert decide(a + [False] * 50, b + [True] * 50, 100).p_value == d.p_value
    same = decide(a, a, 100)
    assert same.verdict is Verdict.NO_DIFFERENCE and same.winner == "" and same.p_value == 1.0
    assert decide([True], [True], 1).verdict is Verdict.NO_DIFFERENCE  # n = 1 planned: defined, no winner
    with pytest.raises(ValueError):
        decide(a, b, 0)
    with pytest.raises(ValueError):
        decide(a, b, 100, alpha=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Trial bookkeeping (comparison.py)
# ----------------------------------------------------------------------------------------------------------------


def test_ab_comparison_bookkeeping():
    c = Comparison(["v1", "v2"], MODE_AB, trials_per_model=20)
    assert c.alpha == 0.05 and c.trials_per_model == 20
    c.record("v1", True, 10.0, 0.8)
    c.record("v1", True, 12.0, -1.0)  # confidence unknown
    c.record("v1", False, 60.0)  # a failure's time (the timeout) is not a completion time
    r = c.result()
    assert not r.complete and r.p_value == -1.0 and r.winner == "" and not r.significant
    v1 = r.models[0]
    assert (v1.trials, v1.successes, v1.mean_execution_time_s) == (3, 2, 11.0)
    assert v1.grasp_confidence == pytest.approx(0.8)
    assert v1.success_ci_low == pytest.approx(wilson_interval(2, 3).low)
    assert v1.consistency_score == pytest.approx(1 - math.sqrt(2) / 11)
    assert r.models[1].grasp_confidence == -1.0 and r.models[1].consistency_score == -1.0
    for i in range(20):
        c.record("v1", i % 3 == 0, 20.0 + i)
        c.record("v2", True, 10.0 + i * 0.1)
    r = c.result()
    assert r.complete and r.winner == "v2" and r.significant and "v2 better" in r.message
    assert r.bayes is not None and r.bayes.prob_b_better > 0.99
    assert r.execution_time_test is not None and r.execution_time_test.effect < 0  # v2 faster
    with pytest.raises(ValueError):
        c.record("v9", True)
    with pytest.raises(ValueError):
        c.record("v1", True, float("nan"))
    with pytest.raises(ValueError):
        c.record("v1", True, 1.0, 1.5)


def test_detailed_comparison_and_request_validation():
    c = Comparison(["a", "b", "c"], MODE_DETAILED, trials_per_model=30, alpha=0.05)
    rates = {"a": 0.2, "b": 0.5, "c": 0.95}
    for i in range(30):
        for m, p in rates.items():
            c.record(m, (i + 0.5) / 30 < p, 15.0)
    r = c.result()
    assert r.complete and r.omnibus is not None and r.omnibus.p_value < 1e-6
    assert r.winner == "c" and r.significant and len(r.pairwise) == 3
    assert r.p_value == r.omnibus.p_value
    tie = Comparison(["a", "b", "c"], MODE_DETAILED, trials_per_model=30)
    for i in range(30):
        for m, p in {"a": 0.2, "b": 0.9, "c": 0.9}.items():
            tie.record(m, (i + 0.5) / 30 < p)
    r = tie.result()
    assert r.significant and r.winner == "" and "no single best" in r.message
    assert Comparison(["a", "b"], MODE_DETAILED, 5).result().p_value == -1.0
    for bad in [(["a"], MODE_AB), (["a", "b", "c"], MODE_AB), (list("abcde"), MODE_DETAILED),
                (["a", "a"], MODE_AB), (["a", "b"], "xyz")]:
        with pytest.raises(ValueError):
            Comparison(*bad)
    with pytest.raises(ValueError):
        Comparison(["a", "b"], MODE_AB, trials_per_model=-1)
    with pytest.raises(ValueError):
        Comparison(["a", "b"], MODE_AB, alpha=0.7)
