"""The H1-2 arm gravity model against hand arithmetic on the URDF numbers, the potential energy, and mirror
symmetry (pure numpy, no ROS)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from h1_training.drivers import h1_2_arm_inertia as h12
from h1_training.drivers.arm_gravity import (
    MIRROR_SIGNS,
    ArmChain,
    ArmGravityModel,
    h1_2_arm_gravity,
    inspire_hand_com,
)
from h1_training.robot_model import ARM_LOWER_RAD, ARM_UPPER_RAD

G = 9.80665
ALPHA = 0.2618  # rpy roll of the shoulder pitch joint: its axis is the torso's y tilted by this about x
PITCH, ROLL, YAW, ELBOW, WRIST_ROLL, WRIST_PITCH, WRIST_YAW = range(7)


def pose(**joints: float) -> np.ndarray:
    """Both arms in the same pose, mirrored onto the right arm (keyword = joint name of the left arm)."""
    names = ("pitch", "roll", "yaw", "elbow", "wrist_roll", "wrist_pitch", "wrist_yaw")
    left = np.array([joints.get(n, 0.0) for n in names])
    return np.concatenate([left, MIRROR_SIGNS * left])


def random_q(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(ARM_LOWER_RAD, ARM_UPPER_RAD)


def masses() -> list[float]:
    return [row[3] for row in h12.LEFT_ARM]


def test_urdf_zero_pose_has_the_upper_arm_down_and_the_forearm_forward() -> None:
    pos, _, _ = h1_2_arm_gravity().kinematics(np.zeros(14))
    upper, forearm = pos[0, ELBOW] - pos[0, ROLL], pos[0, WRIST_YAW] - pos[0, ELBOW]
    assert upper[2] < -0.3 and np.hypot(upper[0], upper[1]) < 0.05  # 0.33 m down, within 7 degrees
    assert forearm[0] > 0.2 and abs(forearm[2]) < 0.02  # 0.23 m forward, level
    pos, _, _ = h1_2_arm_gravity().kinematics(pose(elbow=math.pi / 2))  # elbow +90 deg: the arm hangs straight
    forearm = pos[0, WRIST_YAW] - pos[0, ELBOW]
    assert forearm[2] < -0.2 and abs(forearm[0]) < 0.02


def test_hanging_arms_need_almost_no_shoulder_torque() -> None:
    model = h1_2_arm_gravity()
    hanging = model(pose(elbow=math.pi / 2))
    forward = model(pose(pitch=-math.pi / 2, elbow=math.pi / 2))
    for arm in (0, 7):  # the COMs sit a few mm off the vertical through the shoulder
        assert abs(hanging[arm + PITCH]) < 0.1 and abs(hanging[arm + ROLL]) < 0.1
        assert abs(forward[arm + PITCH]) > 15.0


def test_urdf_zero_pose_matches_hand_arithmetic() -> None:
    """At q = 0 the pitch and roll joint rpy cancel, so every link below the roll joint is only translated:
    the lever arms are sums of the URDF's x (forward) and y (sideways) offsets."""
    m = masses()
    arm = h12.LEFT_ARM
    o = [row[0] for row in arm]  # joint origins
    c = [row[4] for row in arm]  # link COMs
    # x of each COM from the shoulder pitch joint (a rotation about x leaves x alone)
    x = [c[0][0],
         o[1][0] + c[1][0],
         o[1][0] + o[2][0] + c[2][0],
         o[1][0] + o[2][0] + o[3][0] + c[3][0],
         o[1][0] + o[2][0] + o[3][0] + o[4][0] + c[4][0],
         o[1][0] + o[2][0] + o[3][0] + o[4][0] + o[5][0] + c[5][0],
         o[1][0] + o[2][0] + o[3][0] + o[4][0] + o[5][0] + o[6][0] + c[6][0]]
    # y of each COM from the shoulder roll joint (links from the roll link on)
    y = [0.0,
         c[1][1],
         o[2][1] + c[2][1],
         o[2][1] + o[3][1] + c[3][1],
         o[2][1] + o[3][1] + o[4][1] + c[4][1],
         o[2][1] + o[3][1] + o[4][1] + o[5][1] + c[5][1],
         o[2][1] + o[3][1] + o[4][1] + o[5][1] + o[6][1] + c[6][1]]
    tau = h1_2_arm_gravity(hand_mass_kg=0.0)(np.zeros(14))
    # holding torque about axis a through p: m g (a_x d_y - a_y d_x); the pitch axis is (0, cos a, sin a)
    assert tau[PITCH] == pytest.approx(-G * math.cos(ALPHA) * sum(mk * xk for mk, xk in zip(m, x)), abs=1e-9)
    assert tau[ROLL] == pytest.approx(G * sum(mk * yk for mk, yk in zip(m[1:], y[1:])), abs=1e-9)
    # the elbow axis is the torso's y: forearm + wrist masses times their forward lever from the elbow
    elbow_x = o[1][0] + o[2][0] + o[3][0]
    forearm = -G * sum(mk * (xk - elbow_x) for mk, xk in zip(m[3:], x[3:]))
    assert tau[ELBOW] == pytest.approx(forearm, abs=1e-9)
    assert forearm == pytest.approx(-2.96, abs=0.01)  # 1.98 kg at 0.15 m
    # the hand adds its mass at its COM, 0.14 m beyond the wrist yaw joint
    hand_x = elbow_x + o[4][0] + o[5][0] + o[6][0] + inspire_hand_com()[0]
    with_hand = h1_2_arm_gravity(hand_mass_kg=0.54)(np.zeros(14))
    assert with_hand[ELBOW] - tau[ELBOW] == pytest.approx(-G * 0.54 * (hand_x - elbow_x), abs=1e-9)
    assert with_hand[PITCH] - tau[PITCH] == pytest.approx(-G * math.cos(ALPHA) * 0.54 * hand_x, abs=1e-9)


