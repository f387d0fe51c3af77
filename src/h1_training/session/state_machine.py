"""The HIL session's state machine (the H1 seed's), pure and deterministic: no rclpy, no clock, no threads.

States, keys and printed lines follow the seed (``seeds/h1_training_pipeline_readme.md``: diagram, Controls,
Typical Session Flow)::

    WAITING   --/training_status ready and epoch > last seen-->  READY
    READY     --y--> EXECUTING   record; the policy drives the arms (TRACK)
              --n--> WAITING     skip these weights (SYNCING first if this epoch already has saved episodes)
    EXECUTING --s--> LABELING    arm to DAMPING at once; the policy keeps running as a proposal only
    LABELING  --y/n (the policy succeeded / failed)--> DAMPING      the operator corrects by hand (recorded)
    DAMPING   --e--> SAVING      arm HOLD, policy stopped, episode saved with its label --saved--> DECIDING
    DECIDING  --y--> READY       another episode with the same weights
              --n--> SYNCING     rsync the epoch --synced--> WAITING (for weights newer than this epoch)
    any       --Ctrl+C--> STOPPED  policy stopped, arm HOLD, the current episode saved, then exit

Collection modes (``mode``, read when an episode starts; ``MODES``): the table above is ``hil`` and ``policy``
(evaluation rollouts: the same flow). Two more change what READY --y--> starts:

    kinesthetic    READY --y--> DAMPING      record, arm DAMPING, no policy: the operator moves the arm by hand
                                             (every frame "human"); e saves as above
    teleoperation  READY --y--> EXECUTING    record, the teleop relay (StartTeleop: external targets, clamped by
                                             drivers/arm_safety) drives the arm in TRACK; s: damping as above
                                             (the relay stops), e: SAVING at once (relay stopped, saved, HOLD)

The seed's diagram puts LABELING between EXECUTING and DAMPING (EXECUTING -> LABELING -> DAMPING -> SAVING);
labeling there keeps the episode clean: the arm is already in DAMPING, so frames recorded while the operator
answers are genuine "human" frames. ``ask_label=False`` skips LABELING (label -1), which is the seed's Typical
Session Flow line for line. Epoch numbers are the server's ``/training_status`` epoch: the weights that recorded
``training_session_epoch{E}`` are epoch E's.

How a node uses it: feed every event (operator key, poll result, effect result, fault) to :meth:`event` one at a
time and execute the returned effects in order before feeding the next event.

- Effects are idempotent (StopPolicy with no policy running, SetArmMode to the current mode: no-ops).
- If a *gating* effect fails (:func:`is_gating`: StartRecording, StartPolicy, SetArmMode(TRACK)), skip the rest of
  that list (never move the arm without recording, never track without a policy); any other failure does not
  stop the list. Report each failure as ``Failed(source, error, effect)``, after the list.
- Report results: StartRecording -> ``Started``, SaveRecording -> ``Saved``, Sync -> ``Synced``; faults nobody
  asked for (arm mode went ESTOP/FAULT, policy server lost, recorder status error) -> ``Failed(..., effect=None)``.
- ``Exit``: finish effects already running (a save in flight), cancel a sync, then exit.

A failure never leaves a dead end: during an episode it stops the policy, puts the arm in HOLD and saves what was
recorded (SAVING -> DECIDING); a failed save goes to DECIDING (the recorder keeps and repairs its file); a failed
sync stays in SYNCING with y = retry, n = skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Union

LABEL_UNKNOWN, LABEL_FAILED, LABEL_SUCCESS = -1, 0, 1   # SaveEpisode.success_label
MODE_HIL, MODE_POLICY, MODE_KINESTHETIC, MODE_TELEOP = "hil", "policy", "kinesthetic", "teleoperation"
MODES = (MODE_HIL, MODE_POLICY, MODE_KINESTHETIC, MODE_TELEOP)
KEYS = ("y", "n", "s", "e")
INTERRUPT_KEYS = ("\x03", "ctrl+c", "ctrl-c", "^c")


class State(IntEnum):
    """Session states; values are ``h1_training_interfaces/SessionStatus`` STATE_* constants."""
    WAITING = 0
    READY = 1
    EXECUTING = 2
    LABELING = 3
    DAMPING = 4
    SAVING = 5
    DECIDING = 6
    SYNCING = 7
    STOPPED = 8


class ArmMode(IntEnum):
    """Values are ``h1_training_interfaces/SetArmMode`` MODE_* constants."""
    HOLD = 0
    TRACK = 1
    DAMPING = 2


# --- effects: what the node must do ----------------------------------------------------------------------
@dataclass(frozen=True)
class SetArmMode:
    mode: ArmMode


@dataclass(frozen=True)
class StartRecording:
    epoch: int
    episode_index: int = -1        # -1: the recorder's next free index in training_session_epoch{epoch}/
    prompt: str = ""


@dataclass(frozen=True)
class SaveRecording:
    success_label: int = LABEL_UNKNOWN


@dataclass(frozen=True)
class StartPolicy:
    """Run inference with the server's current weights and send its actions as ``arm_command``."""
    epoch: int


