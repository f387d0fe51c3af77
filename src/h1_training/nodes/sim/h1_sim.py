"""h1_sim: a simulated H1-2 that answers on the robot's own wire (unitree DDS ``rt/lowstate`` / ``rt/lowcmd``).

    h1_sim --ros-args -p dds_interface:=lo -p dds_domain:=0

Robot side (what the arm driver sees, nothing else): LowState_ at ``state_rate_hz`` with ``mode_machine``
set and a valid CRC; every LowCmd_ is CRC-checked (a bad CRC is ignored and counted), must carry our
``mode_machine`` (else ignored and counted), and drives ``sim/h1_dynamics`` (per-motor PD with the gains it
carries, so kp 0 / small kd is damping). ``gravity:=true`` adds the arms' gravity load (the H1-2 URDF model of
``drivers/arm_gravity.py``, with ``hand_mass_kg`` per hand): HOLD then sags by about gravity / kp and damping lets
the arms sink unless h1_arm_node feeds the gravity torque forward (``gravity_feedforward``). Off by default: the
arms stay where they are left, which the other tests, the demo and the benchmarks rely on.

Sim controls (ROS, for tests, demos and the scripted operator):
- ``sim/operator_hand`` (sensor_msgs/JointState, arm joint names + positions): where the operator's hand
  pulls the arms; it moves only joints in damping (kp ~ 0). An empty message, or none for
  ``operator_release_s``, lets go.
- ``sim/pause_lowstate`` (std_srvs/SetBool): true = the robot goes silent on rt/lowstate.
- ``sim/reset_counters`` (std_srvs/Trigger): zero the counters and the lowcmd period window (benchmarks).
- ``sim/h1_status`` (diagnostic_msgs/DiagnosticArray, latched): lowcmd/lowstate counters, bad CRC count,
  lowcmd rate and p99 period, paused flag.

The robot publishes rt/lowstate at 500 Hz; ``state_rate_hz`` defaults to that and config/params/sim.yaml
may lower it to keep a 2-core machine light (the driver's timeouts are 100 ms either way).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from h1_training.drivers import unitree_hg
from h1_training.drivers.arm_gravity import ArmGravityModel, h1_2_arm_gravity
from h1_training.drivers.h1_2_arm_inertia import INSPIRE_RH56DFX_MASS_KG
from h1_training.nodes.common import COMMAND_QOS, LATCHED_QOS, ParamsMixin, run_node
from h1_training.params import nested, param, param_specs
from h1_training.rates import Ticker
from h1_training.robot_model import ARM_JOINT_NAMES
from h1_training.sim.h1_dynamics import ARM, DynamicsConfig, H1Dynamics, MotorCommands

_DYNAMICS_PARAMS = tuple(spec.name for spec in param_specs(DynamicsConfig))
_PERIODS_KEPT = 20000  # lowcmd periods behind the p50/p99 figures
_TIMES_KEPT = 2000  # lowcmd arrival times behind the rate figure (2 s window)


class _Ring:
    """The newest ``size`` floats in a preallocated array: appending allocates nothing, and the status
    timer reads them as one array (order does not matter for a percentile, a minimum or a maximum)."""

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size)
        self.count = 0

    def append(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def snapshot(self) -> np.ndarray:
        return self.values[:min(self.count, len(self.values))].copy()


@dataclass
class H1SimParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    dds_interface: str = param("lo", "network interface for unitree DDS (lo: loopback only)", read_only=True)
    dds_domain: int = param(0, "unitree DDS domain (the arm driver must use the same; -1 = the same as "
        "ROS_DOMAIN_ID)", min=-1, max=232, read_only=True)
    state_rate_hz: float = param(500.0, "rt/lowstate publish rate [Hz] (the robot: 500)", min=20.0, max=1000.0)
    mode_machine: int = param(4, "mode_machine reported in LowState_; LowCmd_ must echo it", min=0, max=255)
    status_rate_hz: float = param(4.0, "sim/h1_status publish rate [Hz]", min=0.5, max=50.0)
    operator_release_s: float = param(0.5, "the hand lets go when no sim/operator_hand arrives this long [s]", min=0.05,
        max=10.0)
    dynamics: DynamicsConfig = nested(DynamicsConfig)  # arm_inertia, ... (sim/h1_dynamics.py)
    gravity: bool = param(False, "load the arm joints with the H1-2 arms' gravity torque (off: the arms stay "
        "where they are left)")
    hand_mass_kg: float = param(INSPIRE_RH56DFX_MASS_KG, "mass of each simulated hand in the gravity load [kg] "
        "(Inspire RH56DFX: 0.54; the arm node's model may be given another to test a mismatch)", min=0.0, max=3.0)


class H1Sim(ParamsMixin, Node):
    PARAMS = H1SimParams

    def __init__(self) -> None:
        super().__init__("h1_sim")
        p = self.declare_specs()
        self._lock = threading.Lock()
        self.dyn = H1Dynamics(self._dynamics_config(), gravity=self._gravity_model())
        self.paused = False
        self._reset_counters()
        self.trace_file = unitree_hg.init_dds(p["dds_domain"], p["dds_interface"], label="h1_sim")
        self.state_writer = unitree_hg.lowstate_writer()
        self._init_state_buffer()
        self._sub = unitree_hg.RecordSubscriber(unitree_hg.LOWCMD, self._on_lowcmd)
        self.status_pub = self.create_publisher(DiagnosticArray, "sim/h1_status", LATCHED_QOS)
        self.create_subscription(JointState, "sim/operator_hand", self._on_operator_hand, COMMAND_QOS)
        self.create_service(SetBool, "sim/pause_lowstate", self._on_pause)
        self.create_service(Trigger, "sim/reset_counters", self._on_reset)
        self._status_timer = self.create_timer(1.0 / p["status_rate_hz"], self._publish_status)
        self._operator_t = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="h1_sim_loop", daemon=True)
        self._thread.start()
        domain = unitree_hg.resolve_domain(p["dds_domain"])
        self.get_logger().info(
            f"h1_sim: simulated H1-2 on unitree DDS domain {domain} interface {p['dds_interface']!r}: "
            f"rt/lowstate at {p['state_rate_hz']:g} Hz, mode_machine {p['mode_machine']}"
            + (f", arm gravity on (hands {p['hand_mass_kg']:g} kg)" if p["gravity"] else "")
            + ("" if self.state_writer.fast and self._sub.raw else " (SDK serializer: slower)"))

    def _dynamics_config(self) -> DynamicsConfig:
        return DynamicsConfig(**{k: float(self.p[k]) for k in _DYNAMICS_PARAMS})

    def _gravity_model(self) -> ArmGravityModel | None:
        return h1_2_arm_gravity(hand_mass_kg=float(self.p["hand_mass_kg"])) if self.p["gravity"] else None

    def on_params_changed(self, changed: dict) -> None:
        if any(k in changed for k in _DYNAMICS_PARAMS):
            with self._lock:
                self.dyn.config = self._dynamics_config()
        if "gravity" in changed or "hand_mass_kg" in changed:
            model = self._gravity_model()  # built outside the lock (~1 ms)
            with self._lock:
                self.dyn.gravity = model
        if "status_rate_hz" in changed:
            self.destroy_timer(self._status_timer)
            self._status_timer = self.create_timer(1.0 / changed["status_rate_hz"], self._publish_status)

    def _reset_counters(self) -> None:
        self.lowcmd_received = 0  # every LowCmd_ seen on the wire
        self.lowcmd_count = 0  # accepted (good CRC, right mode_machine)
        self.bad_crc_count = 0
        self.mode_machine_mismatch = 0
        self.invalid_cmd_count = 0
        self.lowstate_count = 0
        self.last_lowcmd_t: float | None = None
        self.lowcmd_periods = _Ring(_PERIODS_KEPT)
        self.lowcmd_times = _Ring(_TIMES_KEPT)
        self.counters_since = time.monotonic()

    # --- the robot's wire ------------------------------------------------------------------------------------
    def _init_state_buffer(self) -> None:
        buf = self.state_writer.buf
        buf["version"] = [1, 0]
        buf["imu_state"]["quaternion"] = [1.0, 0.0, 0.0, 0.0]  # upright, w first as in unitree's IMUState_
        buf["imu_state"]["accelerometer"] = [0.0, 0.0, 9.81]
        ms = buf["motor_state"][0]
        ms["temperature"] = 35  # constant, set once
        ms["vol"] = 48.0

    def _on_lowcmd(self, record: np.void, crc_ok: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self.lowcmd_received += 1
            if not crc_ok:
                self.bad_crc_count += 1
                if self.bad_crc_count <= 3 or self.bad_crc_count % 100 == 0:
                    self.get_logger().warning(f"rt/lowcmd with a wrong CRC ignored ({self.bad_crc_count} so far)")
                return
            if int(record["mode_machine"]) != self.p["mode_machine"]:
                self.mode_machine_mismatch += 1
                if self.mode_machine_mismatch <= 3 or self.mode_machine_mismatch % 100 == 0:
                    self.get_logger().warning(f"rt/lowcmd with mode_machine {int(record['mode_machine'])} (robot "
                                              f"is {self.p['mode_machine']}) ignored")
                return
            m = record["motor_cmd"]
            cmd = MotorCommands(mode=m["mode"].copy(), q=m["q"].astype(np.float64), dq=m["dq"].astype(np.float64),
                                tau=m["tau"].astype(np.float64), kp=m["kp"].astype(np.float64),
                                kd=m["kd"].astype(np.float64))
            try:
                self.dyn.apply_command(cmd)
            except ValueError as exc:  # what a motor driver would refuse; counted, never applied
                self.invalid_cmd_count += 1
                if self.invalid_cmd_count <= 3 or self.invalid_cmd_count % 100 == 0:
                    self.get_logger().warning(f"rt/lowcmd ignored: {exc}")
                return
            self.lowcmd_count += 1
            if self.last_lowcmd_t is not None:
                self.lowcmd_periods.append(now - self.last_lowcmd_t)
            self.last_lowcmd_t = now
            self.lowcmd_times.append(now)

    def _publish_lowstate(self) -> None:
        d, buf = self.dyn, self.state_writer.buf
        buf["mode_machine"] = self.p["mode_machine"]
        buf["tick"] = int(d.time * 1000) & 0xFFFFFFFF  # ms, like the robot's tick
        ms = buf["motor_state"][0]
        ms["mode"] = d.motors_active().astype(np.uint8)
        ms["q"], ms["dq"], ms["ddq"], ms["tau_est"] = d.q, d.dq, d.ddq, d.tau_motor
        self.state_writer.write()
        self.lowstate_count += 1

    def _loop(self) -> None:
        rate = self.p["state_rate_hz"]
        ticker = Ticker(rate)
        last = time.monotonic()
        while not self._stop.is_set():
            if self.p["state_rate_hz"] != rate:  # `ros2 param set`: a new grid at the new rate
                rate = self.p["state_rate_hz"]
                ticker.restart(rate)
            ticker.wait()  # like the robot: a late lowstate is skipped, never sent in a burst
            now = time.monotonic()
            with self._lock:
                if self.dyn.operator_target is not None and now - self._operator_t > self.p["operator_release_s"]:
                    self.dyn.set_operator_target(None)
                    self.get_logger().info("operator hand released the arms")
                self.dyn.step(min(now - last, 0.05))
                if not self.paused:
                    self._publish_lowstate()
            last = now

    # --- sim controls ----------------------------------------------------------------------------------------
    def _on_operator_hand(self, msg: JointState) -> None:
        if not msg.position:
            with self._lock:
                self.dyn.set_operator_target(None)
            return
        with self._lock:
            target = self.dyn.operator_target
            target = self.dyn.arm_q if target is None else target.copy()
        if msg.name:
            index = {n: i for i, n in enumerate(ARM_JOINT_NAMES)}
            unknown = [n for n in msg.name if n not in index]
            if unknown or len(msg.name) != len(msg.position):
                self.get_logger().warning(f"sim/operator_hand ignored: unknown joints {unknown} or names/positions "
                                          "of different length")
                return
            for name, value in zip(msg.name, msg.position):
                target[index[name]] = value
        elif len(msg.position) == len(ARM):
            target = np.asarray(msg.position, dtype=np.float64)
        else:
            self.get_logger().warning(f"sim/operator_hand ignored: {len(msg.position)} positions without names "
                                      f"(need {len(ARM)} in ARM_JOINT_NAMES order, or names)")
            return
        try:
            with self._lock:
                self.dyn.set_operator_target(target)
                self._operator_t = time.monotonic()
        except ValueError as exc:
            self.get_logger().warning(f"sim/operator_hand ignored: {exc}")

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        with self._lock:
            self.paused = bool(request.data)
        response.success = True
        response.message = "rt/lowstate paused (robot silent)" if self.paused else "rt/lowstate resumed"
        if self.paused:
            self.get_logger().warning(response.message)
        else:
            self.get_logger().info(response.message)
        self._publish_status()
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            self._reset_counters()
        response.success, response.message = True, "h1_sim counters reset"
        return response

    def _publish_status(self) -> None:
        now = time.monotonic()
        with self._lock:  # copies only: the figures are computed after the lock is released
            periods, times = self.lowcmd_periods.snapshot(), self.lowcmd_times.snapshot()
            values = {
                "lowcmd_count": self.lowcmd_count,
                "lowcmd_received": self.lowcmd_received,
                "bad_crc_count": self.bad_crc_count,
                "mode_machine_mismatch_count": self.mode_machine_mismatch,
                "invalid_lowcmd_count": self.invalid_cmd_count,
                "lowstate_count": self.lowstate_count,
                "lowstate_paused": self.paused,
                "lowcmd_rate_hz": "0",
                "lowcmd_p50_period_ms": "nan",
                "lowcmd_p99_period_ms": "nan",
                "lowcmd_periods": periods.size,
                "counters_since_s": f"{self.counters_since:.6f}",
                "sim_monotonic_s": f"{now:.6f}",
                "arm_kp_mean": f"{float(np.mean(self.dyn.cmd.kp[ARM])):.2f}",
                "arm_kd_mean": f"{float(np.mean(self.dyn.cmd.kd[ARM])):.2f}",
                "operator_hand": self.dyn.operator_target is not None,
                "arm_q": " ".join(f"{v:.4f}" for v in self.dyn.arm_q),
                "gravity": self.dyn.gravity is not None,
            }
        recent = times[times >= now - 2.0]
        if recent.size > 2:
            values["lowcmd_rate_hz"] = f"{(recent.size - 1) / (recent.max() - recent.min()):.2f}"
        if periods.size:
            p50, p99 = np.percentile(periods * 1000, [50, 99])
            values["lowcmd_p50_period_ms"], values["lowcmd_p99_period_ms"] = f"{p50:.3f}", f"{p99:.3f}"
        level = DiagnosticStatus.WARN if self.paused or self.bad_crc_count else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name="h1_sim", hardware_id="simulated H1-2",
                                  message="lowstate paused" if self.paused else "running")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(arr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.state_writer.close()
        self._sub.close()


def main(args=None) -> int:
    sys.setswitchinterval(0.0005)  # the lowstate loop must not wait a default 5 ms switch interval for the GIL
    try:
        run_node(H1Sim, args)
    except RuntimeError as exc:
        print(f"h1_sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
