"""The emulators and codecs checked against the vendors' documented facts, written here as literals (never imported
from the code under test, which could carry the same mistake as the driver it emulates).

Sources:
- Inspire RH56 hands: the register table of the RH56DFX user manual as used by TechShare-inc/inspire_demos and
  inspire_hand_sdk (holding registers; 6 x int16 per block unless noted; 0-1000, 1000 = open; DOF order pinky,
  ring, middle, index, thumb bend, thumb rotation): HAND_ID 1000, CLEAR_ERROR 1004, POS_SET 1474, ANGLE_SET 1486,
  FORCE_SET 1498, SPEED_SET 1522, POS_ACT 1534, ANGLE_ACT 1546, FORCE_ACT 1582, CURRENT 1594, ERROR 1606 (3 regs,
  one byte per finger), STATUS 1612 (3 regs), TEMP 1618 (3 regs).
- unitree_hg (H1-2): unitree_sdk2 ``include/unitree/idl/hg/LowCmd_.hpp`` / ``LowState_.hpp`` and the matching
  unitree_sdk2py IDL: LowCmd_ = uint8 mode_pr, uint8 mode_machine, MotorCmd_[35] (uint8 mode; float q, dq, tau, kp,
  kd; uint32 reserve), uint32 reserve[4], uint32 crc; LowState_ = uint32 version[2], uint8 mode_pr, uint8
  mode_machine, uint32 tick, IMUState_ (float quaternion[4], gyroscope[3], accelerometer[3], rpy[3]; int16
  temperature), MotorState_[35] (uint8 mode; float q, dq, ddq, tau_est; int16 temperature[2]; float vol; uint32
  sensor[2], motorstate, reserve[4]), uint8 wireless_remote[40], uint32 reserve[4], uint32 crc. The CRC runs over
  the C struct (natural alignment) minus its last word. Arm motors (unitree_sdk2_python example/h1_2/low_level,
  xr_teleoperate robot_arm.py): left 13-19, right 20-26.
"""

from __future__ import annotations

import socket

import pytest

from h1_training.procs import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hand(procs):
    """inspire_sim serving one hand on a free port."""
    port = _free_port()
    procs.start_executable("inspire_sim", "inspire_sim", [
        "--ros-args", "-p", "hands:=left", "-p", f"left_port:={port}", "-p", "left_unit:=1"])
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    wait_until(client.connect, 30, "inspire_sim's Modbus server")
    yield client
    client.close()


def _read(client, address: int, count: int) -> list[int]:
    reply = client.read_holding_registers(address, count=count, device_id=1)
    assert not reply.isError(), f"register {address}: {reply}"
    return list(reply.registers)


def test_inspire_emulator_speaks_the_rh56_register_map(hand, probe):
    # every documented block answers with its documented size
    for address, count in ((1000, 1), (1474, 6), (1486, 6), (1498, 6), (1522, 6), (1534, 6), (1546, 6),
                           (1582, 6), (1594, 6), (1606, 3), (1612, 3), (1618, 3)):
        assert len(_read(hand, address, count)) == count
    assert _read(hand, 1606, 3) == [0, 0, 0]  # ERROR: no fault
    # angles are 0-1000; a setpoint written to ANGLE_SET (1486) shows in ANGLE_ACT (1546), finger by finger
    target = [1000, 800, 600, 400, 200, 0]  # pinky .. thumb rotation
    assert not hand.write_registers(1522, [1000] * 6, device_id=1).isError()   # SPEED_SET: full speed
    assert not hand.write_registers(1486, target, device_id=1).isError()
    wait_until(lambda: all(abs(a - t) <= 10 for a, t in zip(_read(hand, 1546, 6), target)), 20,
               "ANGLE_ACT to reach ANGLE_SET")
    assert all(0 <= v <= 1000 for v in _read(hand, 1546, 6))
    assert _read(hand, 1486, 6) == target
    # ERROR: one byte per finger, 6 fingers in 3 registers; stall (bit 1) injected on each
    assert probe.set_parameter("inspire_sim", "left_inject_error", 1).successful
    wait_until(lambda: _read(hand, 1606, 3) == [0x0101] * 3, 10, "the stall bit in every finger's ERROR byte")


def test_unitree_hg_c_layout_and_crc_position():
    from h1_training.drivers import unitree_hg as hg

    cmd, state = hg.LOWCMD_C, hg.LOWSTATE_C
    # LowCmd_: 2 x uint8, pad to 4; 35 x MotorCmd_ (uint8 + pad 3 + 5 floats + uint32 = 28 bytes); 4 reserve; crc
    assert cmd.itemsize == 4 + 35 * 28 + 16 + 4 == 1004
    assert cmd.fields["motor_cmd"][1] == 4 and cmd.fields["motor_cmd"][0].itemsize == 35 * 28
    assert cmd.fields["crc"][1] == 1000
    motor = cmd.fields["motor_cmd"][0].base
    assert [motor.fields[k][1] for k in ("mode", "q", "dq", "tau", "kp", "kd", "reserve")] == [0, 4, 8, 12, 16, 20, 24]
    # LowState_: version 8, mode_pr/mode_machine 2 + pad 2, tick 4, IMU 13 floats + int16 + pad = 56,
    # 35 x MotorState_ (uint8 + pad, 4 floats, 2 int16, float, 7 uint32 = 56 bytes), remote 40, reserve 16, crc
    assert state.itemsize == 16 + 56 + 35 * 56 + 40 + 16 + 4 == 2092
    assert state.fields["imu_state"][1] == 16 and state.fields["motor_state"][1] == 72
    assert state.fields["crc"][1] == 2088
    # the arm motor slots of the H1-2
    from h1_training.robot_model import ARM_MOTOR_INDICES

    assert list(ARM_MOTOR_INDICES) == list(range(13, 20)) + list(range(20, 27))
