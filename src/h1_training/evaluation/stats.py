"""Statistics for comparing policies on the robot: the one place for the project's tests, intervals and plans.

Pure Python + numpy (no scipy): every distribution function used here is written out below, so the numbers a
comparison reports can be traced to a formula in this file. Conventions:

* Two arms are called A (baseline / first model) and B (challenger); every difference is **B minus A**.
* Success counts are ``successes`` out of ``trials``; impossible counts (negative, successes > trials) raise
  ``ValueError``; empty or degenerate data (0/0, all successes, n = 1) give defined results, never NaN.
* Tests return a :class:`TestResult` whose ``defined`` flag is False when the data cannot carry evidence
  (e.g. a t-test with one trial); the p-value is then 1.0 ("no evidence"), so it is always a number.

Sections: special functions (normal, log-gamma helpers, regularized incomplete beta and gamma, t and chi-square
distributions) - proportions (Wilson, Newcombe, Fisher, z-test, Beta-Binomial) - continuous metrics (Welch,
Mann-Whitney, Cohen's d / Hedges' g) - several models (Holm, pairwise, chi-square homogeneity) - planning and
stopping (sample size, the paired mixture SPRT, :func:`decide`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import combinations

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------------------------------

_EPS = 1e-15  # relative accuracy target of the continued fractions / series
_FPMIN = 1e-300  # Lentz's guard against division by zero
_MAXIT = 10_000


def norm_cdf(x: float) -> float:
    """Standard normal CDF via ``erfc`` (accurate in the lower tail, where ``1 - erf`` would cancel)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_sf(x: float) -> float:
    """Standard normal upper tail ``1 - Phi(x)``, computed without cancellation."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Standard normal quantile: Acklam's rational approximation (rel. error 1e-9) plus one Halley step on
    ``erfc``, which brings it to ~1e-15. ``ValueError`` outside (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"norm_ppf needs 0 < p < 1, got {p}")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    p_low = 0.02425
    if p < p_low:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    elif p <= 1.0 - p_low:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
            ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    else:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    # One Halley refinement step (Acklam's note): e is the CDF error, u = e / pdf.
    e = norm_cdf(x) - p
    u = e * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0)
    return x - u / (1.0 + x * u / 2.0)


def log_beta(a: float, b: float) -> float:
    """``log B(a, b)`` via ``lgamma`` (the factorial-sized numbers never appear)."""
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def log_comb(n: int, k: int) -> float:
    """``log C(n, k)`` via ``lgamma``; ``-inf`` outside 0 <= k <= n."""
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, modified Lentz (Numerical Recipes 3rd ed., 6.4)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, _MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # even step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # odd step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``, a, b > 0.

    Numerical Recipes: the prefactor ``x^a (1-x)^b / (a B(a,b))`` in log space times the continued fraction,
    which converges fast for ``x < (a+1)/(a+b+2)``; above that point the symmetry ``I_x(a,b) = 1 - I_{1-x}(b,a)``
    is used so the fraction is always evaluated where it converges.
    """
    if a <= 0.0 or b <= 0.0:
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def gammainc_lower(a: float, x: float) -> float:
    """Regularized lower incomplete gamma ``P(a, x)``, a > 0.

    Numerical Recipes 6.2: the power series for ``x < a + 1`` (where it converges quickly), otherwise
    ``1 - Q(a, x)`` with Q from the Legendre continued fraction (modified Lentz).
    """
    if a <= 0.0:
        raise ValueError(f"gammainc_lower needs a > 0, got {a}")
    if x <= 0.0:
        return 0.0
    if math.isinf(x):
        return 1.0
    if x < a + 1.0:
        return _gamma_series(a, x)
    return 1.0 - _gamma_cf(a, x)


