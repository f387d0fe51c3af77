"""A model comparison from request to verdict (no rclpy): trial bookkeeping, the figures of
``ModelComparisonStatus``, the lifecycle the ``model_comparison`` node drives, and the operator's paragraph.

* :class:`Comparison` - one ``CompareModels`` request: validates it, stores trials (success, time, grasp
  confidence, partial-credit score), computes :class:`ComparisonResult` on demand.
* :class:`ComparisonLifecycle` - IDLE -> RUNNING -> COMPLETED / CANCELLED, one comparison at a time, the blind
  trial order (:class:`~h1_training.evaluation.scheduler.TrialScheduler`), and what to do with a winner, returned
  as data (:class:`RecordOutcome.deploy`) for the node to carry out.

Modes. ``"ab"`` (2 models): the anytime-valid sequential test of
:func:`~h1_training.evaluation.stats.sequential_test` decides - it may be looked at after every trial and stops at
a winner (efficacy), at the futility bound, or at the trial cap; Boschloo's exact test (with Fisher's as
reference) is shown beside it as a fixed-sample figure, never used to stop. ``"detailed"`` (2-4 models): no early
stopping; at the planned n a chi-square homogeneity test (Fisher's for 2), then all pairs by Fisher with Holm's
adjustment; the winner must significantly beat every other model. Both modes report the partial-credit score and
time-to-success tests (Mann-Whitney) and a Bayesian summary (P(best), expected loss), labelled as such.

Execution times are compared over **successful** trials only: a failed trial's time is mostly the task's
timeout, and mixing it in would measure the failure rate twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from h1_training.evaluation.scheduler import TrialScheduler
from h1_training.evaluation.stats import (
    Arm,
    BayesianSummary,
    Interval,
    PairwiseResult,
    SequentialPlan,
    SequentialResult,
    Stop,
    TestResult,
    bayesian_summary,
    boschloo_exact,
    check_alpha,
    chi_square_homogeneity,
    fisher_exact,
    mann_whitney_u,
    newcombe_difference_interval,
    pairwise_comparisons,
    sequential_test,
    wilson_interval,
)

MODE_AB = "ab"
MODE_DETAILED = "detailed"
DEFAULT_TRIALS_PER_MODEL = 100  # detailed mode, as in the RoArm seed guide ("100 episodes with each model")
DEFAULT_ALPHA = 0.05
DEFAULT_PLANNED_RATES = (0.5, 0.8)
MAX_MODELS = 4
UNKNOWN = -1.0  # the interface's "not known" for confidence-like fields
SEQUENTIAL_TEST_NAME = "anytime-valid e-process on discordant pairs"


@dataclass(frozen=True)
class ModelSummary:
    """The figures of one ``ModelMetrics`` message (same field names and conventions)."""

    model_id: str
    trials: int
    successes: int
    success_rate: float
    success_ci_low: float  # 95 % Wilson; [0, 1] before the first trial
    success_ci_high: float
    mean_execution_time_s: float  # successful trials; 0 when none
    std_execution_time_s: float
    grasp_confidence: float  # mean of the reported ones, -1 when none was reported
    consistency_score: float  # 1 - CV of execution time, clamped to [0, 1]; -1 with fewer than 2 times
    scored_trials: int
    mean_score: float  # -1 when no trial had a score


@dataclass
class ModelTrials:
    """Trials of one model in recording order (order matters: the sequential test pairs trials by index)."""

    model_id: str
    outcomes: list[bool] = field(default_factory=list)
    execution_times_s: list[float] = field(default_factory=list)  # successful trials with a known time
    grasp_confidences: list[float] = field(default_factory=list)  # the reported ones only
    scores: list[float] = field(default_factory=list)  # the reported partial-credit scores only

    def record(self, success: bool, execution_time_s: float = UNKNOWN, grasp_confidence: float = UNKNOWN,
               score: float = UNKNOWN) -> None:
        """Add one trial. A negative time, confidence or score means "not known"; NaN, inf, or a confidence or
        score above 1 raise ``ValueError`` (nothing is recorded then)."""
        if not math.isfinite(execution_time_s):
            raise ValueError(f"execution_time_s must be finite, got {execution_time_s}")
        if not math.isfinite(grasp_confidence) or grasp_confidence > 1.0:
            raise ValueError(f"grasp_confidence must be in [0, 1] or negative for unknown, got {grasp_confidence}")
        if not math.isfinite(score) or score > 1.0:
            raise ValueError(f"score must be in [0, 1] or negative for unknown, got {score}")
        self.outcomes.append(bool(success))
        if success and execution_time_s >= 0.0:
            self.execution_times_s.append(float(execution_time_s))
        if grasp_confidence >= 0.0:
            self.grasp_confidences.append(float(grasp_confidence))
        if score >= 0.0:
            self.scores.append(float(score))

    @property
    def trials(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(self.outcomes)

    def summary(self) -> ModelSummary:
        n, s = self.trials, self.successes
        low, high = (0.0, 1.0) if n == 0 else (lambda ci: (ci.low, ci.high))(wilson_interval(s, n))
        times = np.asarray(self.execution_times_s, dtype=float)
        mean_t = float(times.mean()) if times.size else 0.0
        std_t = float(times.std(ddof=1)) if times.size >= 2 else 0.0
        consistency = UNKNOWN
        if times.size >= 2:
            consistency = 1.0 if mean_t <= 0.0 else min(1.0, max(0.0, 1.0 - std_t / mean_t))
        grasp = float(np.mean(self.grasp_confidences)) if self.grasp_confidences else UNKNOWN
        score = float(np.mean(self.scores)) if self.scores else UNKNOWN
        return ModelSummary(self.model_id, n, s, s / n if n else 0.0, low, high, mean_t, std_t, grasp,
                            consistency, len(self.scores), score)


@dataclass(frozen=True)
class ComparisonResult:
    """What ``ModelComparisonStatus`` shows, plus the detail behind it."""

    mode: str
    complete: bool  # the verdict is final (AB: the sequential test stopped; detailed: planned n reached)
    test_name: str
    p_value: float  # AB: anytime-valid p = 1 / max e-value; detailed: omnibus p, -1 until the planned n
    significant: bool
    alpha: float
    winner: str  # model id, "" when none
    message: str
    models: list[ModelSummary]
    difference: Interval | None = None  # AB: 95 % Newcombe interval of p_2nd - p_1st (None before trials)
    sequential: SequentialResult | None = None  # AB
    plan: SequentialPlan | None = None  # AB
    reference: TestResult | None = None  # AB: two-sided Boschloo on all trials so far (descriptive)
    fisher: TestResult | None = None  # AB: Fisher on the same (reference)
    score_test: TestResult | None = None  # Mann-Whitney on the first two models' partial-credit scores
    time_test: TestResult | None = None  # Mann-Whitney on the first two models' successful trials' times
    bayes: BayesianSummary | None = None  # all models (BAYESIAN, descriptive: no decision rests on it)
    omnibus: TestResult | None = None  # detailed
    pairwise: list[PairwiseResult] = field(default_factory=list)  # detailed

    @property
    def stop_reason(self) -> str:
        seq = self.sequential
        return "" if seq is None or seq.stop is Stop.RUNNING else seq.stop.value

    @property
    def expected_more_trials(self) -> int:
        return -1 if self.sequential is None else self.sequential.expected_more_pairs


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f} %"


def _rate_with_ci(m: ModelSummary) -> str:
    return f"{_pct(m.success_rate)} [{100 * m.success_ci_low:.0f}, {100 * m.success_ci_high:.0f}]"


class Comparison:
    """One comparison run: validates the request, stores trials, computes the status on demand."""

    def __init__(
        self, model_ids: Sequence[str], mode: str = MODE_AB, trials_per_model: int = 0, alpha: float = 0.0,
        planned_rates: tuple[float, float] = DEFAULT_PLANNED_RATES,
    ) -> None:
        """``trials_per_model`` 0 and ``alpha`` 0 mean the defaults (as in ``CompareModels.srv``): in A/B mode
        ``trials_per_model`` is the sequential test's cap (0 = from the plan, :attr:`SequentialPlan.cap_pairs`).
        ``planned_rates`` = (first model, second model) success rates the A/B test is planned to tell apart.
        Anything invalid raises ``ValueError`` with a message fit for the service reply."""
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
        if alpha != 0.0:
            check_alpha(alpha)
        self.mode = mode
        self.alpha = alpha or DEFAULT_ALPHA
        self.plan: SequentialPlan | None = None
        if mode == MODE_AB:
            self.plan = SequentialPlan(float(planned_rates[0]), float(planned_rates[1]), self.alpha,
                                       max_pairs=int(trials_per_model))
            self.trials_per_model = self.plan.cap_pairs
        else:
            self.trials_per_model = trials_per_model or DEFAULT_TRIALS_PER_MODEL
        self.models = {m: ModelTrials(m) for m in ids}

    def record(self, model_id: str, success: bool, execution_time_s: float = UNKNOWN,
               grasp_confidence: float = UNKNOWN, score: float = UNKNOWN) -> None:
        """Add one trial to ``model_id``; ``ValueError`` for an unknown model or a bad value."""
        if model_id not in self.models:
            raise ValueError(f"model {model_id!r} is not in this comparison ({', '.join(self.models)})")
        self.models[model_id].record(success, execution_time_s, grasp_confidence, score)

    def result(self) -> ComparisonResult:
        summaries = [m.summary() for m in self.models.values()]
        if self.mode == MODE_AB:
            return self._ab_result(summaries)
        return self._detailed_result(summaries)

    def _common(self) -> dict:
        """Score and time tests (first two models) and the Bayesian summary, in both modes."""
        first, second = list(self.models.values())[:2]
        out: dict = {"score_test": None, "time_test": None, "bayes": None}
        if len(first.scores) >= 2 and len(second.scores) >= 2:
            out["score_test"] = mann_whitney_u(first.scores, second.scores)
        if len(first.execution_times_s) >= 2 and len(second.execution_times_s) >= 2:
            out["time_test"] = mann_whitney_u(first.execution_times_s, second.execution_times_s)
        out["bayes"] = bayesian_summary([Arm(m.model_id, m.successes, m.trials) for m in self.models.values()])
        return out

    def _ab_result(self, summaries: list[ModelSummary]) -> ComparisonResult:
        assert self.plan is not None
        a, b = self.models.values()
        sa, sb = summaries
        seq = sequential_test(a.outcomes, b.outcomes, self.plan)
        winner = {"A": a.model_id, "B": b.model_id}.get(seq.direction, "")
        diff = reference = fisher = None
        if a.trials and b.trials:
            diff = newcombe_difference_interval(a.successes, a.trials, b.successes, b.trials)
            reference = boschloo_exact(a.successes, a.trials, b.successes, b.trials)
            fisher = fisher_exact(a.successes, a.trials, b.successes, b.trials)
        evidence = f"e-value {seq.e_value:.3g}"
        if seq.stop is Stop.EFFICACY:
            w, l_ = (sb, sa) if winner == b.model_id else (sa, sb)
            message = (f"{w.model_id} better than {l_.model_id}: success {_rate_with_ci(w)} vs {_rate_with_ci(l_)}, "
                       f"{evidence} >= {seq.threshold:.3g}, {seq.pairs} trials per model")
        elif seq.stop is Stop.FUTILITY:
            message = (f"no difference of the planned size: {evidence} fell to the futility bound "
                       f"{seq.futility:.3g} after {seq.pairs} trials per model ({a.model_id} {_rate_with_ci(sa)}, "
                       f"{b.model_id} {_rate_with_ci(sb)})")
        elif seq.stop is Stop.CAP:
            message = (f"not distinguishable within the cap of {seq.cap_pairs} trials per model ({evidence} < "
                       f"{seq.threshold:.3g}; {a.model_id} {_rate_with_ci(sa)}, {b.model_id} {_rate_with_ci(sb)})")
        else:
            rates = (f"{a.model_id} {_rate_with_ci(sa)}, {b.model_id} {_rate_with_ci(sb)}" if sa.trials and sb.trials
                     else "no trials yet")
            message = (f"not yet distinguishable ({rates}; {evidence} of {seq.threshold:.3g}): about "
                       f"{seq.expected_more_pairs} more trials per model expected at this gap")
        return ComparisonResult(
            MODE_AB, seq.stop is not Stop.RUNNING, SEQUENTIAL_TEST_NAME, seq.p_value, seq.stop is Stop.EFFICACY,
            self.alpha, winner, message, summaries, difference=diff, sequential=seq, plan=self.plan,
            reference=reference, fisher=fisher, **self._common(),
        )

    def _detailed_result(self, summaries: list[ModelSummary]) -> ComparisonResult:
        n = self.trials_per_model
        k = len(self.models)
        name = "two-sided Fisher exact" if k == 2 else "chi-square homogeneity + Holm-adjusted pairwise Fisher"
        least = min(m.trials for m in self.models.values())
        common = self._common()
        if least < n:
            return ComparisonResult(MODE_DETAILED, False, name, -1.0, False, self.alpha, "",
                                    f"{least} of {n} planned trials per model", summaries, **common)
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
                                message, summaries, omnibus=omnibus, pairwise=pairs, **common)


def operator_summary(comparison_id: str, state_name: str, cmp: Comparison, result: ComparisonResult,
                     note: str = "") -> str:
    """One paragraph an operator reads: rates with their intervals, times, scores, the difference, the verdict,
    the Bayesian summary (labelled), and what to do next."""
    kind = "A/B test" if cmp.mode == MODE_AB else f"detailed comparison of {len(cmp.models)} models"
    least = min(m.trials for m in result.models)
    limit = "cap" if cmp.mode == MODE_AB else "planned"
    parts = [f"Comparison {comparison_id} ({kind}, {state_name}): {least} of {cmp.trials_per_model} {limit} "
             f"trials per model, alpha {cmp.alpha:g}."]
    for m in result.models:
        line = f"{m.model_id}: {m.successes}/{m.trials} succeeded"
        if m.trials:
            line += f" ({_pct(m.success_rate)}, 95% CI {_pct(m.success_ci_low)}-{_pct(m.success_ci_high)})"
        if m.mean_execution_time_s > 0:
            line += f", {m.mean_execution_time_s:.1f} +- {m.std_execution_time_s:.1f} s per success"
        if m.scored_trials:
            line += f", mean score {m.mean_score:.2f} over {m.scored_trials} scored trials"
        parts.append(line + ".")
    if result.difference is not None:
        a, b = result.models[:2]
        ci = result.difference
        parts.append(f"{b.model_id} minus {a.model_id}: {100 * (b.success_rate - a.success_rate):+.0f} points "
                     f"(95% CI {100 * ci.low:+.0f} to {100 * ci.high:+.0f}).")
    p = "not yet tested" if result.p_value < 0 else f"{result.p_value:.4g}"
    parts.append(f"Verdict ({result.test_name}, p {p}): {result.message}.")
    if result.reference is not None and result.fisher is not None:
        parts.append(f"Fixed-sample reference (not the stopping rule): Boschloo p {result.reference.p_value:.4g}, "
                     f"Fisher p {result.fisher.p_value:.4g}.")
    for label, test in (("Partial-credit score", result.score_test), ("Time to success", result.time_test)):
        if test is not None:
            parts.append(f"{label}: {test.test_name} p {test.p_value:.4g}, P(2nd > 1st) - 1/2 = {test.effect:+.2f}.")
    if result.bayes is not None:
        best = ", ".join(f"{m.model_id} {100 * p:.0f}%" for m, p in zip(result.models, result.bayes.prob_best))
        parts.append(f"Bayesian (Beta(1,1) priors, not the test): P(best) {best}.")
    if note:
        parts.append(note)
    elif state_name == "RUNNING":
        parts.append("Run the next trial with the model /model_comparison/next_model names.")
    return " ".join(x for x in parts if x)


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------------------------


class State(Enum):
    """Lifecycle of the comparison (values = ``ModelComparisonStatus.STATE_*``)."""

    IDLE = 0
    RUNNING = 1
    COMPLETED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class RecordOutcome:
    """Reply to one trial; ``deploy`` names the model the node must deploy now ("" = nothing to do)."""

    accepted: bool
    message: str
    deploy: str = ""


class ComparisonLifecycle:
    """One comparison at a time: start, record, stop, next model, and the verdict's consequence. Not thread-safe:
    the node serialises calls (its lock)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.state = State.IDLE
        self.comparison: Comparison | None = None
        self.scheduler: TrialScheduler | None = None
        self.comparison_id = ""
        self.note = ""  # what happened to the winner (recommended, deployed, deploy failed)
        self._started = 0

    def start(self, model_ids: Sequence[str], mode: str, trials_per_model: int, alpha: float,
              planned_rates: tuple[float, float], known_models: Callable[[], list[str]]) -> str:
        """Start a comparison; returns the reply message. ``ValueError`` with the reason for a bad request (the
        request is checked before ``known_models`` - the policy server's listing - is asked for; its errors
        pass through)."""
        if self.state is State.RUNNING:
            raise ValueError(f"comparison {self.comparison_id} is running; stop it first (/model_comparison/stop)")
        ids = [str(m).strip() for m in model_ids]
        mode = mode.strip().lower() or (MODE_AB if len(ids) == 2 else MODE_DETAILED)
        for name, value in (("alpha", alpha), ("planned_rate_a", planned_rates[0]),
                            ("planned_rate_b", planned_rates[1])):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a number, got {value}")
        try:
            cmp = Comparison(ids, mode, trials_per_model, alpha, planned_rates)
        except ValueError as exc:
            raise ValueError(str(exc).replace("an A/B test", "A/B")) from None
        known = known_models()
        unknown = [m for m in ids if m not in known]
        if unknown:
            raise ValueError(f"unknown model id{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                             f"the policy server has: {', '.join(known) or 'none'}")
        self._started += 1
        self.comparison_id = f"cmp-{time.strftime('%Y%m%dT%H%M%S')}-{self._started}"
        self.comparison = cmp
        self.scheduler = TrialScheduler(ids, seed=self.seed, planned_per_model=cmp.trials_per_model)
        self.state = State.RUNNING
        self.note = ""
        if mode == MODE_AB:
            assert cmp.plan is not None
            return (f"A/B test {self.comparison_id} of {', '.join(ids)}: anytime-valid, planned for "
                    f"{_pct(cmp.plan.rate_a)} vs {_pct(cmp.plan.rate_b)}, at most {cmp.trials_per_model} trials "
                    f"per model, alpha {cmp.alpha:g}")
        return (f"detailed comparison {self.comparison_id} of {', '.join(ids)}: {cmp.trials_per_model} trials per "
                f"model, alpha {cmp.alpha:g}")

    def record(self, model_id: str, success: bool, execution_time_s: float = UNKNOWN,
               grasp_confidence: float = UNKNOWN, score: float = UNKNOWN, auto_deploy: bool = False) -> RecordOutcome:
        """One trial. Refused (nothing stored) when no comparison runs, for a model outside it, beyond the cap,
        or for a bad value. A final verdict completes the comparison; its winner is recommended, or returned in
        ``deploy`` when ``auto_deploy``."""
        if self.comparison is None or self.state is not State.RUNNING:
            last = f" (comparison {self.comparison_id} is {self.state.name})" if self.comparison_id else ""
            return RecordOutcome(False, f"no comparison is running{last}; start one with /model_comparison/start")
        cmp = self.comparison
        trials = cmp.models[model_id].trials if model_id in cmp.models else 0
        if model_id in cmp.models and trials >= cmp.trials_per_model:
            return RecordOutcome(False, f"model {model_id!r} already has its {cmp.trials_per_model} planned trials; "
                                        "/model_comparison/next_model names the model to run")
        try:
            cmp.record(model_id, bool(success), float(execution_time_s), float(grasp_confidence), float(score))
        except ValueError as exc:
            return RecordOutcome(False, str(exc))
        counts = ", ".join(f"{m.model_id} {m.successes}/{m.trials}" for m in cmp.models.values())
        deploy = self._finish_if_final(auto_deploy)
        done = f"; comparison {self.state.name}" if self.state is not State.RUNNING else ""
        return RecordOutcome(True, f"recorded {'success' if success else 'failure'} of {model_id} ({counts}){done}",
                             deploy)

    def _finish_if_final(self, auto_deploy: bool) -> str:
        assert self.comparison is not None
        result = self.comparison.result()
        if not result.complete:
            return ""
        self.state = State.COMPLETED
        if not result.winner:
            self.note = "No winner: keep the deployed model (or plan for a smaller effect)."
            return ""
        if auto_deploy:
            self.note = f"Deploying {result.winner} (auto_deploy_winner)..."
            return result.winner
        self.note = (f"Recommendation: deploy {result.winner} (POST /models/{result.winner}/deploy on the policy "
                     "server; auto_deploy_winner is false).")
        return ""

    def deployed(self, comparison_id: str, note: str) -> None:
        """The node's deploy finished (or failed): ``note`` says how, if the comparison is still the same one."""
        if self.comparison_id == comparison_id:
            self.note = note

    def stop(self) -> tuple[bool, str]:
        if self.state is not State.RUNNING:
            return False, "no comparison is running"
        self.state = State.CANCELLED
        self.note = "Cancelled before a final verdict: nothing is recommended."
        return True, f"comparison {self.comparison_id} cancelled"

    def next_model(self) -> tuple[bool, str]:
        if self.comparison is None or self.scheduler is None or self.state is not State.RUNNING:
            return False, "no comparison is running"
        model = self.scheduler.next_model({m: t.trials for m, t in self.comparison.models.items()})
        return model is not None, model or "every model has its planned trials"

    def summary(self) -> str:
        if self.comparison is None:
            return "no comparison yet: call /model_comparison/start with 2-4 model ids"
        return operator_summary(self.comparison_id, self.state.name, self.comparison, self.comparison.result(),
                                self.note)
