"""The H1-2 arm driver's DDS side (no rclpy): reads ``rt/lowstate``, writes ``rt/lowcmd`` from its own thread.

- ``ChannelFactoryInitialize(domain, interface)`` via ``unitree_hg.init_dds`` (Cyclone trace file kept private).
- State: every LowState_ is CRC-checked (optional), its ``mode_machine`` remembered, the 14 arm motors
  (slots 13-26, robot_model.ARM_MOTOR_INDICES) handed to the controller with the monotonic receive time.
- Command: a write loop at ``command_rate_hz`` (default 250, as xr_teleoperate) on a monotonic clock asks the
  controller for the arm targets; ``mode_pr`` 0, ``mode_machine`` copied from the latest state, only the arm
  motors enabled (``mode`` 1), every other slot mode 0 with zero gains; CRC on every write. When the controller
  says FAULT (or no state yet) nothing is written.
- Shutdown: the motors keep the last LowCmd_, so ``release`` keeps the loop writing while the controller ramps
  to damping (``ArmController.begin_release``), then stops it; bounded by a timeout and an abort event.

Facts: unitree_sdk2_python ``example/h1_2/low_level/``, xr_teleoperate ``teleop/robot_control/robot_arm.py``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from h1_training.drivers import unitree_hg
from h1_training.drivers.arm_controller import ArmController
from h1_training.rates import Ticker
from h1_training.robot_model import ARM_MOTOR_INDICES, NUM_MOTORS

_ARM = np.array(ARM_MOTOR_INDICES)


@dataclass(frozen=True)
class ArmDriverConfig:
    interface: str = "lo"
    domain: int = 0
    command_rate_hz: float = 250.0
    verify_state_crc: bool = True
    realtime_priority: int = 0  # SCHED_FIFO priority of the write thread (0 = normal scheduling)

    def __post_init__(self) -> None:
        if not 50.0 <= self.command_rate_hz <= 1000.0:
            raise ValueError(f"command_rate_hz={self.command_rate_hz} is outside [50, 1000]")
        if not 0 <= self.realtime_priority <= 90:
            raise ValueError(f"realtime_priority {self.realtime_priority} is outside [0, 90]")
        if not -1 <= self.domain <= 232:
            raise ValueError(f"DDS domain {self.domain} is outside [-1 (= ROS_DOMAIN_ID), 232]")


@dataclass
class ArmState:
    """The latest valid arm state (ARM_JOINT_NAMES order)."""

    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    mode_machine: int
    received_mono: float
    received_wall_ns: int
    seq: int


class UnitreeArmDriver:
    """Owns the DDS entities and the write thread; all decisions are the controller's (and its safety layer's)."""

    def __init__(self, controller: ArmController, config: ArmDriverConfig | None = None,
                 on_state: Callable[[ArmState], None] | None = None) -> None:
        self.controller = controller
        self.config = config or ArmDriverConfig()
        self.on_state = on_state
        self.latest: ArmState | None = None
        self.mode_machine: int | None = None
        self.states_received = 0
        self.states_bad_crc = 0
        self.write_errors = 0
        self.overruns = 0
        self.realtime = False
        self.trace_file = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer = None
        self._sub = None
        self._write_times: deque[float] = deque(maxlen=2500)  # 10 s at 250 Hz, for rate and jitter
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        c = self.config
        self.trace_file = unitree_hg.init_dds(c.domain, c.interface, label="h1_arm_node")
        self._writer = unitree_hg.lowcmd_writer()
        self._prepare_buffer()
        self._sub = unitree_hg.RecordSubscriber(unitree_hg.LOWSTATE, self._on_lowstate)
        self._thread = threading.Thread(target=self._write_loop, name="lowcmd_writer", daemon=True)
        self._thread.start()

    def release(self, timeout_s: float, abort: threading.Event | None = None) -> str:
        """Shutdown: write at the normal rate until the controller's release ramp is on the wire, then stop.
        Call ``controller.begin_release`` first. Returns "released", "timeout" or "aborted" (``abort`` set, e.g.
        a second Ctrl+C); the write loop is stopped in every case."""
        deadline = time.monotonic() + timeout_s
        outcome = "released"
        while not self.controller.release_done():
            if self._thread is None or not self._thread.is_alive():
                break
            if abort is not None and abort.is_set():
                outcome = "aborted"
                break
            if time.monotonic() >= deadline:
                outcome = "timeout"
                break
            time.sleep(0.01)
        self.stop()
        return outcome

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        for entity in (self._sub, self._writer):
            if entity is not None:
                entity.close()

    @property
    def fast_codec(self) -> bool:
        """Both directions on the numpy fast path (False: the SDK's own, slower, serializer)."""
        return bool(self._writer is not None and self._writer.fast and self._sub is not None and self._sub.raw)

    @property
    def writes(self) -> int:
        return 0 if self._writer is None else self._writer.writes

    # --- state -------------------------------------------------------------------------------------------
    def _on_lowstate(self, record: np.void, crc_ok: bool) -> None:
        now = time.monotonic()
        wall = time.time_ns()
        if not crc_ok:
            self.states_bad_crc += 1
            if self.config.verify_state_crc:
                self.controller.report("state_crc", "warn", "rt/lowstate with a wrong CRC ignored", now)
                return
        motors = record["motor_state"]
        q = motors["q"][_ARM].astype(np.float64)
        dq = motors["dq"][_ARM].astype(np.float64)
        tau = motors["tau_est"][_ARM].astype(np.float64)
        if not self.controller.on_state(q, dq, now):
            return
        self.mode_machine = int(record["mode_machine"])
        self._seq += 1
        state = ArmState(q, dq, tau, self.mode_machine, now, wall, self._seq)
        self.latest = state
        self.states_received += 1
        if self.on_state is not None:
            self.on_state(state)

    # --- commands ----------------------------------------------------------------------------------------
    def _prepare_buffer(self) -> None:
        buf = self._writer.buf
        buf["mode_pr"] = 0  # PR (pitch/roll) ankle mode; irrelevant to the arms, 0 as in the unitree examples
        motors = buf["motor_cmd"][0]
        motors["mode"] = 0  # every slot disabled ...
        motors["mode"][_ARM] = 1  # ... but the 14 arm motors

    def _write_once(self, now: float) -> bool:
        out = self.controller.tick(now)
        if out is None or self.mode_machine is None:
            return False
        buf = self._writer.buf
        buf["mode_machine"] = self.mode_machine  # must match the robot's, copied from the latest LowState_
        m = buf["motor_cmd"][0]
        m["q"][_ARM], m["dq"][_ARM], m["tau"][_ARM] = out.q, out.dq, out.tau
        m["kp"][_ARM], m["kd"][_ARM] = out.kp, out.kd
        if not self._writer.write():
            self.write_errors += 1
            return False
        with self._lock:
            self._write_times.append(now)
        return True

    def _set_realtime(self) -> None:
        """SCHED_FIFO for this thread only: wake-ups on time even when other processes keep the cores busy.
        Needs CAP_SYS_NICE (root, or `ulimit -r`); without it the loop runs normally and says so."""
        prio = self.config.realtime_priority
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(prio))
            self.realtime = True
        except (OSError, AttributeError) as exc:
            self.controller.report("realtime", "warn", f"lowcmd write thread stays at normal priority: SCHED_FIFO "
                                   f"{prio} not permitted ({exc})", time.monotonic(), every_s=3600.0)

    def _write_loop(self) -> None:
        self._set_realtime()
        ticker = Ticker(self.config.command_rate_hz)
        while not self._stop.is_set():
            _, missed = ticker.wait()  # time.sleep, not an Event wait: the tightest wake-up for the 250 Hz writes
            if missed:  # fell behind by more than a tick (machine busy): the skipped ticks are not made up
                self.overruns += 1
            now = time.monotonic()
            try:
                self._write_once(now)
            except Exception as exc:  # noqa: BLE001 - never let the loop die silently
                self.write_errors += 1
                self.controller.report("write_error", "error", f"lowcmd write failed: {exc!r}", now)

    # --- measurements --------------------------------------------------------------------------------------
    def write_stats(self, now: float | None = None, window_s: float = 5.0) -> dict:
        """Write rate and period percentiles over the last ``window_s`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = np.array([t for t in self._write_times if t >= now - window_s])
        if times.size < 3:
            return {"rate_hz": 0.0, "p50_period_ms": float("nan"), "p99_period_ms": float("nan"),
                    "max_period_ms": float("nan")}
        periods = np.diff(times) * 1000
        return {
            "rate_hz": float((times.size - 1) / (times[-1] - times[0])),
            "p50_period_ms": float(np.percentile(periods, 50)),
            "p99_period_ms": float(np.percentile(periods, 99)),
            "max_period_ms": float(periods.max()),
        }


assert NUM_MOTORS == unitree_hg.NUM_SLOTS
