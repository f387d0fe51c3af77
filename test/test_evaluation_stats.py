"""Statistics for model comparison (evaluation/stats.py, evaluation/comparison.py), checked against published
tables and worked examples (cited at each test), exact enumerations and closed forms; the sequential test by
hand-computed e-values and a seeded simulation. Pure, no ROS; the file runs in a few seconds."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as sps

from h1_training.bench.ab import simulate
from h1_training.evaluation import stats as st
from h1_training.evaluation.comparison import MODE_AB, MODE_DETAILED, Comparison, ComparisonLifecycle, State
from h1_training.evaluation.stats import (
    Arm,
    SequentialPlan,
    Stop,
    bayesian_summary,
    boschloo_exact,
    chi_square_homogeneity,
    clopper_pearson_interval,
    fisher_exact,
    holm_adjust,
    mann_whitney_u,
    newcombe_difference_interval,
    pairwise_comparisons,
    required_trials_per_arm,
    sequential_test,
    wilson_interval,
)

# ----------------------------------------------------------------------------------------------------------------
# One proportion
# ----------------------------------------------------------------------------------------------------------------

# Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison of seven methods",
# Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction), 95 %.
NEWCOMBE_1998_WILSON = [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
                        (1, 29, 0.0061, 0.1718)]


@pytest.mark.parametrize(("s", "n", "low", "high"), NEWCOMBE_1998_WILSON)
def test_wilson_newcombe_table_1(s, n, low, high):
    ci = wilson_interval(s, n)
    assert (round(ci.low, 4), round(ci.high, 4)) == (low, high)


def test_wilson_edges_and_refusals():
    assert wilson_interval(0, 20).low == 0.0 and wilson_interval(20, 20).high == 1.0  # 0/n, n/n
    full = wilson_interval(7, 7)
    assert 0.6 < full.low < 0.7
    assert wilson_interval(30, 100, 0.99).low < wilson_interval(30, 100, 0.9).low
    with pytest.raises(ValueError, match="no trials"):
        wilson_interval(0, 0)  # n = 0: refused with the reason
    for bad in [(5, 3), (-1, 3)]:
        with pytest.raises(ValueError, match="impossible"):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 3, confidence=1.0)
    with pytest.raises(TypeError):
        wilson_interval(True, 3)


def test_clopper_pearson_closed_forms():
    # Clopper & Pearson (1934), Biometrika 26:404: at 0/n the upper limit solves (1 - p)^n = alpha/2, at n/n the
    # lower one p^n = alpha/2; in between the limits are Beta quantiles (Beta(x, n-x+1), Beta(x+1, n-x)).
    for n in (1, 5, 20, 63):
        assert clopper_pearson_interval(0, n).high == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
        assert clopper_pearson_interval(0, n).low == 0.0
        assert clopper_pearson_interval(n, n).low == pytest.approx(0.025 ** (1 / n), rel=1e-9)
        assert clopper_pearson_interval(n, n).high == 1.0
    ci = clopper_pearson_interval(7, 30)
    assert ci.low == pytest.approx(sps.beta.ppf(0.025, 7, 24)) and ci.high == pytest.approx(sps.beta.ppf(0.975, 8, 23))
    assert ci.low < wilson_interval(7, 30).low and ci.high > wilson_interval(7, 30).high  # exact is wider here
    with pytest.raises(ValueError, match="no trials"):
        clopper_pearson_interval(0, 0)


# ----------------------------------------------------------------------------------------------------------------
# Two proportions
# ----------------------------------------------------------------------------------------------------------------


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


def test_newcombe_difference_refuses_an_empty_arm():
    with pytest.raises(ValueError, match="no trials of A"):
        newcombe_difference_interval(0, 0, 3, 3)


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


def test_fisher_and_boschloo_edges():
    for case in [(0, 0, 0, 0), (0, 0, 3, 5), (4, 4, 6, 6), (0, 4, 0, 6)]:
        for test in (fisher_exact, boschloo_exact):
            r = test(*case)
            assert r.p_value == 1.0 and not r.defined, (test, case)  # one table only: no evidence
    assert fisher_exact(1, 1, 0, 1).p_value == 1.0  # n = 1 per arm: the only two tables are equally likely
    assert boschloo_exact(0, 10, 10, 10).p_value < 1e-4  # 0/n vs n/n
    with pytest.raises(ValueError):
        fisher_exact(3, 2, 1, 2)
    with pytest.raises(ValueError, match="alternative"):
        boschloo_exact(1, 2, 1, 2, "bigger")


def test_boschloo_scipy_documentation_example():
    # scipy.stats.boschloo_exact documentation: table [[74, 31], [43, 32]], alternative "greater": statistic
    # 0.0483, p-value 0.0355 (as printed there, 4 decimals). Columns are the samples: B = 74/117, A = 31/63.
    r = boschloo_exact(31, 63, 74, 117, alternative="greater")
    assert r.statistic == pytest.approx(0.0483, abs=1e-4) and r.p_value == pytest.approx(0.0355, abs=1e-4)
    assert boschloo_exact(31, 63, 74, 117).p_value <= fisher_exact(31, 63, 74, 117).p_value  # more powerful


def test_boschloo_boundary_matches_every_table(tmp_path, monkeypatch):
    """The staircase region (about 2n scipy calls) equals the region from testing all (n + 1)^2 tables."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    st.boschloo_boundary.cache_clear()
    n = 8
    hi = st.boschloo_boundary(n, 0.05)
    assert list(hi) == sorted(hi)  # never decreases
    for sa in range(n + 1):
        for sb in range(n + 1):
            rejects = boschloo_exact(sa, n, sb, n).p_value <= 0.05
            assert rejects == (sb >= hi[sa] or sa >= hi[sb]), (sa, sb)
    assert (tmp_path / "h1_training" / "boschloo_boundaries.json").exists()  # cached for the bench
    # exact power = binomial probability of the region
    pa, pb = 0.2, 0.9
    power = sum(sps.binom.pmf(sa, n, pa) * sps.binom.pmf(sb, n, pb)
                for sa in range(n + 1) for sb in range(n + 1) if sb >= hi[sa])
    assert st.boschloo_power(n, pa, pb) == pytest.approx(power, rel=1e-12)
    st.boschloo_boundary.cache_clear()


