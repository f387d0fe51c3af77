"""inspire_hand_node: two Inspire RH56 hands over Modbus TCP or RTU (driver: h1_training.drivers.inspire_modbus).

Publishes ``hand_states`` (12 joints, normalized 0..1, 1 = open) and ``hand_states_raw`` (register values
0..1000 in position, FORCE_ACT in effort) at ``read_rate_hz``; a hand whose link is lost or whose newest
reading is older than ``stale_after_s`` is published as NaN (never as a silently frozen value) and flagged
stale in ``diagnostics``. Subscribes ``hand_command`` (JointState, normalized 0..1): 12 positions in
HAND_JOINT_NAMES order, or any named subset (unnamed fingers stay where they are). Out-of-range values are
clamped (with a warning); NaN/inf or malformed commands are rejected with a log line.

Each hand has its own worker thread with bounded Modbus timeouts and exponential reconnect backoff, so a dead
hand never stalls the other. Service ``hand/clear_error`` (std_srvs/Trigger) writes CLEAR_ERROR to both hands.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from h1_training.drivers.inspire_link import HandEndpoint, make_links
from h1_training.drivers.inspire_modbus import HandWorker, WorkerConfig, is_fresh
from h1_training.drivers.inspire_registers import STATUS_TEXT, describe_errors, parse_hand_command
from h1_training.nodes.common import COMMAND_QOS, SENSOR_QOS, ParamsMixin, log_at, run_node
from h1_training.params import nested, param
from h1_training.rates import Ticker
from h1_training.robot_model import HAND_JOINT_NAMES, HAND_RAW_MAX
from h1_training.stamps import set_stamp

HANDS = ("left", "right")


@dataclass
class HandNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    transport: str = param("tcp", "Modbus transport for both hands", choices=("tcp", "rtu"), read_only=True)
    left_enabled: bool = param(True, "drive the left hand", read_only=True)
    right_enabled: bool = param(True, "drive the right hand", read_only=True)
    left_host: str = param("127.0.0.1", "left hand Modbus TCP host (robot: 192.168.123.211)", read_only=True)
    left_port: int = param(6000, "left hand Modbus TCP port", min=1, max=65535, read_only=True)
    left_unit: int = param(1, "left hand Modbus unit id (RTU default 2)", min=0, max=247, read_only=True)
    left_serial_port: str = param("/dev/ttyUSB0", "left hand RS-485 port (transport rtu)", read_only=True)
    right_host: str = param("127.0.0.1", "right hand Modbus TCP host (robot: 192.168.123.210)", read_only=True)
    right_port: int = param(6000, "right hand Modbus TCP port", min=1, max=65535, read_only=True)
    right_unit: int = param(1, "right hand Modbus unit id (RTU default 1)", min=0, max=247, read_only=True)
    right_serial_port: str = param("/dev/ttyUSB0", "right hand RS-485 port (transport rtu)", read_only=True)
    baudrate: int = param(115200, "RS-485 baud rate (transport rtu)", min=1200, max=4000000, read_only=True)
    stale_after_s: float = param(0.25, "a hand reading older than this is stale (published as NaN) [s]", min=0.02,
        max=10.0)
    worker: WorkerConfig = nested(WorkerConfig)  # read_rate_hz ... finger_force (drivers/inspire_modbus.py)
    diagnostics_rate_hz: float = param(1.0, "diagnostics publish rate [Hz]", min=0.1, max=10.0, read_only=True)


class InspireHandNode(ParamsMixin, Node):
    PARAMS = HandNodeParams

    def __init__(self) -> None:
        super().__init__("inspire_hand_node")
        self.declare_specs()
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # our own log lines say what went wrong
        p = self.p
        config = self.config.worker  # reconnect_max_s < reconnect_initial_s is refused at start-up
        endpoints = [
            HandEndpoint(
                name=hand,
                transport=p["transport"],
                host=p[f"{hand}_host"],
                port=p[f"{hand}_port"],
                serial_port=p[f"{hand}_serial_port"],
                baudrate=p["baudrate"],
                unit=p[f"{hand}_unit"],
            )
            for hand in HANDS
            if p[f"{hand}_enabled"]
        ]
        links = make_links(endpoints, config.timeout_s)
        self.links = list({id(link): link for link in links.values()}.values())
        self.workers: dict[str, HandWorker] = {
            ep.name: HandWorker(ep, config, links[ep.name], on_event=self._on_driver_event) for ep in endpoints
        }
        self.rejected = 0
        self.clamped = 0
        self._last_clamp_log = 0.0
        self.pub = self.create_publisher(JointState, "hand_states", SENSOR_QOS)
        self.pub_raw = self.create_publisher(JointState, "hand_states_raw", SENSOR_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_subscription(JointState, "hand_command", self._on_command, COMMAND_QOS)
        self.create_service(Trigger, "hand/clear_error", self._on_clear_error)
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self._publish_diagnostics)
        self._msg = JointState(name=list(HAND_JOINT_NAMES))
        self._msg.header.frame_id = "inspire_hands"
        self._raw_msg = JointState(name=list(HAND_JOINT_NAMES))
        for worker in self.workers.values():
            worker.start()
        # hand_states from a thread of its own: an rclpy timer wakes the executor, ~0.5 ms of Python per tick
        self._stop = threading.Event()
        self._publisher = threading.Thread(target=self._publish_loop, name="hand_states", daemon=True)
        self._publisher.start()
        hands = ", ".join(f"{w.endpoint.name} {w.endpoint.describe()}" for w in self.workers.values()) or "none"
        self.get_logger().info(f"Inspire hands: {hands}; polling at {p['read_rate_hz']:.0f} Hz")

    # --- driver events (worker threads) ---
    def _on_driver_event(self, level: str, message: str) -> None:
        log_at(self, level, message)

    # --- states ---
    def _publish_loop(self) -> None:
        ticker = Ticker(self.p["read_rate_hz"])
        while ticker.wait(self._stop) is not None:  # a late tick is skipped, never made up by a burst
            try:
                self._publish_states()
            except Exception as exc:  # noqa: BLE001 - e.g. the context shutting down under us
                if self._stop.is_set():
                    return
                self.get_logger().error(f"hand_states not published: {exc}")

    def _publish_states(self) -> None:
        now = time.time()
        pos = np.full(len(HAND_JOINT_NAMES), math.nan)
        raw = np.full(len(HAND_JOINT_NAMES), math.nan)
        force = np.full(len(HAND_JOINT_NAMES), math.nan)
        newest = 0.0
        for i, hand in enumerate(HANDS):
            worker = self.workers.get(hand)
            reading = worker.latest() if worker else None
            if not is_fresh(reading, self.p["stale_after_s"], now):
                continue  # NaN: missing, not frozen
            sl = slice(6 * i, 6 * i + 6)
            raw[sl] = reading.angle
            pos[sl] = reading.angle / HAND_RAW_MAX
            force[sl] = reading.force
            newest = max(newest, reading.stamp)
        stamp = newest if newest > 0 else now
        msg, raw_msg = self._msg, self._raw_msg  # reused: publish() serializes before it returns
        msg.position = pos.tolist()
        set_stamp(msg.header.stamp, seconds=stamp)
        raw_msg.position, raw_msg.effort = raw.tolist(), force.tolist()
        raw_msg.header = msg.header
        self.pub.publish(msg)
        self.pub_raw.publish(raw_msg)

    # --- commands ---
    def _on_command(self, msg: JointState) -> None:
        log = self.get_logger()
        try:
            parsed = parse_hand_command(list(msg.name), list(msg.position), HAND_JOINT_NAMES)
        except (ValueError, TypeError) as exc:
            self.rejected += 1
            log.error(f"rejected hand_command: {exc} (expects {len(HAND_JOINT_NAMES)} positions 0..1, 1 = open,"
                      f" or named joints of {HAND_JOINT_NAMES[0]}..{HAND_JOINT_NAMES[-1]})")
            return
        if parsed.clamped:
            self.clamped += 1
            if time.monotonic() - self._last_clamp_log > 1.0:  # throttled: commands arrive at 50 Hz
                self._last_clamp_log = time.monotonic()
                log.warning(f"hand_command outside 0..1 was clamped ({self.clamped} so far): {list(msg.position)}")
        for hand, target in (("left", parsed.left), ("right", parsed.right)):
            if target is None:
                continue
            worker = self.workers.get(hand)
            if worker is None:
                continue
            worker.set_target(target)

    def _on_clear_error(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        for worker in self.workers.values():
            worker.request_clear_error()
        response.success = bool(self.workers)
        response.message = f"CLEAR_ERROR queued for {', '.join(self.workers) or 'no hands'}"
        self.get_logger().info(response.message)
        return response

    # --- diagnostics ---
    def _publish_diagnostics(self) -> None:
        now = time.time()
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        for hand in HANDS:
            worker = self.workers.get(hand)
            st = DiagnosticStatus(name=f"inspire_hand_node: {hand} hand", hardware_id=f"inspire_rh56_{hand}")
            if worker is None:
                st.level, st.message = DiagnosticStatus.OK, "disabled"
                arr.status.append(st)
                continue
            h = worker.health()
            reading = worker.latest()
            fresh = is_fresh(reading, self.p["stale_after_s"], now)
            age = now - reading.stamp if reading else -1.0
            errors = describe_errors(reading.error) if reading is not None else ""
            if not h.connected:
                st.level = DiagnosticStatus.ERROR
                st.message = f"link lost: {h.last_error or 'not connected yet'}; reconnecting"
            elif not fresh:
                st.level, st.message = DiagnosticStatus.WARN, f"stale: newest reading {age:.2f} s old"
            elif errors:
                st.level, st.message = DiagnosticStatus.WARN, f"hand reports errors: {errors}"
            else:
                st.level, st.message = DiagnosticStatus.OK, "ok"
            values = {
                "endpoint": worker.endpoint.describe(),
                "connected": str(h.connected).lower(),
                "stale": str(not fresh).lower(),
                "age_s": f"{age:.3f}",
                "read_hz": f"{h.read_hz:.1f}",
                "reads": str(h.reads),
                "writes": str(h.writes),
                "failures": str(h.failures),
                "reconnects": str(h.reconnects),
                "commands_superseded": str(h.commands_dropped),
                "commands_expired": str(h.commands_expired),
                "commands_rejected": str(self.rejected),
                "commands_clamped": str(self.clamped),
                "last_error": h.last_error,
            }
            if reading is not None:
                values["status"] = ", ".join(STATUS_TEXT.get(int(s), str(int(s))) for s in reading.status)
                values["error_bits"] = " ".join(str(int(e)) for e in reading.error)
                if reading.temperature is not None:
                    values["temperature_c"] = " ".join(str(int(t)) for t in reading.temperature)
            st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
            arr.status.append(st)
        self.diag_pub.publish(arr)

    def close(self) -> None:
        self._stop.set()
        self._publisher.join(timeout=2.0)
        for worker in self.workers.values():
            worker.stop()
        for link in self.links:  # shared RS-485 links are not closed by a single worker
            link.close()


def main(args=None) -> None:
    run_node(InspireHandNode, args)


if __name__ == "__main__":
    main()
