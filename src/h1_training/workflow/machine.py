"""The training workflow of the RoArm seed, as one pure state machine (no rclpy, no clock, no I/O).

    count new episodes (the recorder's files, ``EpisodeFact``) --count >= min, or interval elapsed--> SubmitJob
    follow the job (``observe_job``: step, loss, lr, ETA; pause / resume / cancel)
    job succeeded --> Evaluate(candidate, current, held-out episodes)  (offline, ``workflow/evaluate.py``)
    evaluated --auto_deploy_enabled and the candidate is better with statistical evidence--> Deploy
              (online_trials > 0: first StartComparison on model_comparison, see "Online evaluation" below)
    deployed model watched: labelled outcomes -> baseline window -> Bernoulli CUSUM (``workflow/cusum.py``),
    human corrections counted -> recommendations with their reason and numbers

How the runner (``workflow/runner.py``) uses it: feed observations (episodes on disk, the server's
``/training_status`` and ``/jobs``, one job's record) and results of effects; execute the effects returned, in
order, and feed their outcomes back. Every method that changes what must survive a restart sets ``dirty``; the
runner then writes :meth:`Workflow.to_dict` to the state file.

One automation in charge: while the server runs its own epoch watcher (``h1-training serve --auto-train``, seen
in ``/training_status`` ``auto_train``), the manager starts no training (automatic or manual) and shows the
server's jobs instead; a job on the server that the manager did not start is shown too, and no second job is
submitted beside it.

Online evaluation (``online_trials`` > 0, asked for only by auto-deploy): a candidate that passed the offline gate
is not deployed yet. The manager starts a blinded A/B test on the ``model_comparison`` node (``[current,
candidate]``: the candidate is the planned-better "B" of its anytime-valid sequential test, capped at
``online_trials`` per model) and stage is AB_TESTING. Trials are evaluation rollouts: episodes recorded after the
start, labelled (success 0/1), driven by exactly one of the two models (``model_version``); an episode with human
frames counts as a failure (the model needed help). Each goes to ``model_comparison/record_trial`` once, in
recording order; hil_session's ``model`` is pinned to the model ``model_comparison/next_model`` names (the
operator runs it blind). model_comparison's verdict decides, nothing here re-tests:

    COMPLETED, winner = candidate (efficacy: e-value >= 1/alpha)  --> Deploy
    COMPLETED, winner = current                                 --> refused: worse
    COMPLETED, no winner (futility or the trial cap)            --> refused: no evidence it is not worse
    CANCELLED, lost (model_comparison restarted), or online_timeout_s passed (StopComparison) --> refused

"Not worse with statistical evidence" is read strictly: the only evidence the sequential test gives is its
efficacy stop (a futility stop says "no difference of the planned size", which does not bound a loss), so only a
candidate the test names the winner is deployed. Every refusal keeps its reason and the comparison's numbers in
``models[candidate]["online"]``, the status message and the recommendations; the hil_session pin is released.

Held-out episodes: every ``holdout_every``-th new episode (in file order) is set aside for evaluation when a job
is triggered and never trained on, so that the evaluation set is the same for every candidate from then on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum
from typing import Any

from h1_training.evaluation.stats import fisher_exact, wilson_interval
from h1_training.policy.train_request import DEFAULT_TRAINING_DEVICE, TRAINABLE_POLICY_TYPES, TRAINING_DEVICES
from h1_training.workflow.cusum import BernoulliCusum

POLICY_TYPES = TRAINABLE_POLICY_TYPES
STATE_VERSION = 1
MIN_ONLINE_TRIALS = 5
PIN_RETRY_S = 3.0  # seconds between tries to pin hil_session's model after one failed


class Stage(IntEnum):
    """Values are ``h1_training_interfaces/WorkflowStatus`` STAGE_*."""
    IDLE = 0
    COLLECTING = 1
    TRAINING = 2
    EVALUATING = 3
    DEPLOYING = 4
    AB_TESTING = 5
    ERROR = 6


# TrainerStatus STATE_* by the server's job status
JOB_STATE = {"queued": 1, "running": 2, "paused": 3, "succeeded": 4, "failed": 5, "cancelled": 6}
ACTIVE = ("queued", "running", "paused")


@dataclass
class WorkflowConfig:
    min_episodes_before_training: int = 50
    auto_train_enabled: bool = True
    training_trigger_interval_hours: float = 24.0   # 0 = no interval trigger
    auto_deploy_enabled: bool = False
    policy_type: str = "act"
    steps: int = 2000
    batch_size: int = 8
    learning_rate: float = 0.0                       # 0 = the policy's preset
    human_weight: float = 2.0
    device: str = DEFAULT_TRAINING_DEVICE
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    holdout_every: int = 5                           # every 5th new episode is held out for evaluation
    alpha: float = 0.05
    job_retry_s: float = 60.0                        # wait after a failed or lost job before triggering again
    baseline_trials: int = 20
    window_trials: int = 60
    cusum_arl0: float = 500.0
    cusum_odds_ratio: float = 2.0
    retrain_after_corrections: int = 40
    online_trials: int = 0                           # 0 = offline gate only; else online A/B cap per model
    online_timeout_s: float = 86400.0                # an online evaluation ends (not deployed) after this long

    def __post_init__(self) -> None:
        problems = check_config(self)
        if problems:
            raise ValueError("; ".join(problems))


def check_config(cfg: WorkflowConfig) -> list[str]:
    out = []
    if cfg.policy_type not in POLICY_TYPES:
        out.append(f"policy_type must be one of {', '.join(POLICY_TYPES)}, got {cfg.policy_type!r}")
    if cfg.device not in TRAINING_DEVICES:
        out.append(f"device must be one of {', '.join(TRAINING_DEVICES)}, got {cfg.device!r}")
    if cfg.min_episodes_before_training < 1:
        out.append("min_episodes_before_training must be >= 1")
    if not (cfg.training_trigger_interval_hours >= 0 and math.isfinite(cfg.training_trigger_interval_hours)):
        out.append("training_trigger_interval_hours must be >= 0 (0 = off)")
    if not isinstance(cfg.hyperparameters, dict):
        out.append("hyperparameters must be a JSON object")
    if cfg.holdout_every < 2:
        out.append("holdout_every must be >= 2")
    if not 0 < cfg.alpha < 1:
        out.append("alpha must be in (0, 1)")
    if cfg.baseline_trials < 5 or cfg.window_trials < 5:
        out.append("baseline_trials and window_trials must be >= 5")
    if cfg.cusum_arl0 < 10 or cfg.cusum_odds_ratio <= 1:
        out.append("cusum_arl0 must be >= 10 and cusum_odds_ratio > 1")
    if cfg.online_trials != 0 and cfg.online_trials < MIN_ONLINE_TRIALS:
        out.append(f"online_trials must be 0 (off) or >= {MIN_ONLINE_TRIALS} (fewer trials per model cannot reach "
                   "the sequential test's evidence threshold at the usual alpha)")
    if not (math.isfinite(cfg.online_timeout_s) and cfg.online_timeout_s > 0):
        out.append("online_timeout_s must be > 0")
    return out


def parse_hyperparameters(text: str) -> dict[str, Any]:
    """The ``hyperparameters_json`` parameter: "" or a JSON object; ValueError with the reason otherwise."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"hyperparameters_json is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"hyperparameters_json must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class EpisodeFact:
    """One recorded episode as the runner found it on disk (path relative to the data root)."""
    path: str
    mtime: float
    valid: bool
    excluded: bool = False
    success: int = -1             # -1 unknown, 0 failed, 1 succeeded
    human_frames: int = 0
    model_version: str = ""       # comma-separated model ids that drove its policy frames