# ----------------------------------------------------------------------------------------------------------------
# Scores and times
# ----------------------------------------------------------------------------------------------------------------


def test_mann_whitney_worked_examples():
    # n = 3 + 3: C(6, 3) = 20 equally likely splits; complete separation is 1 of 20 per side: p = 2/20 = 0.1.
    r = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert r.p_value == pytest.approx(0.1, rel=1e-12) and r.statistic == 9.0 and r.effect == 0.5
    # R: wilcox.test(c(4,5,6), c(1,2,3), exact = FALSE) -> p = 0.08086 (continuity-corrected normal).
    assert round(mann_whitney_u([1, 2, 3], [4, 5, 6], method="asymptotic").p_value, 5) == 0.08086
    # Partial-credit stages with ties: B higher in the common-language sense
    a, b = [0.25, 0.5, 0.5, 1.0, 0.0, 0.25], [1.0, 1.0, 0.75, 0.5, 1.0, 0.75]
    r = mann_whitney_u(a, b)
    u = sum((y > x) + 0.5 * (y == x) for x in a for y in b)
    assert r.statistic == u and r.effect == pytest.approx(u / 36 - 0.5) and r.p_value < 0.05


def test_mann_whitney_edges():
    assert mann_whitney_u([1.0], [2.0]).defined is False
    assert mann_whitney_u([], [1.0, 2.0]).defined is False
    same = mann_whitney_u([1.0, 1.0, 1.0], [1.0, 1.0])
    assert same.defined is False and same.p_value == 1.0
    with pytest.raises(ValueError):
        mann_whitney_u([1.0, float("nan")], [1.0, 2.0])


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
# Bayesian summary
# ----------------------------------------------------------------------------------------------------------------