@dataclass(frozen=True)
class ProposeOnly:
    """Keep running the policy but publish its actions on ``policy_proposal`` only (the human has the arm)."""


@dataclass(frozen=True)
class StopPolicy:
    pass


@dataclass(frozen=True)
class StartTeleop:
    """Relay the external teleoperation targets (clamped) to ``arm_command``; stale targets hold the arm."""


@dataclass(frozen=True)
class StopTeleop:
    pass


@dataclass(frozen=True)
class Sync:
    epoch: int


@dataclass(frozen=True)
class Say:
    """A line for the operator (the seed's printed lines)."""
    text: str
    level: Literal["info", "warn", "error"] = "info"


@dataclass(frozen=True)
class Exit:
    reason: str


Effect = Union[SetArmMode, StartRecording, SaveRecording, StartPolicy, ProposeOnly, StopPolicy, StartTeleop,
               StopTeleop, Sync, Say, Exit]


def is_gating(effect: Effect) -> bool:
    """A failure of this effect skips the rest of its list (see the module docstring)."""
    return isinstance(effect, (StartRecording, StartPolicy, StartTeleop)) or effect == SetArmMode(ArmMode.TRACK)


# --- events: what happened ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    key: str                       # "y", "n", "s", "e" (Ctrl+C spellings in INTERRUPT_KEYS count as Interrupt)


@dataclass(frozen=True)
class Interrupt:
    """Ctrl+C: save the current data and exit safely."""


@dataclass(frozen=True)
class TrainingStatus:
    ready: bool
    epoch: int


@dataclass(frozen=True)
class Label:
    success: int                   # LABEL_FAILED or LABEL_SUCCESS (LabelEpisode service)


@dataclass(frozen=True)
class Started:
    episode_index: int
    path: str = ""


@dataclass(frozen=True)
class Saved:
    path: str
    frames: int
    policy_frames: int
    human_frames: int
    episode_index: int = -1


@dataclass(frozen=True)
class Synced:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


Source = Literal["arm", "recorder", "policy", "teleop", "sync", "poll"]


@dataclass(frozen=True)
class Failed:
    """An effect failed (``effect`` set) or a component reported a fault by itself (``effect=None``)."""
    source: Source
    error: str
    effect: Effect | None = None


Event = Union[Key, Interrupt, TrainingStatus, Label, Started, Saved, Synced, Failed]


@dataclass(frozen=True)
class Outcome:
    state: State
    effects: tuple[Effect, ...] = ()
    accepted: bool = True
    reason: str = ""               # why an event was rejected (then effects is empty)


@dataclass(frozen=True)
class Status:
    """What the node's SessionStatus message needs."""
    state: State
    state_name: str
    prompt: str                    # what the operator can press now, e.g. "y: start epoch 1, n: skip"
    allowed_keys: tuple[str, ...]  # Ctrl+C is always allowed (except once stopped)
    epoch: int                     # weights in use / data epoch (-1 before the first READY)
    server_epoch: int
    server_ready: bool
    episode_index: int             # current/last episode file index (-1: none yet)
    episodes_saved: int            # in this epoch
    episodes_total: int            # in this session
    label: int
    policy_frames: int
    human_frames: int
    last_episode_path: str
    message: str                   # the last line said
    last_error: str


