"""inspire_hand_node against inspire_sim over Modbus TCP on 127.0.0.1 (real processes, real wire)."""

from __future__ import annotations

import math
import socket
import time

import pytest

from h1_training.drivers import inspire_link as link
from h1_training.drivers import inspire_modbus as im
from h1_training.drivers import inspire_registers as reg
from h1_training.procs import wait_until
from h1_training.robot_model import HAND_JOINT_NAMES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_angle_set(port: int) -> list[int]:
    """Read ANGLE_SET straight from the emulator over Modbus, as a second client would."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=1)
    assert client.connect()
    try:
        reply = client.read_holding_registers(reg.ANGLE_SET, count=6, device_id=1)
        assert not reply.isError()
        return list(reply.registers)
    finally:
        client.close()


def start_sim(procs, name: str, hands: str, left_port: int, right_port: int):
    return procs.start_executable(name, "inspire_sim", [
        "--ros-args", "-r", f"__node:={name}", "-p", f"hands:={hands}",
        "-p", f"left_port:={left_port}", "-p", f"right_port:={right_port}",
    ])


def start_hand_node(procs, left_port: int, right_port: int):
    return procs.start_executable("hand", "inspire_hand_node", [
        "--ros-args", "-p", "transport:=tcp",
        "-p", "left_host:=127.0.0.1", "-p", f"left_port:={left_port}",
        "-p", "right_host:=127.0.0.1", "-p", f"right_port:={right_port}",
        "-p", "reconnect_initial_s:=0.1", "-p", "reconnect_max_s:=0.4", "-p", "diagnostics_rate_hz:=5.0",
    ])


def test_parse_hand_command_rules():
    ok = reg.parse_hand_command([], [0.5] * 12, HAND_JOINT_NAMES)
    assert ok.left.tolist() == [500] * 6 and ok.right.tolist() == [500] * 6 and not ok.clamped
    clamped = reg.parse_hand_command([], [1.7] * 6 + [-0.2] * 6, HAND_JOINT_NAMES)
    assert clamped.clamped and clamped.left.tolist() == [1000] * 6 and clamped.right.tolist() == [0] * 6
    one = reg.parse_hand_command(["right_hand_index"], [0.25], HAND_JOINT_NAMES)
    assert one.left is None and one.right.tolist() == [reg.KEEP] * 3 + [250] + [reg.KEEP] * 2
    for names, pos in (([], [0.5] * 11), ([], [math.nan] + [0.5] * 11), (["left_hand_thumb"], [0.5]),
                       (["left_hand_index"], [math.inf])):
        with pytest.raises(ValueError):
            reg.parse_hand_command(names, pos, HAND_JOINT_NAMES)
    assert reg.split_bytes(reg.join_bytes([1, 2, 3, 4, 5, 6])) == [1, 2, 3, 4, 5, 6]
    assert reg.describe_errors([0, 1, 0, 4, 0, 0]) == "ring: stall; index: over-current"


def test_states_commands_clamp_and_reject(procs, probe):
    from sensor_msgs.msg import JointState

    from h1_training.nodes.common import COMMAND_QOS, SENSOR_QOS

    lp, rp = free_port(), free_port()
    start_sim(procs, "inspire_sim", "left,right", lp, rp)
    start_hand_node(procs, lp, rp)
    states = probe.capture(JointState, "hand_states", SENSOR_QOS)
    raw = probe.capture(JointState, "hand_states_raw", SENSOR_QOS)
    first = states.wait(1, timeout=30, where=lambda m: not any(math.isnan(v) for v in m.position))
    assert list(first.name) == list(HAND_JOINT_NAMES)
    assert all(abs(v - 1.0) < 1e-6 for v in first.position)  # the emulator starts open
    r = raw.wait(1, timeout=5, where=lambda m: not any(math.isnan(v) for v in m.position))
    assert all(v == 1000 for v in r.position) and len(r.effort) == 12

    cmd = probe.publisher(JointState, "hand_command", COMMAND_QOS)
    probe.wait_for_publisher("hand_states")
    wait_until(lambda: probe.node.count_subscribers("hand_command") > 0, 10, "hand_command subscriber")

    # close every finger: they travel at a finite speed (intermediate values, not a jump)
    raw.clear()
    t0 = time.monotonic()
    cmd.publish(JointState(position=[0.0] * 12))
    raw.wait(1, timeout=5, where=lambda m: all(v <= 2 for v in m.position))
    took = time.monotonic() - t0
    middle = [m for m in list(raw.messages) if any(100 < v < 900 for v in m.position)]
    assert middle, "fingers jumped instead of moving"
    assert took > 0.3, f"fingers closed in {took:.2f}s: too fast for the emulated speed"

    # out-of-range commands are clamped to 0..1000 on the wire
    cmd.publish(JointState(position=[1.7] * 12))
    wait_until(lambda: read_angle_set(lp) == [1000] * 6 and read_angle_set(rp) == [1000] * 6, 5, "ANGLE_SET 1000")
    cmd.publish(JointState(name=["left_hand_index"], position=[-3.0]))  # named subset: one finger
    wait_until(lambda: read_angle_set(lp) == [1000, 1000, 1000, 0, 1000, 1000], 5, "left index 0")
    assert read_angle_set(rp) == [1000] * 6
    procs.wait_for_line("hand", lambda line: "clamped" in line, timeout=5)

    # bad commands are rejected with a log line and never reach the hands
    cmd.publish(JointState(position=[math.nan] + [0.5] * 11))
    procs.wait_for_line("hand", lambda line: "rejected hand_command" in line and "non-finite" in line, timeout=5)
    cmd.publish(JointState(position=[0.5] * 5))
    procs.wait_for_line("hand", lambda line: "rejected hand_command" in line and "expected 12" in line, timeout=5)
    time.sleep(0.1)
    assert read_angle_set(lp) == [1000, 1000, 1000, 0, 1000, 1000]
    assert read_angle_set(rp) == [1000] * 6


def test_one_hand_server_killed_and_restarted(procs, probe):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import JointState

    from h1_training.nodes.common import SENSOR_QOS

    lp, rp = free_port(), free_port()
    left = start_sim(procs, "sim_left", "left", lp, rp)
    start_sim(procs, "sim_right", "right", lp, rp)
    start_hand_node(procs, lp, rp)
    states = probe.capture(JointState, "hand_states", SENSOR_QOS)
    diags = probe.capture(DiagnosticArray, "diagnostics", 10)

    def both_fresh(m) -> bool:
        return not any(math.isnan(v) for v in m.position)

    states.wait(1, timeout=30, where=both_fresh)

    t_kill = time.monotonic()
    procs.stop_one(left)  # the left hand's Modbus server dies
    states.wait(1, timeout=5, where=lambda m: math.isnan(m.position[0]) and not math.isnan(m.position[6]))

    def left_lost(arr) -> bool:
        return any("left hand" in s.name and s.level == DiagnosticStatus.ERROR and "link lost" in s.message
                   for s in arr.status)

    diags.wait(1, timeout=5, where=left_lost)
    procs.wait_for_line("hand", lambda line: "left hand" in line and "link lost" in line, timeout=5)

    left2 = start_sim(procs, "sim_left2", "left", lp, rp)  # the same port again
    procs.wait_for_line("hand", lambda line: "left hand" in line and "re-established" in line, timeout=30)
    before = sum(1 for m in list(states.messages) if both_fresh(m))
    states.wait(before + 5, timeout=5, where=both_fresh)
    t_back = time.monotonic()
    assert left2.running

    # the right hand never stopped: fresh right-hand states kept flowing through the whole outage
    with states._lock:
        pairs = list(zip(states.times, states.messages))
    right_times = [t for t, m in pairs if not math.isnan(m.position[6])]
    assert right_times[0] < t_kill and right_times[-1] > t_back - 0.2
    # ... and were never marked stale (the node's own per-hand flag: NaN), nor its link reported lost: the right
    # hand's worker never waited on the left's reconnects (how regular the flow is on a loaded machine: bench)
    outage = [m for t, m in pairs if t_kill < t < t_back]
    assert outage and not any(math.isnan(v) for m in outage for v in m.position[6:])
    with diags._lock:  # (before the kill, at start-up, both links may have waited for their servers)
        right_lost = [s for t, arr in zip(diags.times, diags.messages) if t_kill < t < t_back for s in arr.status
                      if "right hand" in s.name and s.level == DiagnosticStatus.ERROR]
    assert not right_lost, right_lost[0].message


def test_rtu_bus_two_hands_share_one_port():
    """RTU framing (unit ids 2 and 1 on one RS-485 bus, as on the robot) through pyserial's socket:// URL."""
    pytest.importorskip("serial")
    from h1_training.sim.inspire_model import InspireHandModel, InspireModbusServer

    port = free_port()
    left_model, right_model = InspireHandModel(unit=2), InspireHandModel(unit=1)
    server = InspireModbusServer([left_model, right_model], "127.0.0.1", port, framer="rtu")
    server.start()
    url = f"socket://127.0.0.1:{port}"
    endpoints = [link.HandEndpoint("left", "rtu", serial_port=url, unit=2),
                 link.HandEndpoint("right", "rtu", serial_port=url, unit=1)]
    config = im.WorkerConfig(timeout_s=0.5)
    links = link.make_links(endpoints, config.timeout_s)
    assert links["left"] is links["right"] and links["left"].shared
    workers = {ep.name: im.HandWorker(ep, config, links[ep.name]) for ep in endpoints}
    try:
        for w in workers.values():
            w.start()
        wait_until(lambda: all(w.latest() is not None for w in workers.values()), 10, "both hands read over RTU")
        workers["left"].set_target([0, reg.KEEP, reg.KEEP, reg.KEEP, reg.KEEP, reg.KEEP])
        wait_until(lambda: workers["left"].latest().angle[0] < 50, 5, "left pinky closed")
        assert left_model.angle_set.tolist() == [0, 1000, 1000, 1000, 1000, 1000]
        assert right_model.angle_set.tolist() == [1000] * 6 and workers["right"].latest().angle[0] == 1000
    finally:
        for w in workers.values():
            w.stop()
        links["left"].close()
        server.stop()


