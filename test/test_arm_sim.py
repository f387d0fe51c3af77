"""Simulated H1-2 joint dynamics (sim/h1_dynamics.py) and the unitree_hg wire codec (drivers/unitree_hg.py).
Pure: no rclpy; the codec tests use the SDK's types and CRC as the reference but open no DDS entities."""

from __future__ import annotations

import numpy as np
import pytest

from h1_training.robot_model import ARM_HOME_RAD, ARM_KD, ARM_KP, ARM_MOTOR_INDICES, ARM_UPPER_RAD
from h1_training.sim.h1_dynamics import ARM, DynamicsConfig, H1Dynamics, MotorCommands


def arm_command(q, kp, kd, mode=1) -> MotorCommands:
    cmd = MotorCommands.zeros()
    cmd.mode[ARM] = mode
    cmd.q[ARM], cmd.kp[ARM], cmd.kd[ARM] = q, kp, kd
    return cmd


def run(dyn: H1Dynamics, seconds: float, cmd: MotorCommands | None = None, dt: float = 0.002) -> None:
    for _ in range(int(seconds / dt)):
        if cmd is not None:
            dyn.apply_command(cmd)  # a fresh command every tick, like a 500 Hz stream
        dyn.step(dt)


def test_pd_with_the_robot_gains_reaches_the_target():
    dyn = H1Dynamics()
    target = ARM_HOME_RAD + 0.3
    run(dyn, 1.5, arm_command(target, ARM_KP, ARM_KD))
    np.testing.assert_allclose(dyn.arm_q, target, atol=2e-3)
    assert np.all(np.abs(dyn.arm_dq) < 0.05)


def test_damping_only_slows_the_arm_and_does_not_pull_it():
    dyn = H1Dynamics()
    dyn.dq[ARM] = 1.0
    far_away = ARM_HOME_RAD - 1.0  # q in the command is irrelevant when kp is 0
    run(dyn, 0.5, arm_command(far_away, 0.0, 2.0))
    assert np.all(np.abs(dyn.arm_dq) < 0.01)
    assert np.all(dyn.arm_q > ARM_HOME_RAD)  # drifted forward, not pulled back toward q_cmd


def test_disabled_motors_apply_no_torque():
    dyn = H1Dynamics()
    run(dyn, 0.5, arm_command(ARM_HOME_RAD + 0.5, ARM_KP, ARM_KD, mode=0))
    np.testing.assert_allclose(dyn.arm_q, ARM_HOME_RAD)


def test_motors_go_passive_when_commands_stop():
    dyn = H1Dynamics(DynamicsConfig(command_timeout_s=0.1))
    dyn.apply_command(arm_command(ARM_HOME_RAD + 0.5, ARM_KP, ARM_KD))
    run(dyn, 0.05)
    assert dyn.motors_active()[ARM].all()
    run(dyn, 0.1)
    assert not dyn.motors_active()[ARM].any()


def test_operator_hand_moves_the_arm_only_in_damping():
    target = ARM_HOME_RAD + np.array([0.4, 0.2] * 7)
    held = H1Dynamics()
    held.set_operator_target(target)
    run(held, 1.0, arm_command(ARM_HOME_RAD, ARM_KP, ARM_KD))
    assert np.max(np.abs(held.arm_q - ARM_HOME_RAD)) < 0.2 * 0.4 + 0.02  # a stiff joint gives little
    assert not held.operator_can_move().any()

    damped = H1Dynamics()
    damped.set_operator_target(target)
    run(damped, 1.5, arm_command(ARM_HOME_RAD, 0.0, 2.0))
    np.testing.assert_allclose(damped.arm_q, target, atol=0.01)
    damped.set_operator_target(None)
    before = damped.arm_q
    run(damped, 0.5, arm_command(ARM_HOME_RAD, 0.0, 2.0))
    np.testing.assert_allclose(damped.arm_q, before, atol=0.01)  # let go: stays (no gravity in the sim)


def test_joint_limits_are_hard_stops():
    dyn = H1Dynamics()
    run(dyn, 1.0, arm_command(ARM_UPPER_RAD + 1.0, ARM_KP, ARM_KD))
    assert np.all(dyn.arm_q <= ARM_UPPER_RAD + 1e-12)
    np.testing.assert_allclose(dyn.arm_q, ARM_UPPER_RAD)