def _miller_prob_b_beats_a(sa: int, na: int, sb: int, nb: int) -> float:
    """Evan Miller, "Formulas for Bayesian A/B testing" (2015): P(p_B > p_A) for Beta(1,1) priors, exact sum."""
    a_a, b_a, a_b, b_b = sa + 1, na - sa + 1, sb + 1, nb - sb + 1
    lb = math.lgamma
    def log_beta(x, y):
        return lb(x) + lb(y) - lb(x + y)
    return sum(math.exp(log_beta(a_a + i, b_a + b_b) - math.log(b_b + i) - log_beta(1 + i, b_b) - log_beta(a_a, b_a))
               for i in range(a_b))


def test_bayesian_probability_best_matches_closed_forms():
    # Hand integral: A 0/1 -> Beta(1,2), B 1/1 -> Beta(2,1); P(pB > pA) = 5/6.
    assert bayesian_summary([Arm("a", 0, 1), Arm("b", 1, 1)]).prob_best[1] == pytest.approx(5 / 6, rel=1e-9)
    for case in [(3, 10, 8, 12), (20, 40, 31, 40), (0, 5, 5, 5), (50, 100, 52, 100)]:
        s = bayesian_summary([Arm("a", *case[:2]), Arm("b", *case[2:])])
        assert s.prob_best[1] == pytest.approx(_miller_prob_b_beats_a(*case), abs=1e-7), case
        assert sum(s.prob_best) == pytest.approx(1.0)
    even = bayesian_summary([Arm("a", 0, 0), Arm("b", 0, 0), Arm("c", 0, 0)])  # no trials: uniform priors
    assert even.prob_best == pytest.approx([1 / 3] * 3, abs=1e-6)
    # Expected loss against Monte Carlo, and the identity E[max] - E[p_i] for the three-model case
    arms = [Arm("a", 10, 20), Arm("b", 15, 20), Arm("c", 12, 20)]
    s = bayesian_summary(arms)
    rng = np.random.default_rng(0)
    draws = np.stack([rng.beta(a.successes + 1, a.trials - a.successes + 1, 400_000) for a in arms])
    mc_loss = (draws.max(axis=0) - draws).mean(axis=1)
    assert s.expected_loss == pytest.approx(mc_loss.tolist(), abs=2e-3)
    assert s.prob_best == pytest.approx(np.bincount(draws.argmax(axis=0), minlength=3) / 400_000, abs=3e-3)
    assert s.expected_loss[1] == min(s.expected_loss)
    with pytest.raises(ValueError):
        bayesian_summary([Arm("a", 1, 2)])


# ----------------------------------------------------------------------------------------------------------------
# Planning and the sequential test
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


def test_discordant_win_probability_and_plan_checks():
    assert st.discordant_win_probability(0.5, 0.8) == pytest.approx(0.8)
    assert st.discordant_win_probability(0.3, 0.5) == pytest.approx(0.7)
    assert st.discordant_win_probability(0.4, 0.4) == pytest.approx(0.5)
    for bad in [dict(rate_a=0.8, rate_b=0.5), dict(rate_a=0.0), dict(alpha=0.5), dict(alpha=0.0),
                dict(futility=1.0), dict(planned_share=1.0), dict(max_pairs=-1)]:
        with pytest.raises(ValueError):
            SequentialPlan(**bad)
    # the cap: 1.6 x the normal-approximation fixed n (39 for 50 % vs 80 %)
    assert SequentialPlan().cap_pairs == math.ceil(1.6 * required_trials_per_arm(0.5, 0.3)) == 63
    assert SequentialPlan(max_pairs=30).cap_pairs == 30


