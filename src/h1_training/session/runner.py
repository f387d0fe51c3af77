"""The HIL session's executor (no rclpy): runs the state machine's effects, the policy loop, polling and sync.

``hil_session`` (nodes/hil_session_node.py) is a thin adapter around :class:`SessionRunner`: it provides the
robot side as :class:`SessionPorts` (arm mode and recorder services, ``arm_command`` / ``policy_proposal``
publishers, the latest joint_states and camera frames, the status topic, the log) and forwards keys, labels,
``arm/mode`` and recorder status. Everything else happens here:

- one **worker thread** feeds events to :class:`~h1_training.session.state_machine.SessionMachine` one at a time
  and executes the returned effects in order (state_machine's contract: a failed *gating* effect skips the rest
  of its list; results and failures are fed back after the list, depth first, before the next queued event);
- a **poll thread** asks ``GET /training_status`` every ``poll_period_s`` while the session is WAITING;
- the **policy loop** (:class:`PolicyLoop`, two threads): an inference thread sends the observation to the
  policy server and receives an action chunk [H, 14]; the control thread publishes one row per tick at
  ``control_rate_hz``, open loop, and asks for the next chunk after ``replan_steps`` rows (or when the chunk runs
  out: then it repeats the last row, a constant target, until the next chunk arrives or the request times out).
  Rows that elapsed while the server computed are skipped, so the chunk stays aligned with time;
- a **sync thread** runs ``session/sync.py`` (rsync + SYNC_COMPLETE) for one epoch.

Teleoperation (``collection_mode`` teleoperation): a :class:`~h1_training.session.teleop.TeleopRelay` takes the
policy loop's place: targets from ``teleop/arm_target`` pass the arm's safety clamp and are published on
``arm_command``; when they go stale the arm is put in HOLD (the episode goes on), and in TRACK again when they
come back.

Safety: a policy error (server gone, timeout, NaN/inf or misshaped actions, no fresh joint_states, an exception)
stops publishing at once - in TRACK the arm's command watchdog then holds the pose within ``watchdog_timeout_s``
(100 ms) - and the machine gets ``Failed("policy")``: policy stopped, arm HOLD, episode saved. The arm going to
ESTOP/FAULT is ``Failed("arm")``. A watchdog fall-back to HOLD while the policy is healthy (a late command on a
loaded machine) re-enables TRACK at most ``max_track_resumes`` times per episode, then fails the episode. While
the human has the arm (ProposeOnly), a policy error only stops the proposals (a warning): the arm is not driven.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from h1_training.policy.client import PolicyClient, PolicyClientError, get_training_status
from h1_training.recording import layout
from h1_training.session.policy_loop import PolicyLoop
from h1_training.session.settings import SessionSettings
from h1_training.session.state_machine import (
    LABEL_FAILED,
    LABEL_SUCCESS,
    ArmMode,
    Effect,
    Event,
    Exit,
    Failed,
    Interrupt,
    Key,
    Label,
    Outcome,
    ProposeOnly,
    Saved,
    SaveRecording,
    Say,
    SessionMachine,
    SetArmMode,
    Source,
    Started,
    StartPolicy,
    StartRecording,
    StartTeleop,
    State,
    Status,
    StopPolicy,
    StopTeleop,
    Sync,
    Synced,
    TrainingStatus,
    is_gating,
)
from h1_training.session.sync import SyncProgress, sync_epoch
from h1_training.session.teleop import TeleopRelay

Log = Callable[[str, str], None]   # (level "info" | "warn" | "error", text)


# --- the runner --------------------------------------------------------------------------------------------
class EffectError(RuntimeError):
    """A port could not do what an effect asked (the message is for the operator)."""


class SessionPorts(Protocol):
    """The robot side, as the node provides it. Blocking calls with their own timeouts; raise EffectError."""

    def wait_ready(self, timeout: float) -> list[str]: ...               # names of services still missing
    def set_arm_mode(self, mode: ArmMode) -> None: ...
    def start_recording(self, epoch: int, index: int, prompt: str) -> tuple[int, str]: ...   # (index, path)
    def save_recording(self, label: int) -> Saved: ...
    def publish_action(self, action: np.ndarray, model_version: str, proposal: bool) -> None: ...
    def observation(self) -> dict: ...
    def publish_status(self, snapshot: Snapshot) -> None: ...
    def log(self, level: str, text: str) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """Everything SessionStatus carries."""
    status: Status
    recording: bool
    policy_running: bool
    proposal_only: bool
    arm_mode: str
    model_version: str
    policy_frames: int
    human_frames: int
    sync_progress: str
    lines: tuple[str, ...]
    lines_seq: int
    last_error: str


@dataclass(frozen=True)
class _ResumeTrack:
    """Internal: the arm's watchdog dropped TRACK to HOLD while the policy is healthy."""
    episode: int


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.outcome: Outcome | None = None

    def set(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.event.set()


@dataclass(frozen=True)
class _TeleopWatchdog:
    """Internal: the teleop targets went stale (``stale``) or came back."""
    stale: bool
    reason: str = ""


_STOP = object()
_SOURCE: dict[type, Source] = {SetArmMode: "arm", StartRecording: "recorder", SaveRecording: "recorder",
                               StartPolicy: "policy", ProposeOnly: "policy", StopPolicy: "policy",
                               StartTeleop: "teleop", StopTeleop: "teleop", Sync: "sync"}


@dataclass
class _Live:
    """The recorder's live counts while recording."""
    policy_frames: int = 0
    human_frames: int = 0
    valid: bool = False


@dataclass
class SessionRunner:
    settings: SessionSettings
    ports: SessionPorts
    make_client: Callable[[], PolicyClient] | None = None
    machine: SessionMachine = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.machine = SessionMachine(ask_label=s.ask_label, last_seen_epoch=s.last_seen_epoch, prompt=s.prompt,
                                      mode=s.collection_mode)
        self.teleop = TeleopRelay(
            lambda target, version: self.ports.publish_action(target, version, False),
            on_stale=lambda reason: self.submit(_TeleopWatchdog(True, reason)),
            on_fresh=lambda: self.submit(_TeleopWatchdog(False)),
            rate_hz=s.control_rate_hz, timeout_s=s.teleop_timeout_s)
        if self.make_client is None:
            self.make_client = lambda: PolicyClient(
                s.policy_host, s.policy_port, api_key=s.api_key or None, model=s.model or None,
                connect_timeout=s.connect_timeout_s, request_timeout=s.inference_timeout_s,
                max_attempts=s.connect_attempts, backoff_s=0.3, max_backoff_s=1.0)
        self.done = threading.Event()
        self.exit_reason = ""
        self.data_dir = Path(s.save_dir)
        self.loop: PolicyLoop | None = None
        self._q: queue.Queue = queue.Queue()
        self._mlock = threading.RLock()        # the machine and the fields below
        self._pub_lock = threading.Lock()      # taken before _mlock, never after
        self._lines: list[str] = []
        self._last_lines: tuple[str, ...] = ()
        self._lines_seq = 0
        self._arm_mode = ""
        self._episode = 0                      # counts StartRecording, tags watchdog resumes
        self._track_resumes = 0
        self._recorder_error = ""
        self._live = _Live()
        self._note = ""
        self._warning = ""
        self._model_version = ""
        self._sync_progress = ""
        self._sync_progress_t = 0.0
        self._sync_cancel: threading.Event | None = None
        self._sync_thread: threading.Thread | None = None
        self._exit_pending = False
        self._worker = threading.Thread(target=self._work, name="session-worker", daemon=True)
        self._poller = threading.Thread(target=self._poll, name="session-poll", daemon=True)

    # --- public: lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def close(self, timeout: float = 3.0) -> None:
        """Stop everything (node shutdown). The arm is never left tracking: the policy stops publishing first,
        then HOLD is asked for when the machine believes the arm tracks."""
        if self.loop is not None:
            self.loop.stop()
        self.teleop.stop()
        if self._sync_cancel is not None:
            self._sync_cancel.set()
        if self.machine.arm == ArmMode.TRACK:
            try:
                self.ports.set_arm_mode(ArmMode.HOLD)
            except Exception as exc:  # noqa: BLE001 - the watchdog holds the arm anyway (no commands)
                self.ports.log("warn", f"could not set the arm to HOLD at shutdown ({exc}); the arm's command "
                                       "watchdog holds it")
        self.done.set()
        self._q.put((_STOP, None))
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)

    def force_stop(self) -> None:
        """Second Ctrl+C: stop publishing now and exit without waiting for the save."""
        if self.loop is not None:
            self.loop.stop(timeout=0.2)
        self.teleop.stop(timeout=0.2)
        if self._sync_cancel is not None:
            self._sync_cancel.set()
        self.exit_reason = self.exit_reason or "second Ctrl+C"
        self.done.set()

    # --- public: inputs ----------------------------------------------------------------------------------
    def submit(self, event: Any, wait: bool = False, timeout: float | None = None) -> Outcome | None:
        if self.done.is_set():
            return Outcome(self.machine.state, (), accepted=False, reason="the session is stopping")
        waiter = _Waiter() if wait else None
        self._q.put((event, waiter))
        if waiter is None:
            return None
        waiter.event.wait(self.settings.key_reply_timeout_s if timeout is None else timeout)
        return waiter.outcome

    def key(self, key: str) -> Outcome | None:
        """An operator key; returns the machine's outcome (None: still queued behind a slow effect)."""
        return self.submit(Key(key), wait=True)

    def interrupt(self) -> None:
        self.submit(Interrupt())

    def label(self, success: int, note: str = "", file_path: str = "") -> tuple[bool, str]:
        if success not in (LABEL_FAILED, LABEL_SUCCESS):
            return False, f"success must be {LABEL_FAILED} (failed) or {LABEL_SUCCESS} (succeeded), not {success}"
        if file_path:
            return self._relabel_file(file_path, success, note)
        out = self.submit(Label(success), wait=True)
        if out is None:
            return True, "label queued"
        if out.accepted and note:
            with self._mlock:
                self._note = note
        return out.accepted, out.reason or f"labeled {'success' if success else 'failure'}"

    def set_mode(self, mode: str) -> None:
        """The collection mode of the next episode (hil_session's ``collection_mode``)."""
        with self._mlock:
            SessionMachine(mode=mode)  # validates
            self.machine.mode = mode
        self.publish()

    def on_teleop_target(self, positions) -> str:
        """A target from ``teleop/arm_target``: "" when taken, else why it was rejected."""
        reason = self.teleop.offer(positions)
        if reason:
            with self._mlock:
                self._warning = f"teleop: {reason}"
        return reason

    def on_arm_mode(self, mode: str) -> None:
        with self._mlock:
            prev, self._arm_mode = self._arm_mode, mode
            state, arm, episode = self.machine.state, self.machine.arm, self._episode
        if mode == prev:
            return
        if mode in ("ESTOP", "FAULT"):
            self.submit(Failed("arm", f"arm went to {mode}" + (" (E-STOP latched)" if mode == "ESTOP" else
                                                               " (no rt/lowstate from the robot)")))
        elif mode == "HOLD" and prev == "TRACK" and state == State.EXECUTING and arm == ArmMode.TRACK:
            self.submit(_ResumeTrack(episode))
        else:
            self.publish()

    def on_recorder_status(self, error: bool, message: str, recording: bool, policy_frames: int,
                           human_frames: int) -> None:
        with self._mlock:
            if recording:
                self._live = _Live(policy_frames, human_frames, True)
            report = (error and message and message != self._recorder_error and self.machine.recording
                      and not self.machine.save_pending)
            self._recorder_error = message if error else ""
        if report:
            self.submit(Failed("recorder", message))

    # --- status ------------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._mlock:
            st = self.machine.status()
            loop = self.loop
            live = self._live if (self.machine.recording and self._live.valid) else None
            return Snapshot(
                status=st, recording=self.machine.recording, policy_running=bool(loop and loop.running),
                proposal_only=bool(loop and loop.running and loop.proposal), arm_mode=self._arm_mode,
                model_version=self._model_version,
                policy_frames=live.policy_frames if live else st.policy_frames,
                human_frames=live.human_frames if live else st.human_frames,
                sync_progress=self._sync_progress if st.state == State.SYNCING else "",
                lines=self._last_lines, lines_seq=self._lines_seq,
                last_error=st.last_error or self._warning)

    def publish(self) -> None:
        # one publisher at a time (worker, timer, callbacks): an older snapshot never follows a newer one
        try:
            with self._pub_lock:
                self.ports.publish_status(self.snapshot())
        except Exception as exc:  # noqa: BLE001 - a status that cannot be published must not stop the session
            self.ports.log("warn", f"status not published: {exc}")

    def _flush_lines(self) -> None:
        with self._mlock:
            if self._lines:
                self._last_lines, self._lines = tuple(self._lines), []
                self._lines_seq += 1
        self.publish()

    # --- worker ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        missing = self.ports.wait_ready(self.settings.startup_timeout_s)
        if missing:
            self.ports.log("warn", f"not available after {self.settings.startup_timeout_s:.0f} s: "
                                   f"{', '.join(missing)}; starting anyway (their effects fail until they are up)")
        self._process(None, None)
        self._poller.start()
        while not self.done.is_set():
            item, waiter = self._q.get()
            if item is _STOP:
                break
            try:
                self._process(item, waiter)
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the arm tracking
                self.ports.log("error", f"session error: {type(exc).__name__}: {exc}; stopping the policy, arm HOLD")
                if self.loop is not None:
                    self.loop.stop()
                self.teleop.stop()
                try:
                    self.ports.set_arm_mode(ArmMode.HOLD)
                except Exception:  # noqa: BLE001
                    pass
                if waiter is not None and waiter.outcome is None:
                    waiter.set(Outcome(self.machine.state, (), accepted=False, reason=f"session error: {exc}"))
            if self._exit_pending:
                self.done.set()
        # wake anyone still waiting for a reply
        while True:
            try:
                _, waiter = self._q.get_nowait()
            except queue.Empty:
                break
            if waiter is not None:
                waiter.set(Outcome(self.machine.state, (), accepted=False, reason="the session is stopping"))

    def _process(self, first: Any, waiter: _Waiter | None) -> None:
        pending: deque = deque([first])
        head = True
        while pending and not self.done.is_set():
            ev = pending.popleft()
            if isinstance(ev, _ResumeTrack):
                pending.extendleft(reversed(self._resume_track(ev)))
                continue
            if isinstance(ev, _TeleopWatchdog):
                pending.extendleft(reversed(self._teleop_watchdog(ev)))
                continue
            with self._mlock:
                out = self.machine.start() if ev is None else self.machine.event(ev)
            if head and waiter is not None:
                waiter.set(out)
            head = False
            if not out.accepted:
                if not isinstance(ev, Key):  # a refused key is answered to the caller
                    self.ports.log("warn", f"event {type(ev).__name__} ignored: {out.reason}")
                self.publish()
                continue
            results = self._execute(out.effects)
            self._flush_lines()
            pending.extendleft(reversed(results))

    def _execute(self, effects: tuple[Effect, ...]) -> list[Event]:
        results: list[Event] = []
        failures: list[Event] = []
        for eff in effects:
            if not isinstance(eff, Say) and self._lines:
                self._flush_lines()  # the operator sees "[SAVING] ..." before the save runs
            try:
                ev = self._do(eff)
            except EffectError as exc:
                failures.append(Failed(_SOURCE.get(type(eff), "policy"), str(exc), eff))
                if is_gating(eff):
                    break
                continue
            if ev is not None:
                results.append(ev)
        return results + failures

    def _do(self, eff: Effect) -> Event | None:
        if isinstance(eff, Say):
            self.ports.log(eff.level, eff.text)
            with self._mlock:
                self._lines.append(eff.text)
            return None
        if isinstance(eff, SetArmMode):
            if eff.mode == ArmMode.TRACK and not ((self.loop is not None and self.loop.running)
                                                  or self.teleop.running):
                # the policy failed between its start and this effect: never track without commands
                raise EffectError("TRACK refused by the session: neither the policy nor the teleop relay runs")
            self.ports.set_arm_mode(eff.mode)
            return None
        if isinstance(eff, StartRecording):
            return self._start_recording(eff)
        if isinstance(eff, SaveRecording):
            return self._save_recording(eff)
        if isinstance(eff, StartPolicy):
            self._start_policy(eff)
            return None
        if isinstance(eff, ProposeOnly):
            if self.loop is not None:
                self.loop.set_proposal(True)
            return None
        if isinstance(eff, StopPolicy):
            self._stop_policy()
            return None
        if isinstance(eff, StartTeleop):
            self._start_teleop()
            return None
        if isinstance(eff, StopTeleop):
            self._stop_teleop()
            return None
        if isinstance(eff, Sync):
            return self._start_sync(eff.epoch)
        if isinstance(eff, Exit):
            self._exit(eff.reason)
            return None
        raise TypeError(f"unknown effect {eff!r}")

    # --- effects -----------------------------------------------------------------------------------------
    def _start_recording(self, eff: StartRecording) -> Started:
        index, path = self.ports.start_recording(eff.epoch, eff.episode_index, eff.prompt)
        with self._mlock:
            self._episode += 1
            self._track_resumes = 0
            self._note = ""
            self._warning = ""
            self._live = _Live()
        if path:
            recorder_dir = Path(path).parent.parent
            if recorder_dir.resolve() != self.data_dir.resolve():
                self.ports.log("warn", f"the recorder writes into {recorder_dir}, not save_dir {self.data_dir}: "
                                       f"syncing from {recorder_dir} (set the same save_dir on both)")
            self.data_dir = recorder_dir
        return Started(index, path)

    def _save_recording(self, eff: SaveRecording) -> Saved:
        saved = self.ports.save_recording(eff.success_label)
        with self._mlock:
            note, self._note = self._note, ""
            self._live = _Live()
        if note and saved.path:
            ok, msg = self._relabel_file(saved.path, eff.success_label, note, check_dir=False)
            if not ok:
                self.ports.log("warn", f"label note not stored: {msg}")
        return saved

    def _start_policy(self, eff: StartPolicy) -> None:
        self._stop_policy()
        s = self.settings
        assert self.make_client is not None
        loop = PolicyLoop(self.make_client(), self.ports.observation, self.ports.publish_action,
                          lambda reason: self._on_loop_failure(loop, reason), rate_hz=s.control_rate_hz,
                          replan_steps=s.replan_steps, max_chunk_rows=s.max_chunk_rows,
                          skip_elapsed_rows=s.skip_elapsed_rows, blend_steps=s.blend_steps)
        with self._mlock:
            self.loop = loop  # before its threads run, so that their failure is not taken for a stale loop's
        try:
            loop.start()
        except (PolicyClientError, ValueError, OSError, TimeoutError) as exc:
            with self._mlock:
                self.loop = None
            raise EffectError(str(exc)) from exc
        with self._mlock:
            self._model_version = loop.model_version
        self.ports.log("info", f"  Policy: model {loop.model_version or '?'} (epoch {eff.epoch} weights) at "
                               f"{s.control_rate_hz:g} Hz, {loop.client.metadata.get('action_horizon', '?')}-row "
                               f"chunks, next chunk after {s.replan_steps or 'the whole chunk'} rows; first "
                               f"inference {loop.stats.infer_ms_last:.0f} ms")

    def _stop_policy(self) -> None:
        loop = self.loop
        if loop is None:
            return
        loop.stop()
        st = loop.stats
        self.ports.log("info", f"  Policy stopped: {st.ticks} targets sent, {st.inferences} inferences "
                               f"(last {st.infer_ms_last:.0f} ms, max {st.infer_ms_max:.0f} ms), "
                               f"{st.late_ticks} late ticks ({st.missed_ticks} missed), {st.held_ticks} ticks "
                               f"waiting for a chunk, largest step at a chunk switch {st.max_boundary_step_rad:.3f} "
                               "rad")
        with self._mlock:
            self.loop = None

    def _start_teleop(self) -> None:
        s = self.settings
        self.teleop.rate_hz, self.teleop.timeout_s = s.control_rate_hz, s.teleop_timeout_s
        try:
            self.teleop.start(require_fresh_s=max(s.teleop_start_wait_s, 1e-3))
        except TimeoutError as exc:
            raise EffectError(str(exc)) from exc
        with self._mlock:
            self._model_version = "teleop"
        self.ports.log("info", f"  Teleoperation: relaying teleop/arm_target at {s.control_rate_hz:g} Hz (clamped to "
                               f"the arm's limits), HOLD after {s.teleop_timeout_s * 1000:.0f} ms without a target")

    def _stop_teleop(self) -> None:
        if not self.teleop.running:
            return
        self.teleop.stop()
        st = self.teleop.stats
        self.ports.log("info", f"  Teleoperation stopped: {st.relayed} targets relayed, {st.received} received "
                               f"({st.clamped} clamped, {st.rejected} rejected), {st.stale_events} watchdog HOLDs")

    def _teleop_watchdog(self, ev: _TeleopWatchdog) -> list[Event]:
        with self._mlock:
            valid = (self.machine.state == State.EXECUTING and self.machine.teleop_running
                     and self.machine.arm == ArmMode.TRACK and self.teleop.running)
        if not valid:
            return []
        mode = ArmMode.HOLD if ev.stale else ArmMode.TRACK
        self._do(Say(f"  {ev.reason}" if ev.stale else "  Teleoperation targets back: TRACK again",
                     "warn" if ev.stale else "info"))
        self._flush_lines()
        try:
            self.ports.set_arm_mode(mode)
        except EffectError as exc:
            return [Failed("arm", f"teleop watchdog: {mode.name} refused: {exc}")]
        return []

    def _on_loop_failure(self, loop: PolicyLoop, reason: str) -> None:
        """From a loop thread, after it stopped publishing."""
        if loop is not self.loop:
            return
        if loop.proposal:
            # the human has the arm: nothing is driven by the policy, so the episode goes on without proposals
            with self._mlock:
                self._warning = f"policy: {reason} (proposals stopped)"
            self.ports.log("warn", f"  Policy failed while the human has the arm: {reason}; proposals stopped, "
                                   "the episode goes on")
            self.publish()
            return
        self.submit(Failed("policy", reason))

    def _resume_track(self, ev: _ResumeTrack) -> list[Event]:
        with self._mlock:
            loop = self.loop
            driven = ((loop is not None and loop.running and not loop.proposal)
                      or (self.teleop.running and not self.teleop.stale))  # teleop: fresh targets only
            valid = (ev.episode == self._episode and self.machine.state == State.EXECUTING
                     and self.machine.arm == ArmMode.TRACK and driven)
            if not valid:
                return []
            self._track_resumes += 1
            n = self._track_resumes
        limit = self.settings.max_track_resumes
        if n > limit:
            return [Failed("arm", f"the arm fell back to HOLD (command watchdog) {n} times in this episode")]
        self._do(Say(f"  Arm fell back to HOLD (command watchdog: a late arm_command); TRACK again ({n}/{limit})",
                     "warn"))
        self._flush_lines()
        try:
            self.ports.set_arm_mode(ArmMode.TRACK)
        except EffectError as exc:
            return [Failed("arm", f"TRACK after a watchdog HOLD refused: {exc}")]
        return []

    def _start_sync(self, epoch: int) -> Event | None:
        target = self.settings.rsync_target.strip()
        if not target:
            self._do(Say(f"  No rsync target configured: epoch {epoch} stays in {self.data_dir}", "warn"))
            return Synced(0, 0, 0.0)
        try:
            cfg = self.settings.sync_config()
        except ValueError as exc:
            raise EffectError(str(exc)) from exc
        cancel = threading.Event()
        src = self.data_dir
        self._sync_progress = ""

        def work() -> None:
            res = sync_epoch(src, epoch, cfg, on_progress=self._on_sync_progress, cancel=cancel)
            if cancel.is_set():
                return
            if res.ok:
                self.ports.log("info", f"  rsync {src}/{layout.session_dir('', epoch).name}/ -> {res.dest}: "
                                       f"{res.files} file(s) in {res.attempts} attempt(s)")
                self.submit(Synced(res.files, res.bytes, res.seconds))
            else:
                self.submit(Failed("sync", res.error + (f" ({res.detail})" if res.detail else "")))

        self._sync_cancel = cancel
        self._sync_thread = threading.Thread(target=work, name="session-sync", daemon=True)
        self._sync_thread.start()
        return None

    def _on_sync_progress(self, p: SyncProgress) -> None:
        self._sync_progress = f"{p.percent}% {p.rate} ({p.files_transferred} file(s))"
        now = time.monotonic()
        if now - self._sync_progress_t >= 0.5:
            self._sync_progress_t = now
            self.publish()

    def _exit(self, reason: str) -> None:
        if self._sync_cancel is not None and self._sync_thread is not None and self._sync_thread.is_alive():
            self._sync_cancel.set()
            self._sync_thread.join(5.0)
        self.exit_reason = reason
        self._exit_pending = True   # the worker stops after this chain (the save's lines are still said)

    # --- polling -----------------------------------------------------------------------------------------
    def _poll(self) -> None:
        s = self.settings
        while not self.done.is_set():
            if self.machine.state == State.WAITING:
                try:
                    st = get_training_status(s.policy_host, s.policy_port, api_key=s.api_key or None,
                                             timeout=s.poll_timeout_s)
                    self.submit(TrainingStatus(bool(st["ready"]), int(st["epoch"])))
                except (PolicyClientError, ValueError, TypeError) as exc:
                    self.submit(Failed("poll", str(exc)))
            self.done.wait(s.poll_period_s)

    # --- labels ------------------------------------------------------------------------------------------
    def _relabel_file(self, file_path: str, success: int, note: str, check_dir: bool = True) -> tuple[bool, str]:
        """Label a saved episode (layout.relabel), only under the data folder unless ``check_dir`` is False."""
        return layout.relabel(file_path, success, note, under=self.data_dir if check_dir else None)