def gammainc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma ``Q(a, x) = 1 - P(a, x)``, computed directly in the tail."""
    if a <= 0.0:
        raise ValueError(f"gammainc_upper needs a > 0, got {a}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return 1.0 - _gamma_series(a, x)
    return _gamma_cf(a, x)


def _gamma_series(a: float, x: float) -> float:
    ap, total = a, 1.0 / a
    term = total
    for _ in range(_MAXIT):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            return total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    raise ArithmeticError(f"incomplete gamma series did not converge (a={a}, x={x})")


def _gamma_cf(a: float, x: float) -> float:
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _MAXIT + 1):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = b + an / c
        c = c if abs(c) > _FPMIN else _FPMIN
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h
    raise ArithmeticError(f"incomplete gamma continued fraction did not converge (a={a}, x={x})")


def t_cdf(t: float, df: float) -> float:
    """Student t CDF with ``df`` > 0 degrees of freedom: ``P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2)``."""
    if df <= 0.0:
        raise ValueError(f"t_cdf needs df > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|)``, straight from the incomplete beta (no ``1 - cdf`` cancellation)."""
    if df <= 0.0:
        raise ValueError(f"t_two_sided_p needs df > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def chi2_cdf(x: float, dof: float) -> float:
    """Chi-square CDF: ``P(dof/2, x/2)``."""
    if dof <= 0:
        raise ValueError(f"chi2_cdf needs dof > 0, got {dof}")
    return gammainc_lower(dof / 2.0, x / 2.0)


def chi2_sf(x: float, dof: float) -> float:
    """Chi-square upper tail (the p-value of a chi-square statistic): ``Q(dof/2, x/2)``."""
    if dof <= 0:
        raise ValueError(f"chi2_sf needs dof > 0, got {dof}")
    return gammainc_upper(dof / 2.0, x / 2.0)


# ---------------------------------------------------------------------------------------------------------------
# Results
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


def _check_counts(successes: int, trials: int, name: str = "") -> None:
    if isinstance(successes, bool) or isinstance(trials, bool):
        raise TypeError(f"counts{name} must be integers, not bool")
    if int(successes) != successes or int(trials) != trials:
        raise ValueError(f"counts{name} must be whole numbers, got {successes}/{trials}")
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"impossible counts{name}: {successes} successes out of {trials} trials")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Proportions
# ---------------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for one success rate.

    Why Wilson and not the textbook ``p +- z sqrt(p(1-p)/n)`` (Wald): Wald collapses to zero width at 0/n and
    n/n and undercovers badly for the n of a robot evaluation (tens of trials); Wilson inverts the score test,
    stays inside [0, 1] and keeps near-nominal coverage (Newcombe 1998, Stat Med 17:857, method 3).
    0/0 gives the uninformative [0, 1].
    """
    _check_counts(successes, trials)
    _check_confidence(confidence)
    if trials == 0:
        return Interval(0.0, 1.0, confidence, "Wilson score")
    z = norm_ppf(0.5 + confidence / 2.0)
    z2 = z * z
    n = float(trials)
    p = successes / n
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # The exact ends at 0/n and n/n are 0 and 1; pin them so rounding cannot leave -1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high, confidence, "Wilson score")


def newcombe_difference_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = 0.95
) -> Interval:
    """Interval for ``p_B - p_A``: Newcombe's hybrid score interval (Newcombe 1998, Stat Med 17:873, method 10).

    It combines the two Wilson intervals (square-and-add of the distances from each estimate to its own limits),
    so it inherits Wilson's behaviour at 0 and 1 and needs no iteration; the Wald difference interval shares
    Wald's undercoverage. An arm with no trials contributes its full [0, 1] uncertainty.
    """
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    _check_confidence(confidence)
    pa, pb = _rate(successes_a, trials_a), _rate(successes_b, trials_b)
    wa = wilson_interval(successes_a, trials_a, confidence)
    wb = wilson_interval(successes_b, trials_b, confidence)
    if trials_a == 0:
        pa = 0.5  # centre of the uninformative [0, 1] so the difference interval stays symmetric in ignorance
    if trials_b == 0:
        pb = 0.5
    diff = pb - pa
    low = diff - math.sqrt((pb - wb.low) ** 2 + (wa.high - pa) ** 2)
    high = diff + math.sqrt((wb.high - pb) ** 2 + (pa - wa.low) ** 2)
    return Interval(max(-1.0, low), min(1.0, high), confidence, "Newcombe hybrid score")


def fisher_exact(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> TestResult:
    """Two-sided Fisher exact test of ``p_A == p_B`` on the 2x2 table ``[[s_A, f_A], [s_B, f_B]]``.

    With all margins fixed the count of A's successes is hypergeometric; the two-sided p-value is the sum of
    the probabilities of every table **no more probable than the observed one** (the definition R's
    ``fisher.test`` uses), with a relative tolerance of 1e-7 so tables whose probability equals the observed one
    up to rounding are counted, as R does. Probabilities come from log-gamma, so n in the thousands is fine.
    Exact at any n, hence the default test for robot trials (tens per arm). ``effect`` is ``p_B - p_A``.
    """
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    name = "two-sided Fisher exact"
    effect = _rate(successes_b, trials_b) - _rate(successes_a, trials_a)
    n = trials_a + trials_b
    k = successes_a + successes_b
    if trials_a == 0 or trials_b == 0 or k == 0 or k == n:
        # One table only: nothing could have come out differently.
        return TestResult(name, 1.0, 1.0, effect, defined=False, note="a margin is zero: only one table possible")
    lo, hi = max(0, k - trials_b), min(trials_a, k)
    # Unnormalized log weights, scaled by the largest and normalized by their own sum: the rounding of the
    # lgamma terms cancels, so a table at the mode gets p = 1 exactly and huge n cannot underflow.
    log_w = [log_comb(trials_a, x) + log_comb(trials_b, k - x) for x in range(lo, hi + 1)]
    top = max(log_w)
    weights = [math.exp(lw - top) for lw in log_w]
    cutoff = log_w[successes_a - lo] + math.log1p(1e-7)
    p = sum(w for w, lw in zip(weights, log_w) if lw <= cutoff) / sum(weights)
    odds_ratio = _odds_ratio(successes_a, trials_a, successes_b, trials_b)
    return TestResult(name, odds_ratio, min(1.0, p), effect)


def _odds_ratio(sa: int, na: int, sb: int, nb: int) -> float:
    """Sample odds ratio (B over A) as the statistic shown next to Fisher's p; inf/0 when a cell is empty."""
    num, den = sb * (na - sa), sa * (nb - sb)
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def two_proportion_z_test(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> TestResult:
    """Pooled two-proportion z-test, two-sided (equivalent to the 2x2 chi-square test without continuity
    correction: z^2 = X^2).

    Large-sample alternative only: the normal approximation is poor when any expected count
    ``n * p_pooled`` or ``n * (1 - p_pooled)`` is below ~5-10, which is the usual situation with robot trials.
    Prefer :func:`fisher_exact`. Kept because it is cheap and the power formula below is built on it.
    """
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    name = "two-proportion z-test (pooled)"
    pa, pb = _rate(successes_a, trials_a), _rate(successes_b, trials_b)
    effect = pb - pa
    if trials_a == 0 or trials_b == 0:
        return TestResult(name, 0.0, 1.0, effect, defined=False, note="an arm has no trials")
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b))
    if se == 0.0:  # all successes or all failures in both arms: identical, no variance
        return TestResult(name, 0.0, 1.0, effect, defined=False, note="no variance: all trials had one outcome")
    z = effect / se
    return TestResult(name, z, min(1.0, 2.0 * norm_sf(abs(z))), effect)