def test_sequential_e_values_by_hand():
    plan = SequentialPlan()  # q1 = 0.8, w = 0.8, threshold 20, futility 0.2
    def e(k, m):
        return 0.8 * 1.6**k * 0.4 ** (m - k) + 0.2 * 1.6 ** (m - k) * 0.4**k
    # B wins every pair: E_6 = 13.4 < 20 <= E_7 = 21.5: stops at pair 7 for B
    r = sequential_test([0] * 10, [1] * 10, plan)
    assert (r.stop, r.pairs, r.direction) == (Stop.EFFICACY, 7, "B")
    assert r.e_value == pytest.approx(e(7, 7)) and e(6, 6) < 20
    assert r.p_value == pytest.approx(1 / e(7, 7))
    # A wins every pair: the reverse direction has 1/5 of alpha, so it needs 1.6^j >= 100: pair 10
    r = sequential_test([1] * 12, [0] * 12, plan)
    assert (r.stop, r.pairs, r.direction) == (Stop.EFFICACY, 10, "A")
    # alternating wins: E = 0.64^j after 2j discordant pairs; 0.64^4 = 0.168 <= 0.2: futility at pair 8
    r = sequential_test([0, 1] * 6, [1, 0] * 6, plan)
    assert (r.stop, r.pairs, r.direction) == (Stop.FUTILITY, 8, "") and r.e_value == pytest.approx(0.64**4)
    # concordant pairs carry no evidence; the cap ends it without a winner
    r = sequential_test([1] * 5, [1] * 5, SequentialPlan(max_pairs=5))
    assert (r.stop, r.e_value, r.direction) == (Stop.CAP, 1.0, "")
    running = sequential_test([1, 0, 1], [1, 1, 1], plan)
    assert running.stop is Stop.RUNNING and 0 < running.expected_more_pairs <= plan.cap_pairs - 3
    assert sequential_test([], [], plan).p_value == 1.0
    # scores: a pair is discordant when the scores differ; binary outcomes are the special case
    scores = sequential_test([0.25, 0.5, 0.5], [0.75, 0.75, 1.0], plan)
    assert scores.discordant == 3 and scores.b_wins == 3


def test_bench_simulation_runs_the_same_rule():
    plan = SequentialPlan(0.3, 0.5, max_pairs=40)
    rng = np.random.default_rng(2)
    a, b = rng.random((300, 40)) < 0.3, rng.random((300, 40)) < 0.55
    sim = simulate(plan, a, b)
    for i in range(300):
        r = sequential_test(a[i], b[i], plan)
        assert r.pairs == sim["pairs"][i] and (r.stop is Stop.EFFICACY) == sim["efficacy"][i]
        assert (r.stop is Stop.FUTILITY) == sim["futility"][i] and (r.direction == "B") == sim["b_better"][i]


def test_anytime_valid_under_h0_while_naive_peeking_is_not():
    """4000 A/A comparisons at 50 %, looked at after every pair up to the cap: Ville's bound holds; a Fisher
    test repeated every 5 pairs does not."""
    plan = SequentialPlan()
    rng = np.random.default_rng(11)
    a, b = rng.random((4000, plan.cap_pairs)) < 0.5, rng.random((4000, plan.cap_pairs)) < 0.5
    fpr = simulate(plan, a, b)["efficacy"].mean()
    assert fpr <= plan.alpha  # measured 0.036 (Monte Carlo SE 0.003)
    # no futility, no cap effect on validity: the bare e-process never reaching 1/alpha on 2000 runs of 200
    bare = SequentialPlan(futility=0.0, max_pairs=200)
    a2, b2 = rng.random((2000, 200)) < 0.8, rng.random((2000, 200)) < 0.8
    assert simulate(bare, a2, b2)["efficacy"].mean() <= plan.alpha
    ca, cb = np.cumsum(a[:400], axis=1), np.cumsum(b[:400], axis=1)
    naive = sum(any(fisher_exact(int(ca[i, t - 1]), t, int(cb[i, t - 1]), t).p_value <= 0.05
                    for t in range(10, plan.cap_pairs + 1, 5)) for i in range(400))
    assert naive / 400 > plan.alpha  # repeated fixed-sample tests inflate the false-positive rate (~0.1)


