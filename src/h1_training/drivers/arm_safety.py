"""THE safety layer of the H1-2 arms: every check that stands between a command and a motor, in one place.

Always on; nothing here can be switched off, only tuned within ranges (see ``SafetyConfig``):

- joint limits: every target is clamped to the H1-2 URDF limits shrunk by ``limit_margin_rad``;
- velocity: the setpoint sent to the motors moves at most ``max_velocity_rad_s * dt`` per write tick
  (xr_teleoperate ``teleop/robot_control/robot_arm.py`` clips per-tick motion the same way; its 20 rad/s is
  for a teleoperator's own hands, ours defaults to 2 rad/s because a learned policy drives while a person
  stands next to the robot). ``dt`` is capped at ``max_tick_s``: a write that comes late (a busy machine)
  never makes up for lost time with one big step;
- NaN/inf or wrong-length commands are rejected whole (never "partly applied");
- command watchdog: TRACK falls back to HOLD when no valid command arrived for ``command_timeout_s``;
- lowstate watchdog: when ``rt/lowstate`` is silent for ``state_timeout_s`` the driver stops writing;
- TRACK is refused until a valid, fresh state has been received.

Pure numpy, no rclpy and no DDS: the controller (``arm_controller``) calls it on every command, state and
write tick, and ``test/test_arm_safety.py`` covers each behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from h1_training.robot_model import ARM_JOINT_NAMES, ARM_LOWER_RAD, ARM_UPPER_RAD, NUM_ARM_JOINTS

# Ranges shared with the node's parameter declarations (arm_node.py), so a value accepted there is valid here.
MARGIN_RANGE = (0.0, 0.2)
VELOCITY_RANGE = (0.1, 6.0)
COMMAND_TIMEOUT_RANGE = (0.02, 1.0)
STATE_TIMEOUT_RANGE = (0.02, 1.0)
MAX_TICK_RANGE = (0.001, 0.1)


class CommandRejected(ValueError):
    """A command that must not reach the motors; the message says why in operator terms."""


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is outside [{lo}, {hi}]")


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class SafetyConfig:
    limit_margin_rad: float = 0.05
    max_velocity_rad_s: float = 2.0
    command_timeout_s: float = 0.1
    state_timeout_s: float = 0.1
    max_tick_s: float = 0.008  # two write periods at 250 Hz; the driver sets 2 / command_rate_hz
    lower_rad: np.ndarray = field(default_factory=lambda: ARM_LOWER_RAD.copy())
    upper_rad: np.ndarray = field(default_factory=lambda: ARM_UPPER_RAD.copy())

    def __post_init__(self) -> None:
        _check_range("limit_margin_rad", self.limit_margin_rad, *MARGIN_RANGE)
        _check_range("max_velocity_rad_s", self.max_velocity_rad_s, *VELOCITY_RANGE)
        _check_range("command_timeout_s", self.command_timeout_s, *COMMAND_TIMEOUT_RANGE)
        _check_range("state_timeout_s", self.state_timeout_s, *STATE_TIMEOUT_RANGE)
        _check_range("max_tick_s", self.max_tick_s, *MAX_TICK_RANGE)
        lower = np.asarray(self.lower_rad, dtype=np.float64)
        upper = np.asarray(self.upper_rad, dtype=np.float64)
        if lower.shape != (NUM_ARM_JOINTS,) or upper.shape != (NUM_ARM_JOINTS,):
            raise ValueError(f"joint limits need {NUM_ARM_JOINTS} values each")
        if np.any(upper - lower <= 2 * self.limit_margin_rad):
            narrow = [ARM_JOINT_NAMES[i] for i in np.flatnonzero(upper - lower <= 2 * self.limit_margin_rad)]
            raise ValueError(f"limit_margin_rad={self.limit_margin_rad} leaves no range for {', '.join(narrow)}")

    # Read on every write tick: computed once, read-only so no caller can shift the limits.
    @cached_property
    def safe_lower(self) -> np.ndarray:
        return _read_only(np.asarray(self.lower_rad, dtype=np.float64) + self.limit_margin_rad)

    @cached_property
    def safe_upper(self) -> np.ndarray:
        return _read_only(np.asarray(self.upper_rad, dtype=np.float64) - self.limit_margin_rad)


@dataclass
class SafetyCounters:
    commands_accepted: int = 0
    commands_rejected: int = 0
    commands_clamped: int = 0  # accepted, but at least one joint was pulled inside the limits
    velocity_limited_ticks: int = 0
    states_rejected: int = 0
    watchdog_trips: int = 0
    state_silence_faults: int = 0


class ArmSafety:
    """Stateful checks (watchdogs need the time of the last command/state); not thread-safe on its own:
    the controller holds its lock around every call."""

    def __init__(self, config: SafetyConfig | None = None) -> None:
        self.config = config or SafetyConfig()
        self.counters = SafetyCounters()
        self.last_command_t: float | None = None
        self.last_state_t: float | None = None

    def reconfigure(self, **changes) -> SafetyConfig:
        """Replace config values (validated as a whole; on error the old config stays)."""
        self.config = replace(self.config, **changes)
        return self.config

    # --- commands --------------------------------------------------------------------------------------
    def check_command(self, positions, now: float) -> tuple[np.ndarray, list[str]]:
        """Validate one 14-joint target; return it clamped to the safe limits plus the names of clamped joints.

        Raises CommandRejected (and counts it) for a wrong length or any NaN/inf: such a command is dropped
        whole, the watchdog keeps counting from the last good one.
        """
        try:
            q = np.asarray(positions, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            self.counters.commands_rejected += 1
            raise CommandRejected(f"arm command is not a list of numbers ({exc})") from exc
        if q.shape != (NUM_ARM_JOINTS,):
            self.counters.commands_rejected += 1
            raise CommandRejected(f"arm command has {q.size} positions, expected {NUM_ARM_JOINTS}: ignored")
        bad = ~np.isfinite(q)
        if bad.any():
            self.counters.commands_rejected += 1
            names = ", ".join(ARM_JOINT_NAMES[i] for i in np.flatnonzero(bad))
            raise CommandRejected(f"arm command has NaN/inf for {names}: whole command ignored")
        clamped, mask = self.clamp_to_limits(q)
        self.counters.commands_accepted += 1
        if mask.any():
            self.counters.commands_clamped += 1
        self.last_command_t = now
        return clamped, [ARM_JOINT_NAMES[i] for i in np.flatnonzero(mask)]

    def clamp_to_limits(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # np.minimum/np.maximum: the same result as np.clip (NaN included) without its Python wrapper cost
        clamped = np.minimum(np.maximum(q, self.config.safe_lower), self.config.safe_upper)
        return clamped, clamped != q

    def limit_step(self, setpoint: np.ndarray, goal: np.ndarray, dt: float) -> np.ndarray:
        """Next setpoint: toward ``goal`` by at most max_velocity*dt per joint (dt capped at max_tick_s), always
        inside the safe limits."""
        max_step = self.config.max_velocity_rad_s * min(max(dt, 0.0), self.config.max_tick_s)
        delta = goal - setpoint
        step = np.minimum(np.maximum(delta, -max_step), max_step)
        if (np.abs(delta) > max_step + 1e-12).any():
            self.counters.velocity_limited_ticks += 1
        return np.minimum(np.maximum(setpoint + step, self.config.safe_lower), self.config.safe_upper)

    def command_age(self, now: float, since: float | None = None) -> float:
        """Seconds since the last accepted command (or since ``since`` if later, e.g. entering TRACK)."""
        ref = self.last_command_t
        if since is not None and (ref is None or since > ref):
            ref = since
        return math.inf if ref is None else max(0.0, now - ref)

    def command_stale(self, now: float, since: float | None = None) -> bool:
        return self.command_age(now, since) > self.config.command_timeout_s

    # --- state -------------------------------------------------------------------------------------------
    def check_state(self, q: np.ndarray, now: float) -> bool:
        """A state counts (refreshes the lowstate watchdog) only if every arm position is finite."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (NUM_ARM_JOINTS,) or not np.all(np.isfinite(q)):
            self.counters.states_rejected += 1
            return False
        self.last_state_t = now
        return True

    @property
    def has_state(self) -> bool:
        return self.last_state_t is not None

    def state_age(self, now: float) -> float:
        return math.inf if self.last_state_t is None else max(0.0, now - self.last_state_t)

    def state_silent(self, now: float) -> bool:
        """True once a state was received and then nothing valid for longer than state_timeout_s."""
        return self.has_state and self.state_age(now) > self.config.state_timeout_s

    def track_refusal(self, now: float) -> str | None:
        """Why TRACK may not start now, or None."""
        if not self.has_state:
            return "no valid rt/lowstate received yet: TRACK refused"
        if self.state_silent(now):
            return f"rt/lowstate silent for {self.state_age(now) * 1000:.0f} ms: TRACK refused"
        return None
