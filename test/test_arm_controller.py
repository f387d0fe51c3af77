"""The arm mode machine (drivers/arm_controller.py): modes, ramps, interpolation and how the safety layer is
applied on every tick. Pure: a fake clock, no DDS, no rclpy."""

from __future__ import annotations

import numpy as np
import pytest

from h1_training.drivers.arm_controller import RELEASE_SETTLE_TICKS, ArmController, ControllerConfig, Mode
from h1_training.drivers.arm_gravity import h1_2_arm_gravity
from h1_training.drivers.arm_safety import ArmSafety, CommandRejected, SafetyConfig
from h1_training.robot_model import ARM_HOME_RAD, ARM_KD, ARM_KP

DT = 0.004  # 250 Hz


class Rig:
    """Drives a controller like the driver does: a state every tick, then the write tick."""

    def __init__(self, **config) -> None:
        self.t = 0.0
        self.q = ARM_HOME_RAD.copy()
        self.c = ArmController(ArmSafety(SafetyConfig()), ControllerConfig(**config))
        self.out = None

    def run(self, seconds: float, state: bool = True, command=None):
        outs = []
        for _ in range(int(round(seconds / DT))):
            self.t += DT
            if state:
                self.c.on_state(self.q, np.zeros(14), self.t)
            if command is not None:
                self.c.on_command(command(self.t) if callable(command) else command, self.t)
            self.out = self.c.tick(self.t)
            outs.append(self.out)
        return outs

    def mode(self, name: str):
        return self.c.request_mode(name, self.t)


def test_nothing_is_written_before_the_first_state():
    r = Rig()
    assert r.run(0.1, state=False) == [None] * 25
    ok, msg = r.mode("TRACK")
    assert not ok and "no valid rt/lowstate" in msg
    assert r.c.mode is Mode.HOLD


def test_first_state_holds_the_current_pose_with_ramped_gains():
    r = Rig(gain_ramp_s=0.5)
    outs = r.run(0.6)
    np.testing.assert_allclose(outs[0].q, ARM_HOME_RAD)
    assert outs[0].kp.max() < 140 * 0.02  # starts near zero
    kps = np.array([o.kp[0] for o in outs])
    assert np.all(np.diff(kps) >= -1e-9) and np.max(np.diff(kps)) < 140 * DT / 0.5 + 1e-6  # linear ramp
    np.testing.assert_allclose(outs[-1].kp, ARM_KP)
    np.testing.assert_allclose(outs[-1].kd, ARM_KD)


def test_track_follows_interpolated_commands_within_the_velocity_limit():
    r = Rig()
    r.run(0.6)
    assert r.mode("TRACK")[0]
    goal = ARM_HOME_RAD.copy()
    goal[3] += 1.0  # 1 rad away: takes 0.5 s at 2 rad/s
    outs = r.run(0.8, command=goal)
    qs = np.array([o.q for o in outs])
    assert np.max(np.abs(np.diff(qs, axis=0))) <= 2.0 * DT + 1e-9
    np.testing.assert_allclose(qs[-1], goal, atol=1e-9)
    assert r.c.mode is Mode.TRACK


def test_interpolation_between_sparse_commands_is_smooth():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    steps = []
    for k in range(1, 6):  # commands at 50 Hz, each 0.02 rad further: 1 rad/s, below the limit
        goal = ARM_HOME_RAD.copy()
        goal[0] -= 0.02 * k
        r.c.on_command(goal, r.t)
        outs = r.run(0.02)
        steps += [o.q[0] for o in outs]
    d = np.diff(steps)
    assert np.all(d <= 1e-12)  # monotonic, no back-and-forth
    assert np.max(np.abs(d)) < 0.02 * 0.8  # spread over ticks, not one jump per command


def test_stale_commands_fall_back_to_hold_at_the_last_setpoint():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    goal = ARM_HOME_RAD.copy()
    goal[1] += 0.05
    r.run(0.1, command=goal)
    last = r.out.q.copy()
    outs = r.run(0.2)  # no more commands
    modes = [o.mode for o in outs]
    first_hold = modes.index(Mode.HOLD)
    assert 0.09 <= first_hold * DT <= 0.11  # watchdog 100 ms
    np.testing.assert_allclose(outs[-1].q, last, atol=0.05 * 1e-6 + 2.0 * DT)  # no jump
    assert r.c.safety.counters.watchdog_trips == 1
    assert any("watchdog" in e.text for e in r.c.drain_events())