# ----------------------------------------------------------------------------------------------------------------
# Comparison bookkeeping and lifecycle (comparison.py)
# ----------------------------------------------------------------------------------------------------------------


def test_ab_comparison_bookkeeping():
    c = Comparison(["v1", "v2"], MODE_AB)
    assert c.alpha == 0.05 and c.trials_per_model == 63  # cap from the default plan
    r = c.result()
    assert r.models[0].success_ci_low == 0.0 and r.models[0].success_ci_high == 1.0  # no trials: nothing known
    assert r.difference is None and "no trials yet" in r.message
    c.record("v1", True, 10.0, 0.8, 1.0)
    c.record("v1", True, 12.0, -1.0, 1.0)  # confidence unknown
    c.record("v1", False, 60.0, -1.0, 0.25)  # a failure's time (the timeout) is not a completion time
    c.record("v2", True, 9.0)  # no score
    r = c.result()
    assert not r.complete and r.winner == "" and not r.significant and r.stop_reason == ""
    v1 = r.models[0]
    assert (v1.trials, v1.successes, v1.mean_execution_time_s, v1.scored_trials) == (3, 2, 11.0, 3)
    assert v1.mean_score == pytest.approx(0.75) and r.models[1].mean_score == -1.0
    assert v1.grasp_confidence == pytest.approx(0.8)
    assert v1.consistency_score == pytest.approx(1 - math.sqrt(2) / 11)
    assert "not yet distinguishable" in r.message and "more trials per model expected at this gap" in r.message
    for i in range(30):
        c.record("v1", i % 3 == 0, 20.0 + i, -1.0, 0.25 + 0.75 * (i % 3 == 0))
        c.record("v2", True, 10.0 + i * 0.1, -1.0, 1.0)
    r = c.result()
    assert r.complete and r.winner == "v2" and r.significant and r.stop_reason == "efficacy"
    assert r.message.startswith("v2 better than v1: success ") and ">= 20" in r.message
    assert r.difference is not None and r.difference.low > 0
    assert r.reference is not None and r.reference.test_name == "Boschloo exact"
    assert r.score_test is not None and r.score_test.effect > 0
    assert r.time_test is not None and r.time_test.effect < 0  # v2 faster
    assert r.bayes is not None and r.bayes.prob_best[1] > 0.99
    with pytest.raises(ValueError):
        c.record("v9", True)
    with pytest.raises(ValueError):
        c.record("v1", True, float("nan"))
    with pytest.raises(ValueError):
        c.record("v1", True, 1.0, 1.5)
    with pytest.raises(ValueError, match="score"):
        c.record("v1", True, 1.0, -1.0, 1.2)