WAITING_LINE = "[WAITING] Polling policy server for new weights..."
_EPISODE_STATES = (State.EXECUTING, State.LABELING, State.DAMPING)


class SessionMachine:
    """The H1 seed's session as a transition table. See the module docstring for the event/effect contract."""

    def __init__(self, *, ask_label: bool = True, last_seen_epoch: int = -1, prompt: str = "",
                 mode: str = MODE_HIL) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown collection mode {mode!r}; one of {', '.join(MODES)}")
        self.ask_label = ask_label
        self.mode = mode                  # for the next episode
        self.episode_mode = mode          # of the current/last episode
        self.task_prompt = prompt
        self.state = State.WAITING
        self.last_seen_epoch = last_seen_epoch
        self.epoch = -1
        self.server_epoch = -1
        self.server_ready = False
        self.episode_index = -1
        self.episodes_saved = 0
        self.episodes_total = 0
        self.label = LABEL_UNKNOWN
        self.policy_frames = 0
        self.human_frames = 0
        self.last_episode_path = ""
        self.message = ""
        self.last_error = ""
        self.sync_failed = False
        # what the effects we asked for have done (assumed; failures correct it)
        self.arm = ArmMode.HOLD
        self.policy_running = False
        self.teleop_running = False
        self.recording = False
        self.save_pending = False
        self._poll_error = ""
        self._table = {
            (State.READY, "y"): self._start_episode,
            (State.READY, "n"): self._skip,
            (State.EXECUTING, "s"): self._stop_execution,
            (State.LABELING, "y"): lambda: self._label(LABEL_SUCCESS),
            (State.LABELING, "n"): lambda: self._label(LABEL_FAILED),
            (State.DAMPING, "e"): self._end_episode,
            (State.DECIDING, "y"): self._another,
            (State.DECIDING, "n"): self._finish,
            (State.SYNCING, "y"): self._sync,
            (State.SYNCING, "n"): self._skip_sync,
        }

    # --- public ------------------------------------------------------------------------------------------
    def start(self) -> Outcome:
        """Effects at startup: arm HOLD and the first WAITING line."""
        return self._go(State.WAITING, SetArmMode(ArmMode.HOLD), Say(WAITING_LINE))

    def event(self, ev: Event) -> Outcome:
        if isinstance(ev, Key):
            key = ev.key.strip().lower()
            if key in INTERRUPT_KEYS:
                return self._interrupt()
            return self._key(key)
        if isinstance(ev, Interrupt):
            return self._interrupt()
        if isinstance(ev, TrainingStatus):
            return self._training_status(ev)
        if isinstance(ev, Label):
            return self._label_event(ev)
        if isinstance(ev, Started):
            self.episode_index = ev.episode_index
            return self._go(self.state)
        if isinstance(ev, Saved):
            return self._saved(ev)
        if isinstance(ev, Synced):
            return self._synced(ev)
        if isinstance(ev, Failed):
            return self._failed(ev)
        raise TypeError(f"not a session event: {ev!r}")

    def allowed_keys(self) -> tuple[str, ...]:
        if self.state == State.SYNCING and not self.sync_failed:
            return ()
        keys = tuple(k for (s, k) in self._table if s == self.state)
        if self.state == State.EXECUTING and self.episode_mode == MODE_TELEOP:
            keys += ("e",)
        return keys

    def prompt(self) -> str:
        e = self.epoch
        return {
            State.WAITING: f"waiting for weights newer than epoch {self.last_seen_epoch}",
            State.READY: f"y: start epoch {e}, n: " + ("finish and sync" if self.episodes_saved else "skip"),
            State.EXECUTING: ("s: damping (correct by hand), e: end and save" if self.episode_mode == MODE_TELEOP
                              else "s: stop execution, enter damping mode"),
            State.LABELING: "y: the policy succeeded, n: it failed",
            State.DAMPING: "e: end epoch and save",
            State.SAVING: "saving the episode",
            State.DECIDING: "y: another epoch, n: finish training session",
            State.SYNCING: ("y: retry sync, n: skip (the data stays in save_dir)" if self.sync_failed
                            else f"uploading epoch {e}"),
            State.STOPPED: "stopped",
        }[self.state]

    def status(self) -> Status:
        return Status(state=self.state, state_name=self.state.name, prompt=self.prompt(),
                      allowed_keys=self.allowed_keys(), epoch=self.epoch, server_epoch=self.server_epoch,
                      server_ready=self.server_ready, episode_index=self.episode_index,
                      episodes_saved=self.episodes_saved, episodes_total=self.episodes_total, label=self.label,
                      policy_frames=self.policy_frames, human_frames=self.human_frames,
                      last_episode_path=self.last_episode_path, message=self.message, last_error=self.last_error)

    # --- helpers -----------------------------------------------------------------------------------------
    def _go(self, state: State, *effects: Effect) -> Outcome:
        self.state = state
        for eff in effects:
            if isinstance(eff, SetArmMode):
                self.arm = eff.mode
            elif isinstance(eff, StartPolicy):
                self.policy_running = True
            elif isinstance(eff, StopPolicy):
                self.policy_running = False
            elif isinstance(eff, StartTeleop):
                self.teleop_running = True
            elif isinstance(eff, StopTeleop):
                self.teleop_running = False
            elif isinstance(eff, StartRecording):
                self.recording = True
            elif isinstance(eff, SaveRecording):
                self.save_pending = True
            elif isinstance(eff, Say):
                self.message = eff.text
        return Outcome(state, tuple(effects))

    def _reject(self, reason: str) -> Outcome:
        return Outcome(self.state, (), accepted=False, reason=reason)

    def _ready_lines(self, first: bool) -> tuple[Say, ...]:
        head = "[READY] New weights available!" if first else f"[READY] Same weights (epoch {self.epoch})"
        n_does = "finish and sync" if self.episodes_saved else "skip"
        return Say(head), Say(f"  Press 'y' to start epoch {self.epoch}, 'n' to {n_does}:")

    def _damping_lines(self) -> tuple[Say, ...]:
        return (Say("[DAMPING] Robot in damping mode - adjust pose freely"),
                Say("  Press 'e' to end epoch and save"))

    def _deciding_lines(self) -> tuple[Say, ...]:
        return (Say("[DECIDING] What's next?"), Say("  Press 'y' to start another epoch"),
                Say("  Press 'n' to finish training session"))

    def _save(self) -> tuple[Effect, ...]:
        return (Say("[SAVING] Saving episode data..."), SaveRecording(self.label))

    # --- keys --------------------------------------------------------------------------------------------
    def _key(self, key: str) -> Outcome:
        if key not in KEYS:
            return self._reject(f"unknown key {key!r}: the keys are y, n, s, e and Ctrl+C")
        if self.state == State.STOPPED:
            return self._reject(f"'{key}' ignored: the session is stopping")
        handler = self._table.get((self.state, key))
        if (self.state, key) == (State.EXECUTING, "e") and self.episode_mode == MODE_TELEOP:
            handler = self._end_episode
        if handler is None or key not in self.allowed_keys():
            return self._reject(f"'{key}' does nothing in {self.state.name} ({self.prompt()})")
        return handler()

    def _start_episode(self) -> Outcome:
        self.label = LABEL_UNKNOWN
        # the frame counts are this episode's from now on: the last episode's would show until the recorder's first
        # live status arrives (a client waiting for "policy_frames >= N" would act on the old episode's count)
        self.policy_frames = self.human_frames = 0
        self.episode_mode = mode = self.mode
        record = StartRecording(self.epoch, -1, self.task_prompt)
        if mode == MODE_KINESTHETIC:
            # damping first: the recorder's first frame already sees the human in control
            return self._go(State.DAMPING, SetArmMode(ArmMode.DAMPING), record,
                            Say(f"[DAMPING] Kinesthetic demonstration (epoch {self.epoch}): no policy, move the arm "
                                "by hand"), Say("  Press 'e' to end and save"))
        if mode == MODE_TELEOP:
            return self._go(State.EXECUTING, record, StartTeleop(), SetArmMode(ArmMode.TRACK),
                            Say(f"[EXECUTING] Teleoperation (epoch {self.epoch}): the arm follows the teleop targets"),
                            Say("  Press 'e' to end and save, 's' to enter damping mode"))
        return self._go(State.EXECUTING, record, StartPolicy(self.epoch),
                        SetArmMode(ArmMode.TRACK), Say(f"[EXECUTING] Running policy (epoch {self.epoch})"),
                        Say("  Press 's' to stop execution and enter damping mode"))

    def _stop_execution(self) -> Outcome:
        effects: tuple[Effect, ...] = (SetArmMode(ArmMode.DAMPING), ProposeOnly())
        if self.episode_mode == MODE_TELEOP:
            effects = (SetArmMode(ArmMode.DAMPING), StopTeleop())  # the arm in damping first, then the relay
        if self.ask_label:
            return self._go(State.LABELING, *effects,
                            Say("[LABELING] Policy stopped, robot in damping mode. Did the policy succeed?"),
                            Say("  Press 'y' if it succeeded, 'n' if it failed"))
        return self._go(State.DAMPING, *effects, *self._damping_lines())

    def _label(self, label: int) -> Outcome:
        self.label = label
        return self._go(State.DAMPING, Say(f"  Labeled: {'success' if label == LABEL_SUCCESS else 'failure'}"),
                        *self._damping_lines())

    def _end_episode(self) -> Outcome:
        # save while the arm is still in damping, then HOLD: frames recorded after HOLD would be "policy" frames
        # that no model made (the seed's order is DAMPING -> SAVING)
        stop: tuple[Effect, ...] = (StopPolicy(),) + ((StopTeleop(),) if self.teleop_running else ())
        return self._go(State.SAVING, *stop, *self._save(), SetArmMode(ArmMode.HOLD))

    def _another(self) -> Outcome:
        return self._go(State.READY, *self._ready_lines(first=False))

    def _skip(self) -> Outcome:
        if self.episodes_saved:
            return self._finish()
        return self._go(State.WAITING, Say(f"  Skipped epoch {self.epoch}"), Say(WAITING_LINE))

    def _finish(self) -> Outcome:
        if not self.episodes_saved:
            return self._go(State.WAITING, Say(f"  Nothing saved in epoch {self.epoch}: nothing to sync"),
                            Say(WAITING_LINE))
        return self._sync()

    def _sync(self) -> Outcome:
        self.sync_failed = False
        return self._go(State.SYNCING, Say("[SYNCING] Uploading data to remote server..."), Sync(self.epoch))

    def _skip_sync(self) -> Outcome:
        self.sync_failed = False
        return self._go(State.WAITING, Say(f"  Sync skipped: epoch {self.epoch} stays in save_dir (sync it later)"),
                        Say(WAITING_LINE))

    def _interrupt(self) -> Outcome:
        if self.state == State.STOPPED:
            return self._reject("already stopping")
        effects: list[Effect] = []
        if self.policy_running:
            effects.append(StopPolicy())
        if self.teleop_running:
            effects.append(StopTeleop())
        if self.arm != ArmMode.HOLD:
            effects.append(SetArmMode(ArmMode.HOLD))
        if self.recording and not self.save_pending:
            effects.extend(self._save())
        if self.state == State.SYNCING and not self.sync_failed:
            effects.append(Say("  Sync interrupted: no SYNC_COMPLETE marker written; the next sync resumes it",
                               "warn"))
        effects += [Say("[STOPPED] Ctrl+C: data saved, exiting"), Exit("Ctrl+C")]
        return self._go(State.STOPPED, *effects)

    # --- other events ------------------------------------------------------------------------------------
    def _training_status(self, ev: TrainingStatus) -> Outcome:
        self.server_ready, self.server_epoch = ev.ready, ev.epoch
        effects: list[Effect] = []
        if self._poll_error:
            self._poll_error = ""
            effects.append(Say("  Policy server reachable again"))
        if self.state == State.WAITING and ev.ready and ev.epoch > self.last_seen_epoch:
            self.last_seen_epoch = self.epoch = ev.epoch
            self.episodes_saved, self.episode_index = 0, -1
            return self._go(State.READY, *effects, *self._ready_lines(first=True))
        return self._go(self.state, *effects)

    def _label_event(self, ev: Label) -> Outcome:
        if ev.success not in (LABEL_FAILED, LABEL_SUCCESS):
            return self._reject(f"label must be {LABEL_FAILED} (failed) or {LABEL_SUCCESS} (succeeded), "
                                f"not {ev.success}")
        if self.state == State.LABELING:
            return self._label(ev.success)
        if self.state == State.DAMPING:
            self.label = ev.success
            return self._go(self.state, Say(f"  Labeled: {'success' if ev.success else 'failure'}"))
        return self._reject(f"no episode to label in {self.state.name}")

    def _saved(self, ev: Saved) -> Outcome:
        if not self.save_pending:
            return self._reject(f"no save pending in {self.state.name}")
        self.recording = self.save_pending = False
        self.episodes_saved += 1
        self.episodes_total += 1
        if ev.episode_index >= 0:
            self.episode_index = ev.episode_index
        self.last_episode_path = ev.path
        self.policy_frames, self.human_frames = ev.policy_frames, ev.human_frames
        lines = (Say(f"  Saved: {ev.path}"), Say(f"  Total timesteps: {ev.frames}"),
                 Say(f"  Policy frames: {ev.policy_frames}, Human frames: {ev.human_frames}"))
        if self.state == State.SAVING:
            return self._go(State.DECIDING, *lines, *self._deciding_lines())
        return self._go(self.state, *lines)

    def _synced(self, ev: Synced) -> Outcome:
        if self.state != State.SYNCING or self.sync_failed:
            return self._reject(f"no sync running in {self.state.name}")
        return self._go(State.WAITING, Say(f"  Synced epoch {self.epoch}: {ev.files} file(s), "
                                           f"{ev.bytes / 1e6:.1f} MB in {ev.seconds:.1f} s"), Say(WAITING_LINE))

    def _failed(self, ev: Failed) -> Outcome:
        self.last_error = f"{ev.source}: {ev.error}"
        if ev.source == "poll":
            if ev.error == self._poll_error:
                return self._go(self.state)  # said once; don't repeat it at every poll
            self._poll_error = ev.error
            return self._go(self.state, Say(f"  Failed to poll training status: {ev.error}", "warn"))
        if self.state in _EPISODE_STATES:
            if isinstance(ev.effect, StartRecording):
                # gating: nothing after it ran; the arm never left HOLD, except a kinesthetic episode's damping
                self.recording = self.policy_running = self.teleop_running = False
                hold = (SetArmMode(ArmMode.HOLD),) if self.arm != ArmMode.HOLD else ()
                return self._go(State.READY, *hold, Say(f"  Recorder refused to start: {ev.error}", "error"),
                                *self._ready_lines(first=False))
            return self._go(State.SAVING, Say(f"  {ev.source.capitalize()} failed: {ev.error}", "error"),
                            Say("  Stopping the episode: policy stopped, arm HOLD, data saved", "error"),
                            StopPolicy(), *((StopTeleop(),) if self.teleop_running else ()),
                            SetArmMode(ArmMode.HOLD), *self._save())
        if self.state == State.SAVING and ev.source == "recorder":
            self.recording = self.save_pending = False
            return self._go(State.DECIDING, Say(f"  Save failed: {ev.error}", "error"),
                            Say("  The recorder keeps what it wrote (repaired at its next start)", "error"),
                            *self._deciding_lines())
        if self.state == State.SYNCING and ev.source == "sync":
            self.sync_failed = True
            return self._go(State.SYNCING, Say(f"  Sync failed: {ev.error}", "error"),
                            Say("  Press 'y' to retry, 'n' to skip (the data stays in save_dir)"))
        if self.state == State.STOPPED and isinstance(ev.effect, SaveRecording):
            self.recording = self.save_pending = False
        return self._go(self.state, Say(f"  {ev.source.capitalize()} error: {ev.error}", "error"))