def test_straight_arm_held_forward_matches_hand_arithmetic() -> None:
    """Shoulder pitch -90 deg, elbow +90 deg: the straight arm points forward. In the shoulder pitch link's frame
    (the torso turned by ALPHA about x) the pitch axis is y, so a COM at z (arm hanging) swings to x = -z, and
    the torso's x is that x too. Holding torque: -g cos(ALPHA) sum m x = g cos(ALPHA) sum m z."""
    m = masses()
    arm = h12.LEFT_ARM
    o = [np.array(row[0]) for row in arm]
    c = [np.array(row[4]) for row in arm]
    # Offsets of the hanging straight arm in the roll link frame, which is the torso's orientation at q = 0.
    # The elbow turns the forearm by +90 deg about y: (x, y, z) -> (z, y, -x).
    def bend(v: np.ndarray) -> np.ndarray:
        return np.array([v[2], v[1], -v[0]])

    elbow = o[2] + o[3]
    in_roll = [c[1], o[2] + c[2], elbow + bend(c[3])]
    for k in (4, 5, 6):  # wrist angles 0: the wrist frames are the elbow frame, translated
        in_roll.append(elbow + bend(sum(o[4:k + 1]) + c[k]))
    # into the pitch link frame: origin o[1], rotated by rpy (-ALPHA, 0, 0); z' = -sin(a) y + cos(a) z
    z_pitch = [c[0][2]] + [o[1][2] - math.sin(ALPHA) * v[1] + math.cos(ALPHA) * v[2] for v in in_roll]
    expected = G * math.cos(ALPHA) * sum(mk * zk for mk, zk in zip(m, z_pitch))
    tau = h1_2_arm_gravity(hand_mass_kg=0.0)(pose(pitch=-math.pi / 2, elbow=math.pi / 2))
    assert tau[PITCH] == pytest.approx(expected, abs=1e-9)
    assert tau[7 + PITCH] == pytest.approx(expected, abs=0.02)  # the right arm (URDF asymmetry: see below)
    lever = -expected / (G * math.cos(ALPHA) * sum(m))
    assert 0.2 < lever < 0.3  # 6.2 kg, COM 0.24 m from the shoulder: -14.2 N m