def test_lifecycle_refuses_bad_requests_and_runs_to_a_verdict():
    life = ComparisonLifecycle(seed=3)
    known = ["a", "b", "c", "d", "e"]
    asked = []
    def listing():
        asked.append(1)
        return known
    refusals = [
        ((["a"], "", 0, 0.0), "a comparison needs 2 to 4 models, got 1"),
        ((["a", "b", "c", "d", "e"], "", 0, 0.0), "2 to 4 models, got 5"),
        ((["a", "b", "c"], "ab", 0, 0.0), "A/B needs exactly 2 models, got 3"),
        ((["a", "b"], "ab", 0, 0.5), "alpha must be in (0, 0.5)"),
        ((["a", "b"], "ab", 0, -0.1), "alpha must be in (0, 0.5)"),
        ((["a", "b"], "ab", 0, math.nan), "alpha must be a number"),
    ]
    for args, reason in refusals:
        with pytest.raises(ValueError, match=re.escape(reason)):
            life.start(*args, (0.5, 0.8), listing)
    assert not asked  # a wrong request needs no server
    with pytest.raises(ValueError, match="planned rate_b must exceed rate_a"):
        life.start(["a", "b"], "ab", 0, 0.0, (0.8, 0.5), listing)
    with pytest.raises(ValueError, match="unknown model id 'zz'; the policy server has: a, b"):
        life.start(["a", "zz"], "ab", 0, 0.0, (0.5, 0.8), listing)
    out = life.record("a", True)
    assert not out.accepted and "no comparison is running" in out.message  # a label with no trial running
    assert life.next_model() == (False, "no comparison is running")
    msg = life.start(["a", "b"], "", 0, 0.0, (0.5, 0.8), listing)
    assert "planned for 50 % vs 80 %" in msg and life.state is State.RUNNING
    with pytest.raises(ValueError, match="is running; stop it first"):
        life.start(["a", "b"], "", 0, 0.0, (0.5, 0.8), listing)
    assert not life.record("c", True).accepted
    for _ in range(40):
        ok, model = life.next_model()
        assert ok
        out = life.record(model, model == "b", auto_deploy=True)
        assert out.accepted
        if life.state is State.COMPLETED:
            break
    assert out.deploy == "b" and "COMPLETED" in out.message and "Deploying b" in life.note
    assert [m.trials for m in life.comparison.models.values()] == [7, 7]
    life.deployed(life.comparison_id, "Deployed b.")
    assert life.summary().endswith("Deployed b.") and "Bayesian (Beta(1,1) priors, not the test)" in life.summary()
    assert not life.record("a", True).accepted
    assert life.stop() == (False, "no comparison is running")


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


def test_bench_exit_status_follows_its_targets(capsys):
    from h1_training.bench.report import missed
    from h1_training.commands.bench import exit_status

    def finished(figures: dict) -> dict:
        return {**figures, "missed_targets": missed(figures)}

    ab_missed = finished({"targets": {"power >= 0.8": False, "false_positive_rate <= 0.05": True}})
    assert exit_status({"ab": ab_missed}, no_fail=False) == 1
    assert "ab: power >= 0.8" in capsys.readouterr().err
    assert exit_status({"ab": ab_missed}, no_fail=True) == 0
    assert exit_status({"ab": finished({"targets": {"power >= 0.8": True}})}, no_fail=False) == 0
    assert exit_status({"ab": finished({"targets": {"power >= 0.8": None}})}, no_fail=False) == 1  # not measured
    assert exit_status({"serve": finished({"latency_p50_ms": 4.0})}, no_fail=False) == 0  # a bench without targets


def test_partial_credit_part_replays_measured_trials_and_scores_need_fewer_pairs():
    """`bench ab`'s replay of two checkpoints' per-trial scores: the score test plans for the pools' own split of
    discordant pairs and, with informative near misses, stops sooner than the success-only test at no power
    cost; a last checkpoint that is not better is reported as skipped, not compared."""
    from h1_training.bench.ab import _checkpoint_part

    rng = np.random.default_rng(5)
    first = {"model_id": "m0", "trials": [{"score": s} for s in [1.0] * 6 + list(rng.uniform(0.0, 0.5, 14))]}
    last = {"model_id": "m5", "trials": [{"score": s} for s in [1.0] * 14 + list(rng.uniform(0.4, 0.9, 6))]}
    out = _checkpoint_part(rng, 2000, 0.05, {"first": first, "last": last}, "test pools")
    assert (out["rate_a"], out["rate_b"], out["trials_per_model"]) == (0.3, 0.7, [20, 20])
    assert out["score_asn_per_arm"] < out["binary_asn_per_arm"] and out["score_saving_pct"] > 0
    assert out["score_power"] >= out["binary_power"] - 0.02
    worse = _checkpoint_part(rng, 2000, 0.05, {"first": last, "last": first}, "swapped")
    assert "skipped" in worse and "binary_asn_per_arm" not in worse
