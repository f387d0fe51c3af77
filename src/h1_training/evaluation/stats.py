"""Statistics for comparing policies on the robot: maintained libraries for the standard parts, and here only what
no library offers (each with its reference).

From scipy / statsmodels (wrapped only to fix conventions and refuse bad input): Wilson and Clopper-Pearson
intervals (``scipy.stats.binomtest``), Newcombe's interval of a difference (``statsmodels``
``confint_proportions_2indep``), Fisher's and Boschloo's exact tests, Mann-Whitney U, the chi-square test of
homogeneity, Holm's adjustment (``statsmodels`` ``multipletests``), the normal and Beta distributions.

Written here: the anytime-valid e-process on discordant pairs with its futility bound and trial cap
(:class:`SequentialPlan`, :func:`sequential_test`), the exact fixed-sample Boschloo design it is measured against
(:func:`boschloo_fixed_n`), the sample size formula of R's ``power.prop.test`` and the Bayesian summary's
integrals (P(best), expected loss) over scipy's Beta distribution.

Conventions:

* Two arms are called A (baseline / first model) and B (challenger); every difference is **B minus A**.
* Success counts are ``successes`` out of ``trials``; impossible counts (negative, successes > trials, bools)
  raise ``ValueError`` / ``TypeError``, and so does an arm with **no trials** where a figure needs one (a rate or
  interval of nothing is refused with the reason, not invented).
* Tests return a :class:`TestResult` whose ``defined`` flag is False when the data cannot carry evidence (e.g. a
  margin of the 2x2 table is zero); the p-value is then 1.0 ("no evidence"), so it is always a number.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep

# ---------------------------------------------------------------------------------------------------------------
# Results and checks
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A two-sided interval estimate at ``confidence`` (0.95 = 95 %)."""

    low: float
    high: float
    confidence: float
    method: str


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test. ``p_value`` is always a number in [0, 1]; ``defined`` is False when the data cannot
    carry evidence (then p = 1.0 and ``note`` says why). ``effect`` is the test's natural B-minus-A estimate."""

    __test__ = False  # not a pytest class, despite the name

    test_name: str
    statistic: float
    p_value: float
    effect: float = 0.0
    df: float = 0.0
    defined: bool = True
    note: str = ""


def _check_counts(successes: int, trials: int, name: str = "", allow_empty: bool = False) -> None:
    if isinstance(successes, bool) or isinstance(trials, bool):
        raise TypeError(f"counts{name} must be integers, not bool")
    if int(successes) != successes or int(trials) != trials:
        raise ValueError(f"counts{name} must be whole numbers, got {successes}/{trials}")
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"impossible counts{name}: {successes} successes out of {trials} trials")
    if trials == 0 and not allow_empty:
        raise ValueError(f"no trials{name}: a success rate of 0 trials is unknown, not a number")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def check_alpha(alpha: float) -> None:
    """The significance levels a comparison accepts: (0, 0.5). ``ValueError`` with the reason otherwise."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 < alpha < 0.5):
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def _check_rate(rate: float, name: str) -> None:
    if not (math.isfinite(rate) and 0.0 < rate < 1.0):
        raise ValueError(f"{name} must be a success rate in (0, 1), got {rate}")


# ---------------------------------------------------------------------------------------------------------------
# Proportions (scipy / statsmodels)
# ---------------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for one success rate (``scipy.stats.binomtest(...).proportion_ci("wilson")``).

    Why Wilson and not the textbook Wald ``p +- z sqrt(p(1-p)/n)``: Wald collapses to zero width at 0/n and n/n
    and undercovers at the n of a robot evaluation; Wilson inverts the score test and stays inside [0, 1]
    (Newcombe 1998, Stat Med 17:857, method 3). ``n = 0`` is refused.
    """
    _check_counts(successes, trials)
    _check_confidence(confidence)
    ci = sps.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    low = 0.0 if successes == 0 else float(ci.low)  # exact ends at 0/n and n/n (no -1e-17 from rounding)
    high = 1.0 if successes == trials else float(ci.high)
    return Interval(low, high, confidence, "Wilson score")