def prob_b_beats_a(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float:
    """Posterior ``P(p_B > p_A)`` under independent uniform Beta(1, 1) priors, computed exactly.

    Posteriors are Beta(s+1, f+1). For integer parameters the probability is a finite sum (E. Miller, "Formulas
    for Bayesian A/B testing", 2015; Cook 2005):
    ``sum_{i=0}^{aB-1} B(aA+i, bA+bB) / ((bB+i) B(1+i, bB) B(aA, bA))``, evaluated term by term in log space.
    No Monte Carlo noise, so it can drive a displayed number that must not jitter between refreshes.
    """
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    a_a, b_a = successes_a + 1, trials_a - successes_a + 1
    a_b, b_b = successes_b + 1, trials_b - successes_b + 1
    base = log_beta(a_a, b_a)
    total = 0.0
    for i in range(a_b):
        total += math.exp(log_beta(a_a + i, b_a + b_b) - math.log(b_b + i) - log_beta(1 + i, b_b) - base)
    return min(1.0, max(0.0, total))


@dataclass(frozen=True)
class BayesianComparison:
    """Beta-Binomial comparison with Beta(1, 1) priors: exact ``P(p_B > p_A)``, and the posterior mean and
    credible interval of ``p_B - p_A`` (Monte Carlo, fixed seed)."""

    prob_b_better: float
    mean_difference: float
    interval: Interval
    draws: int
    seed: int


def bayesian_comparison(
    successes_a: int,
    trials_a: int,
    successes_b: int,
    trials_b: int,
    confidence: float = 0.95,
    draws: int = 20_000,
    seed: int = 0,
) -> BayesianComparison:
    """Beta-Binomial comparison. ``P(p_B > p_A)`` is exact (:func:`prob_b_beats_a`); the equal-tailed credible
    interval of the difference has no closed form, so it is the quantiles of ``draws`` posterior samples from a
    generator seeded with ``seed`` - the same inputs always give the same interval."""
    _check_counts(successes_a, trials_a, " of A")
    _check_counts(successes_b, trials_b, " of B")
    _check_confidence(confidence)
    if draws < 100:
        raise ValueError(f"draws must be >= 100, got {draws}")
    rng = np.random.default_rng(seed)
    pa = rng.beta(successes_a + 1, trials_a - successes_a + 1, size=draws)
    pb = rng.beta(successes_b + 1, trials_b - successes_b + 1, size=draws)
    diff = pb - pa
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diff, [tail, 1.0 - tail])
    mean = (successes_b + 1) / (trials_b + 2) - (successes_a + 1) / (trials_a + 2)  # exact posterior mean
    return BayesianComparison(
        prob_b_beats_a(successes_a, trials_a, successes_b, trials_b),
        mean,
        Interval(float(low), float(high), confidence, f"Beta(1,1) posterior, {draws} draws, seed {seed}"),
        draws,
        seed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Continuous metrics (completion time, ...)
# ---------------------------------------------------------------------------------------------------------------


def _as_sample(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"sample {name} contains NaN or inf")
    return arr


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t-test, two-sided, of ``mean_B == mean_A``.

    Welch rather than Student because two policies have no reason to share a variance (a worse policy is often
    also more erratic), and Welch loses almost nothing when they do. Degrees of freedom by Welch-Satterthwaite;
    the p-value from the t distribution via the regularized incomplete beta. Needs >= 2 values per arm
    (``defined`` False otherwise). ``effect`` is ``mean_B - mean_A``.
    """
    xa, xb = _as_sample(a, "A"), _as_sample(b, "B")
    name = "Welch two-sample t-test"
    na, nb = xa.size, xb.size
    effect = float(xb.mean() - xa.mean()) if na and nb else 0.0
    if na < 2 or nb < 2:
        return TestResult(name, 0.0, 1.0, effect, defined=False, note="needs at least 2 values per arm")
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    se2 = va + vb
    if se2 == 0.0:
        # Both samples constant: the means either match exactly or differ with zero noise.
        df = float(na + nb - 2)
        if effect == 0.0:
            return TestResult(name, 0.0, 1.0, 0.0, df, defined=False, note="both samples constant and equal")
        return TestResult(name, math.copysign(math.inf, effect), 0.0, effect, df, note="both samples constant")
    t = effect / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return TestResult(name, t, t_two_sided_p(t, df), effect, df)


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=float)
    sorted_vals = values[order]
    i = 0
    while i < values.size:
        j = i
        while j + 1 < values.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


#: Above this total sample size :func:`mann_whitney_u` uses the normal approximation by default.
MANN_WHITNEY_EXACT_MAX_N = 60


def mann_whitney_u(a: Sequence[float], b: Sequence[float], exact: bool | None = None) -> TestResult:
    """Mann-Whitney U (Wilcoxon rank-sum) test, two-sided, of "B values tend to be neither larger nor smaller".

    Rank based, so one stuck trial that timed out at 60 s does not dominate as it would a t-test. ``statistic``
    is ``U_B`` = number of (a, b) pairs with b > a, ties counting 1/2; ``effect`` is ``U_B / (n_A n_B) - 1/2``
    (probability of superiority minus chance).

    * Exact (default when ``n_A + n_B <=`` :data:`MANN_WHITNEY_EXACT_MAX_N`): the permutation distribution of
      the rank sum, conditional on the observed ties (mid-ranks), counted by dynamic programming over doubled
      mid-ranks (integers), which equals enumerating all ``C(n, n_A)`` relabellings. Two-sided p is
      ``P(|W - E W| >= |w - E W|)``, which stays correct when ties make the distribution asymmetric.
    * Normal approximation otherwise: mean ``n_A n_B / 2``, variance with the tie correction
      ``n_A n_B / 12 * ((n+1) - sum(t^3 - t) / (n (n-1)))`` and a 0.5 continuity correction (as R).
    """
    xa, xb = _as_sample(a, "A"), _as_sample(b, "B")
    na, nb = xa.size, xb.size
    if na == 0 or nb == 0:
        return TestResult("Mann-Whitney U", 0.0, 1.0, 0.0, defined=False, note="an arm has no values")
    n = na + nb
    ranks = _midranks(np.concatenate([xa, xb]))
    rank_sum_b = float(ranks[na:].sum())
    u_b = rank_sum_b - nb * (nb + 1) / 2.0
    mean_u = na * nb / 2.0
    effect = u_b / (na * nb) - 0.5
    if exact is None:
        exact = n <= MANN_WHITNEY_EXACT_MAX_N
    if exact:
        p = _rank_sum_exact_p(ranks, nb, rank_sum_b)
        return TestResult("Mann-Whitney U (exact permutation)", u_b, p, effect)
    _, counts = np.unique(ranks, return_counts=True)
    tie_term = float(np.sum(counts.astype(float) ** 3 - counts)) / (n * (n - 1))
    var_u = na * nb / 12.0 * ((n + 1) - tie_term)
    if var_u <= 0.0:
        return TestResult("Mann-Whitney U (normal approx.)", u_b, 1.0, effect, defined=False,
                          note="all values tied")
    z = (abs(u_b - mean_u) - 0.5) / math.sqrt(var_u)
    p = 1.0 if z <= 0 else min(1.0, 2.0 * norm_sf(z))
    return TestResult("Mann-Whitney U (normal approx.)", u_b, p, effect)


def _rank_sum_exact_p(ranks: np.ndarray, k: int, observed_sum: float) -> float:
    """P(|S - E S| >= |s - E S|) for S the sum of ``k`` ranks drawn without replacement from ``ranks``.

    ``ways[j][s]`` counts the subsets of size j of the ranks seen so far whose doubled sum is s (a 0/1 knapsack);
    floats hold the counts (C(60, 30) ~ 1e17 is exact enough for a probability).
    """
    doubled = np.rint(ranks * 2.0).astype(int)
    total = int(doubled.sum())
    ways = np.zeros((k + 1, total + 1))
    ways[0, 0] = 1.0
    for seen, r in enumerate(doubled):
        # Descending j so each rank is used at most once per subset; sizes above seen + 1 are still empty.
        for j in range(min(k, seen + 1), 0, -1):
            ways[j, r:] += ways[j - 1, : total + 1 - r]
    dist = ways[k]
    sums = np.arange(total + 1)
    expected = k * total / doubled.size  # doubled E S
    dev_obs = abs(2.0 * observed_sum - expected)
    mask = np.abs(sums - expected) >= dev_obs * (1.0 - 1e-9) - 1e-9
    return float(min(1.0, dist[mask].sum() / dist.sum()))


@dataclass(frozen=True)
class EffectSize:
    """Standardized mean difference ``(mean_B - mean_A) / pooled SD``: Cohen's d and its small-sample
    bias-corrected version Hedges' g."""

    cohens_d: float
    hedges_g: float


def effect_size(a: Sequence[float], b: Sequence[float]) -> EffectSize:
    """Cohen's d with the pooled SD, and Hedges' g = J d with the exact correction
    ``J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))``, df = n_A + n_B - 2 (d overestimates |delta| at small n).

    Fewer than 3 values in total (df < 1) gives 0/0; at df = 1, J = 0 (Gamma(0) is infinite), so g = 0: one
    degree of freedom cannot support a bias-corrected estimate. Zero pooled SD gives 0 for equal means and
    +-inf otherwise (a noise-free difference is infinitely many SDs).
    """
    xa, xb = _as_sample(a, "A"), _as_sample(b, "B")
    na, nb = xa.size, xb.size
    df = na + nb - 2
    if na == 0 or nb == 0 or df < 1:
        return EffectSize(0.0, 0.0)
    diff = float(xb.mean() - xa.mean())
    ss = float(((xa - xa.mean()) ** 2).sum() + ((xb - xb.mean()) ** 2).sum())
    sd = math.sqrt(ss / df)
    if sd == 0.0:
        d = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return EffectSize(d, d)
    d = diff / sd
    j = math.exp(math.lgamma(df / 2.0) - math.lgamma((df - 1) / 2.0)) / math.sqrt(df / 2.0) if df > 1 else 0.0
    return EffectSize(d, j * d)


# ---------------------------------------------------------------------------------------------------------------
# Several models
# ---------------------------------------------------------------------------------------------------------------


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input order.

    Sort ascending, multiply the i-th smallest (0-based) by ``m - i``, take the running maximum so the
    adjusted values keep the order of the raw ones, cap at 1. Rejecting where adjusted <= alpha controls the
    family-wise error rate at alpha under any dependence, and is uniformly more powerful than Bonferroni.
    """
    ps = [float(p) for p in p_values]
    for p in ps:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be in [0, 1], got {p}")
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Arm:
    """Success counts of one model."""

    name: str
    successes: int
    trials: int

    def __post_init__(self) -> None:
        _check_counts(self.successes, self.trials, f" of {self.name!r}")

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
    """Fisher exact tests between arms with Holm-Bonferroni adjustment over the family.

    ``baseline`` = index of the reference arm: k-1 comparisons "each model vs the baseline" (fewer tests, more
    power - the right family when the question is "does anything beat the current policy?").
    ``baseline=None``: all k(k-1)/2 pairs (needed to pick a best model among peers).
    """
    _check_alpha(alpha)
    if len(arms) < 2:
        raise ValueError(f"need at least 2 arms, got {len(arms)}")
    if baseline is None:
        pairs = list(combinations(range(len(arms)), 2))
    else:
        if not 0 <= baseline < len(arms):
            raise ValueError(f"baseline index {baseline} out of range for {len(arms)} arms")
        pairs = [(baseline, j) for j in range(len(arms)) if j != baseline]
    raw = []
    for i, j in pairs:
        a, b = arms[i], arms[j]
        raw.append(fisher_exact(a.successes, a.trials, b.successes, b.trials).p_value)
    adjusted = holm_adjust(raw)
    out = []
    for (i, j), p, p_adj in zip(pairs, raw, adjusted):
        a, b = arms[i], arms[j]
        out.append(PairwiseResult(
            a.name, b.name, b.rate - a.rate,
            newcombe_difference_interval(a.successes, a.trials, b.successes, b.trials, confidence),
            p, p_adj, p_adj <= alpha,
        ))
    return out


def chi_square_homogeneity(arms: Sequence[Arm]) -> TestResult:
    """Pearson chi-square test that k success rates are equal (k x 2 table, dof = k - 1, no continuity
    correction; p from the regularized upper incomplete gamma).

    The omnibus question "do the models differ at all?" in one test, before pairwise ones. Large-sample: the
    usual rule wants expected counts >= 5 in most cells; ``note`` warns when any is below 5. Arms with no trials
    are left out. With k = 2 it equals the pooled z-test (X^2 = z^2).
    """
    used = [a for a in arms if a.trials > 0]
    name = "chi-square homogeneity"
    if len(used) < 2:
        return TestResult(name, 0.0, 1.0, defined=False, note="fewer than 2 arms with trials")
    n = sum(a.trials for a in used)
    s = sum(a.successes for a in used)
    dof = len(used) - 1
    if s == 0 or s == n:
        return TestResult(name, 0.0, 1.0, df=dof, defined=False, note="all trials had one outcome")
    stat = 0.0
    small = False
    for a in used:
        for observed, col in ((a.successes, s), (a.trials - a.successes, n - s)):
            expected = a.trials * col / n
            small |= expected < 5.0
            stat += (observed - expected) ** 2 / expected
    note = "some expected counts < 5: approximation is rough" if small else ""
    return TestResult(name, stat, min(1.0, chi2_sf(stat, dof)), df=dof, note=note)


# ---------------------------------------------------------------------------------------------------------------
# Planning and stopping
# ---------------------------------------------------------------------------------------------------------------


def required_trials_per_arm(
    baseline_rate: float, min_detectable_difference: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Trials per arm for a two-sided two-proportion test to detect ``p_B = baseline + mdd`` with the given power.

    Normal approximation without continuity correction (Fleiss, Levin & Paik 2003, eq. 4.14; the formula of R's
    ``power.prop.test``):
    ``n = (z_{1-alpha/2} sqrt(2 pbar qbar) + z_{power} sqrt(pA qA + pB qB))^2 / mdd^2``, rounded up.
    Fisher's exact test is a little more conservative, so treat the result as a floor; at the n of robot
    evaluations the lesson is usually that only large differences (>= 0.2) are detectable.
    """
    _check_alpha(alpha)
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
    z_a, z_b = norm_ppf(1.0 - alpha / 2.0), norm_ppf(power)
    n = (z_a * math.sqrt(2.0 * pbar * (1.0 - pbar)) + z_b * math.sqrt(pa * (1 - pa) + pb * (1 - pb))) ** 2
    n /= min_detectable_difference**2
    return max(1, math.ceil(n - 1e-9))


@dataclass(frozen=True)
class SequentialResult:
    """State of the paired mixture SPRT after the complete pairs seen so far.

    ``e_value`` is the current mixture likelihood ratio; ``p_value = min(1, 1 / max e_value so far)`` is the
    matching always-valid p-value; ``crossed_at`` the pair index (1-based) at which the ratio first reached
    ``1 / alpha`` (None if never) and ``direction`` "B" or "A" for the arm that was winning then.
    """

    pairs: int
    discordant: int
    b_wins: int
    e_value: float
    threshold: float
    crossed_at: int | None
    direction: str
    p_value: float


def sequential_test(outcomes_a: Sequence[bool], outcomes_b: Sequence[bool], alpha: float = 0.01) -> SequentialResult:
    """Always-valid test of ``p_A == p_B``: a mixture SPRT on discordant pairs. Safe to evaluate after every trial.

    Pair the i-th trial of A with the i-th trial of B (in recording order; unpaired extra trials wait for their
    partner). Under H0 (equal rates, independent trials) a pair where exactly one arm succeeded is equally
    likely to be (A ok, B fail) or (A fail, B ok), whatever the common rate - so the B-wins among discordant
    pairs are fair coin flips. Against "the coin is biased, q ~ Beta(1, 1)" the mixture likelihood ratio after
    m discordant pairs with k B-wins is ``E_m = 2^m B(k+1, m-k+1) = 2^m k! (m-k)! / (m+1)!``, a non-negative
    martingale with mean 1 under H0. Ville's inequality then gives ``P(sup_m E_m >= 1/alpha) <= alpha``: the
    false-positive rate stays <= alpha **however often you look and whenever you stop**. (Robbins 1970;
    Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences".)

    The price: fewer rejections than a fixed-horizon test at the same n (e.g. alpha = 0.01 needs 11 discordant
    pairs all going one way, or a lopsided split of many), so it stops early only for clear differences.
    """
    _check_alpha(alpha)
    threshold = 1.0 / alpha
    log_threshold = math.log(threshold)
    pairs = min(len(outcomes_a), len(outcomes_b))
    m = k = 0
    crossed_at: int | None = None
    direction = ""
    log_e = max_log_e = 0.0
    for i in range(pairs):
        a_ok, b_ok = bool(outcomes_a[i]), bool(outcomes_b[i])
        if a_ok == b_ok:
            continue  # concordant pairs carry no information about which arm is better
        m += 1
        k += b_ok
        log_e = m * math.log(2.0) + math.lgamma(k + 1) + math.lgamma(m - k + 1) - math.lgamma(m + 2)
        max_log_e = max(max_log_e, log_e)
        if crossed_at is None and log_e >= log_threshold:
            crossed_at, direction = i + 1, ("B" if 2 * k > m else "A")
    return SequentialResult(pairs, m, k, math.exp(log_e), threshold, crossed_at, direction, math.exp(-max_log_e))


class Verdict(str, Enum):
    """What :func:`decide` concludes."""

    B_BETTER = "B better"
    A_BETTER = "A better"
    NO_DIFFERENCE = "no difference detected yet"
    NOT_ENOUGH = "not enough trials (n < planned)"


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`, with everything a status message needs."""

    verdict: Verdict
    winner: str  # "A", "B" or ""
    test_name: str
    p_value: float  # -1 until the fixed-horizon test has run (planned size reached)
    alpha: float
    fixed_alpha: float
    sequential: SequentialResult
    trials_a: int
    trials_b: int
    planned_per_arm: int
    message: str
    fixed_test: TestResult | None = field(default=None)


def decide(
    outcomes_a: Sequence[bool],
    outcomes_b: Sequence[bool],
    planned_per_arm: int,
    alpha: float = 0.05,
    sequential_share: float = 0.2,
) -> Decision:
    """A/B verdict on success/failure trials that is safe to call after every trial.

    Why not just "p < alpha yet?" after each trial: a fixed-horizon p-value is uniform under H0 only at the one
    n chosen in advance. Checked after every trial, it wanders, and the chance that it dips below alpha at
    *some* point grows with every look (towards 1 as looks go on - the law of the iterated logarithm); with 100
    looks at alpha = 0.05 the false-positive rate is several times 0.05 (the test file measures it).

    So: before both arms reach ``planned_per_arm`` trials, a winner is called only if the always-valid
    :func:`sequential_test` crosses its threshold; otherwise the verdict is "not enough trials". At the planned
    size, Fisher's exact test runs **once** on the first ``planned_per_arm`` trials of each arm (later trials
    are ignored by both routes: testing again on each extra trial would be peeking again). The overall alpha is split
    (Bonferroni): ``sequential_share * alpha`` to the sequential rule, the rest to the final Fisher test, so the
    probability of a false winner, by either route, is <= alpha.
    """
    _check_alpha(alpha)
    if planned_per_arm < 1:
        raise ValueError(f"planned_per_arm must be >= 1, got {planned_per_arm}")
    if not 0.0 < sequential_share < 1.0:
        raise ValueError(f"sequential_share must be in (0, 1), got {sequential_share}")
    seq_alpha = alpha * sequential_share
    fixed_alpha = alpha - seq_alpha
    na, nb = len(outcomes_a), len(outcomes_b)
    # Both routes see only the planned trials: after the planned size the experiment is over.
    seq = sequential_test(outcomes_a[:planned_per_arm], outcomes_b[:planned_per_arm], seq_alpha)
    common = dict(alpha=alpha, fixed_alpha=fixed_alpha, sequential=seq, trials_a=na, trials_b=nb,
                  planned_per_arm=planned_per_arm)
    if seq.crossed_at is not None:
        verdict = Verdict.B_BETTER if seq.direction == "B" else Verdict.A_BETTER
        return Decision(
            verdict, seq.direction, "paired mixture SPRT (always valid)", seq.p_value, **common,
            message=f"{verdict.value}: sequential test crossed 1/alpha = {seq.threshold:.0f} at pair "
                    f"{seq.crossed_at} ({seq.b_wins} of {seq.discordant} discordant pairs won by B)",
        )
    if na < planned_per_arm or nb < planned_per_arm:
        return Decision(
            Verdict.NOT_ENOUGH, "", "two-sided Fisher exact", -1.0, **common,
            message=f"{min(na, nb)} of {planned_per_arm} planned trials per arm; sequential evidence "
                    f"{seq.e_value:.2f} of {seq.threshold:.0f}",
        )
    sa = sum(bool(x) for x in outcomes_a[:planned_per_arm])
    sb = sum(bool(x) for x in outcomes_b[:planned_per_arm])
    fisher = fisher_exact(sa, planned_per_arm, sb, planned_per_arm)
    if fisher.p_value <= fixed_alpha and sb != sa:
        verdict = Verdict.B_BETTER if sb > sa else Verdict.A_BETTER
        winner = "B" if sb > sa else "A"
        message = f"{verdict.value}: {sa}/{planned_per_arm} vs {sb}/{planned_per_arm}, p = {fisher.p_value:.4g}"
    else:
        verdict, winner = Verdict.NO_DIFFERENCE, ""
        message = (f"no difference detected: {sa}/{planned_per_arm} vs {sb}/{planned_per_arm}, "
                   f"p = {fisher.p_value:.4g} > {fixed_alpha:.3g}")
    return Decision(verdict, winner, fisher.test_name, fisher.p_value, **common, message=message, fixed_test=fisher)