def test_emulator_answers_like_a_modbus_device():
    """The emulator's pymodbus server (pymodbus client on the other end): reads, single and multiple writes,
    CLEAR_ERROR, and the exception responses for a read-only block, an address outside the map and an unknown
    unit."""
    from pymodbus.client import ModbusTcpClient

    from h1_training.sim.inspire_model import InspireHandModel, InspireModbusServer

    port = free_port()
    model = InspireHandModel(unit=1)
    server = InspireModbusServer(model, "127.0.0.1", port)
    server.start()
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    try:
        assert client.connect()
        assert client.read_holding_registers(reg.HAND_ID, count=1, device_id=1).registers == [1]
        assert client.read_holding_registers(reg.ANGLE_ACT, count=6, device_id=1).registers == [1000] * 6
        assert not client.write_registers(reg.ANGLE_SET, [0, 2000, reg.KEEP, 10, 20, 30], device_id=1).isError()
        assert not client.write_register(reg.SPEED_SET + 5, 500, device_id=1).isError()
        assert model.angle_set.tolist() == [0, 1000, 1000, 10, 20, 30]  # clamped, 0xFFFF kept
        assert model.speed_set.tolist() == [1000] * 5 + [500]
        assert client.read_holding_registers(reg.ANGLE_SET, count=6, device_id=1).registers == [0, 1000, 1000, 10,
                                                                                                 20, 30]
        model.inject_error(5, fingers=[0])
        error = client.read_holding_registers(reg.ERROR, count=3, device_id=1).registers
        assert reg.split_bytes(error) == [5, 0, 0, 0, 0, 0]
        for reply in (client.write_registers(reg.ANGLE_ACT, [1] * 6, device_id=1),  # read-only
                      client.write_register(reg.STATUS, 0, device_id=1),  # read-only, single write
                      client.read_holding_registers(reg.TEMP + 3, count=1, device_id=1),  # past the map
                      client.read_holding_registers(999, count=2, device_id=1)):
            assert reply.isError() and reply.exception_code == 2  # ILLEGAL DATA ADDRESS
        assert model.error.tolist() == [5, 0, 0, 0, 0, 0]  # a refused write changed nothing
        assert not client.write_register(reg.CLEAR_ERROR, 1, device_id=1).isError()
        assert reg.split_bytes(client.read_holding_registers(reg.ERROR, count=3, device_id=1).registers) == [0] * 6
        unknown = client.read_holding_registers(reg.ANGLE_ACT, count=6, device_id=7)
        assert unknown.isError() and unknown.exception_code == 4  # SLAVE DEVICE FAILURE: pymodbus' answer
        assert client.read_holding_registers(reg.HAND_ID, count=1, device_id=1).registers == [1]  # still serving
    finally:
        client.close()
        server.stop()


def test_reconnect_max_below_initial_is_refused_with_the_reason(procs):
    # one declaration (WorkerConfig): the node refuses the pair instead of silently raising reconnect_max_s
    node = procs.start_executable("hand_bad", "inspire_hand_node", [
        "--ros-args", "-p", "left_enabled:=false", "-p", "right_enabled:=false",
        "-p", "reconnect_initial_s:=2.0", "-p", "reconnect_max_s:=0.5",
    ], expect_exit=True)
    procs.wait_for_line("hand_bad", lambda line: "invalid parameters at start-up: reconnect_max_s (0.5 s) must be "
                        ">= reconnect_initial_s (2 s)" in line, timeout=30)
    assert node.proc.wait(timeout=30) != 0
    with pytest.raises(ValueError, match="reconnect_max_s"):
        im.WorkerConfig(reconnect_initial_s=1.0, reconnect_max_s=0.5)
    assert im.WorkerConfig(status_rate_hz=4.0).status_period_s == 0.25