def test_integration_is_stable_with_coarse_ticks_and_stiff_gains():
    dyn = H1Dynamics()
    run(dyn, 1.0, arm_command(ARM_HOME_RAD + 0.2, ARM_KP * 3, ARM_KD), dt=0.02)  # 50 Hz ticks, substeps inside
    assert np.all(np.isfinite(dyn.q))
    np.testing.assert_allclose(dyn.arm_q, ARM_HOME_RAD + 0.2, atol=5e-3)


def test_bad_inputs_are_rejected():
    dyn = H1Dynamics()
    with pytest.raises(ValueError):
        dyn.set_operator_target(np.full(14, np.nan))
    with pytest.raises(ValueError):
        dyn.apply_command(MotorCommands(np.zeros(3), *[np.zeros(35)] * 5))
    nan_cmd = arm_command(ARM_HOME_RAD, ARM_KP, ARM_KD)
    nan_cmd.q[ARM[0]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dyn.apply_command(nan_cmd)
    with pytest.raises(ValueError):
        DynamicsConfig(arm_inertia=0.0)


# --- wire codec (drivers/unitree_hg.py) -------------------------------------------------------------------
hg = pytest.importorskip("h1_training.drivers.unitree_hg")
if hg.SDK_ERROR is not None:  # pragma: no cover - environment without the SDK
    pytest.skip(f"unitree_sdk2py unavailable: {hg.SDK_ERROR}", allow_module_level=True)


def _random_lowcmd(seed: int):
    rng = np.random.default_rng(seed)
    msg = hg.new_lowcmd()
    msg.mode_machine = int(rng.integers(0, 255))
    for i, m in enumerate(msg.motor_cmd):
        m.mode = int(i in ARM_MOTOR_INDICES)
        m.q, m.dq, m.tau, m.kp, m.kd = (float(x) for x in rng.normal(size=5))
    return msg


def _random_lowstate(seed: int):
    rng = np.random.default_rng(seed)
    msg = hg.new_lowstate()
    msg.mode_machine, msg.tick = 4, int(rng.integers(0, 2**31))
    msg.imu_state.rpy = [float(x) for x in rng.normal(size=3)]
    for m in msg.motor_state:
        m.q, m.dq, m.tau_est = (float(x) for x in rng.normal(size=3))
        m.temperature = [30, 31]
    return msg


@pytest.mark.parametrize("seed", range(5))
def test_our_crc_equals_the_sdk_crc(seed):
    cmd, state = _random_lowcmd(seed), _random_lowstate(seed)
    assert hg.lowcmd_crc(cmd) == hg.CRC().Crc(cmd)
    assert hg.lowstate_crc(state) == hg.CRC().Crc(state)


def _bitwise_crc(words: np.ndarray) -> int:
    """The unitree CRC as its definition reads (MSB first, poly 0x04C11DB7, init 0xFFFFFFFF, no final xor)."""
    crc = 0xFFFFFFFF
    for word in words.tolist():
        for bit in range(31, -1, -1):
            top = (crc >> 31) ^ ((word >> bit) & 1)
            crc = ((crc << 1) & 0xFFFFFFFF) ^ (0x04C11DB7 if top else 0)
    return crc


@pytest.mark.parametrize("n", [0, 1, 2, 7, 250, 522])
def test_crc_of_any_length_equals_the_bitwise_definition(n):
    words = np.random.default_rng(n).integers(0, 2**32, n, dtype=np.uint64).astype("<u4")
    assert hg.crc32_words(words) == _bitwise_crc(words)


@pytest.mark.parametrize("layout_name", ["LOWCMD", "LOWSTATE"])
def test_xcdr_conversion_is_byte_identical_to_cyclonedds(layout_name):
    layout = getattr(hg, layout_name)
    assert layout.self_check()
    sample = _random_lowcmd(3) if layout_name == "LOWCMD" else _random_lowstate(3)
    wire = sample.serialize()
    c = layout.c_from_xcdr(wire)
    assert c == layout.to_c_bytes(sample)
    assert layout.xcdr_from_c(c) == wire
    rec = layout.record(c)
    field = "motor_cmd" if layout_name == "LOWCMD" else "motor_state"
    assert rec[field]["q"][20] == pytest.approx(getattr(sample, field)[20].q)