# --- effects ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubmitJob:
    request: dict
    episodes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class JobAction:
    job_id: str
    action: str                   # "pause", "resume", "cancel"


@dataclass(frozen=True)
class Evaluate:
    candidate: str
    current: str
    episodes: tuple[str, ...]


@dataclass(frozen=True)
class Deploy:
    model_id: str
    reason: str


@dataclass(frozen=True)
class StartComparison:
    """``model_comparison/start``: A/B of ``[current, candidate]`` (the candidate is the planned-better B)."""
    candidate: str
    current: str
    trials_per_model: int
    alpha: float


@dataclass(frozen=True)
class SendTrial:
    """``model_comparison/record_trial`` for one evaluation episode."""
    comparison_id: str
    model_id: str
    success: bool
    path: str


@dataclass(frozen=True)
class StopComparison:
    comparison_id: str
    reason: str


@dataclass(frozen=True)
class PinModel:
    """Pin hil_session's ``model``: ``next`` = the model ``model_comparison/next_model`` names, else
    ``model_id`` ("" = release the pin: the deployed default runs)."""
    model_id: str = ""
    next: bool = False


Effect = SubmitJob | JobAction | Evaluate | Deploy | StartComparison | SendTrial | StopComparison | PinModel


@dataclass
class Job:
    id: str
    origin: str                   # "workflow_manager" or "server"
    status: str = "queued"
    policy_type: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    lr: float | None = None
    eta_s: float | None = None
    steps_per_s: float = 0.0
    model_id: str | None = None
    error: str | None = None
    episodes: list[str] = field(default_factory=list)
    reason: str = ""
    submitted_at: float = 0.0
    last_step_at: float = 0.0
    last_step: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Monitor:
    """The deployed model's labelled outcomes: baseline window, then the CUSUM."""
    model_id: str = ""
    deployed_at: float = 0.0
    processed: list[str] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)      # 1 = success, in recording order
    episodes: int = 0
    corrections: int = 0                                   # episodes with human frames
    window_corrections: list[int] = field(default_factory=list)
    cusum: dict | None = None
    baseline_success: float = -1.0

    @classmethod
    def from_dict(cls, d: dict) -> Monitor:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class OnlineEvaluation:
    """A candidate that passed the offline gate, under its online A/B test on ``model_comparison``."""
    candidate: str
    current: str
    offline: str                  # the offline gate's summary
    trials_per_model: int
    requested_at: float
    comparison_id: str = ""       # "" until model_comparison accepted the start
    started_at: float = 0.0
    sent: list[str] = field(default_factory=list)      # episodes sent as trials (accepted or refused), in order
    accepted: int = 0
    refused: list[str] = field(default_factory=list)   # model_comparison's reasons, last few
    start_unanswered: bool = False  # the start request went out without a reply: adopt it if it shows RUNNING
    pinned: str = ""              # what hil_session's model is pinned to ("" = not pinned)
    pin_problem: str = ""         # why it could not be pinned
    pin_tried_at: float = 0.0     # the last pin that failed is tried again PIN_RETRY_S after it
    status: dict = field(default_factory=dict)          # model_comparison's last status of this comparison

    @classmethod
    def from_dict(cls, d: dict) -> OnlineEvaluation:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def counts(self) -> str:
        models = self.status.get("models") or {}
        return ", ".join(f"{m} {s}/{n}" for m, (s, n) in models.items()) or "no trials yet"


