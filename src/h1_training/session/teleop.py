"""The teleoperation relay of ``hil_session`` (no rclpy): arm targets from an external topic (``teleop/arm_target``,
an ArmCommand from a VR rig, a leader arm, a joystick node) go to ``arm_command`` at the session's control rate,
through the one safety clamp, with a watchdog.

- Every target is checked by ``drivers.arm_safety.ArmSafety.check_command`` (the arm's own checks: NaN/inf or
  wrong length rejected whole, joints clamped inside the URDF limits) before it is relayed, so the recorded
  action is what the arm will be asked to reach; the arm node clamps again, and limits velocity, on its side.
- Watchdog: when no valid target arrived for ``timeout_s`` the relay stops publishing and calls ``on_stale``
  (the session puts the arm in HOLD: the robot never keeps following an old target); when fresh targets come
  back it calls ``on_fresh`` (the session asks for TRACK again; the arm's velocity limit ramps to the target).
- Relayed commands carry ``MODEL_VERSION`` as their model version, so the episode file tells teleoperated frames
  from a policy's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from h1_training.drivers.arm_safety import ArmSafety, CommandRejected, SafetyConfig
from h1_training.rates import Ticker

MODEL_VERSION = "teleop"
TOPIC = "teleop/arm_target"


@dataclass
class TeleopStats:
    received: int = 0
    rejected: int = 0
    clamped: int = 0
    relayed: int = 0
    stale_events: int = 0
    last_rejection: str = ""


class TeleopRelay:
    """``offer`` targets from any thread; ``start``/``stop`` the relay thread (see the module doc)."""

    def __init__(self, publish: Callable[[np.ndarray, str], None], on_stale: Callable[[str], None],
                 on_fresh: Callable[[], None], rate_hz: float = 50.0, timeout_s: float = 0.3,
                 safety: SafetyConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        if not 0 < timeout_s <= 10.0:
            raise ValueError(f"timeout_s must be in (0, 10], got {timeout_s}")
        self._publish, self._on_stale, self._on_fresh = publish, on_stale, on_fresh
        self.rate_hz, self.timeout_s = rate_hz, timeout_s
        self._safety = ArmSafety(safety)
        self._clock = clock
        self._lock = threading.Lock()
        self._target: np.ndarray | None = None
        self._target_t = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stale = True            # no fresh target yet
        self.stats = TeleopStats()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def offer(self, positions, now: float | None = None) -> str:
        """A target from the teleop topic; returns "" when taken, else why it was rejected (nothing relayed)."""
        now = self._clock() if now is None else now
        with self._lock:
            self.stats.received += 1
            try:
                clamped, names = self._safety.check_command(positions, now)
            except CommandRejected as exc:
                self.stats.rejected += 1
                self.stats.last_rejection = str(exc)
                return str(exc)
            if names:
                self.stats.clamped += 1
            self._target, self._target_t = clamped, now
        return ""

    def fresh(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        with self._lock:
            return self._target is not None and now - self._target_t <= self.timeout_s

    def start(self, require_fresh_s: float = 0.0) -> None:
        """Start relaying. With ``require_fresh_s`` > 0, wait that long for a fresh target and raise TimeoutError
        without one (never enter TRACK with nothing to follow)."""
        self.stop()
        deadline = self._clock() + require_fresh_s
        while require_fresh_s > 0 and not self.fresh():
            if self._clock() >= deadline:
                raise TimeoutError(f"no teleoperation target on {TOPIC} in the last {self.timeout_s:g} s "
                                   f"(waited {require_fresh_s:g} s)")
            time.sleep(0.01)
        self.stale = not self.fresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="teleop-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        ticker = Ticker(self.rate_hz)
        stop = self._stop
        while ticker.wait(stop) is not None:
            now = self._clock()
            with self._lock:
                target, age = self._target, now - self._target_t
            fresh = target is not None and age <= self.timeout_s
            if fresh:
                if self.stale:
                    self.stale = False
                    self._on_fresh()
                self._publish(target, MODEL_VERSION)  # type: ignore[arg-type]
                self.stats.relayed += 1
            elif not self.stale:
                self.stale = True
                self.stats.stale_events += 1
                self._on_stale(f"no teleoperation target for {age * 1000:.0f} ms (watchdog "
                               f"{self.timeout_s * 1000:.0f} ms): arm HOLD until targets come back")