def mirrored(chain: ArmChain) -> ArmChain:
    """The chain reflected through the x-z plane. Angles map by MIRROR_SIGNS with the same axis vectors."""
    flip = np.array([1.0, -1.0, 1.0])
    return ArmChain(chain.origin_xyz * flip, chain.origin_rpy * np.array([-1.0, 1.0, -1.0]), chain.axis,
                    chain.link_mass, chain.link_com * flip, chain.hand_com * flip)


def test_mirrored_pose_gives_mirrored_torques() -> None:
    rng = np.random.default_rng(3)
    model = h1_2_arm_gravity(payload_kg=(0.4, 0.4))
    exact = dataclasses.replace(model, right=mirrored(model.left))
    for _ in range(20):
        left = random_q(rng)[:7]
        q = np.concatenate([left, MIRROR_SIGNS * left])
        tau = exact(q)
        np.testing.assert_allclose(tau[7:], MIRROR_SIGNS * tau[:7], atol=1e-12)
        # The URDF's own right arm: wrist roll/pitch COMs carry the left's y sign (2.32 mm on 0.683 kg), so
        # torques may differ by up to 0.683 kg * g * 4.64 mm = 0.031 N m.
        tau = model(q)
        np.testing.assert_allclose(tau[7:], MIRROR_SIGNS * tau[:7], atol=0.035)
    # ... and that is the only difference between the URDF's right arm and the mirrored left one
    right, mirror = model.right, mirrored(model.left)
    np.testing.assert_allclose(right.origin_xyz, mirror.origin_xyz)
    np.testing.assert_allclose(right.origin_rpy, mirror.origin_rpy)
    np.testing.assert_allclose(right.link_mass, mirror.link_mass)
    differs = np.abs(right.link_com - mirror.link_com) > 1e-12
    assert np.argwhere(differs).tolist() == [[WRIST_ROLL, 1], [WRIST_PITCH, 1]]


@pytest.mark.parametrize("tilt", [(0.0, 0.0), (0.2, -0.1)])
def test_torque_is_the_gradient_of_potential_energy(tilt: tuple[float, float]) -> None:
    """Holding torque = dU/dq with U = sum m g h (central differences), 20 random poses within the limits."""
    rng = np.random.default_rng(7)
    model = h1_2_arm_gravity(payload_kg=(1.0, 0.3))
    h = 1e-6
    for _ in range(20):
        q = random_q(rng)
        tau = model.torques(q, *tilt)
        grad = np.empty(14)
        for i in range(14):
            dq = np.zeros(14)
            dq[i] = h
            grad[i] = (model.potential_energy(q + dq, *tilt) - model.potential_energy(q - dq, *tilt)) / (2 * h)
        np.testing.assert_allclose(tau, grad, atol=1e-6)
        assert np.max(np.abs(tau)) > 0.5  # a real check, not 0 == 0