def clopper_pearson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Clopper-Pearson ("exact") interval (``binomtest(...).proportion_ci("exact")``): coverage never below the
    nominal level, at the price of width; the conservative companion of :func:`wilson_interval`."""
    _check_counts(successes, trials)
    _check_confidence(confidence)
    ci = sps.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="exact")
    return Interval(float(ci.low), float(ci.high), confidence, "Clopper-Pearson exact")


def newcombe_difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = 0.95
) -> Interval:
    """Interval for ``p_B - p_A``: Newcombe's hybrid score interval (Newcombe 1998, Stat Med 17:873, method 10),
    from statsmodels ``confint_proportions_2indep(method="newcomb")``. Both arms need trials."""
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    _check_confidence(confidence)
    low, high = confint_proportions_2indep(successes_b, trials_b, successes_a, trials_a, method="newcomb",
                                           compare="diff", alpha=1.0 - confidence)
    return Interval(max(-1.0, float(low)), min(1.0, float(high)), confidence, "Newcombe hybrid score")


def _table(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> list[list[int]]:
    """The 2x2 table in scipy's orientation: columns are the samples (B first, so "greater" means B better)."""
    return [[successes_b, successes_a], [trials_b - successes_b, trials_a - successes_a]]


def _one_table_only(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> bool:
    k, n = successes_a + successes_b, trials_a + trials_b
    return trials_a == 0 or trials_b == 0 or k == 0 or k == n


def fisher_exact(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> TestResult:
    """Two-sided Fisher exact test of ``p_A == p_B`` (``scipy.stats.fisher_exact``; conditional on both margins,
    so conservative at small n - the reference next to Boschloo). ``statistic`` is the odds ratio B over A."""
    _check_counts(successes_a, trials_a, " of A", allow_empty=True)
    _check_counts(successes_b, trials_b, " of B", allow_empty=True)
    name = "two-sided Fisher exact"
    effect = _rate(successes_b, trials_b) - _rate(successes_a, trials_a)
    if _one_table_only(successes_a, trials_a, successes_b, trials_b):
        return TestResult(name, 1.0, 1.0, effect, defined=False, note="a margin is zero: only one table possible")
    res = sps.fisher_exact(_table(successes_a, trials_a, successes_b, trials_b))
    return TestResult(name, float(res.statistic), min(1.0, float(res.pvalue)), effect)


def boschloo_exact(successes_a: int, trials_a: int, successes_b: int, trials_b: int,
                   alternative: str = "two-sided") -> TestResult:
    """Boschloo's exact unconditional test (``scipy.stats.boschloo_exact``; Boschloo 1970, Statistica
    Neerlandica 24:1): Fisher's p-value as the statistic, its distribution maximised over the unknown common
    rate. Uniformly more powerful than Fisher's test at the same level, hence the fixed-sample test of an A/B
    comparison. ``alternative`` "greater" = B better. ``statistic`` is scipy's (Fisher's one-sided p)."""
    _check_counts(successes_a, trials_a, " of A", allow_empty=True)
    _check_counts(successes_b, trials_b, " of B", allow_empty=True)
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    name = "Boschloo exact" + ("" if alternative == "two-sided" else f" ({alternative})")
    effect = _rate(successes_b, trials_b) - _rate(successes_a, trials_a)
    if _one_table_only(successes_a, trials_a, successes_b, trials_b):
        return TestResult(name, 1.0, 1.0, effect, defined=False, note="a margin is zero: only one table possible")
    res = sps.boschloo_exact(_table(successes_a, trials_a, successes_b, trials_b), alternative=alternative)
    return TestResult(name, float(res.statistic), min(1.0, float(res.pvalue)), effect)


def _rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Continuous metrics: partial-credit scores, time to success (scipy)
# ---------------------------------------------------------------------------------------------------------------


def _as_sample(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"sample {name} contains NaN or inf")
    return arr


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t-test, two-sided, of ``mean_B == mean_A`` (``scipy.stats.ttest_ind`` with
    ``equal_var=False``). Welch rather than Student: two policies have no reason to share a variance. Needs >= 2
    values per arm (``defined`` False otherwise); ``effect`` is ``mean_B - mean_A``. Used by the workflow's
    deploy gate on held-out episode errors (a continuous score, not a success count)."""
    xa, xb = _as_sample(a, "A"), _as_sample(b, "B")
    name = "Welch two-sample t-test"
    effect = float(xb.mean() - xa.mean()) if xa.size and xb.size else 0.0
    if xa.size < 2 or xb.size < 2:
        return TestResult(name, 0.0, 1.0, effect, defined=False, note="needs at least 2 values per arm")
    if xa.var() == 0.0 and xb.var() == 0.0:
        if effect == 0.0:
            return TestResult(name, 0.0, 1.0, 0.0, float(xa.size + xb.size - 2), defined=False,
                              note="both samples constant and equal")
        return TestResult(name, math.copysign(math.inf, effect), 0.0, effect, float(xa.size + xb.size - 2),
                          note="both samples constant")
    res = sps.ttest_ind(xb, xa, equal_var=False)
    return TestResult(name, float(res.statistic), float(res.pvalue), effect, float(res.df))


def mann_whitney_u(a: Sequence[float], b: Sequence[float], method: str = "auto") -> TestResult:
    """Mann-Whitney U (Wilcoxon rank-sum), two-sided (``scipy.stats.mannwhitneyu``, method "auto": exact without
    ties for small samples, else the tie-corrected normal approximation; ``method`` passes through).

    Rank based, so one stuck trial does not dominate, and it needs no distribution for a task-stage score.
    ``statistic`` is ``U_B`` (pairs with b > a, ties 1/2); ``effect`` is ``U_B / (n_A n_B) - 1/2`` (probability
    of superiority minus chance). Fewer than 2 values in an arm, or all values equal: ``defined`` False.
    """
    xa, xb = _as_sample(a, "A"), _as_sample(b, "B")
    name = "Mann-Whitney U (two-sided)"
    if xa.size < 2 or xb.size < 2:
        return TestResult(name, 0.0, 1.0, defined=False, note="needs at least 2 values per arm")
    if np.all(np.concatenate([xa, xb]) == xa[0]):
        return TestResult(name, xa.size * xb.size / 2.0, 1.0, defined=False, note="all values are equal")
    res = sps.mannwhitneyu(xb, xa, alternative="two-sided", method=method)
    u_b = float(res.statistic)
    return TestResult(name, u_b, min(1.0, float(res.pvalue)), u_b / (xa.size * xb.size) - 0.5)


# ---------------------------------------------------------------------------------------------------------------
# Several models (statsmodels, scipy)
# ---------------------------------------------------------------------------------------------------------------


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979) in the input order (statsmodels ``multipletests``)."""
    ps = [float(p) for p in p_values]
    for p in ps:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be in [0, 1], got {p}")
    if not ps:
        return []
    return [float(x) for x in multipletests(ps, method="holm")[1]]


@dataclass(frozen=True)
class Arm:
    """Success counts of one model."""

    name: str
    successes: int
    trials: int

    def __post_init__(self) -> None:
        _check_counts(self.successes, self.trials, f" of {self.name!r}", allow_empty=True)

    @property
    def rate(self) -> float:
        return _rate(self.successes, self.trials)


@dataclass(frozen=True)
class PairwiseResult:
    """Arm ``b`` against arm ``a``: Fisher exact p, its Holm-adjusted value over the family, the Newcombe
    interval of ``p_b - p_a``."""

    a: str
    b: str
    difference: float
    interval: Interval
    p_value: float
    p_adjusted: float
    significant: bool


def pairwise_comparisons(
    arms: Sequence[Arm], baseline: int | None = 0, alpha: float = 0.05, confidence: float = 0.95
) -> list[PairwiseResult]:
    """Fisher exact tests between arms with Holm adjustment over the family.

    ``baseline`` = index of the reference arm (k-1 comparisons "each model vs the baseline");
    ``baseline=None``: all k(k-1)/2 pairs (needed to pick a best model among peers).
    """
    check_alpha(alpha)
    if len(arms) < 2:
        raise ValueError(f"need at least 2 arms, got {len(arms)}")
    if baseline is None:
        pairs = list(combinations(range(len(arms)), 2))
    else:
        if not 0 <= baseline < len(arms):
            raise ValueError(f"baseline index {baseline} out of range for {len(arms)} arms")
        pairs = [(baseline, j) for j in range(len(arms)) if j != baseline]
    raw = [fisher_exact(arms[i].successes, arms[i].trials, arms[j].successes, arms[j].trials).p_value
           for i, j in pairs]
    out = []
    for (i, j), p, p_adj in zip(pairs, raw, holm_adjust(raw)):
        a, b = arms[i], arms[j]
        out.append(PairwiseResult(
            a.name, b.name, b.rate - a.rate,
            newcombe_difference_interval(a.successes, a.trials, b.successes, b.trials, confidence),
            p, p_adj, p_adj <= alpha,
        ))
    return out


def chi_square_homogeneity(arms: Sequence[Arm]) -> TestResult:
    """Pearson chi-square test that k success rates are equal (k x 2 table, ``scipy.stats.chi2_contingency``
    without continuity correction). Arms with no trials are left out; ``note`` warns when an expected count is
    below 5 (the approximation is rough there)."""
    used = [a for a in arms if a.trials > 0]
    name = "chi-square homogeneity"
    if len(used) < 2:
        return TestResult(name, 0.0, 1.0, defined=False, note="fewer than 2 arms with trials")
    table = np.array([[a.successes, a.trials - a.successes] for a in used], dtype=float)
    dof = len(used) - 1
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return TestResult(name, 0.0, 1.0, df=dof, defined=False, note="all trials had one outcome")
    res = sps.chi2_contingency(table, correction=False)
    note = "some expected counts < 5: approximation is rough" if (res.expected_freq < 5).any() else ""
    return TestResult(name, float(res.statistic), min(1.0, float(res.pvalue)), df=float(res.dof), note=note)


# ---------------------------------------------------------------------------------------------------------------
# Bayesian summary (descriptive: no decision rests on it)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BayesianSummary:
    """Beta(1, 1) priors, Beta(s + 1, f + 1) posteriors per model (in input order). ``prob_best[i]`` =
    P(model i has the highest rate); ``expected_loss[i]`` = E[max_j p_j - p_i], the success rate given up on
    average by choosing model i. Labelled Bayesian everywhere it is shown: it is not the test."""

    prob_best: list[float]
    expected_loss: list[float]
    posterior_mean: list[float]


def bayesian_summary(arms: Sequence[Arm]) -> BayesianSummary:
    """P(best) and expected loss by numerical integration (``scipy.integrate.quad``) over scipy's Beta
    distributions: ``P(i best) = int f_i(x) prod_{j != i} F_j(x) dx`` and ``E[max_j p_j] = int_0^1
    (1 - prod_j F_j(x)) dx`` (Chris Stucchio, "Bayesian A/B Testing at VWO", 2015, for the loss). Deterministic
    (no Monte Carlo noise), so a displayed figure does not jitter between refreshes."""
    if len(arms) < 2:
        raise ValueError(f"need at least 2 models, got {len(arms)}")
    post = [sps.beta(a.successes + 1, a.trials - a.successes + 1) for a in arms]
    means = [float(d.mean()) for d in post]
    pts = sorted(set(min(1.0, max(0.0, m)) for m in means))
    probs = []
    for i, di in enumerate(post):
        def f(x: float, i: int = i, di=di) -> float:
            return float(di.pdf(x) * np.prod([d.cdf(x) for j, d in enumerate(post) if j != i]))
        probs.append(integrate.quad(f, 0.0, 1.0, points=pts, limit=200)[0])
    total = sum(probs)
    probs = [min(1.0, max(0.0, p / total)) for p in probs]  # remove quadrature error (they sum to 1)
    e_max = integrate.quad(lambda x: 1.0 - float(np.prod([d.cdf(x) for d in post])), 0.0, 1.0, points=pts,
                           limit=200)[0]
    loss = [max(0.0, e_max - m) for m in means]
    return BayesianSummary(probs, loss, means)


# ---------------------------------------------------------------------------------------------------------------
# Planning: fixed-sample designs
# ---------------------------------------------------------------------------------------------------------------


def required_trials_per_arm(
    baseline_rate: float, min_detectable_difference: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Trials per arm for a two-sided two-proportion test to detect ``p_B = baseline + mdd`` with the given power.

    Normal approximation without continuity correction (Fleiss, Levin & Paik 2003, eq. 4.14; the formula of R's
    ``power.prop.test``), quantiles from ``scipy.stats.norm``:
    ``n = (z_{1-alpha/2} sqrt(2 pbar qbar) + z_{power} sqrt(pA qA + pB qB))^2 / mdd^2``, rounded up. A quick
    plan; the exact design is :func:`boschloo_fixed_n`.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if not 0.0 <= baseline_rate <= 1.0:
        raise ValueError(f"baseline_rate must be in [0, 1], got {baseline_rate}")
    if min_detectable_difference == 0.0:
        raise ValueError("min_detectable_difference must be non-zero")
    pa, pb = baseline_rate, baseline_rate + min_detectable_difference
    if not 0.0 <= pb <= 1.0:
        raise ValueError(f"baseline_rate + min_detectable_difference = {pb} is not a rate")
    pbar = (pa + pb) / 2.0
    z_a, z_b = float(sps.norm.ppf(1.0 - alpha / 2.0)), float(sps.norm.ppf(power))
    n = (z_a * math.sqrt(2.0 * pbar * (1.0 - pbar)) + z_b * math.sqrt(pa * (1 - pa) + pb * (1 - pb))) ** 2
    n /= min_detectable_difference**2
    return max(1, math.ceil(n - 1e-9))


def _boundary_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "h1_training" / "boschloo_boundaries.json"


@lru_cache(maxsize=256)
def boschloo_boundary(n: int, alpha: float = 0.05, alternative: str = "two-sided") -> tuple[int, ...]:
    """The rejection region of the Boschloo test (scipy, default 32-point nuisance grid) at ``alpha`` with ``n``
    trials per arm, as ``hi[s_A]`` = the smallest ``s_B`` that rejects in B's favour (``n + 1`` when none does);
    ``alternative`` "greater" gives the one-sided test for B better.

    The region is ``{s_B >= hi[s_A]}`` plus its mirror ``{s_A >= hi[s_B]}`` (A's favour; equal n makes the test
    symmetric in the arms), and ``hi`` never decreases with ``s_A`` (Fisher's p orders the tables
    monotonically; the test file checks both facts against every table at small n). So a staircase walk finds it
    with about 2n calls of ``scipy.stats.boschloo_exact`` instead of (n + 1)^2. Cached in memory and in
    ``$XDG_CACHE_HOME/h1_training/boschloo_boundaries.json`` (Boschloo is slow: ~5-25 ms per table).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative must be two-sided or greater, got {alternative!r}")
    key = f"{n}:{alpha:.6g}:scipy{scipy.__version__}" + ("" if alternative == "two-sided" else f":{alternative}")
    path = _boundary_cache_path()
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if key in stored:
        return tuple(int(x) for x in stored[key])
    hi = [n + 1] * (n + 1)
    sb = 1
    for sa in range(n + 1):
        sb = max(sb, sa + 1)
        while sb <= n and boschloo_exact(sa, n, sb, n, alternative).p_value > alpha:
            sb += 1
        hi[sa] = sb
        if sb > n:
            break
    stored[key] = hi
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the recomputation next time
    return tuple(hi)


def boschloo_power(n: int, rate_a: float, rate_b: float, alpha: float = 0.05,
                   alternative: str = "two-sided") -> float:
    """Exact probability that the Boschloo test at ``alpha`` with ``n`` trials per arm declares **B better**
    when the true rates are ``rate_a``, ``rate_b``: the binomial probability of the rejection region
    (:func:`boschloo_boundary`) - what a simulation of infinitely many comparisons would measure."""
    hi = np.asarray(boschloo_boundary(n, alpha, alternative))
    pmf_a = sps.binom.pmf(np.arange(n + 1), n, rate_a)
    return float((pmf_a * sps.binom.sf(hi - 1, n, rate_b)).sum())


def boschloo_fixed_n(rate_a: float, rate_b: float, alpha: float = 0.05, power: float = 0.8,
                     alternative: str = "two-sided") -> int:
    """The exact fixed-sample design: the smallest ``n`` per arm at which the Boschloo test (two-sided, or
    one-sided "greater") reaches
    ``power`` for B better at these rates (scanning up from just below the normal-approximation plan; exact
    power is saw-toothed in n, so the first n that reaches it is the one an experimenter would plan)."""
    _check_rate(rate_a, "rate_a")
    _check_rate(rate_b, "rate_b")
    if rate_b <= rate_a:
        raise ValueError(f"plan B better: rate_b must exceed rate_a, got {rate_a} and {rate_b}")
    plan_alpha = alpha if alternative == "two-sided" else 2 * alpha
    n = max(2, int(0.85 * required_trials_per_arm(rate_a, rate_b - rate_a, min(0.5, plan_alpha), power)))
    while boschloo_power(n, rate_a, rate_b, alpha, alternative) < power:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------------------
# Anytime-valid sequential test on discordant pairs
# ---------------------------------------------------------------------------------------------------------------


def discordant_win_probability(rate_a: float, rate_b: float) -> float:
    """P(B is the one that succeeded | exactly one of a pair succeeded) = ``OR / (1 + OR)`` with the odds ratio
    ``OR = p_B (1 - p_A) / (p_A (1 - p_B))``: 0.8 for 50 % vs 80 %, 0.7 for 30 % vs 50 %, 1/2 when equal."""
    _check_rate(rate_a, "rate_a")
    _check_rate(rate_b, "rate_b")
    win, loss = rate_b * (1.0 - rate_a), rate_a * (1.0 - rate_b)
    return win / (win + loss)


@dataclass(frozen=True)
class SequentialPlan:
    """The design of the sequential A/B test: the planned effect and one setting for everything else.

    ``rate_a`` / ``rate_b``: the effect the comparison is planned to detect (B better). ``planned_share``: the
    part of alpha spent on "B better" (the rest on "A better"). ``futility``: stop without a winner when the
    e-value falls to this. ``cap_factor``: the trial cap per model is this times the normal-approximation
    fixed-sample n (power 0.8) for the plan; ``max_pairs`` > 0 overrides it.

    The defaults were chosen once, by the seeded simulation of ``h1-training bench ab`` (the same constants for
    every plan), to save >= 25 % of the trials of the exact fixed design at power >= 0.8 for 50 % vs 80 % and
    30 % vs 50 %.
    """

    rate_a: float = 0.5
    rate_b: float = 0.8
    alpha: float = 0.05
    planned_share: float = 0.8
    futility: float = 0.2
    cap_factor: float = 1.6
    max_pairs: int = 0

    def __post_init__(self) -> None:
        _check_rate(self.rate_a, "planned rate_a")
        _check_rate(self.rate_b, "planned rate_b")
        if self.rate_b <= self.rate_a:
            raise ValueError(f"the plan is 'B better': planned rate_b must exceed rate_a, got {self.rate_a} and "
                             f"{self.rate_b}")
        check_alpha(self.alpha)
        if not 0.0 < self.planned_share < 1.0:
            raise ValueError(f"planned_share must be in (0, 1), got {self.planned_share}")
        if not 0.0 <= self.futility < 1.0:
            raise ValueError(f"futility must be in [0, 1), got {self.futility}")
        if not self.cap_factor > 0.0:
            raise ValueError(f"cap_factor must be > 0, got {self.cap_factor}")
        if self.max_pairs < 0:
            raise ValueError(f"max_pairs must be >= 0 (0 = from the plan), got {self.max_pairs}")

    @property
    def q1(self) -> float:
        """Planned P(B wins a discordant pair)."""
        return discordant_win_probability(self.rate_a, self.rate_b)

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    @property
    def cap_pairs(self) -> int:
        """Trials per model after which the comparison stops without a winner."""
        if self.max_pairs:
            return self.max_pairs
        n = required_trials_per_arm(self.rate_a, self.rate_b - self.rate_a, self.alpha, 0.8)
        return max(2, math.ceil(self.cap_factor * n))

    def log_e(self, b_wins: np.ndarray | int, discordant: np.ndarray | int) -> np.ndarray | float:
        """log of the e-value after ``discordant`` discordant pairs of which B won ``b_wins`` (numpy-friendly)."""
        q = self.q1
        k = np.asarray(b_wins, dtype=float)
        m = np.asarray(discordant, dtype=float)
        up = math.log(self.planned_share) + k * math.log(2 * q) + (m - k) * math.log(2 * (1 - q))
        down = math.log(1 - self.planned_share) + (m - k) * math.log(2 * q) + k * math.log(2 * (1 - q))
        out = np.logaddexp(up, down)
        return float(out) if out.ndim == 0 else out


class Stop(str, Enum):
    """Why a sequential comparison ended (or ``RUNNING`` while it has not)."""

    RUNNING = "running"
    EFFICACY = "efficacy"  # the e-value reached 1/alpha: a winner
    FUTILITY = "futility"  # the e-value fell to the futility bound: no winner
    CAP = "cap"  # the trial cap was reached without either: no winner


@dataclass(frozen=True)
class SequentialResult:
    """The e-process after the complete pairs seen so far (or at the pair where it stopped)."""

    pairs: int  # pairs used (up to the stop)
    discordant: int
    b_wins: int
    e_value: float  # at the last pair used
    threshold: float  # 1/alpha
    futility: float
    cap_pairs: int
    stop: Stop
    direction: str  # "B" or "A" when stop is EFFICACY, else ""
    p_value: float  # anytime-valid: min(1, 1/max e-value so far)
    expected_more_pairs: int  # at the current gap, about this many more pairs to a boundary; -1 unknown / stopped


def sequential_test(outcomes_a: Sequence[float], outcomes_b: Sequence[float],
                    plan: SequentialPlan = SequentialPlan()) -> SequentialResult:
    """Anytime-valid test of "A and B are equally good" on paired, interleaved trials. Safe after every trial.

    Pair the i-th trial of A with the i-th of B (the scheduler interleaves them in random blocks); a pair where
    the outcomes differ is *discordant*. Outcomes may be success flags or partial-credit scores: a discordant
    pair is one where the scores differ, B winning it when its score is higher (binary outcomes are the special
    case). Under H0 - both models equally likely to do better in each pair, whatever drifts from pair to pair
    (battery, objects, the operator) - each discordant pair is a fair coin. The e-process is the mixture of two
    likelihood ratios against the planned effect (B wins a discordant pair with probability q1, or A does):

        E_m = w (2 q1)^k (2 (1 - q1))^(m - k) + (1 - w) (2 q1)^(m - k) (2 (1 - q1))^k

    after m discordant pairs of which B won k (w = ``plan.planned_share``). Each term is Wald's likelihood ratio
    of a simple alternative to the fair coin (Wald 1945, Ann Math Stat 16:117), so E is a non-negative
    martingale with mean 1 under H0 and Ville's inequality gives ``P(sup_m E_m >= 1/alpha) <= alpha``: stopping
    when E reaches 1/alpha keeps the false-positive rate <= alpha however often one looks and whenever one stops
    (the e-process / safe-testing view: Ramdas, Grunwald, Vovk & Shafer 2023, "Game-theoretic statistics and
    safe anytime-valid inference", Statistical Science 38:576; Grunwald, de Heide & Koolen 2024, "Safe testing",
    JRSS B 86:1091). Aiming at the planned q1 (rather than a generic betting strategy) maximises the growth of E
    under the planned effect, which is what makes it beat a fixed design on average.

    Futility: stopping when E falls to ``plan.futility`` never adds false positives (it only ends without a
    winner), and since ``1 / ((w) LR_q1)`` is itself a martingale under the planned effect, a true effect as large
    as planned is abandoned this way with probability <= ``futility / w``. Cap: at ``plan.cap_pairs`` pairs the
    comparison ends without a winner.
    """
    a = _as_sample(outcomes_a, "A")
    b = _as_sample(outcomes_b, "B")
    pairs = min(a.size, b.size)
    a, b = a[:pairs], b[:pairs]
    cap = plan.cap_pairs
    log_thr, log_fut = math.log(plan.threshold), (math.log(plan.futility) if plan.futility > 0 else -math.inf)
    disc = a != b
    m = np.cumsum(disc)
    k = np.cumsum(disc & (b > a))
    log_e = np.asarray(plan.log_e(k, m), dtype=float).reshape(-1) if pairs else np.zeros(0)
    stop, used = Stop.RUNNING, pairs
    hit = np.flatnonzero((log_e >= log_thr) | (log_e <= log_fut))
    if hit.size and hit[0] < cap:
        used = int(hit[0]) + 1
        stop = Stop.EFFICACY if log_e[hit[0]] >= log_thr else Stop.FUTILITY
    elif pairs >= cap:
        used, stop = cap, Stop.CAP
    mm, kk = (int(m[used - 1]), int(k[used - 1])) if used else (0, 0)
    le = float(log_e[used - 1]) if used else 0.0
    max_le = max(0.0, float(log_e[:used].max())) if used else 0.0
    direction = ("B" if 2 * kk > mm else "A") if stop is Stop.EFFICACY else ""
    more = -1
    if stop is Stop.RUNNING:
        more = _expected_more_pairs(plan, kk, mm, used, le)
    return SequentialResult(used, mm, kk, math.exp(le), plan.threshold, plan.futility, cap, stop, direction,
                            min(1.0, math.exp(-max_le)), more)


def _expected_more_pairs(plan: SequentialPlan, k: int, m: int, pairs: int, log_e: float) -> int:
    """About how many more pairs until E reaches a boundary if the current gap persists (Wald's approximation:
    distance / drift per pair), with the gap estimated with a Beta(1, 1) prior on the discordant-pair split and
    on the share of discordant pairs; never beyond the cap."""
    q = plan.q1
    q_hat = (k + 1) / (m + 2)
    d_hat = (m + 1) / (pairs + 2)
    lead = q_hat if 2 * k >= m else 1.0 - q_hat  # the leading direction's share (ties: the plan's, B)
    drift = d_hat * (lead * math.log(2 * q) + (1 - lead) * math.log(2 * (1 - q)))  # of the dominant term
    remaining = plan.cap_pairs - pairs
    if drift > 1e-9:
        n = (math.log(plan.threshold) - log_e) / drift
    elif plan.futility > 0 and drift < -1e-9:
        n = (math.log(plan.futility) - log_e) / drift
    else:
        return remaining
    return int(min(remaining, max(1, math.ceil(n))))
