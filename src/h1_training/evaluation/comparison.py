"""Trial bookkeeping of a model comparison: what the ``model_comparison`` node stores, and what it reports.

One :class:`Comparison` per ``CompareModels`` request; each ``RecordTrial`` becomes :meth:`Comparison.record`;
:meth:`Comparison.result` gives the figures of ``ModelComparisonStatus`` (per-model ``ModelMetrics``, test name,
p-value, significance, winner, message). The statistics themselves live in :mod:`h1_training.evaluation.stats`.

* ``"ab"`` (2 models): :func:`~h1_training.evaluation.stats.decide` - safe to evaluate after every trial; an
  early winner only through the always-valid sequential test, otherwise one Fisher exact test at the planned n.
* ``"detailed"`` (2-4 models): no early stopping. At the planned n, an omnibus test (chi-square homogeneity,
  or Fisher exact for 2 models), then all pairs by Fisher exact with Holm adjustment. The winner is the model
  with the highest rate that significantly beats every other model (and only if the omnibus test is
  significant: gatekeeping only makes the family more conservative).

Execution times are summarized and compared over **successful** trials only: a failed trial's time is mostly
the task's timeout, and mixing it in would measure the failure rate twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from h1_training.evaluation.stats import (
    Arm,
    BayesianComparison,
    Decision,
    PairwiseResult,
    TestResult,
    Verdict,
    bayesian_comparison,
    chi_square_homogeneity,
    decide,
    fisher_exact,
    mann_whitney_u,
    pairwise_comparisons,
    wilson_interval,
)

MODE_AB = "ab"
MODE_DETAILED = "detailed"
DEFAULT_TRIALS_PER_MODEL = 100  # as in the RoArm seed guide ("100 episodes with each model")
DEFAULT_ALPHA = 0.05
MAX_MODELS = 4
UNKNOWN = -1.0  # the interface's "not known" for confidence-like fields


@dataclass(frozen=True)
class ModelSummary:
    """The figures of one ``ModelMetrics`` message (same field names and conventions)."""

    model_id: str
    trials: int
    successes: int
    success_rate: float
    success_ci_low: float  # 95 % Wilson
    success_ci_high: float
    mean_execution_time_s: float  # successful trials; 0 when none
    std_execution_time_s: float
    grasp_confidence: float  # mean of the reported ones, -1 when none was reported
    consistency_score: float  # 1 - CV of execution time, clamped to [0, 1]; -1 with fewer than 2 times


@dataclass
class ModelTrials:
    """Trials of one model in recording order (order matters: the sequential test pairs trials by index)."""

    model_id: str
    outcomes: list[bool] = field(default_factory=list)
    execution_times_s: list[float] = field(default_factory=list)  # successful trials with a known time
    grasp_confidences: list[float] = field(default_factory=list)  # the reported ones only

    def record(self, success: bool, execution_time_s: float = UNKNOWN, grasp_confidence: float = UNKNOWN) -> None:
        """Add one trial. A negative time or confidence means "not known"; NaN, inf or a confidence above 1
        raise ``ValueError`` (nothing is recorded then)."""
        if not math.isfinite(execution_time_s):
            raise ValueError(f"execution_time_s must be finite, got {execution_time_s}")
        if not math.isfinite(grasp_confidence) or grasp_confidence > 1.0:
            raise ValueError(f"grasp_confidence must be in [0, 1] or negative for unknown, got {grasp_confidence}")
        self.outcomes.append(bool(success))
        if success and execution_time_s >= 0.0:
            self.execution_times_s.append(float(execution_time_s))
        if grasp_confidence >= 0.0:
            self.grasp_confidences.append(float(grasp_confidence))

    @property
    def trials(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(self.outcomes)

    def summary(self) -> ModelSummary:
        n, s = self.trials, self.successes
        ci = wilson_interval(s, n)
        times = np.asarray(self.execution_times_s, dtype=float)
        mean_t = float(times.mean()) if times.size else 0.0
        std_t = float(times.std(ddof=1)) if times.size >= 2 else 0.0
        consistency = UNKNOWN
        if times.size >= 2:
            consistency = 1.0 if mean_t <= 0.0 else min(1.0, max(0.0, 1.0 - std_t / mean_t))
        grasp = float(np.mean(self.grasp_confidences)) if self.grasp_confidences else UNKNOWN
        return ModelSummary(self.model_id, n, s, s / n if n else 0.0, ci.low, ci.high, mean_t, std_t, grasp,
                            consistency)


@dataclass(frozen=True)
class ComparisonResult:
    """What ``ModelComparisonStatus`` shows, plus the detail behind it."""

    mode: str
    complete: bool  # a verdict is final (AB: winner or planned n reached; detailed: planned n reached)
    test_name: str
    p_value: float  # -1 until the test has run
    significant: bool
    alpha: float
    winner: str  # model id, "" when none
    message: str
    models: list[ModelSummary]
    decision: Decision | None = None  # AB
    bayes: BayesianComparison | None = None  # AB, on all trials so far (descriptive: no decision rests on it)
    execution_time_test: TestResult | None = None  # AB, Mann-Whitney on successful trials' times
    omnibus: TestResult | None = None  # detailed
    pairwise: list[PairwiseResult] = field(default_factory=list)  # detailed


class Comparison:
    """One comparison run: validates the request, stores trials, computes the status on demand."""

    def __init__(
        self, model_ids: Sequence[str], mode: str = MODE_AB, trials_per_model: int = 0, alpha: float = 0.0
    ) -> None:
        """``trials_per_model`` 0 and ``alpha`` 0 mean the defaults (as in ``CompareModels.srv``); anything
        invalid raises ``ValueError`` with a message fit for the service reply."""
        ids = [str(m) for m in model_ids]
        if mode not in (MODE_AB, MODE_DETAILED):
            raise ValueError(f"mode must be {MODE_AB!r} or {MODE_DETAILED!r}, got {mode!r}")
        if mode == MODE_AB and len(ids) != 2:
            raise ValueError(f"an A/B test needs exactly 2 models, got {len(ids)}")
        if not 2 <= len(ids) <= MAX_MODELS:
            raise ValueError(f"a comparison needs 2 to {MAX_MODELS} models, got {len(ids)}")
        if any(not m for m in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be non-empty and distinct, got {ids}")
        if trials_per_model < 0:
            raise ValueError(f"trials_per_model must be >= 0 (0 = default), got {trials_per_model}")
        if alpha != 0.0 and not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5) (0 = default), got {alpha}")
        self.mode = mode
        self.trials_per_model = trials_per_model or DEFAULT_TRIALS_PER_MODEL
        self.alpha = alpha or DEFAULT_ALPHA
        self.models = {m: ModelTrials(m) for m in ids}

    def record(
        self, model_id: str, success: bool, execution_time_s: float = UNKNOWN, grasp_confidence: float = UNKNOWN
    ) -> None:
        """Add one trial to ``model_id``; ``ValueError`` for an unknown model or a bad value."""
        if model_id not in self.models:
            raise ValueError(f"model {model_id!r} is not in this comparison ({', '.join(self.models)})")
        self.models[model_id].record(success, execution_time_s, grasp_confidence)

    def result(self) -> ComparisonResult:
        summaries = [m.summary() for m in self.models.values()]
        if self.mode == MODE_AB:
            return self._ab_result(summaries)
        return self._detailed_result(summaries)

    def _ab_result(self, summaries: list[ModelSummary]) -> ComparisonResult:
        a, b = self.models.values()
        d = decide(a.outcomes, b.outcomes, self.trials_per_model, self.alpha)
        winner = {"A": a.model_id, "B": b.model_id}.get(d.winner, "")
        bayes = bayesian_comparison(a.successes, a.trials, b.successes, b.trials)
        times = None
        if a.execution_times_s and b.execution_times_s:
            times = mann_whitney_u(a.execution_times_s, b.execution_times_s)
        message = d.message.replace("B better", f"{b.model_id} better").replace("A better", f"{a.model_id} better")
        message += f"; P({b.model_id} > {a.model_id}) = {bayes.prob_b_better:.3f}"
        return ComparisonResult(
            MODE_AB, d.verdict is not Verdict.NOT_ENOUGH, d.test_name, d.p_value, bool(winner), self.alpha, winner,
            message, summaries, decision=d, bayes=bayes, execution_time_test=times,
        )

    def _detailed_result(self, summaries: list[ModelSummary]) -> ComparisonResult:
        n = self.trials_per_model
        k = len(self.models)
        name = "two-sided Fisher exact" if k == 2 else "chi-square homogeneity + Holm-adjusted pairwise Fisher"
        least = min(m.trials for m in self.models.values())
        if least < n:
            return ComparisonResult(MODE_DETAILED, False, name, -1.0, False, self.alpha, "",
                                    f"{least} of {n} planned trials per model", summaries)
        # Only the planned trials count: testing again on each extra trial would be peeking.
        arms = [Arm(m.model_id, sum(m.outcomes[:n]), n) for m in self.models.values()]
        if k == 2:
            omnibus = fisher_exact(arms[0].successes, n, arms[1].successes, n)
        else:
            omnibus = chi_square_homogeneity(arms)
        pairs = pairwise_comparisons(arms, baseline=None, alpha=self.alpha)
        significant = omnibus.p_value <= self.alpha
        best = max(arms, key=lambda arm: arm.successes)
        beats_all = all(
            p.significant and ((p.b == best.name and p.difference > 0) or (p.a == best.name and p.difference < 0))
            for p in pairs if best.name in (p.a, p.b)
        )
        winner = best.name if significant and beats_all else ""
        rates = ", ".join(f"{arm.name} {arm.successes}/{n}" for arm in arms)
        if winner:
            message = f"{winner} better than every other model ({rates}; omnibus p = {omnibus.p_value:.4g})"
        elif significant:
            message = f"models differ but no single best ({rates}; omnibus p = {omnibus.p_value:.4g})"
        else:
            message = f"no difference detected ({rates}; p = {omnibus.p_value:.4g} > {self.alpha:g})"
        return ComparisonResult(MODE_DETAILED, True, name, omnibus.p_value, significant, self.alpha, winner,
                                message, summaries, omnibus=omnibus, pairwise=pairs)