class Workflow:
    def __init__(self, config: WorkflowConfig, now: float) -> None:
        self.config = config
        self.auto_deploy = config.auto_deploy_enabled
        self.trained: set[str] = set()         # episodes some finished job of ours trained on
        self.holdout: list[str] = []           # held-out episodes (never trained on)
        self.last_training_time = now          # the interval counts from the first start
        self.retry_after = 0.0
        self.retry_reason = ""                 # a failed or lost job's data is still untrained: train it again
        self.consecutive_failures = 0
        self.hold_at: int | None = None        # after a cancel: no automatic training until more new episodes
        self.job: Job | None = None
        self.history: list[dict] = []          # finished jobs (ours), newest last
        self.models: dict[str, dict] = {}      # model id -> {job, trained_at, evaluation, deployed_at}
        self.deployed: list[str] = []          # deploy order (ours and what the server reported), for rollback
        self.evaluating: Evaluate | None = None
        self.deploying: str | None = None
        self.online: OnlineEvaluation | None = None
        self.monitor = Monitor()
        self.counters: dict[str, int] = {"jobs_started": 0, "jobs_succeeded": 0, "jobs_failed": 0,
                                         "jobs_cancelled": 0, "jobs_lost": 0, "deployments": 0, "rollbacks": 0}
        self.message = "started"
        self.dirty = True
        # transient: what the server said last (not persisted)
        self.server_reachable = False
        self.server_message = "not contacted yet"
        self.server_model = ""
        self.server_epoch = -1
        self.server_ready = False
        self.server_in_charge = False
        self.foreign_job: Job | None = None
        self.facts: dict[str, EpisodeFact] = {}
        self.now = now

    # --- derived ----------------------------------------------------------------------------------------------
    def eligible(self) -> list[EpisodeFact]:
        """Valid episodes not excluded from training, in file order."""
        return [f for p, f in sorted(self.facts.items()) if f.valid and not f.excluded]

    def new_episodes(self) -> list[str]:
        held = set(self.holdout)
        return [f.path for f in self.eligible() if f.path not in self.trained and f.path not in held]

    def pool(self) -> list[str]:
        held = set(self.holdout)
        return [f.path for f in self.eligible() if f.path not in held]

    @property
    def stage(self) -> Stage:
        if not self.server_reachable and self.server_message != "not contacted yet":
            return Stage.ERROR  # also mid-job: the job's last known state stays on trainer_status
        if self.deploying:
            return Stage.DEPLOYING
        if self.online:
            return Stage.AB_TESTING
        if self.evaluating:
            return Stage.EVALUATING
        if (self.job and self.job.status in ACTIVE) or (self.foreign_job and self.foreign_job.status in ACTIVE):
            return Stage.TRAINING
        return Stage.COLLECTING if self.config.auto_train_enabled else Stage.IDLE

    @property
    def current_model(self) -> str:
        return self.server_model or (self.deployed[-1] if self.deployed else "")

    def previous_model(self) -> str:
        cur = self.current_model
        for mid in reversed(self.deployed):
            if mid != cur:
                return mid
        return ""

    def shown_job(self) -> Job | None:
        """The job trainer_status shows: ours when active or more recent, else the server's own."""
        if self.job is not None and (self.job.status in ACTIVE or self.foreign_job is None):
            return self.job
        return self.foreign_job or self.job

    # --- configuration ----------------------------------------------------------------------------------------
    def set_config(self, config: WorkflowConfig) -> list[Effect]:
        self.config = config
        self.auto_deploy = config.auto_deploy_enabled
        return self._maybe_trigger(manual=False)

    # --- observations ----------------------------------------------------------------------------------------
    def observe_episodes(self, now: float, facts: list[EpisodeFact]) -> list[Effect]:
        self.now = now
        self.facts = {f.path: f for f in facts}
        self._watch_outcomes()
        return self._online_tick(now) + self._maybe_trigger(manual=False)

    def observe_server(self, now: float, status: dict | None, jobs: list[dict] | None, error: str = "") -> None:
        self.now = now
        if status is None:
            if self.server_reachable or self.server_message == "not contacted yet":
                self.message = f"GPU server unreachable: {error}"
            self.server_reachable, self.server_message = False, error or "unreachable"
            return
        if not self.server_reachable:
            self.message = "GPU server reachable" + (f"; following job {self.job.id} again"
                                                      if self.job and self.job.status in ACTIVE else "")
        self.server_reachable, self.server_message = True, "ok"
        self.server_ready = bool(status.get("ready"))
        self.server_epoch = int(status.get("epoch", -1))
        model = str(status.get("model_id") or "")
        if model and model != self.server_model:
            if not self.deployed or self.deployed[-1] != model:
                self.deployed.append(model)
                self.dirty = True
            if self.monitor.model_id != model:
                self._reset_monitor(model, now)
        self.server_model = model
        self.server_in_charge = status.get("auto_train") is not None
        ours = self.job.id if self.job else None
        foreign = [j for j in (jobs or []) if j.get("id") != ours and j.get("id") not in
                   {h.get("id") for h in self.history}]
        active = [j for j in foreign if j.get("status") in ACTIVE]
        pick = active[-1] if active else (foreign[-1] if foreign else None)
        self.foreign_job = None if pick is None else self._job_from_server(Job(pick["id"], "server"), pick, now)

    def observe_job(self, now: float, record: dict | None, lost: str = "") -> list[Effect]:
        """Our job's ``GET /jobs/<id>``; ``lost`` when the server no longer knows it (it restarted)."""
        self.now = now
        job = self.job
        if job is None:
            return []
        if lost:
            job.status, job.error = "failed", f"lost: {lost}"
            self.counters["jobs_lost"] += 1
            return self._finish_job(now, f"job {job.id} lost: {lost}; training will be triggered again "
                                         f"after {self.config.job_retry_s:g} s")
        assert record is not None
        before = job.status
        self._job_from_server(job, record, now)
        if job.status == before and job.status in ACTIVE:
            return []
        self.dirty = True
        if job.status in ACTIVE:
            return []
        if job.status == "succeeded":
            self.counters["jobs_succeeded"] += 1
            self.trained.update(job.episodes)
            self.last_training_time = now
            model = job.model_id or ""
            self.models[model] = {"job": job.id, "trained_at": now, "policy_type": job.policy_type,
                                  "episodes": len(job.episodes), "evaluation": None, "deployed_at": None}
            effects = self._finish_job(now, f"job {job.id} succeeded: model {model}")
            return effects + self._start_evaluation(model)
        if job.status == "cancelled":
            self.counters["jobs_cancelled"] += 1
            return self._finish_job(now, f"job {job.id} cancelled")
        self.counters["jobs_failed"] += 1
        return self._finish_job(now, f"job {job.id} failed: {job.error or 'no message from the server'}")

    @staticmethod
    def _job_from_server(job: Job, r: dict, now: float) -> Job:
        job.status = str(r.get("status", job.status))
        job.policy_type = str((r.get("request") or {}).get("policy_type", job.policy_type))
        step = int(r.get("step") or 0)
        if step > job.last_step:
            if job.last_step_at and now > job.last_step_at:
                rate = (step - job.last_step) / (now - job.last_step_at)
                job.steps_per_s = rate if job.steps_per_s == 0 else 0.5 * job.steps_per_s + 0.5 * rate
            job.last_step, job.last_step_at = step, now
        job.step, job.total_steps = step, int(r.get("total_steps") or job.total_steps)
        job.epoch = float(r.get("epoch") or 0.0)
        job.loss, job.lr, job.eta_s = r.get("loss"), r.get("lr"), r.get("eta_s")
        job.model_id, job.error = r.get("model_id"), r.get("error")
        return job

    def _finish_job(self, now: float, message: str) -> list[Effect]:
        assert self.job is not None
        if self.job.status == "succeeded":
            self.consecutive_failures, self.retry_reason = 0, ""
        elif self.job.status == "failed":
            # the same data again, later; the wait doubles with every consecutive failure (at most a day)
            self.consecutive_failures += 1
            self.retry_after = now + min(86400.0, self.config.job_retry_s * 2 ** (self.consecutive_failures - 1))
            self.retry_reason = f"retry of job {self.job.id} ({self.job.error or 'failed'})"[:200]
        else:  # cancelled by someone: automation waits for new data (or a manual trigger) before training again
            self.retry_reason = ""
            self.hold_at = len(self.new_episodes())
            message += "; automatic training waits for new episodes (or /training_workflow/trigger_training)"
        self.history.append(asdict(self.job))
        del self.history[:-50]
        self.message = message
        self.dirty = True
        return []

    # --- triggering ------------------------------------------------------------------------------------------
    def _busy(self) -> str:
        if self.server_in_charge:
            return ("the GPU server's own auto-train is in charge (h1-training serve --auto-train); it trains "
                    "each synced epoch, the workflow manager does not start training beside it")
        if self.job is not None and self.job.status in ACTIVE:
            return f"job {self.job.id} is {self.job.status}"
        if self.foreign_job is not None and self.foreign_job.status in ACTIVE:
            return f"the server is running its own job {self.foreign_job.id}"
        if self.evaluating or self.deploying:
            return "a model is being evaluated or deployed"
        if self.online:
            return f"{self.online.candidate} is being evaluated online (A/B on model_comparison)"
        if not self.server_reachable:
            return f"the GPU server is unreachable ({self.server_message})"
        return ""

    def _maybe_trigger(self, manual: bool) -> list[Effect]:
        cfg = self.config
        if not manual and (not cfg.auto_train_enabled or self._busy() or self.now < self.retry_after):
            return []
        new = self.new_episodes()
        if manual or (self.hold_at is not None and len(new) > self.hold_at):
            self.hold_at = None
        if self.hold_at is not None:
            return []
        reason = ""
        if manual:
            reason = "manual trigger"
        elif self.retry_reason:
            reason = self.retry_reason
        elif len(new) >= cfg.min_episodes_before_training:
            reason = f"{len(new)} new episodes >= min_episodes_before_training {cfg.min_episodes_before_training}"
        elif (cfg.training_trigger_interval_hours > 0 and new
              and self.now - self.last_training_time >= cfg.training_trigger_interval_hours * 3600):
            hours = (self.now - self.last_training_time) / 3600
            reason = (f"{hours:.3g} h since the last training >= training_trigger_interval_hours "
                      f"{cfg.training_trigger_interval_hours:g} ({len(new)} new episodes)")
        if not reason:
            return []
        # hold out every holdout_every-th new episode before anything is trained on it
        self.holdout += [p for i, p in enumerate(new) if i % cfg.holdout_every == cfg.holdout_every - 1]
        pool = self.pool()
        if not pool:
            return []
        parent = self.current_model if self.models.get(self.current_model, {}).get("policy_type") == \
            cfg.policy_type else None
        request = {"policy_type": cfg.policy_type, "dataset": pool, "steps": cfg.steps,
                   "batch_size": cfg.batch_size, "lr": cfg.learning_rate or None, "human_weight": cfg.human_weight,
                   "device": cfg.device, "deploy": False, "parent_model": parent, "extra": dict(cfg.hyperparameters)}
        self.dirty = True
        return [SubmitJob(request, tuple(pool), reason)]

    def trigger(self, now: float) -> tuple[bool, str, list[Effect]]:
        self.now = now
        busy = self._busy()
        if busy:
            return False, f"not started: {busy}", []
        effects = self._maybe_trigger(manual=True)
        if not effects:
            return False, "not started: no valid episode to train on (all excluded, held out or none recorded)", []
        return True, f"submitting a {self.config.policy_type} job on {len(effects[0].episodes)} episode(s)", effects

    def submitted(self, now: float, effect: SubmitJob, record: dict | None, error: str = "") -> None:
        self.dirty = True
        if record is None:
            self.consecutive_failures += 1
            self.retry_after = now + min(86400.0, self.config.job_retry_s * 2 ** (self.consecutive_failures - 1))
            self.counters["jobs_failed"] += 1
            self.message = f"the server refused the training job: {error}"
            return
        self.job = self._job_from_server(Job(record["id"], "workflow_manager", episodes=list(effect.episodes),
                                             reason=effect.reason, submitted_at=now), record, now)
        self.counters["jobs_started"] += 1
        self.message = f"job {self.job.id} started ({effect.reason})"

    # --- job control -----------------------------------------------------------------------------------------
    def job_action(self, action: str) -> tuple[bool, str, list[Effect]]:
        job = self.job if self.job is not None and self.job.status in ACTIVE else self.foreign_job
        if job is None or job.status not in ACTIVE:
            return False, f"no training job to {action}", []
        wanted = {"pause": ("running",), "resume": ("paused",), "cancel": ACTIVE}[action]
        if job.status not in wanted:
            return False, f"job {job.id} is {job.status}: cannot {action} it", []
        return True, f"{action} job {job.id}", [JobAction(job.id, action)]

    # --- evaluation and deployment ---------------------------------------------------------------------------
    def _start_evaluation(self, model: str) -> list[Effect]:
        current = self.current_model
        if not model:
            return []
        if not self.holdout:
            self.models[model]["evaluation"] = {"summary": "no held-out episodes: not evaluated"}
            self.message += "; no held-out episodes, so it was not evaluated and is not deployed automatically"
            return []
        if not current or current == model:
            self.models[model]["evaluation"] = {"summary": "no current model to compare with"}
            return self._deploy_if_allowed(model, better=True, why="first model (nothing deployed to compare)")
        self.evaluating = Evaluate(model, current, tuple(self.holdout[-20:]))
        return [self.evaluating]

    def evaluated(self, now: float, comparison: dict | None, error: str = "") -> list[Effect]:
        ev = self.evaluating
        self.evaluating = None
        self.dirty = True
        if ev is None:
            return []
        if comparison is None:
            self.models.setdefault(ev.candidate, {})["evaluation"] = {"summary": f"evaluation failed: {error}"}
            self.message = f"evaluation of {ev.candidate} failed: {error}"
            return []
        self.models.setdefault(ev.candidate, {})["evaluation"] = comparison
        self.message = comparison["summary"]
        return self._deploy_if_allowed(ev.candidate, bool(comparison["better"]), comparison["summary"])

    def _deploy_if_allowed(self, model: str, better: bool, why: str) -> list[Effect]:
        if not better:
            self.message = f"{model} kept undeployed: {why}"
            return []
        if not self.auto_deploy:
            self.message = f"{model} is ready to deploy ({why}); auto_deploy_enabled is false: not deployed"
            return []
        current = self.current_model
        if self.config.online_trials and current and current != model:
            return self._start_online(model, current, why)
        self.deploying = model
        return [Deploy(model, f"auto-deploy: {why}")]

    # --- online evaluation (model_comparison) -----------------------------------------------------------------
    def _start_online(self, candidate: str, current: str, offline: str) -> list[Effect]:
        n = self.config.online_trials
        self.online = OnlineEvaluation(candidate, current, offline, n, self.now)
        self.dirty = True
        self.message = (f"{candidate} passed the offline gate ({offline}); online A/B against {current} requested on "
                        f"model_comparison (at most {n} trials per model) before any deploy")
        return [StartComparison(candidate, current, n, self.config.alpha)]

    def comparison_started(self, now: float, comparison_id: str, error: str = "", unanswered: bool = False
                           ) -> list[Effect]:
        """model_comparison's reply to :class:`StartComparison` (``error``: refused or unreachable;
        ``unanswered``: sent without a reply - it is adopted if model_comparison then shows it RUNNING, else the
        timeout ends it)."""
        self.now = now
        on = self.online
        if on is None or on.comparison_id:
            return []
        if unanswered:
            on.start_unanswered = True
            self.message = (f"model_comparison did not answer the start of the online A/B of {on.candidate} "
                            f"({error}); waiting for its status")
            return []
        if error:
            return self._refuse_online(f"the online evaluation could not start on model_comparison: {error}")
        on.comparison_id, on.started_at = comparison_id, now
        self.dirty = True
        self.message = (f"online A/B {comparison_id} of {on.candidate} vs {on.current} running (at most "
                        f"{on.trials_per_model} trials per model): evaluation rollouts (/lerobot/start_data_collection "
                        "mode policy) are its trials")
        return [PinModel(next=True)]

    def observe_comparison(self, now: float, status: dict) -> list[Effect]:
        """model_comparison's latest status (``ModelComparisonStatus`` as a dict, see the node): the verdict of
        our comparison, when it comes, decides the deploy."""
        self.now = now
        on = self.online
        if on is None:
            return []
        cid, state = str(status.get("comparison_id", "")), str(status.get("state", ""))
        if not on.comparison_id:
            if not (on.start_unanswered and state == "RUNNING"
                    and list(status.get("models") or {}) == [on.current, on.candidate]):
                return []
            on.comparison_id, on.started_at, on.start_unanswered = cid, on.requested_at, False
            self.message = f"online A/B {cid} of {on.candidate} vs {on.current} running (its start was adopted)"
        if cid != on.comparison_id:
            if state == "IDLE" or state == "RUNNING":  # restarted, or another comparison took its place
                return self._refuse_online(f"model_comparison no longer runs comparison {on.comparison_id} (it "
                                           f"reports {state} {cid or '(none)'}: restarted?)")
            return []  # a stale status of an earlier comparison
        before = sum(n for _, n in (on.status.get("models") or {}).values())
        on.status = dict(status)
        self.dirty = True
        if state == "RUNNING":
            after = sum(n for _, n in (on.status.get("models") or {}).values())
            return [PinModel(next=True)] if after != before or not on.pinned else []
        if state == "CANCELLED":
            return self._refuse_online(f"comparison {cid} was cancelled on model_comparison before a verdict "
                                       f"({on.counts()})")
        if state != "COMPLETED":
            return []
        # model_comparison's verdict; its own advice after it ("Recommendation: deploy ...", "No winner: keep the
        # deployed model ...") is written for an operator without this manager, so it is left out
        verdict = str(status.get("message", "")).split(". ", 1)[0]
        winner = str(status.get("winner", ""))
        if winner == on.candidate:
            return self._online_passed(verdict)
        if winner == on.current:
            return self._refuse_online(f"worse than {on.current} online: {verdict}")
        return self._refuse_online(f"no evidence it is not worse than {on.current} online "
                                   f"({status.get('stop_reason') or 'no winner'}): {verdict}")

    def _online_passed(self, verdict: str) -> list[Effect]:
        on = self.online
        assert on is not None
        self.online = None
        self.dirty = True
        record = {"verdict": "passed", "comparison_id": on.comparison_id, "current": on.current,
                  "reason": verdict, "status": on.status}
        self.models.setdefault(on.candidate, {})["online"] = record
        release = [PinModel("")] if on.pinned else []
        if not self.auto_deploy:
            self.message = (f"{on.candidate} passed online ({verdict}); auto_deploy_enabled was turned off: not "
                            "deployed")
            return release
        self.deploying = on.candidate
        self.message = f"{on.candidate} passed online ({verdict}): deploying"
        return [Deploy(on.candidate, f"auto-deploy: offline {on.offline}; online {verdict}"), *release]

    def _refuse_online(self, reason: str) -> list[Effect]:
        on = self.online
        assert on is not None
        self.online = None
        self.dirty = True
        self.models.setdefault(on.candidate, {})["online"] = {
            "verdict": "refused", "comparison_id": on.comparison_id, "current": on.current, "reason": reason,
            "status": on.status}
        self.message = f"{on.candidate} not deployed: {reason}"
        return [PinModel("")] if on.pinned else []

    def _online_tick(self, now: float) -> list[Effect]:
        """Evaluation episodes recorded since the comparison started become trials; the timeout ends it."""
        on = self.online
        if on is None:
            return []
        if now - on.requested_at >= self.config.online_timeout_s:
            waited = (now - on.requested_at) / 3600
            stop = [StopComparison(on.comparison_id, "timeout")] if on.comparison_id else []
            return stop + self._refuse_online(
                f"the online evaluation timed out after {waited:.3g} h (online_timeout_s "
                f"{self.config.online_timeout_s:g}) with {on.counts()} trials, before model_comparison's verdict")
        if not on.comparison_id:
            return []
        out: list[Effect] = []
        # a pin that failed (hil_session not discovered yet, or restarted) is tried again: model_comparison's status
        # only changes with a trial, so waiting for the next status could wait for ever
        if (on.status.get("state") == "RUNNING" and not on.pinned and on.pin_problem
                and now - on.pin_tried_at >= PIN_RETRY_S):
            on.pin_tried_at = now
            out.append(PinModel(next=True))
        sent = set(on.sent)
        ours = (on.candidate, on.current)
        for f in sorted(self.facts.values(), key=lambda f: (f.mtime, f.path)):
            if f.path in sent or not f.valid or f.success not in (0, 1) or f.mtime < on.started_at:
                continue
            drivers = [m for m in f.model_version.split(",") if m]
            if len(drivers) != 1 or drivers[0] not in ours:
                continue
            on.sent.append(f.path)
            out.append(SendTrial(on.comparison_id, drivers[0], f.success == 1 and f.human_frames == 0, f.path))
        if out:
            self.dirty = True
        return out

    def trial_sent(self, now: float, eff: SendTrial, accepted: bool, message: str, error: str = "") -> None:
        """model_comparison's reply to one :class:`SendTrial`; ``error``: not delivered (sent again later)."""
        on = self.online
        if on is None or on.comparison_id != eff.comparison_id:
            return
        self.dirty = True
        if error:
            if eff.path in on.sent:
                on.sent.remove(eff.path)
            self.message = f"trial {eff.path} not delivered to model_comparison ({error}); sent again next round"
            return
        if accepted:
            on.accepted += 1
        else:
            on.refused = (on.refused + [f"{eff.path}: {message}"])[-5:]

    def pinned(self, model: str, problem: str = "") -> None:
        """What the runner did with a :class:`PinModel`: hil_session's ``model`` is now ``model``, or why not."""
        if self.online is None:
            return
        if problem:  # the pin stays what it was (it is released at the end if it was ever set)
            self.online.pin_problem = problem
            self.online.pin_tried_at = self.now
        else:
            self.online.pinned, self.online.pin_problem = model, ""

    def request_deploy(self, model: str) -> tuple[bool, str, list[Effect]]:
        if not model:
            return False, "model_id is empty", []
        if self.deploying:
            return False, f"{self.deploying} is being deployed", []
        self.deploying = model
        return True, f"deploying {model}", [Deploy(model, "operator request")]

    def rollback(self) -> tuple[bool, str, list[Effect]]:
        prev = self.previous_model()
        if not prev:
            return False, "no previous model to roll back to", []
        ok, msg, eff = self.request_deploy(prev)
        if ok:
            self.counters["rollbacks"] += 1
        return ok, (f"rolling back from {self.current_model} to {prev}" if ok else msg), eff

    def deployed_result(self, now: float, model: str, error: str = "") -> None:
        self.deploying = None
        self.dirty = True
        if error:
            self.message = f"deploying {model} failed: {error}"
            return
        self.counters["deployments"] += 1
        if not self.deployed or self.deployed[-1] != model:
            self.deployed.append(model)
        self.server_model = model
        self.models.setdefault(model, {})["deployed_at"] = now
        self._reset_monitor(model, now)
        self.message = f"deployed {model}"

    # --- monitoring ------------------------------------------------------------------------------------------
    def _reset_monitor(self, model: str, now: float) -> None:
        self.monitor = Monitor(model_id=model, deployed_at=now)
        self.dirty = True

    def _watch_outcomes(self) -> None:
        mon = self.monitor
        if not mon.model_id:
            return
        seen = set(mon.processed)
        mine = sorted((f for f in self.facts.values() if f.valid and f.path not in seen
                       and mon.model_id in f.model_version.split(",")), key=lambda f: (f.mtime, f.path))
        for f in mine:
            mon.processed.append(f.path)
            mon.episodes += 1
            corrected = int(f.human_frames > 0)
            mon.corrections += corrected
            mon.window_corrections = (mon.window_corrections + [corrected])[-self.config.window_trials:]
            if f.success not in (0, 1):
                continue
            mon.outcomes.append(int(f.success))
            n = len(mon.outcomes)
            if n == self.config.baseline_trials:
                mon.baseline_success = sum(mon.outcomes) / n
                chart = BernoulliCusum.calibrated(1.0 - mon.baseline_success, self.config.cusum_odds_ratio,
                                                  self.config.cusum_arl0)
                mon.cusum = chart.to_dict()
            elif n > self.config.baseline_trials and mon.cusum is not None:
                chart = BernoulliCusum.from_dict(mon.cusum)
                chart.update(failed=f.success == 0)
                mon.cusum = chart.to_dict()
            self.dirty = True

    def analytics(self) -> dict[str, Any]:
        """The figures of ``PerformanceAnalytics`` and the recommendations."""
        cfg, mon = self.config, self.monitor
        window = mon.outcomes[-cfg.window_trials:]
        n, k = len(window), sum(window)
        ci = wilson_interval(k, n) if n else None
        trend = 0.0
        if n >= 3:
            x = list(range(n))
            mx, my = sum(x) / n, k / n
            sxx = sum((xi - mx) ** 2 for xi in x)
            trend = 100.0 * sum((xi - mx) * (yi - my) for xi, yi in zip(x, window, strict=True)) / sxx
        base_n = min(cfg.baseline_trials, len(mon.outcomes))
        base_k = sum(mon.outcomes[:base_n])
        p_value = 1.0
        if mon.cusum is not None and n:
            recent = mon.outcomes[cfg.baseline_trials:][-cfg.window_trials:]
            if recent:
                p_value = fisher_exact(base_k, base_n, sum(recent), len(recent)).p_value
        chart = mon.cusum or {}
        degraded = bool(chart.get("alarm"))
        recent_hour = [f for f in self.facts.values() if f.valid and self.now - f.mtime <= 3600]
        out: dict[str, Any] = {
            "model_version": mon.model_id, "window_trials": n, "recent_success_rate": k / n if n else -1.0,
            "ci_low": ci.low if ci else -1.0, "ci_high": ci.high if ci else -1.0,
            "baseline_success_rate": mon.baseline_success, "baseline_trials": base_n if mon.cusum else 0,
            "trend_per_100_trials": trend,
            "intervention_rate": (sum(mon.window_corrections) / len(mon.window_corrections)
                                  if mon.window_corrections else -1.0),
            "episodes_per_hour": float(len(recent_hour)), "corrections_since_deploy": mon.corrections,
            "degradation_detected": degraded, "degradation_p_value": p_value,
            "cusum_statistic": float(chart.get("s", 0.0)), "cusum_threshold": float(chart.get("h", 0.0)),
            "cusum_arl0": float(chart.get("arl0", cfg.cusum_arl0)), "evidence": "",
        }
        recs: list[str] = []
        if degraded:
            recent = mon.outcomes[cfg.baseline_trials:][-cfg.window_trials:]
            r_ci = wilson_interval(sum(recent), len(recent))
            prev = self.previous_model()
            out["evidence"] = (f"CUSUM {chart['s']:.2f} >= h {chart['h']:.2f} (in-control ARL {chart['arl0']:.0f} "
                               f"trials) at trial {chart['alarm_at']} after the baseline; Fisher p = {p_value:.3g}")
            recs.append(f"success {sum(recent) / len(recent):.0%} [{r_ci.low:.0%}, {r_ci.high:.0%}] over the last "
                        f"{len(recent)} trials vs {mon.baseline_success:.0%} at deploy - degradation"
                        + (f", roll back to {prev}?" if prev else "; retrain recommended"))
        if mon.corrections >= cfg.retrain_after_corrections:
            recs.append(f"{mon.corrections} human corrections since {mon.model_id} was deployed - retrain "
                        "recommended")
        new = len(self.new_episodes())
        if new >= cfg.min_episodes_before_training and not cfg.auto_train_enabled:
            recs.append(f"{new} new episodes (>= {cfg.min_episodes_before_training}) - auto-train is off: call "
                        "/training_workflow/trigger_training")
        on = self.online
        if on is not None:
            st = on.status
            figures = (f"{on.counts()}, e-value {float(st.get('e_value', 1.0)):.3g} of "
                       f"{float(st.get('e_threshold', 1 / cfg.alpha)):.3g}" if st else "starting")
            left_h = max(0.0, on.requested_at + cfg.online_timeout_s - self.now) / 3600
            pin = ("hil_session runs the model model_comparison names next (blind: which one is not shown)"
                   if on.pinned else
                   f"hil_session not pinned ({on.pin_problem or 'not yet'}): run the model "
                   "/model_comparison/next_model names")
            recs.append(f"online A/B {on.comparison_id or '(starting)'} of {on.candidate} vs {on.current}: {figures}, "
                        f"at most {on.trials_per_model} trials per model, {left_h:.3g} h left - run evaluation "
                        f"rollouts (/lerobot/start_data_collection mode policy); {pin}")
        for mid, info in list(self.models.items())[-3:]:
            ev = info.get("evaluation") or {}
            online = info.get("online") or {}
            if online.get("verdict") == "refused" and not info.get("deployed_at"):
                recs.append(f"{mid} not deployed: {online.get('reason')}")
            elif (ev.get("better") and mid != self.current_model and not info.get("deployed_at")
                  and not (on is not None and on.candidate == mid)):
                recs.append(f"{mid} beat {ev.get('current')} offline ({ev.get('candidate_error', 0):.4f} vs "
                            f"{ev.get('current_error', 0):.4f} rad, p = {ev.get('p_value', 1):.3g}) - deploy it "
                            "with /training_workflow/deploy_model")
        if self.server_in_charge:
            recs.append("the GPU server's auto-train is in charge of training in this setup")
        out["recommendations"] = recs
        return out

    # --- persistence -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "trained": sorted(self.trained), "holdout": self.holdout,
            "last_training_time": self.last_training_time, "retry_after": self.retry_after,
            "retry_reason": self.retry_reason, "consecutive_failures": self.consecutive_failures,
            "hold_at": self.hold_at,
            "job": asdict(self.job) if self.job else None, "history": self.history, "models": self.models,
            "deployed": self.deployed, "monitor": asdict(self.monitor), "counters": self.counters,
            "message": self.message, "online": asdict(self.online) if self.online else None,
        }

    def load(self, d: dict[str, Any]) -> None:
        """Restore from a state file's dict; KeyError/TypeError/ValueError when it is not one."""
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"state file version {d.get('version')!r}, expected {STATE_VERSION}")
        self.trained = set(map(str, d["trained"]))
        self.holdout = [str(p) for p in d["holdout"]]
        self.last_training_time = float(d["last_training_time"])
        self.retry_after = float(d.get("retry_after", 0.0))
        self.retry_reason = str(d.get("retry_reason", ""))
        self.consecutive_failures = int(d.get("consecutive_failures", 0))
        self.hold_at = d.get("hold_at")
        self.job = Job.from_dict(d["job"]) if d.get("job") else None
        self.history = list(d["history"])
        self.models = dict(d["models"])
        self.deployed = [str(m) for m in d["deployed"]]
        self.monitor = Monitor.from_dict(d["monitor"])
        self.online = OnlineEvaluation.from_dict(d["online"]) if d.get("online") else None
        self.counters.update({k: int(v) for k, v in d["counters"].items()})
        self.message = f"state restored ({len(self.trained)} trained episodes, {len(self.models)} models)"
        self.dirty = False