def test_track_needs_commands_soon_after_it_starts():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    outs = r.run(0.2)
    assert outs[-1].mode is Mode.HOLD


def test_rejected_commands_do_not_feed_the_watchdog():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    bad = ARM_HOME_RAD.copy()
    bad[0] = np.nan
    with pytest.raises(CommandRejected):
        r.c.on_command(bad, r.t)
    outs = r.run(0.2)
    assert outs[-1].mode is Mode.HOLD
    np.testing.assert_allclose(outs[-1].q, ARM_HOME_RAD)


def test_damping_sets_kp_zero_and_small_kd_with_a_ramp_and_follows_the_arm():
    r = Rig(damping_kd=2.0, gain_ramp_s=0.2)
    r.run(0.6)
    assert r.mode("DAMPING")[0]
    outs = r.run(0.3)
    assert outs[0].kp[0] > 100  # ramping down, not a jump to zero
    np.testing.assert_allclose(outs[-1].kp, 0.0)
    np.testing.assert_allclose(outs[-1].kd, 2.0)
    r.q = ARM_HOME_RAD + 0.3  # the operator moved the arm
    r.run(0.05)
    np.testing.assert_allclose(r.out.q, np.clip(ARM_HOME_RAD + 0.3, r.c.safety.config.safe_lower,
                                                r.c.safety.config.safe_upper))
    # HOLD after damping holds where the arm now is, gains ramp back up
    r.mode("HOLD")
    outs = r.run(0.3)
    np.testing.assert_allclose(outs[0].q, r.out.q)
    assert outs[0].kp[0] < 20 and outs[-1].kp[0] == pytest.approx(140)


def test_estop_latches_until_reset():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    ok, _ = r.mode("ESTOP")
    assert ok and r.c.mode is Mode.ESTOP
    r.run(0.6)
    np.testing.assert_allclose(r.out.kp, 0.0)
    for request in ("HOLD", "TRACK", "DAMPING"):
        ok, msg = r.mode(request)
        assert not ok and "RESET_ESTOP" in msg
    assert r.c.mode is Mode.ESTOP
    ok, _ = r.mode("RESET_ESTOP")
    assert ok and r.c.mode is Mode.HOLD and not r.c.estop_latched
    assert not r.mode("RESET_ESTOP")[0]  # nothing to reset any more


def test_estop_before_the_first_state_still_latches():
    r = Rig()
    ok, msg = r.mode("ESTOP")
    assert ok and "latched" in msg
    r.run(0.1)
    assert r.c.mode is Mode.ESTOP and r.out.mode is Mode.ESTOP
    np.testing.assert_allclose(r.out.kp, 0.0)


def test_silent_lowstate_faults_stops_output_and_latches():
    r = Rig()
    r.run(0.6)
    r.mode("TRACK")
    outs = r.run(0.2, state=False, command=ARM_HOME_RAD)
    assert outs[-1] is None and r.c.mode is Mode.FAULT
    silent_ticks = [o for o in outs if o is not None]
    assert 0.09 <= len(silent_ticks) * DT <= 0.11  # written until the 100 ms limit, then nothing
    events = [e.text for e in r.c.drain_events()]
    assert any("lowstate silent for" in t and "writes stopped" in t for t in events)
    outs = r.run(0.1)  # states are back, the fault stays latched
    assert outs[-1] is None
    assert not r.mode("TRACK")[0]
    assert r.mode("HOLD")[0]
    outs = r.run(0.1)
    assert outs[-1].mode is Mode.HOLD and outs[0].kp.max() < 140 * 0.2  # gains ramp in again


def test_unknown_mode_and_start_mode_validation():
    r = Rig()
    r.run(0.1)
    assert not r.mode("FLY")[0]
    with pytest.raises(ValueError):
        ControllerConfig(start_mode=Mode.TRACK)
    with pytest.raises(ValueError):
        ControllerConfig(damping_kd=50.0)


