"""Runs the workflow state machine (``machine.py``) against the world: the recorder's files on disk, the GPU
server's HTTP API, the state file. No rclpy: the ``training_workflow_manager`` node only adapts this.

One thread ticks every ``poll_period_s``: rescan the data root (``datasets.catalog.Catalog``: unchanged files cost
a stat), poll ``/training_status`` and ``/jobs`` (with exponential backoff while the server is down: the status
says so, nothing crashes), poll our job, feed the machine, execute its effects. Evaluations run in their own
thread (they query the server's WebSocket for a while). Commands (trigger, pause, deploy...) arrive from the node's
service threads and run under the same lock.

Online evaluation: the machine's StartComparison / SendTrial / StopComparison / PinModel effects go through a
:class:`ComparisonPort` the node provides (service clients of ``model_comparison`` and hil_session's parameter
service); ``model_comparison/status`` comes in through :meth:`WorkflowRunner.observe_comparison` (kept, then fed
to the machine by the workflow thread, so no ROS callback ever waits on a service call).

State file: JSON, written atomically (temp file + rename) whenever the machine says something durable changed. A
state file that cannot be read is renamed ``<name>.corrupt-<time>`` (kept for inspection) and reported in the
status; the manager starts fresh, it never refuses to start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from h1_training.datasets.catalog import Catalog
from h1_training.recording import layout as L
from h1_training.workflow import evaluate
from h1_training.workflow.machine import (
    Deploy,
    EpisodeFact,
    Evaluate,
    JobAction,
    PinModel,
    SendTrial,
    StartComparison,
    StopComparison,
    SubmitJob,
    Workflow,
    WorkflowConfig,
)
from h1_training.workflow.server_api import ApiError, Backoff, ServerApi, ServerUnavailable

log = logging.getLogger("h1_training.workflow")


@dataclass
class RunnerConfig:
    data_dir: Path
    state_file: Path
    server_url: str = "http://127.0.0.1:8000"
    api_key: str = ""
    poll_period_s: float = 2.0
    http_timeout_s: float = 3.0
    eval_frames_per_episode: int = 10
    eval_send_images: bool = True


class ComparisonPort(Protocol):
    """How the runner reaches ``model_comparison`` and hil_session (the node implements it with service clients).
    Each method raises ``ConnectionError`` with the reason when the service cannot be reached (nothing was sent),
    ``TimeoutError`` when the request went out but no reply came (it may have been carried out)."""

    def start(self, model_ids: list[str], trials_per_model: int, alpha: float) -> tuple[bool, str, str]:
        """(accepted, message, comparison_id) of ``model_comparison/start`` (mode ab)."""

    def record(self, model_id: str, success: bool) -> tuple[bool, str]:
        """(accepted, message) of ``model_comparison/record_trial``."""

    def stop(self) -> tuple[bool, str]:
        """``model_comparison/stop``."""

    def next_model(self) -> tuple[bool, str]:
        """``model_comparison/next_model``: (True, model id) or (False, why none)."""

    def pin(self, model_id: str) -> str:
        """Set hil_session's ``model`` ("" = the deployed default); "" when done, else why not."""


def load_state(path: Path) -> tuple[dict | None, str]:
    """(state dict or None, message). A corrupt file is set aside, never fatal."""
    if not path.exists():
        return None, f"no state file at {path}: starting fresh"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"top level is {type(data).__name__}, not an object")
        return data, f"state restored from {path}"
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            path.replace(aside)
        except OSError:
            aside = path
        return None, f"state file {path} unreadable ({exc}); set aside as {aside.name}, starting fresh"


