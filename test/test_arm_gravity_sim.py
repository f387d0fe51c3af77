"""Gravity on the simulated H1-2 arms, and h1_arm_node's gravity feed-forward against it.

First the dynamics alone (no DDS): the load is the URDF model's, PD sags by gravity / kp, a passive arm sinks and
the model's own torque fed forward holds it. Then h1_sim with ``gravity:=true`` and the real h1_arm_node over
unitree DDS on lo: HOLD sags by the expected amount, DAMPING without feed-forward lets a raised arm sink, with
feed-forward it stays (and does not rise), and the operator's hand still moves the arms in damping.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from h1_training.drivers.arm_gravity import h1_2_arm_gravity
from h1_training.drivers.h1_2_arm_inertia import INSPIRE_RH56DFX_MASS_KG
from h1_training.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from h1_training.nodes.probe import RosProbe
from h1_training.procs import ProcessGroup, loopback_ros_env
from h1_training.robot_model import ARM_HOME_RAD, ARM_JOINT_NAMES, ARM_KD, ARM_KP
from h1_training.sim.h1_dynamics import ARM, H1Dynamics, MotorCommands
from h1_training_interfaces.msg import ArmCommand
from h1_training_interfaces.srv import SetArmMode

MODE = SetArmMode.Request

SHOULDER_PITCH = [0, 7]  # left, right: < 0 raises the arm forward, gravity pulls it back toward 0
RAISED = ARM_HOME_RAD.copy()
RAISED[SHOULDER_PITCH] = -0.8  # arms forward: ~13 N m on each shoulder pitch
GRAVITY = h1_2_arm_gravity()  # what both the sim (gravity:=true) and the arm node use by default
DAMPING_KD = 2.0  # the arm node's default damping_kd
OPERATOR_STIFFNESS = 40.0  # h1_sim's default operator_stiffness [N m/rad]
FAST_RAMP_S = 0.05  # the arm node's smallest gain_ramp_s (see test_entering_damping_with_feedforward_keeps_the_pose)
DEFAULT_RAMP_S = 0.5


def _arm_command(kp: float | np.ndarray, kd: float | np.ndarray, q: np.ndarray, tau: np.ndarray) -> MotorCommands:
    c = MotorCommands.zeros()
    c.mode[ARM] = 1
    c.kp[ARM], c.kd[ARM], c.q[ARM], c.tau[ARM] = kp, kd, q, tau
    return c


# --- the dynamics alone ----------------------------------------------------------------------------------------
def test_pd_sags_by_gravity_over_kp():
    dyn = H1Dynamics(arm_q=RAISED, gravity=GRAVITY)
    dyn.apply_command(_arm_command(ARM_KP, ARM_KD, RAISED, np.zeros(14)))
    dyn.step(3.0)
    # static: kp (q_cmd - q) = gravity(q), the torque that holds the arm
    np.testing.assert_allclose(RAISED - dyn.arm_q, GRAVITY(dyn.arm_q) / ARM_KP, atol=1e-4)
    assert np.all(dyn.arm_q[SHOULDER_PITCH] - RAISED[SHOULDER_PITCH] > 0.08)  # down, toward hanging (q = 0)
    assert np.abs(dyn.arm_dq).max() < 1e-3


def test_passive_arm_sinks_and_the_models_torque_holds_it():
    damped = H1Dynamics(arm_q=RAISED, gravity=GRAVITY)
    damped.apply_command(_arm_command(0.0, DAMPING_KD, RAISED, np.zeros(14)))
    damped.step(1.0)
    assert np.all(damped.arm_q[SHOULDER_PITCH] - RAISED[SHOULDER_PITCH] > 0.5)  # sank toward hanging (q = 0)
    held = H1Dynamics(arm_q=RAISED, gravity=GRAVITY)
    for _ in range(250):  # a driver at 250 Hz feeding forward the model at the measured pose
        held.apply_command(_arm_command(0.0, DAMPING_KD, held.arm_q, GRAVITY(held.arm_q)))
        held.step(0.004)
    np.testing.assert_allclose(held.arm_q, RAISED, atol=1e-3)
    off = H1Dynamics(arm_q=RAISED)  # the default: no gravity, the arm stays where it is left
    off.apply_command(_arm_command(0.0, DAMPING_KD, RAISED, np.zeros(14)))
    off.step(1.0)
    np.testing.assert_array_equal(off.arm_q, RAISED)


# --- h1_sim gravity:=true with the real h1_arm_node, over DDS on lo ------------------------------------------------
class GravityRig:
    def __init__(self, domain: int) -> None:
        self.procs = ProcessGroup(env=loopback_ros_env(domain))
        common = ["-p", f"dds_domain:={domain}", "-p", "dds_interface:=lo"]
        self.procs.start_executable("h1_sim", "h1_sim", ["--ros-args", *common, "-p", "state_rate_hz:=250.0",
                                                         "-p", "gravity:=true"])
        self.procs.start_executable("h1_arm_node", "h1_arm_node", ["--ros-args", *common])
        self.probe = RosProbe(f"arm_gravity_probe_{domain}")
        self.joints = self.probe.capture(JointState, "joint_states", SENSOR_QOS, keep=3000)
        self.mode = self.probe.capture(String, "arm/mode", LATCHED_QOS)
        self.cmd_pub = self.probe.publisher(ArmCommand, "arm_command", COMMAND_QOS)
        self.hand_pub = self.probe.publisher(JointState, "sim/operator_hand", COMMAND_QOS)
        self.probe.wait_for_service("/arm/set_mode", timeout=30)
        self.probe.wait_for_service("/h1_sim/set_parameters", timeout=30)
        self.joints.wait(5, timeout=20)

    def set_mode(self, mode: int) -> SetArmMode.Response:
        return self.probe.call(SetArmMode, "/arm/set_mode", SetArmMode.Request(mode=mode))

    def param(self, node: str, name: str, value) -> None:
        result = self.probe.set_parameter(node, name, value)
        assert result.successful, f"{node} {name}={value!r}: {result.reason}"

    def q(self) -> np.ndarray:
        return np.array(self.joints.last().position)

    def q_at(self, t: float, timeout: float = 3.0) -> np.ndarray:
        """The first joint_states received at or after monotonic ``t`` (waits for it)."""
        deadline = max(t, time.monotonic()) + timeout
        while time.monotonic() < deadline:
            with self.joints._lock:
                pairs = list(zip(self.joints.times, self.joints.messages))
            for rx, msg in pairs:
                if rx >= t:
                    return np.array(msg.position)
            time.sleep(0.01)
        raise TimeoutError(f"no joint_states after t={t:.3f}")

    def hand(self, q: np.ndarray | None) -> None:
        msg = JointState() if q is None else JointState(name=list(ARM_JOINT_NAMES), position=[float(v) for v in q])
        self.hand_pub.publish(msg)

    def wait_still(self, timeout: float = 4.0, tol: float = 0.002, span: float = 0.25) -> np.ndarray:
        """Wait until no arm joint moved more than ``tol`` over ``span`` seconds; return the pose."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a = self.q()
            time.sleep(span)
            b = self.q()
            if np.abs(b - a).max() < tol:
                return b
        raise TimeoutError(f"the arms did not settle within {timeout} s (last step {np.abs(b - a).max():.4f} rad)")

    def raise_and_hold(self, pose: np.ndarray = RAISED) -> np.ndarray:
        """HOLD (reset any E-STOP), TRACK to ``pose``, then HOLD there; return the settled (sagged) pose."""
        self.hand(None)
        deadline = time.monotonic() + 5
        while not (self.set_mode(MODE.MODE_HOLD).success and self.mode.last().data == "HOLD"):
            assert time.monotonic() < deadline, "could not bring the arm to HOLD"
            self.set_mode(MODE.MODE_RESET_ESTOP)
            time.sleep(0.1)
        msg = ArmCommand(position_rad=[float(v) for v in pose], source="test")
        self.cmd_pub.publish(msg)
        deadline = time.monotonic() + 5
        while not self.set_mode(MODE.MODE_TRACK).success:  # needs a fresh arm_command
            assert time.monotonic() < deadline, "TRACK refused"
            self.cmd_pub.publish(msg)
            time.sleep(0.02)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:  # from hanging: ~1 rad at the 2 rad/s velocity clamp
            self.cmd_pub.publish(msg)
            time.sleep(0.02)
        assert self.set_mode(MODE.MODE_HOLD).success  # holds the last setpoint: ``pose``
        return self.wait_still()

    def damping_motion(self, seconds: float = 1.0, start_after: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Switch to DAMPING; return the arm pose ``start_after`` s later and ``seconds`` after that."""
        t0 = time.monotonic()
        assert self.set_mode(MODE.MODE_DAMPING).success
        start = self.q_at(t0 + start_after) if start_after > 0 else self.q_at(t0)
        return start, self.q_at(t0 + start_after + seconds)

    def close(self) -> None:
        self.probe.close()
        self.procs.stop()


@pytest.fixture(scope="module")
def rig(domain_id):
    hg = pytest.importorskip("h1_training.drivers.unitree_hg")
    if hg.SDK_ERROR is not None:  # pragma: no cover
        pytest.skip(f"unitree_sdk2py unavailable: {hg.SDK_ERROR}")
    r = GravityRig(domain_id)
    yield r
    r.close()


@pytest.fixture
def sim(rig, request):
    yield rig
    rig.hand(None)
    for node, name, value in (("h1_arm_node", "gravity_feedforward", False), ("h1_arm_node", "gain_ramp_s",
                              DEFAULT_RAMP_S), ("h1_sim", "hand_mass_kg", INSPIRE_RH56DFX_MASS_KG)):
        rig.param(node, name, value)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for child in rig.procs.children:
            sys.stderr.write(f"\n----- output of {child.name} -----\n{child.output()[-4000:]}\n")
    elif report := rig.procs.unexpected_exit_report():
        pytest.fail(report, pytrace=False)


FIGURES: dict[str, float] = {}  # shoulder pitch sink [rad] over 1 s of DAMPING, shared by (b) -> (c)


def _sink(start: np.ndarray, end: np.ndarray) -> float:
    """How far the raised shoulders moved down (toward hanging) [rad], the worse arm."""
    return float(np.max(end[SHOULDER_PITCH] - start[SHOULDER_PITCH]))


def test_hold_sags_by_gravity_over_kp(sim):
    q = sim.raise_and_hold()
    # static PD against gravity: kp (q_hold - q) = gravity(q); ~0.09 rad down on each shoulder pitch
    np.testing.assert_allclose(RAISED - q, GRAVITY(q) / ARM_KP, rtol=0.2, atol=0.01)
    assert np.all(q[SHOULDER_PITCH] - RAISED[SHOULDER_PITCH] > 0.07)


def test_damping_without_feedforward_lets_a_raised_arm_sink(sim):
    sim.raise_and_hold()
    start, end = sim.damping_motion(1.0)
    sink = FIGURES["no_ff"] = _sink(start, end)
    print(f"\nDAMPING without gravity feed-forward: shoulder pitch sank {sink:.3f} rad in 1 s")
    assert sink > 0.3  # ~0.8: down to hanging
    assert np.all(end[SHOULDER_PITCH] > -0.3)


def test_damping_with_feedforward_holds_the_pose_and_does_not_lift_it(sim):
    # the smallest gain ramp: the controller fades the feed-forward in over it, the arm sinks meanwhile (~0.09 rad
    # here, see the xfail test below); the window starts once that is over
    sim.param("h1_arm_node", "gain_ramp_s", FAST_RAMP_S)
    sim.param("h1_arm_node", "gravity_feedforward", True)
    sim.raise_and_hold()
    start, end = sim.damping_motion(1.0, start_after=FAST_RAMP_S + 0.45)
    assert np.all(start[SHOULDER_PITCH] < -0.45), "the arms must still be raised when the window starts"
    sink = FIGURES["ff"] = _sink(start, end)
    print(f"\nDAMPING with gravity feed-forward: shoulder pitch moved {sink:+.4f} rad in 1 s (+ = down)")
    assert sink < max(FIGURES.get("no_ff", 0.3), 0.3) / 5  # (c): far less than without
    rise = -float(np.min(end[SHOULDER_PITCH] - start[SHOULDER_PITCH]))
    # (d): nor lifts it, as a feed-forward larger than the load does (next test); a flipped sign would sink the
    # arm twice as fast as without, which (c) catches
    assert rise < 0.02
    assert np.abs(end - start).max() < 0.06  # and no other joint wanders off


def test_a_feedforward_heavier_than_the_arm_lifts_it(sim):
    """What (d) guards against: the arm node's model (0.54 kg hands) on an arm without hands pushes it up."""
    sim.param("h1_sim", "hand_mass_kg", 0.0)
    sim.param("h1_arm_node", "gain_ramp_s", FAST_RAMP_S)
    sim.param("h1_arm_node", "gravity_feedforward", True)
    sim.raise_and_hold()
    start, end = sim.damping_motion(1.0, start_after=FAST_RAMP_S + 0.45)
    rise = -float(np.min(end[SHOULDER_PITCH] - start[SHOULDER_PITCH]))
    print(f"\nfeed-forward for 0.54 kg hands on an arm without: shoulder pitch rose {rise:.3f} rad in 1 s")
    assert rise > 0.05


def test_the_operator_hand_moves_the_arms_in_damping_under_gravity(sim):
    target = RAISED.copy()
    target[SHOULDER_PITCH] = -0.4
    for ff in (False, True):
        sim.param("h1_arm_node", "gravity_feedforward", ff)
        sim.param("h1_arm_node", "gain_ramp_s", FAST_RAMP_S)
        sim.raise_and_hold()
        assert sim.set_mode(MODE.MODE_DAMPING).success
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            sim.hand(target)
            time.sleep(0.02)
        q = sim.q()
        sim.hand(None)
        # the hand is a spring: without feed-forward it also carries the arm, which then sags by
        # stiffness (target - q) = gravity(q) (~0.18 rad here); with feed-forward it reaches the target
        expected = GRAVITY(q) / OPERATOR_STIFFNESS if not ff else np.zeros(14)
        short = target[SHOULDER_PITCH] - q[SHOULDER_PITCH]
        print(f"\noperator hand, feed-forward {ff}: shoulder pitch {q[SHOULDER_PITCH]} for target -0.4")
        assert np.all(np.abs(short - expected[SHOULDER_PITCH]) < 0.05), (ff, short, expected[SHOULDER_PITCH])


def test_entering_damping_with_feedforward_keeps_the_pose(sim):
    sim.param("h1_arm_node", "gravity_feedforward", True)  # default gain_ramp_s (0.5 s)
    sim.raise_and_hold()
    start, end = sim.damping_motion(1.0)
    sink = _sink(start, end)
    print(f"\nentering DAMPING with feed-forward (gain ramp {DEFAULT_RAMP_S} s): shoulder pitch sank {sink:.3f} rad")
    assert sink < 0.05
