"""The arm safety layer (drivers/arm_safety.py), one test per behaviour. Pure: no DDS, no rclpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from h1_training.drivers.arm_safety import ArmSafety, CommandRejected, SafetyConfig
from h1_training.robot_model import ARM_HOME_RAD, ARM_JOINT_NAMES, ARM_LOWER_RAD, ARM_UPPER_RAD


def test_defaults_are_the_documented_safe_ones():
    c = SafetyConfig()
    assert c.command_timeout_s == 0.1 and c.state_timeout_s == 0.1
    assert 1.0 <= c.max_velocity_rad_s <= 3.0  # human-in-the-loop: far below xr_teleoperate's 20 rad/s
    np.testing.assert_allclose(c.safe_lower, ARM_LOWER_RAD + c.limit_margin_rad)
    np.testing.assert_allclose(c.safe_upper, ARM_UPPER_RAD - c.limit_margin_rad)


@pytest.mark.parametrize("changes, words", [
    ({"max_velocity_rad_s": 50.0}, "max_velocity_rad_s"),
    ({"max_velocity_rad_s": math.nan}, "finite"),
    ({"limit_margin_rad": -0.1}, "limit_margin_rad"),
    ({"command_timeout_s": 0.0}, "command_timeout_s"),
    ({"state_timeout_s": 5.0}, "state_timeout_s"),
    ({"lower_rad": np.zeros(3)}, "14 values"),
])
def test_config_rejects_out_of_range_values_with_a_reason(changes, words):
    with pytest.raises(ValueError, match=words):
        SafetyConfig(**changes)


def test_reconfigure_keeps_old_config_on_error():
    s = ArmSafety()
    with pytest.raises(ValueError):
        s.reconfigure(max_velocity_rad_s=100.0)
    assert s.config.max_velocity_rad_s == 2.0
    s.reconfigure(max_velocity_rad_s=1.0)
    assert s.config.max_velocity_rad_s == 1.0


def test_out_of_limit_targets_are_clamped_inside_the_margin_and_named():
    s = ArmSafety(SafetyConfig(limit_margin_rad=0.1))
    target = ARM_HOME_RAD.copy()
    target[0] = 5.0  # left shoulder pitch, upper limit 1.57
    target[12] = -2.0  # right wrist pitch, lower limit -0.47
    q, clamped = s.check_command(target, now=0.0)
    assert q[0] == pytest.approx(1.57 - 0.1) and q[12] == pytest.approx(-0.47 + 0.1)
    assert clamped == [ARM_JOINT_NAMES[0], ARM_JOINT_NAMES[12]]
    np.testing.assert_array_equal(q[1:12], target[1:12])
    assert s.counters.commands_clamped == 1 and s.counters.commands_accepted == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_commands_are_rejected_whole(bad):
    s = ArmSafety()
    target = ARM_HOME_RAD.copy()
    target[3] = bad
    with pytest.raises(CommandRejected, match="left_elbow_pitch_joint"):
        s.check_command(target, now=1.0)
    assert s.counters.commands_rejected == 1 and s.last_command_t is None  # watchdog not refreshed


@pytest.mark.parametrize("bad", [[0.0] * 13, [0.0] * 15, ["a"] * 14, None])
def test_malformed_commands_are_rejected(bad):
    with pytest.raises(CommandRejected):
        ArmSafety().check_command(bad, now=0.0)


def test_velocity_clamp_limits_every_tick_and_stays_inside_limits():
    s = ArmSafety(SafetyConfig(max_velocity_rad_s=2.0))
    dt = 0.004
    setpoint = ARM_HOME_RAD.copy()
    goal = np.clip(ARM_HOME_RAD + 3.0, s.config.safe_lower, s.config.safe_upper)
    steps = 0
    while not np.allclose(setpoint, goal) and steps < 10000:
        nxt = s.limit_step(setpoint, goal, dt)
        assert np.max(np.abs(nxt - setpoint)) <= 2.0 * dt + 1e-12
        assert np.all(nxt >= s.config.safe_lower) and np.all(nxt <= s.config.safe_upper)
        setpoint, steps = nxt, steps + 1
    assert np.allclose(setpoint, goal)
    assert s.counters.velocity_limited_ticks > 0
    # a goal beyond the limits is never reached: the setpoint stops at the safe limit
    out = s.limit_step(s.config.safe_upper.copy(), s.config.safe_upper + 1.0, dt)
    np.testing.assert_allclose(out, s.config.safe_upper)


def test_a_late_tick_never_makes_up_for_lost_time():
    s = ArmSafety(SafetyConfig(max_velocity_rad_s=2.0, max_tick_s=0.008))
    out = s.limit_step(ARM_HOME_RAD, ARM_HOME_RAD + 1.0, dt=0.05)  # the write loop stalled for 50 ms
    np.testing.assert_allclose(out - ARM_HOME_RAD, 2.0 * 0.008)


def test_small_steps_pass_unchanged():
    s = ArmSafety()
    goal = ARM_HOME_RAD + 0.001
    np.testing.assert_allclose(s.limit_step(ARM_HOME_RAD, goal, 0.004), goal)
    assert s.counters.velocity_limited_ticks == 0


def test_command_watchdog():
    s = ArmSafety()
    assert s.command_stale(0.0)  # never commanded
    s.check_command(ARM_HOME_RAD, now=10.0)
    assert not s.command_stale(10.09)
    assert s.command_stale(10.11)
    assert s.command_age(10.05) == pytest.approx(0.05)
    # entering TRACK later restarts the count even if the last command is older
    assert not s.command_stale(10.15, since=10.1)
    assert s.command_stale(10.25, since=10.1)


def test_lowstate_watchdog_and_nan_states():
    s = ArmSafety()
    assert not s.state_silent(100.0)  # never received: not "silent", simply not started
    assert not s.check_state(np.full(14, np.nan), now=0.0)
    assert not s.has_state and s.counters.states_rejected == 1
    assert s.check_state(ARM_HOME_RAD, now=1.0)
    assert not s.state_silent(1.099)
    assert s.state_silent(1.101)
    bad = ARM_HOME_RAD.copy()
    bad[5] = np.inf
    assert not s.check_state(bad, now=1.05)
    assert s.state_age(1.1) == pytest.approx(0.1)  # a bad state does not refresh the watchdog


def test_track_refused_before_a_valid_state_and_when_silent():
    s = ArmSafety()
    assert "no valid rt/lowstate" in s.track_refusal(0.0)
    s.check_state(ARM_HOME_RAD, now=1.0)
    assert s.track_refusal(1.05) is None
    assert "silent" in s.track_refusal(1.5)