def test_torso_tilt_changes_the_torques_like_a_rotated_gravity() -> None:
    model = h1_2_arm_gravity()
    q = pose(elbow=math.pi / 2)  # hanging: no torque when upright
    tilted = model.torques(q, torso_pitch=0.3)
    # a torso leaning forward 0.3 rad lets the hanging arms swing forward: the shoulders hold them back
    # (pitch > 0 is backwards), with about sin(0.3) of the torque that holds the arm out forward
    forward = model(pose(pitch=-math.pi / 2, elbow=math.pi / 2))[PITCH]
    assert tilted[PITCH] == pytest.approx(-math.sin(0.3) * forward, rel=0.1)
    # a torso rolled 0.2 rad (left shoulder up) lets the hanging left arm swing in towards the body: the shoulder
    # roll holds it out, with about sin(0.2) of the torque that holds the arm out sideways
    sideways = model(pose(roll=math.pi / 2, elbow=math.pi / 2))[ROLL]
    assert model.torques(q, torso_roll=0.2)[ROLL] == pytest.approx(math.sin(0.2) * sideways, rel=0.1)
    np.testing.assert_allclose(model.gravity_vector(0.3, 0.0), G * np.array([math.sin(0.3), 0.0, -math.cos(0.3)]))
    np.testing.assert_allclose(model.gravity_vector(0.0, 0.2), G * np.array([0.0, -math.sin(0.2), -math.cos(0.2)]))


def test_scale_and_payload_are_linear() -> None:
    rng = np.random.default_rng(11)
    base = h1_2_arm_gravity()
    for _ in range(5):
        q = random_q(rng)
        full = base(q)
        np.testing.assert_allclose(dataclasses.replace(base, scale=0.3)(q), 0.3 * full, atol=1e-12)
        np.testing.assert_allclose(dataclasses.replace(base, scale=0.0)(q), np.zeros(14), atol=1e-12)
        one = dataclasses.replace(base, payload_kg=(0.5, 0.0))(q) - full
        two = dataclasses.replace(base, payload_kg=(1.0, 0.0))(q) - full
        np.testing.assert_allclose(two, 2.0 * one, atol=1e-9)
        np.testing.assert_allclose(one[7:], 0.0, atol=1e-12)  # a payload in the left hand: right arm unchanged
        assert np.max(np.abs(one[:7])) > 0.05
        # the hand mass acts at the same point as a payload: 0.54 kg hand = no hand + 0.54 kg payload
        np.testing.assert_allclose(h1_2_arm_gravity(hand_mass_kg=0.0, payload_kg=(0.54, 0.54))(q), full, atol=1e-9)
    assert base.arm_mass_kg == pytest.approx((sum(masses()) + 0.54,) * 2)
    assert dataclasses.replace(base, payload_kg=(1.0, 0.0)).arm_mass_kg[0] == pytest.approx(sum(masses()) + 1.54)


def test_torques_stay_within_the_motor_ratings() -> None:
    """Over random poses, with the 0.54 kg hands and 1 kg in each, no joint is asked beyond its URDF effort."""
    rng = np.random.default_rng(5)
    model = h1_2_arm_gravity(payload_kg=(1.0, 1.0))
    peak = np.max(np.abs([model(random_q(rng)) for _ in range(500)]), axis=0)
    limits = np.array(h12.EFFORT_LIMITS_NM * 2)
    assert np.all(peak < 0.75 * limits), peak
    assert peak[PITCH] > 10.0


def test_interface_of_the_controller_gravity_callable() -> None:
    model = h1_2_arm_gravity()
    tau = model(list(pose(elbow=1.0)))  # ArmController calls gravity(measured_q)
    assert tau.shape == (14,) and tau.dtype == np.float64
    with pytest.raises(ValueError):
        model(np.zeros(7))
    with pytest.raises(ValueError):
        model(np.full(14, np.nan))
    for bad in ({"scale": 1.5}, {"scale": -0.1}, {"payload_kg": (-1.0, 0.0)}, {"payload_kg": (1.0,)},
                {"hand_mass_kg": -0.5}):
        with pytest.raises(ValueError):
            dataclasses.replace(model, **bad)
    assert isinstance(model, ArmGravityModel)


def test_urdf_hand_is_lighter_than_the_real_one() -> None:
    assert h12.URDF_HAND_MASS_KG == pytest.approx(0.192, abs=0.001)
    com = inspire_hand_com()
    assert 0.12 < com[0] < 0.16 and abs(com[1]) < 0.01 and abs(com[2]) < 0.01  # along the forearm, past the wrist