def save_state(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def episode_facts(catalog: Catalog, root: Path) -> list[EpisodeFact]:
    facts = []
    for ds in catalog.refresh():
        if ds.format != "hdf5":
            continue
        for ep in ds.episodes:
            path = Path(ep.path)
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue
            mtime = ep.stat_key[0] / 1e9 if ep.stat_key else 0.0
            facts.append(EpisodeFact(rel, mtime, ep.valid, L.is_excluded(path), ep.success, ep.human_frames,
                                     ep.model_version))
    return facts


class WorkflowRunner:
    def __init__(self, cfg: RunnerConfig, wf_cfg: WorkflowConfig,
                 on_update: Callable[[WorkflowRunner], None] = lambda r: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.on_update = on_update
        self.lock = threading.RLock()
        self.machine = Workflow(wf_cfg, clock())
        data, self.state_message = load_state(cfg.state_file)
        if data is not None:
            try:
                self.machine.load(data)
            except (KeyError, TypeError, ValueError) as exc:
                aside = cfg.state_file.with_name(f"{cfg.state_file.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
                cfg.state_file.replace(aside)
                self.machine = Workflow(wf_cfg, clock())
                self.state_message = (f"state file {cfg.state_file} does not hold a workflow state ({exc!r}); set "
                                      f"aside as {aside.name}, starting fresh")
        self.machine.message = self.state_message
        log.info(self.state_message)
        self.api = ServerApi(cfg.server_url, cfg.api_key, cfg.http_timeout_s)
        self.backoff = Backoff(initial_s=1.0, max_s=30.0)
        self.catalog = Catalog([cfg.data_dir], decode="none")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._eval_thread: threading.Thread | None = None
        self.comparison: ComparisonPort | None = None   # set by the node
        self._comparison_status: dict | None = None     # the latest model_comparison/status, not yet fed
        self._comparison_down_until = 0.0               # after a failed call: no more trials sent until then
        self.job_seen_at = 0.0      # last time our job's record came back (training_stats freshness)

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="workflow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad round must not end the automation
                log.exception("workflow tick failed")
            self._wake.wait(self.cfg.poll_period_s)
            self._wake.clear()

    # --- configuration ---------------------------------------------------------------------------------------
    def set_config(self, wf_cfg: WorkflowConfig | None = None, server_url: str | None = None,
                   api_key: str | None = None) -> None:
        with self.lock:
            if server_url is not None or api_key is not None:
                key = (self.api.api_key or "") if api_key is None else api_key
                self.api = ServerApi(server_url or self.api.url, key, self.cfg.http_timeout_s)
                self.backoff.ok()
            if wf_cfg is not None:
                self._execute(self.machine.set_config(wf_cfg))
            self._changed()
        self.wake()

    # --- one round -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        facts = episode_facts(self.catalog, self.cfg.data_dir)  # outside the lock: may read many files
        with self.lock:
            now = self.clock()
            m = self.machine
            if self.backoff.ready(now):
                try:
                    status = self.api.training_status()
                    jobs = self.api.jobs()
                    self.backoff.ok()
                    m.observe_server(now, status, jobs)
                except (ServerUnavailable, ApiError) as exc:
                    delay = self.backoff.failed(now)
                    m.observe_server(now, None, None, f"{exc} (next try in {delay:.0f} s)")
            if m.server_reachable and m.job is not None and m.job.status in ("queued", "running", "paused"):
                try:
                    record = self.api.job(m.job.id)
                    self.job_seen_at = now
                    self._execute(m.observe_job(now, record))
                except ApiError as exc:
                    if exc.status == 404:
                        self._execute(m.observe_job(now, None, lost="the server does not know it any more (it "
                                                                    "restarted during the job)"))
                    else:
                        m.message = f"following job {m.job.id}: {exc}"
                except ServerUnavailable as exc:
                    m.observe_server(now, None, None, str(exc))
            status, self._comparison_status = self._comparison_status, None
            if status is not None:
                self._execute(m.observe_comparison(now, status))
            self._execute(m.observe_episodes(now, facts))
            self._changed()

    def observe_comparison(self, status: dict) -> None:
        """model_comparison's status (from a ROS callback): kept for the next round, which comes at once."""
        self._comparison_status = status
        self.wake()

    def _changed(self) -> None:
        if self.machine.dirty:
            try:
                save_state(self.cfg.state_file, self.machine.to_dict())
                self.machine.dirty = False
            except OSError as exc:
                self.machine.message = f"cannot write the state file {self.cfg.state_file}: {exc}"
        try:
            self.on_update(self)
        except Exception:
            log.exception("status publish failed")

    # --- effects ---------------------------------------------------------------------------------------------
    def _execute(self, effects: list[Any]) -> None:
        m = self.machine
        for eff in effects:
            now = self.clock()
            if isinstance(eff, SubmitJob):
                try:
                    record = self.api.submit(eff.request)
                    m.submitted(now, eff, record)
                    log.info(m.message)
                except (ServerUnavailable, ApiError) as exc:
                    m.submitted(now, eff, None, str(exc))
                    log.error(m.message)
            elif isinstance(eff, JobAction):
                try:
                    record = self.api.job_action(eff.job_id, eff.action)
                    target = m.job if m.job is not None and m.job.id == eff.job_id else m.foreign_job
                    if target is not None:
                        m._job_from_server(target, record, now)
                    m.message = f"job {eff.job_id}: {eff.action} -> {record.get('status')}"
                except (ServerUnavailable, ApiError) as exc:
                    m.message = f"job {eff.job_id}: {eff.action} failed: {exc}"
                m.dirty = True
            elif isinstance(eff, Evaluate):
                self._eval_thread = threading.Thread(target=self._evaluate, args=(eff,), name="evaluate",
                                                     daemon=True)
                self._eval_thread.start()
            elif isinstance(eff, Deploy):
                try:
                    self.api.deploy(eff.model_id)
                    m.deployed_result(now, eff.model_id)
                    log.info(f"deployed {eff.model_id} ({eff.reason})")
                except (ServerUnavailable, ApiError) as exc:
                    m.deployed_result(now, eff.model_id, str(exc))
                    log.error(m.message)
            elif isinstance(eff, StartComparison | SendTrial | StopComparison | PinModel):
                self._execute(self._online_effect(eff))

    def _online_effect(self, eff: Any) -> list[Any]:
        """One effect of the online evaluation, through the node's port; returns the machine's follow-ups."""
        m, port, now = self.machine, self.comparison, self.clock()
        try:
            if port is None:
                raise ConnectionError("no model_comparison connection (the runner runs without the node)")
            if isinstance(eff, StartComparison):
                ok, message, cid = port.start([eff.current, eff.candidate], eff.trials_per_model, eff.alpha)
                log.info(f"model_comparison/start: {message}")
                return m.comparison_started(now, cid, "" if ok and cid else (message or "refused"))
            if isinstance(eff, SendTrial):
                if now < self._comparison_down_until:  # one wait per round, not one per pending trial
                    m.trial_sent(now, eff, False, "", "model_comparison was not reachable for the previous trial")
                    return []
                accepted, message = port.record(eff.model_id, eff.success)
                m.trial_sent(now, eff, accepted, message)
                (log.info if accepted else log.warning)(f"trial {eff.path} ({eff.model_id}): {message}")
            elif isinstance(eff, StopComparison):
                ok, message = port.stop()
                log.info(f"model_comparison/stop ({eff.reason}): {message}")
            elif isinstance(eff, PinModel):
                model = eff.model_id
                if eff.next:
                    ok, model = port.next_model()
                    if not ok:  # every model has its trials: the verdict is on its way
                        return []
                pinned = m.online.pinned if m.online is not None else None
                if eff.next and model == pinned:
                    return []
                before = m.online.pin_problem if m.online is not None else ""
                problem = port.pin(model)
                m.pinned(model, problem)
                if problem and problem != before:  # a retry that fails the same way is not logged again
                    log.warning(f"hil_session model pin {model or '(release)'}: {problem}")
        except TimeoutError as exc:
            # the request went out: model_comparison may have recorded / started it. A trial is not sent again (a
            # duplicate would count twice; one lost trial only costs a trial); anything else is reported.
            if isinstance(eff, SendTrial):
                m.trial_sent(now, eff, False, f"no reply ({exc}); not sent again: it may have been recorded")
            elif isinstance(eff, StartComparison):
                return m.comparison_started(now, "", f"no reply ({exc})", unanswered=True)
            elif isinstance(eff, PinModel):
                m.pinned("", str(exc))
            else:
                m.message += f"; model_comparison/stop: {exc}"
            log.warning(f"{type(eff).__name__}: {exc}")
        except ConnectionError as exc:
            if isinstance(eff, StartComparison):
                return m.comparison_started(now, "", str(exc))
            if isinstance(eff, SendTrial):
                self._comparison_down_until = max(self._comparison_down_until, self.clock() + 1.0)
                m.trial_sent(now, eff, False, "", str(exc))
            elif isinstance(eff, PinModel):
                m.pinned("", str(exc))
            else:
                m.message += f"; model_comparison/stop failed: {exc}"
            log.warning(f"{type(eff).__name__}: {exc}")
        return []

    def _evaluate(self, eff: Evaluate) -> None:
        root = self.cfg.data_dir
        paths = [root / p for p in eff.episodes if (root / p).exists()]
        try:
            if not paths:
                raise ValueError("the held-out episodes are gone from the data dir")
            kw = {"api_key": self.api.api_key, "frames_per_episode": self.cfg.eval_frames_per_episode,
                  "send_images": self.cfg.eval_send_images, "should_stop": self._stop.is_set}
            current = evaluate.score_model(self.api.ws_url, eff.current, paths, **kw)
            candidate = evaluate.score_model(self.api.ws_url, eff.candidate, paths, **kw)
            result, error = evaluate.compare(current, candidate, self.machine.config.alpha).to_dict(), ""
        except Exception as exc:  # noqa: BLE001 - reported in the status, the workflow goes on
            result, error = None, f"{type(exc).__name__}: {exc}"
        with self.lock:
            self._execute(self.machine.evaluated(self.clock(), result, error))
            log.info(self.machine.message)
            self._changed()

    # --- commands (from the node's services) -----------------------------------------------------------------
    def command(self, name: str, arg: str = "") -> tuple[bool, str]:
        with self.lock:
            m = self.machine
            now = self.clock()
            if name == "trigger":
                ok, msg, eff = m.trigger(now)
            elif name in ("pause", "resume", "cancel"):
                ok, msg, eff = m.job_action(name)
            elif name == "deploy":
                ok, msg, eff = m.request_deploy(arg)
            elif name == "rollback":
                ok, msg, eff = m.rollback()
            else:
                raise ValueError(f"unknown command {name!r}")
            self._execute(eff)
            if eff:
                msg = m.message
                ok = ok and not any(w in msg for w in ("failed", "refused"))
            self._changed()
            return ok, msg
