"""h1_arm_node: the H1-2 arms over unitree_sdk2py DDS, as a thin ROS 2 adapter.

    h1_arm_node --ros-args -p dds_interface:=eth0            # real robot (see config/params/robot.yaml)
    h1_arm_node --ros-args -p dds_interface:=lo -p dds_domain:=0   # against h1_sim

Topics: pub ``joint_states`` (14 arm joints, stamped with the lowstate's receive time), ``arm/mode`` (latched),
``diagnostics``; sub ``arm_command``; srv ``arm/set_mode``. Logic: ``drivers/arm_controller.py`` (modes, ramps,
interpolation), ``drivers/arm_safety.py`` (every safety check), ``drivers/unitree_arm.py`` (DDS, write loop).

Shutdown (Ctrl+C, SIGTERM, rclpy shut down): the motors keep the last LowCmd_ they got, so the node ramps to
damping over ``gain_ramp_s`` while still writing at the normal rate, then stops writing. A second Ctrl+C/SIGTERM
or ``gain_ramp_s`` + 0.5 s skips the rest of the ramp; with no fresh rt/lowstate (FAULT) nothing is written.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from h1_training.drivers.arm_controller import (
    RESET_ESTOP,
    ArmController,
    ControllerConfig,
    Mode,
)
from h1_training.drivers.arm_gravity import h1_2_arm_gravity
from h1_training.drivers.arm_safety import (
    COMMAND_TIMEOUT_RANGE,
    MARGIN_RANGE,
    STATE_TIMEOUT_RANGE,
    VELOCITY_RANGE,
    ArmSafety,
    CommandRejected,
    SafetyConfig,
)
from h1_training.drivers.h1_2_arm_inertia import INSPIRE_RH56DFX_MASS_KG
from h1_training.drivers.unitree_arm import ArmDriverConfig, ArmState, UnitreeArmDriver
from h1_training.drivers.unitree_hg import resolve_domain
from h1_training.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    ParamsMixin,
    apply_process_rt_priority,
    log_at,
    run_node,
)
from h1_training.params import nested, param
from h1_training.robot_model import ARM_JOINT_NAMES
from h1_training.stamps import set_stamp
from h1_training_interfaces.msg import ArmCommand
from h1_training_interfaces.srv import SetArmMode

_REQUEST_NAMES = {
    SetArmMode.Request.MODE_HOLD: Mode.HOLD.value,
    SetArmMode.Request.MODE_TRACK: Mode.TRACK.value,
    SetArmMode.Request.MODE_DAMPING: Mode.DAMPING.value,
    SetArmMode.Request.MODE_ESTOP: Mode.ESTOP.value,
    SetArmMode.Request.MODE_RESET_ESTOP: RESET_ESTOP,
}
# current_mode in every SetArmMode reply
MODE_CODES = {
    Mode.HOLD: SetArmMode.Request.MODE_HOLD,
    Mode.TRACK: SetArmMode.Request.MODE_TRACK,
    Mode.DAMPING: SetArmMode.Request.MODE_DAMPING,
    Mode.ESTOP: SetArmMode.Request.MODE_ESTOP,
    Mode.FAULT: SetArmMode.Request.MODE_FAULT,
}

# Shutdown: how long past the damping ramp the node waits for it to reach the wire before it gives up.
RELEASE_MARGIN_S = 0.5

# Parameter name -> (which config, field name) for live changes.
_SAFETY_PARAMS = {
    "watchdog_timeout_s": "command_timeout_s",
    "lowstate_timeout_s": "state_timeout_s",
    "velocity_limit_rad_s": "max_velocity_rad_s",
    "joint_limit_margin_rad": "limit_margin_rad",
}
_CONTROLLER_PARAMS = {
    "damping_kd": "damping_kd",
    "gain_ramp_s": "gain_ramp_s",
    "stiffness_scale": "stiffness_scale",
    "gravity_feedforward": "gravity_feedforward",
    "gravity_scale": "gravity_scale",
}


@dataclass
class ArmNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    dds_interface: str = param("lo", "network interface for unitree DDS (the laptop's NIC on the robot "
        "network, e.g. eth0; lo for h1_sim)", read_only=True)
    dds_domain: int = param(0, "unitree DDS domain of rt/lowstate and rt/lowcmd (the robot uses 0; -1 = the "
        "same as ROS_DOMAIN_ID, for simulation)", min=-1, max=232, read_only=True)
    command_rate_hz: float = param(250.0, "rt/lowcmd write rate [Hz] (xr_teleoperate writes at 250)", min=50.0,
        max=1000.0, read_only=True)
    state_rate_hz: float = param(100.0, "joint_states publish rate [Hz] (new lowstates only)", min=1.0, max=500.0)
    watchdog_timeout_s: float = param(0.1, "TRACK falls back to HOLD when no valid arm_command arrived for this "
        "long [s]", min=COMMAND_TIMEOUT_RANGE[0], max=COMMAND_TIMEOUT_RANGE[1])
    lowstate_timeout_s: float = param(0.1, "FAULT (lowcmd writes stop) when rt/lowstate is silent this long [s]",
        min=STATE_TIMEOUT_RANGE[0], max=STATE_TIMEOUT_RANGE[1])
    velocity_limit_rad_s: float = param(2.0, "max speed of the commanded arm setpoint [rad/s], per joint",
        min=VELOCITY_RANGE[0], max=VELOCITY_RANGE[1])
    joint_limit_margin_rad: float = param(0.05, "targets are clamped this far inside the URDF joint limits [rad]",
        min=MARGIN_RANGE[0], max=MARGIN_RANGE[1])
    controller: ControllerConfig = nested(ControllerConfig)  # damping_kd ... gravity_scale (drivers/arm_controller.py)
    hand_mass_kg: float = param(INSPIRE_RH56DFX_MASS_KG, "mass of each hand in the gravity model [kg] (Inspire "
        "RH56DFX: 0.54)", min=0.0, max=3.0, read_only=True)
    start_mode: str = param("HOLD", "mode once the first lowstate arrives", choices=("HOLD", "DAMPING"), read_only=True)
    verify_state_crc: bool = param(True, "drop rt/lowstate messages whose CRC is wrong")
    realtime_priority: int = param(0, "SCHED_FIFO priority of the lowcmd write thread (0 = normal; needs "
        "CAP_SYS_NICE or an rtprio limit)", min=0, max=90, read_only=True)
    process_rt_priority: int = param(0, "SCHED_FIFO priority of the whole arm node process at start-up (1-99; 0 = "
        "off): its rt/lowstate reader and ROS callbacks on time on a busy laptop (bench recorder --full-stack); "
        "the write thread's realtime_priority, when set, applies on top; needs CAP_SYS_NICE or an rtprio limit, "
        "else a warning", min=0, max=99, read_only=True)


class ArmNode(ParamsMixin, Node):
    PARAMS = ArmNodeParams

    def __init__(self) -> None:
        super().__init__("h1_arm_node")
        p = self.declare_specs()
        # before the DDS reader and the write thread exist: they inherit it
        apply_process_rt_priority(self, p["process_rt_priority"], "rt/lowstate may be read late when the machine "
                                  "is busy (FAULT after lowstate_timeout_s)")
        self.dds_domain = resolve_domain(p["dds_domain"])
        safety = ArmSafety(SafetyConfig(
            limit_margin_rad=p["joint_limit_margin_rad"], max_velocity_rad_s=p["velocity_limit_rad_s"],
            command_timeout_s=p["watchdog_timeout_s"], state_timeout_s=p["lowstate_timeout_s"],
            max_tick_s=2.0 / p["command_rate_hz"]))
        self._events_gc = self.create_guard_condition(self._on_events)
        self.controller = ArmController(safety, dataclasses.replace(self.config.controller,
                                                                    start_mode=Mode(p["start_mode"])),
            gravity=h1_2_arm_gravity(hand_mass_kg=p["hand_mass_kg"]), on_event=self._events_gc.trigger)
        self.driver = UnitreeArmDriver(self.controller, ArmDriverConfig(
            interface=p["dds_interface"], domain=p["dds_domain"], command_rate_hz=p["command_rate_hz"],
            verify_state_crc=p["verify_state_crc"], realtime_priority=p["realtime_priority"]),
            on_state=self._on_state)

        self.joint_pub = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.mode_pub = self.create_publisher(String, "arm/mode", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(ArmCommand, "arm_command", self._on_command, COMMAND_QOS)
        self.create_service(SetArmMode, "arm/set_mode", self._on_set_mode)
        self._published_mode: str | None = None
        self._joint_msg = JointState(name=list(ARM_JOINT_NAMES))
        self._next_state_pub = 0.0
        self.create_timer(1.0, self._publish_diagnostics)
        self._publish_mode()
        self.driver.start()
        self.get_logger().info(
            f"h1_arm_node: rt/lowcmd at {p['command_rate_hz']:g} Hz on DDS domain {self.dds_domain} interface "
            f"{p['dds_interface']!r}; waiting for rt/lowstate (nothing is written before it arrives). Safety: "
            f"watchdog {p['watchdog_timeout_s'] * 1000:.0f} ms, lowstate timeout "
            f"{p['lowstate_timeout_s'] * 1000:.0f} ms, velocity limit {p['velocity_limit_rad_s']:g} rad/s, "
            f"joint-limit margin {p['joint_limit_margin_rad']:g} rad"
            + ("" if self.driver.fast_codec else "; fast lowcmd packer disabled (SDK serializer in use)"))

    # --- parameters ------------------------------------------------------------------------------------------
    def _check_params(self, params: list):
        result = super()._check_params(params)
        if not result.successful:
            return result
        # Cross-field checks live in the config dataclasses: try the change on a copy first.
        safety = {_SAFETY_PARAMS[x.name]: x.value for x in params if x.name in _SAFETY_PARAMS}
        ctrl = {_CONTROLLER_PARAMS[x.name]: x.value for x in params if x.name in _CONTROLLER_PARAMS}
        try:
            replace(self.controller.safety.config, **{k: float(v) for k, v in safety.items()})
            replace(self.controller.config, **ctrl)
        except ValueError as exc:
            result.successful, result.reason = False, str(exc)
            self.get_logger().warning(f"rejected parameter change: {exc}")
        return result

    def on_params_changed(self, changed: dict) -> None:
        safety = {_SAFETY_PARAMS[k]: float(v) for k, v in changed.items() if k in _SAFETY_PARAMS}
        ctrl = {_CONTROLLER_PARAMS[k]: v for k, v in changed.items() if k in _CONTROLLER_PARAMS}
        if safety:
            self.controller.reconfigure_safety(**safety)
        if ctrl:
            self.controller.reconfigure(**ctrl)
        if "verify_state_crc" in changed:
            self.driver.config = replace(self.driver.config, verify_state_crc=changed["verify_state_crc"])
        self.get_logger().info(f"parameters changed: {changed}")

    # --- ROS inputs ----------------------------------------------------------------------------------------
    def _on_command(self, msg: ArmCommand) -> None:
        try:
            self.controller.on_command(list(msg.position_rad), time.monotonic())
        except CommandRejected:
            pass  # counted and logged (throttled) by the controller's events

    def _on_set_mode(self, request: SetArmMode.Request, response: SetArmMode.Response):
        name = _REQUEST_NAMES.get(request.mode)
        if name is None:
            response.success = False
            response.message = f"unknown mode code {request.mode}; use 0 HOLD, 1 TRACK, 2 DAMPING, 3 ESTOP, 4 RESET"
        else:
            response.success, response.message = self.controller.request_mode(name, time.monotonic())
            if response.success:
                self.get_logger().info(f"set_mode {name}: accepted: {response.message}")
            else:
                self.get_logger().warning(f"set_mode {name}: refused: {response.message}")
        response.current_mode = MODE_CODES[self.controller.mode]
        self._on_events()
        return response

    # --- outputs ---------------------------------------------------------------------------------------------
    def _on_events(self) -> None:
        self._log_events()
        self._publish_mode()

    def _log_events(self) -> None:
        if not self.context.ok():
            # shutting down: rclpy's logger would also try the dead /rosout publisher and print an rcl error
            for event in self.controller.drain_events():
                print(f"[{event.level.upper()}] [{self.get_name()}]: {event.text}", file=sys.stderr, flush=True)
            return
        for event in self.controller.drain_events():
            log_at(self, event.level, event.text)

    def _publish_mode(self) -> None:
        mode = self.controller.mode.value
        if mode != self._published_mode:
            self._published_mode = mode
            self.mode_pub.publish(String(data=mode))

    def _on_state(self, state: ArmState) -> None:
        """Called on the DDS thread for every valid lowstate: publish at most state_rate_hz, right when a state
        arrives (the state's own timing; no timer phase in between)."""
        period = 1.0 / self.p["state_rate_hz"]
        t = state.received_mono
        if t + 0.1 * period < self._next_state_pub:
            return
        # next slot one period on; if we fell behind (a slow robot stream), restart from now
        self._next_state_pub = max(self._next_state_pub + period, t + 0.5 * period)
        msg = self._joint_msg  # only this thread touches it
        set_stamp(msg.header.stamp, ns=state.received_wall_ns)
        msg.position, msg.velocity, msg.effort = state.q.tolist(), state.dq.tolist(), state.tau.tolist()
        try:
            self.joint_pub.publish(msg)
        except Exception:  # noqa: BLE001 - Ctrl+C shut the context down before close() detached us
            if self.context.ok():
                raise

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        snap = self.controller.snapshot(now)
        stats = self.driver.write_stats(now)
        d = self.driver
        if snap["mode"] == Mode.FAULT.value:
            level, summary = DiagnosticStatus.ERROR, "FAULT: rt/lowstate silent, lowcmd writes stopped"
        elif not snap["started"]:
            level, summary = DiagnosticStatus.WARN, "waiting for rt/lowstate: nothing written yet"
        elif snap["estop_latched"]:
            level, summary = DiagnosticStatus.WARN, "E-STOP latched (damping)"
        else:
            level, summary = DiagnosticStatus.OK, f"{snap['mode']}, writing rt/lowcmd at {stats['rate_hz']:.0f} Hz"

        def ms(seconds: float) -> str:
            return "inf" if math.isinf(seconds) else f"{seconds * 1000:.1f}"

        values = {
            "mode": snap["mode"],
            "estop_latched": snap["estop_latched"],
            "state_age_ms": ms(snap["state_age_s"]),
            "command_age_ms": ms(snap["command_age_s"]),
            "lowcmd_rate_hz": f"{stats['rate_hz']:.1f}",
            "lowcmd_target_hz": f"{self.p['command_rate_hz']:g}",
            "lowcmd_p50_period_ms": f"{stats['p50_period_ms']:.2f}",
            "lowcmd_p99_period_ms": f"{stats['p99_period_ms']:.2f}",
            "lowcmd_writes": d.writes,
            "lowcmd_write_errors": d.write_errors,
            "write_loop_overruns": d.overruns,
            "lowstates_received": d.states_received,
            "lowstates_bad_crc": d.states_bad_crc,
            "mode_machine": d.mode_machine if d.mode_machine is not None else "unknown",
            "kp_mean": f"{snap['kp_mean']:.1f}",
            "kd_mean": f"{snap['kd_mean']:.2f}",
            "fast_codec": d.fast_codec,
            "realtime_write_thread": d.realtime,
        }
        for key in ("commands_accepted", "commands_rejected", "commands_clamped", "commands_ignored",
                    "velocity_limited_ticks", "states_rejected", "watchdog_trips", "state_silence_faults"):
            values[key] = snap[key]
        status = DiagnosticStatus(level=level, name="h1_arm_node: arms", message=summary,
                                  hardware_id=f"unitree H1-2 rt/lowcmd domain {self.dds_domain} "
                                              f"if {self.p['dds_interface']}")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def close(self) -> None:
        """Shutdown as a defined transition: ramp to damping while writing at the normal rate, then release
        rt/lowcmd. Runs after the executor stopped (the rclpy context may be gone): events are logged here."""
        self.driver.on_state = None  # joint_states' context may already be shut down
        self.controller.on_event = None  # nothing spins the guard condition any more
        left = self.controller.begin_release(time.monotonic())
        self._log_events()
        if self.context.ok():
            self._publish_mode()
        if left is None:
            self.driver.stop()
            return
        timeout = left + RELEASE_MARGIN_S
        with _skip_on_signal() as skip:
            outcome = self.driver.release(timeout, abort=skip)
        self._log_events()  # e.g. FAULT during the ramp
        if outcome == "aborted":
            kp = self.controller.snapshot(time.monotonic())["kp_mean"]
            self.get_logger().warning("arm: second stop signal - damping ramp skipped, rt/lowcmd released at the "
                                      f"gains in force (arm kp mean {kp:.0f})")
        elif outcome == "timeout":
            self.get_logger().warning(f"arm: damping ramp not confirmed within {timeout:.1f} s (write loop "
                                      "starved?) - rt/lowcmd released anyway")


@contextmanager
def _skip_on_signal() -> Iterator[threading.Event]:
    """While the shutdown ramp runs, a second Ctrl+C or SIGTERM sets the event instead of interrupting the
    ramp half-way: the operator can always get out at once, and the node still exits cleanly."""
    skip = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield skip
        return
    previous = {sig: signal.signal(sig, lambda *_: skip.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield skip
    finally:
        for sig, handler in previous.items():
            if handler is None:  # rclpy's C-level handler: fall back to Python's defaults
                handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, handler)


def main(args=None) -> int:
    # The 250 Hz write thread shares the GIL with the DDS listener and the ROS executor: a thread that wants
    # the GIL waits up to one switch interval (default 5 ms, longer than a write period). 0.5 ms bounds that.
    sys.setswitchinterval(0.0005)
    try:
        run_node(ArmNode, args)  # a spin error raised by the stop signal itself counts as a clean stop there
    except RuntimeError as exc:  # e.g. unitree_sdk2py missing, DDS could not start on the interface
        print(f"h1_arm_node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
