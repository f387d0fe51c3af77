"""The H1-2 arm mode machine as pure logic (no rclpy, no DDS): what to send to the 14 arm motors at each
write tick, given the latest state, the latest command and the operator's mode requests.

Modes (the strings published on ``arm/mode``):

- HOLD: hold a fixed pose (the current one when HOLD starts; after TRACK, the last setpoint, so nothing moves).
- TRACK: follow ``arm_command`` targets, linearly interpolated between commands over the measured command
  period, then limited by the safety layer (joint limits, per-tick velocity).
- DAMPING: kp = 0, kd = ``damping_kd`` (a person can move the arms by hand); optional gravity feed-forward.
- ESTOP: the same gains as DAMPING, latched: only RESET_ESTOP leaves it (into HOLD at the current pose).
- FAULT: ``rt/lowstate`` went silent; nothing is written. Latched: HOLD or DAMPING (with a fresh state) leaves it.

Shutdown (``begin_release``) is a mode change too: the motors keep the last LowCmd_ they received, so the node
ramps to DAMPING and writes those gains a few times before it stops writing; a stiff TRACK setpoint is never
the last word. From then on mode requests are refused.

Every mode change ramps kp/kd linearly over ``gain_ramp_s`` from the gains in force at that moment; the
position setpoint never jumps. All checks that protect the robot live in ``arm_safety``; this module only
calls them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from h1_training.drivers.arm_gravity import h1_2_arm_gravity
from h1_training.drivers.arm_safety import ArmSafety, CommandRejected, _check_range
from h1_training.params import param
from h1_training.robot_model import ARM_KD, ARM_KP, NUM_ARM_JOINTS

DAMPING_KD_RANGE = (0.0, 10.0)
GAIN_RAMP_RANGE = (0.05, 5.0)
STIFFNESS_SCALE_RANGE = (0.05, 1.0)
GRAVITY_SCALE_RANGE = (0.0, 1.0)
# Shutdown: writes at the final damping gains before rt/lowcmd is released (covers one lost sample).
RELEASE_SETTLE_TICKS = 5


class Mode(str, Enum):
    HOLD = "HOLD"
    TRACK = "TRACK"
    DAMPING = "DAMPING"
    ESTOP = "ESTOP"
    FAULT = "FAULT"


RESET_ESTOP = "RESET_ESTOP"
REQUESTS = (*(m.value for m in Mode if m is not Mode.FAULT), RESET_ESTOP)


@dataclass(frozen=True)
class ControllerConfig:
    kp: np.ndarray = field(default_factory=lambda: ARM_KP.copy())
    kd: np.ndarray = field(default_factory=lambda: ARM_KD.copy())
    # unitree_rl_gym damps with kd 8 for a full body; arms alone need less. The param fields are also
    # h1_arm_node's ROS parameters (declared here once, see nodes/common.py).
    damping_kd: float = param(2.0, "kd of DAMPING and E-STOP (kp is 0) [Nm s/rad]", min=DAMPING_KD_RANGE[0],
        max=DAMPING_KD_RANGE[1])
    gain_ramp_s: float = param(0.5, "time over which kp/kd ramp on every mode change [s]", min=GAIN_RAMP_RANGE[0],
        max=GAIN_RAMP_RANGE[1])
    stiffness_scale: float = param(1.0, "scales HOLD/TRACK kp (use < 1 for a cautious first session)",
        min=STIFFNESS_SCALE_RANGE[0], max=STIFFNESS_SCALE_RANGE[1])
    gravity_feedforward: bool = param(False, "add the H1-2 arms' gravity torque (URDF model with the Inspire "
        "hands) in DAMPING/E-STOP, faded in and out with the gain ramp")
    gravity_scale: float = param(1.0, "fraction of the gravity torque fed forward (< 1: the arms still sink, "
        "slowly)", min=GRAVITY_SCALE_RANGE[0], max=GRAVITY_SCALE_RANGE[1])
    start_mode: Mode = Mode.HOLD

    def __post_init__(self) -> None:
        _check_range("damping_kd", self.damping_kd, *DAMPING_KD_RANGE)
        _check_range("gain_ramp_s", self.gain_ramp_s, *GAIN_RAMP_RANGE)
        _check_range("stiffness_scale", self.stiffness_scale, *STIFFNESS_SCALE_RANGE)
        _check_range("gravity_scale", self.gravity_scale, *GRAVITY_SCALE_RANGE)
        if Mode(self.start_mode) not in (Mode.HOLD, Mode.DAMPING):
            raise ValueError(f"start_mode must be HOLD or DAMPING, got {self.start_mode}")
        for name in ("kp", "kd"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (NUM_ARM_JOINTS,) or np.any(v < 0) or not np.all(np.isfinite(v)):
                raise ValueError(f"{name} needs {NUM_ARM_JOINTS} finite, non-negative gains")


@dataclass
class ArmOutput:
    """One write tick for the 14 arm motors (ARM_JOINT_NAMES order)."""

    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    mode: Mode


@dataclass(frozen=True)
class Event:
    level: str  # "info" | "warn" | "error"
    text: str
    mode: Mode | None = None  # set when the event is a mode change


class ArmController:
    """Thread-safe: states arrive on the DDS thread, commands and mode requests on the ROS thread, ``tick`` runs
    on the write thread; one lock serialises them (each call is microseconds of numpy)."""

    def __init__(
        self,
        safety: ArmSafety | None = None,
        config: ControllerConfig | None = None,
        gravity: Callable[[np.ndarray], np.ndarray] | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.safety = safety or ArmSafety()
        self.config = config or ControllerConfig()
        # the H1-2 arms' static gravity torques (URDF model + Inspire hands) unless the caller brings its own
        self.gravity = gravity if gravity is not None else h1_2_arm_gravity()
        self._gw_from = self._gw_to = 0.0  # gravity feed-forward weight, ramped with the gains
        self.on_event = on_event
        self._lock = threading.RLock()
        self._events: deque[Event] = deque(maxlen=200)
        self._throttle: dict[str, tuple[float, int]] = {}
        self.mode = Mode.HOLD
        self.estop_latched = False
        self.started = False  # a first valid state was received and the start mode applied
        self.measured_q: np.ndarray | None = None
        self.measured_dq = np.zeros(NUM_ARM_JOINTS)
        self.setpoint: np.ndarray | None = None
        self.hold_q: np.ndarray | None = None
        zeros = np.zeros(NUM_ARM_JOINTS)
        self._kp_from, self._kd_from, self._kp_to, self._kd_to = zeros, zeros, zeros, zeros
        self._ramp_t0 = 0.0
        self._track_since: float | None = None
        self._last_cmd: np.ndarray | None = None
        self._last_cmd_rx: float | None = None
        self._cmd_period = 0.02  # running estimate of the command period, seeds the interpolation
        self._seg_from = self._seg_to = None
        self._seg_t0 = 0.0
        self._last_tick: float | None = None
        self._silence_reported = False
        self.commands_ignored = 0  # valid commands that arrived outside TRACK
        self.releasing = False  # begin_release was called: the node is shutting down
        self._release_writes = False  # ... and lowcmd is written during the release ramp
        self._release_settled = 0  # ticks written at the final damping gains

    # --- configuration -----------------------------------------------------------------------------------
    def reconfigure(self, **changes) -> None:
        with self._lock:
            self.config = replace(self.config, **changes)
            if self.started and self.mode is not Mode.FAULT:
                # new target gains take effect through a ramp, like a mode change
                self._start_ramp(self._ramp_t0_now(), *self._mode_gains(self.mode))

    def reconfigure_safety(self, **changes) -> None:
        with self._lock:
            self.safety.reconfigure(**changes)

    # --- events --------------------------------------------------------------------------------------------
    def _emit(self, level: str, text: str, mode: Mode | None = None) -> None:
        self._events.append(Event(level, text, mode))
        if self.on_event is not None:
            self.on_event()

    def _emit_throttled(self, key: str, level: str, text: str, now: float, every_s: float = 2.0) -> None:
        """Repeated problems (a stream of NaN commands) log once per ``every_s`` with a count, never silently."""
        last, suppressed = self._throttle.get(key, (-math.inf, 0))
        if now - last >= every_s:
            suffix = f" ({suppressed} more like this since the last report)" if suppressed else ""
            self._throttle[key] = (now, 0)
            self._emit(level, text + suffix)
        else:
            self._throttle[key] = (last, suppressed + 1)

    def report(self, key: str, level: str, text: str, now: float, every_s: float = 2.0) -> None:
        """A problem seen outside the controller (bad CRC, failed write), logged through the same throttle."""
        with self._lock:
            self._emit_throttled(key, level, text, now, every_s)

    def drain_events(self) -> list[Event]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
            return events

    # --- gains -------------------------------------------------------------------------------------------
    def _mode_gains(self, mode: Mode) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        if mode in (Mode.HOLD, Mode.TRACK):
            return np.asarray(c.kp) * c.stiffness_scale, np.asarray(c.kd, dtype=np.float64).copy()
        if mode in (Mode.DAMPING, Mode.ESTOP):
            return np.zeros(NUM_ARM_JOINTS), np.full(NUM_ARM_JOINTS, c.damping_kd)
        return np.zeros(NUM_ARM_JOINTS), np.zeros(NUM_ARM_JOINTS)

    def gains(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            alpha = min(1.0, max(0.0, (now - self._ramp_t0) / self.config.gain_ramp_s))
            if alpha == 1.0:  # the ramp is over (nearly every tick): the target gains exactly, 2 copies not 6 ops
                return self._kp_to.copy(), self._kd_to.copy()
            return (self._kp_from + (self._kp_to - self._kp_from) * alpha,
                    self._kd_from + (self._kd_to - self._kd_from) * alpha)

    def _start_ramp(self, now: float, kp_to: np.ndarray, kd_to: np.ndarray) -> None:
        self._kp_from, self._kd_from = self.gains(now)
        weight_now = self._gravity_weight(now)
        self._gw_to = (self.config.gravity_scale if self.config.gravity_feedforward
                       and self.mode in (Mode.DAMPING, Mode.ESTOP) else 0.0)
        # Entering DAMPING/E-STOP the setpoint jumps to the measured pose, so the PD's holding torque is gone at
        # once: the feed-forward takes over at full weight in the same tick (the total torque stays continuous).
        # Leaving, kp ramps back in while the feed-forward fades out over the same ramp.
        self._gw_from = max(weight_now, self._gw_to)
        self._kp_to, self._kd_to = kp_to, kd_to
        self._ramp_t0 = now

    def _gravity_weight(self, now: float) -> float:
        alpha = min(1.0, max(0.0, (now - self._ramp_t0) / self.config.gain_ramp_s))
        return self._gw_from + (self._gw_to - self._gw_from) * alpha

    def _gravity_torque(self, now: float) -> np.ndarray:
        """The feed-forward torque now: full from the first DAMPING/E-STOP tick, faded out on leaving."""
        weight = self._gravity_weight(now)
        if weight <= 0.0 or self.measured_q is None:
            return np.zeros(NUM_ARM_JOINTS)
        try:
            tau = np.asarray(self.gravity(self.measured_q), dtype=np.float64) * weight
        except ValueError as exc:  # the model refuses a non-finite pose: no torque rather than a wrong one
            self._emit_throttled("gravity", "warn", f"gravity feed-forward off for this tick: {exc}", now)
            return np.zeros(NUM_ARM_JOINTS)
        if tau.shape != (NUM_ARM_JOINTS,) or not np.all(np.isfinite(tau)):
            self._emit_throttled("gravity", "warn", "gravity feed-forward gave no finite torque: sending none", now)
            return np.zeros(NUM_ARM_JOINTS)
        return tau

    def _ramp_t0_now(self) -> float:
        return self._last_tick if self._last_tick is not None else self._ramp_t0

    def _set_mode(self, mode: Mode, now: float, why: str, level: str = "info") -> None:
        previous = self.mode
        self.mode = mode
        if mode is Mode.FAULT:
            zeros = np.zeros(NUM_ARM_JOINTS)
            self._kp_from = self._kd_from = self._kp_to = self._kd_to = zeros
            self._ramp_t0 = now
        else:
            self._start_ramp(now, *self._mode_gains(mode))
        self._emit(level, f"arm {previous.value} → {mode.value}: {why}", mode)

    # --- inputs --------------------------------------------------------------------------------------------
    def on_state(self, q: np.ndarray, dq: np.ndarray, now: float) -> bool:
        """A decoded rt/lowstate (arm part). Returns False if the safety layer rejected it (non-finite)."""
        with self._lock:
            if not self.safety.check_state(q, now):
                self._emit_throttled("bad_state", "warn", "rt/lowstate with NaN/inf arm positions ignored", now)
                return False
            self.measured_q = np.asarray(q, dtype=np.float64).copy()
            self.measured_dq = np.asarray(dq, dtype=np.float64).copy()
            if not self.started:
                self.started = True
                pose, _ = self.safety.clamp_to_limits(self.measured_q)
                self.setpoint, self.hold_q = pose.copy(), pose.copy()
                self._ramp_t0 = now
                # an E-STOP pressed before the robot answered still counts
                self.mode = Mode.ESTOP if self.estop_latched else Mode(self.config.start_mode)
                self._start_ramp(now, *self._mode_gains(self.mode))
                self._emit("info", f"first valid rt/lowstate: arm {self.mode.value} at the current pose, gains "
                                   f"ramp in over {self.config.gain_ramp_s:.2f} s", self.mode)
            elif self._silence_reported:
                self._silence_reported = False
                self._emit("info", "rt/lowstate is back; the arm stays in FAULT until an operator sets HOLD, "
                                   "DAMPING or RESET_ESTOP")
            return True

    def on_command(self, positions, now: float) -> list[str]:
        """An arm target. Returns the joints that were clamped to limits; raises CommandRejected (logged)."""
        with self._lock:
            try:
                target, clamped = self.safety.check_command(positions, now)
            except CommandRejected as exc:
                self._emit_throttled("rejected", "warn", str(exc), now)
                raise
            if clamped:
                self._emit_throttled("clamped", "warn", "arm command beyond the joint limits (minus margin) for "
                                     f"{', '.join(clamped)}: clamped", now)
            if self._last_cmd_rx is not None:
                period = min(max(now - self._last_cmd_rx, 0.002), 0.1)
                self._cmd_period = 0.8 * self._cmd_period + 0.2 * period
            self._last_cmd_rx = now
            self._last_cmd = target
            if self.mode is Mode.TRACK:
                self._seg_from = self._goal(now)
                self._seg_to, self._seg_t0 = target, now
            else:
                self.commands_ignored += 1
                self._emit_throttled("ignored", "info", f"arm command ignored: the arm is in {self.mode.value}, "
                                     "not TRACK", now, every_s=10.0)
            return clamped

    def _goal(self, now: float) -> np.ndarray:
        """The interpolated command target at ``now`` (TRACK)."""
        if self._seg_to is None:
            return self.setpoint.copy()
        alpha = min(1.0, max(0.0, (now - self._seg_t0) / self._cmd_period))
        return self._seg_from + (self._seg_to - self._seg_from) * alpha

    def request_mode(self, request: str, now: float) -> tuple[bool, str]:
        """An operator's mode request (HOLD, TRACK, DAMPING, ESTOP, RESET_ESTOP). Returns (accepted, message)."""
        with self._lock:
            if request not in REQUESTS:
                return False, f"unknown arm mode {request!r}; use one of {', '.join(REQUESTS)}"
            if self.releasing:
                if request == Mode.ESTOP.value:
                    self.estop_latched = True
                    return True, "shutting down: the arms are already ramping to damping"
                return False, f"the arm node is shutting down (damping, then rt/lowcmd released): {request} refused"
            fresh = self.started and not self.safety.state_silent(now)
            if request == Mode.ESTOP.value:
                self.estop_latched = True
                if self.mode is Mode.ESTOP:
                    return True, "E-STOP already latched"
                if not fresh:
                    self._emit("error", "E-STOP latched (no fresh rt/lowstate, so no lowcmd is written)")
                    return True, "E-STOP latched; no fresh rt/lowstate, nothing is being written"
                self._set_mode(Mode.ESTOP, now, "E-STOP: damping, latched until RESET_ESTOP", "warn")
                return True, "E-STOP latched: arms in damping until RESET_ESTOP"
            if request == RESET_ESTOP:
                if not self.estop_latched:
                    return False, "E-STOP is not latched: nothing to reset"
                if not fresh:
                    return False, "cannot reset E-STOP: no fresh rt/lowstate"
                self.estop_latched = False
                self._enter_hold_at_measured(now, "E-STOP reset: holding the current pose")
                return True, "E-STOP reset: HOLD at the current pose"
            if self.estop_latched:
                return False, f"E-STOP is latched: send RESET_ESTOP before {request}"
            mode = Mode(request)
            if mode is Mode.TRACK:
                refusal = self.safety.track_refusal(now)
                if refusal:
                    return False, refusal
                if self.mode is Mode.FAULT:
                    return False, "arm is in FAULT: set HOLD first, then TRACK"
            elif not self.started:
                return False, f"no valid rt/lowstate received yet: {request} not possible"
            elif not fresh:
                return False, f"rt/lowstate silent for {self.safety.state_age(now) * 1000:.0f} ms: {request} refused"
            if mode is self.mode:
                return True, f"already in {mode.value}"
            if mode is Mode.HOLD:
                if self.mode is Mode.TRACK:
                    self.hold_q = self.setpoint.copy()
                    self._set_mode(Mode.HOLD, now, "holding the last setpoint")
                else:
                    self._enter_hold_at_measured(now, "holding the current pose")
            elif mode is Mode.TRACK:
                if self.mode is not Mode.HOLD:  # from DAMPING: start from where the arm is
                    self.setpoint, _ = self.safety.clamp_to_limits(self.measured_q)
                self._track_since = now
                self._seg_from = self.setpoint.copy()
                fresh_cmd = self._last_cmd is not None and not self.safety.command_stale(now)
                self._seg_to = self._last_cmd.copy() if fresh_cmd else None
                self._seg_t0 = now
                self._set_mode(Mode.TRACK, now, "following arm_command")
            elif mode is Mode.DAMPING:
                self._set_mode(Mode.DAMPING, now, f"kp 0, kd {self.config.damping_kd:g}: the arms can be moved "
                                                  "by hand")
            return True, f"arm mode {mode.value}"

    def _enter_hold_at_measured(self, now: float, why: str) -> None:
        pose, _ = self.safety.clamp_to_limits(self.measured_q)
        self.setpoint, self.hold_q = pose.copy(), pose.copy()
        self._set_mode(Mode.HOLD, now, why)

    # --- the write tick ------------------------------------------------------------------------------------
    def tick(self, now: float) -> ArmOutput | None:
        """What to write now, or None: nothing may be written (no state yet, or FAULT)."""
        with self._lock:
            dt = 0.0 if self._last_tick is None else min(max(now - self._last_tick, 0.0), 0.1)
            self._last_tick = now
            if not self.started or (self.releasing and not self._release_writes):
                return None
            if self.mode is not Mode.FAULT and self.safety.state_silent(now):
                age_ms = self.safety.state_age(now) * 1000
                self.safety.counters.state_silence_faults += 1
                self._silence_reported = True
                self._set_mode(Mode.FAULT, now, f"rt/lowstate silent for {age_ms:.0f} ms (limit "
                               f"{self.safety.config.state_timeout_s * 1000:.0f} ms): FAULT, lowcmd writes stopped",
                               "error")
            if self.mode is Mode.FAULT:
                return None
            if self.mode is Mode.TRACK and self.safety.command_stale(now, since=self._track_since):
                age = self.safety.command_age(now, since=self._track_since)
                self.safety.counters.watchdog_trips += 1
                self.hold_q = self.setpoint.copy()
                self._set_mode(Mode.HOLD, now, f"no arm command for {age * 1000:.0f} ms (watchdog "
                               f"{self.safety.config.command_timeout_s * 1000:.0f} ms): holding the last setpoint",
                               "warn")
            kp, kd = self.gains(now)
            if self.releasing and now - self._ramp_t0 >= self.config.gain_ramp_s:
                self._release_settled += 1
            tau = self._gravity_torque(now)
            if self.mode is Mode.HOLD:
                self.setpoint = self.safety.limit_step(self.setpoint, self.hold_q, dt)
            elif self.mode is Mode.TRACK:
                self.setpoint = self.safety.limit_step(self.setpoint, self._goal(now), dt)
            else:  # DAMPING / ESTOP: the setpoint follows the arm so the (ramping-out) kp never pulls
                self.setpoint, _ = self.safety.clamp_to_limits(self.measured_q)
            return ArmOutput(self.setpoint.copy(), np.zeros(NUM_ARM_JOINTS), tau, kp, kd, self.mode)

    # --- shutdown ------------------------------------------------------------------------------------------
    def begin_release(self, now: float) -> float | None:
        """The node is shutting down. The motors keep the last LowCmd_, so ramp to damping (kp 0, kd
        ``damping_kd``) over ``gain_ramp_s`` from the gains in force, with the setpoint following the arm as
        in DAMPING. Returns the seconds the ramp has left, or None when nothing is being written (no state yet,
        FAULT, ``rt/lowstate`` silent): then nothing will be. ``release_done`` says when to stop writing."""
        with self._lock:
            if self.releasing:
                return self._release_left(now) if self._release_writes else None
            self.releasing = True
            if not self.started or self.mode is Mode.FAULT or self.safety.state_silent(now):
                self._emit("info", "arm: shutting down - no fresh rt/lowstate, so nothing is being written to "
                                   "rt/lowcmd and nothing will be")
                return None
            self._release_writes = True
            if self.mode not in (Mode.DAMPING, Mode.ESTOP):  # those already ramp to the damping gains
                self.mode = Mode.DAMPING
                self._start_ramp(now, *self._mode_gains(Mode.DAMPING))
            left = self._release_left(now)
            what = (f"ramping to damping over {left:.2g} s, then releasing" if left >= 0.01
                    else "already in damping, releasing")
            self._emit("info", f"arm: shutting down - {what} rt/lowcmd", self.mode)
            return left

    def _release_left(self, now: float) -> float:
        return max(0.0, self._ramp_t0 + self.config.gain_ramp_s - now)

    def release_done(self) -> bool:
        """True once the damping gains have been written ``RELEASE_SETTLE_TICKS`` times, or nothing is written
        (no state, FAULT): the write loop may stop."""
        with self._lock:
            return self.releasing and (not self._release_writes or self.mode is Mode.FAULT
                                       or self._release_settled >= RELEASE_SETTLE_TICKS)

    # --- status --------------------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict:
        with self._lock:
            kp, kd = self.gains(now)
            c = self.safety.counters
            return {
                "mode": self.mode.value,
                "estop_latched": self.estop_latched,
                "started": self.started,
                "state_age_s": self.safety.state_age(now),
                "command_age_s": self.safety.command_age(now),
                "kp_mean": float(np.mean(kp)),
                "kd_mean": float(np.mean(kd)),
                "commands_accepted": c.commands_accepted,
                "commands_rejected": c.commands_rejected,
                "commands_clamped": c.commands_clamped,
                "commands_ignored": self.commands_ignored,
                "velocity_limited_ticks": c.velocity_limited_ticks,
                "states_rejected": c.states_rejected,
                "watchdog_trips": c.watchdog_trips,
                "state_silence_faults": c.state_silence_faults,
            }