def test_gravity_feedforward_takes_over_at_once_in_damping_and_fades_out_with_hold():
    r = Rig(gravity_feedforward=True, gain_ramp_s=0.5)
    expected = h1_2_arm_gravity()(r.q)
    assert np.abs(expected).max() > 1.0  # the home pose needs real torque: the check below can fail
    r.run(0.6)
    np.testing.assert_allclose(r.out.tau, 0.0)  # HOLD: the PD holds the arm, no feed-forward
    r.mode("DAMPING")
    outs = r.run(0.6)
    # the damping setpoint follows the arm, so the PD stops holding at once: the feed-forward must, too
    np.testing.assert_allclose(outs[0].tau, expected, rtol=1e-6)
    np.testing.assert_allclose(r.out.tau, expected, rtol=1e-6)
    r.mode("HOLD")
    outs = r.run(0.6)
    steps = [np.abs(b.tau - a.tau).max() for a, b in zip(outs, outs[1:])]
    assert np.abs(outs[0].tau).max() > 0.9 * np.abs(expected).max()  # fading out while kp comes back
    assert max(steps) < np.abs(expected).max() * 0.05  # no step on the way out
    np.testing.assert_allclose(r.out.tau, 0.0)


def test_gravity_scale_and_off_switch():
    r = Rig(gravity_feedforward=True, gravity_scale=0.5)
    r.run(0.1)
    r.mode("DAMPING")
    r.run(1.0)
    np.testing.assert_allclose(r.out.tau, 0.5 * h1_2_arm_gravity()(r.q), rtol=1e-6)
    r.c.reconfigure(gravity_feedforward=False)
    r.run(1.0)
    np.testing.assert_allclose(r.out.tau, 0.0)
    with pytest.raises(ValueError):
        ControllerConfig(gravity_scale=1.5)


def test_a_failing_gravity_model_sends_no_torque_and_says_so():
    r = Rig(gravity_feedforward=True)
    r.run(0.1)
    r.mode("DAMPING")
    r.c.gravity = lambda q: np.full(14, np.nan)
    r.run(0.6)
    np.testing.assert_allclose(r.out.tau, 0.0)
    assert any("gravity" in e.text for e in r.c.drain_events())


def test_release_ramps_from_track_to_damping_then_is_done():
    r = Rig(gain_ramp_s=0.5, damping_kd=2.0)
    r.run(0.6)
    assert r.mode("TRACK")[0]
    r.run(0.1, command=ARM_HOME_RAD)
    assert r.c.begin_release(r.t) == pytest.approx(0.5)
    assert "ramping to damping over 0.5 s, then releasing rt/lowcmd" in r.c.drain_events()[-1].text
    assert r.c.mode is Mode.DAMPING and not r.c.release_done()
    outs, done_at = [], None
    while done_at is None:
        outs += r.run(DT, command=ARM_HOME_RAD)  # the policy keeps publishing: ignored now
        if r.c.release_done():
            done_at = r.t
        assert len(outs) < 200
    kps = np.array([o.kp.max() for o in outs])
    assert kps[0] > 100 and np.all(np.diff(kps) <= 1e-9)  # a ramp, never a jump
    assert np.all(kps[-RELEASE_SETTLE_TICKS:] == 0.0)
    np.testing.assert_allclose(outs[-1].kd, 2.0)
    assert 0.5 <= len(outs) * DT <= 0.5 + (RELEASE_SETTLE_TICKS + 1) * DT
    assert all(o.mode is Mode.DAMPING for o in outs)
    ok, msg = r.mode("TRACK")
    assert not ok and "shutting down" in msg


def test_release_from_damping_is_immediate_and_keeps_the_damping_gains():
    r = Rig(gain_ramp_s=0.2)
    r.run(0.3)
    r.mode("DAMPING")
    r.run(0.3)
    assert r.c.begin_release(r.t) == 0.0
    assert "already in damping" in r.c.drain_events()[-1].text
    outs = r.run(RELEASE_SETTLE_TICKS * DT)
    assert r.c.release_done() and all(np.all(o.kp == 0) for o in outs)


def test_release_writes_nothing_without_a_fresh_state():
    r = Rig()
    assert r.c.begin_release(r.t) is None and r.c.release_done()
    assert r.run(0.1) == [None] * 25  # a first state during shutdown does not start writing
    r = Rig()
    r.run(0.6)
    r.run(0.2, state=False)
    assert r.c.mode is Mode.FAULT
    assert r.c.begin_release(r.t) is None and r.c.release_done()
    assert "nothing will be" in r.c.drain_events()[-1].text
    assert r.run(0.1)[-1] is None and not r.mode("HOLD")[0]


def test_release_ends_early_when_the_state_goes_silent_mid_ramp():
    r = Rig()
    r.run(0.6)
    assert r.c.begin_release(r.t) == pytest.approx(0.5)
    r.run(0.1)
    assert not r.c.release_done()
    outs = r.run(0.2, state=False)
    assert outs[-1] is None and r.c.mode is Mode.FAULT and r.c.release_done()
