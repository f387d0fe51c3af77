"""Static gravity torques of the H1-2 arms (pure numpy, no rclpy): the feed-forward of DAMPING / E-STOP.

``ArmGravityModel.torques(q)`` takes the 14 measured arm joint angles (``robot_model.ARM_JOINT_NAMES`` order: left
arm 7, then right arm 7) and returns the 14 joint torques [N m] that hold the arms still against gravity. That
torque is tau = dU/dq, with U = sum of m g h over the links: for joint j,
tau_j = -a_j . sum over links k distal to j of (r_k - p_j) x (m_k g_vec).
Here a_j and p_j are the joint axis and the joint position, r_k is the link COM, and g_vec = (0, 0, -g) when the
torso is upright. An instance is the ``gravity`` callable of ``ArmController``: ``model(q)`` is ``model.torques(q)``.

Frames: the arms hang from ``torso_link``, which is taken as fixed. The waist joint between the pelvis and the
torso turns about the vertical, so it changes no arm torque and is not an argument. ``torso_pitch`` /
``torso_roll`` tilt the torso against gravity (URDF rpy convention, with pitch > 0 leaning forward). They are for
a robot that does not stand upright, e.g. from the IMU.

URDF zero pose: the upper arm hangs straight down and the forearm points forward (the elbow is bent 90 degrees).
The arm hangs straight when elbow = +pi/2. Shoulder pitch < 0 raises the arm forward. The shoulder pitch axis is
the torso's y axis tilted 15 degrees about x, by the ``rpy`` of the shoulder pitch joint.

Hand and payload: the URDF's Inspire hand weighs 0.19 kg, but the vendor gives 540 g. The model puts
``hand_mass_kg`` at the COM of the URDF hand (fingers open). A payload held in a hand (``payload_kg``, per hand)
acts at that same point. Both are lumped into the last wrist link, so a call costs the same whatever they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from h1_training.drivers import h1_2_arm_inertia as h12
from h1_training.robot_model import NUM_ARM_JOINTS

STANDARD_GRAVITY = 9.80665  # [m/s^2]
JOINTS_PER_ARM = NUM_ARM_JOINTS // 2
# Reflecting the left arm through the torso's x-z plane gives the right arm: pitch joints (axis y) keep their
# sign, roll and yaw joints (axes x, z) flip it. This applies to angles and to torques alike.
MIRROR_SIGNS = np.array([1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0])


def rpy_matrix(rpy: Sequence[float]) -> np.ndarray:
    """Rotation of a URDF ``rpy`` (fixed axes: roll about x, then pitch about y, then yaw about z)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def _gravity(g: float, torso_pitch: float, torso_roll: float) -> tuple[float, float, float]:
    cp, sp, cr, sr = math.cos(torso_pitch), math.sin(torso_pitch), math.cos(torso_roll), math.sin(torso_roll)
    return g * sp, -g * cp * sr, -g * cp * cr


def _skew(v: np.ndarray) -> np.ndarray:
    """Matrices S with S @ w = v x w, for v of shape (..., 3)."""
    s = np.zeros(v.shape[:-1] + (3, 3))
    s[..., 0, 1], s[..., 0, 2], s[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    s[..., 1, 0], s[..., 2, 0], s[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return s


def _f64(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    a = np.array(value, dtype=np.float64)
    if a.shape != shape or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} needs finite values of shape {shape}, got {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class ArmChain:
    """One arm from ``torso_link`` to its last wrist link: 7 revolute joints, in URDF terms.

    ``hand_com`` is the point in the last link frame where the hand's mass acts. A held payload acts there too.
    """

    origin_xyz: np.ndarray  # (7, 3) joint origin in the parent link frame [m]
    origin_rpy: np.ndarray  # (7, 3) [rad]
    axis: np.ndarray  # (7, 3) unit joint axis in the child link frame
    link_mass: np.ndarray  # (7,) child link mass [kg]
    link_com: np.ndarray  # (7, 3) child link COM in its frame [m]
    hand_com: np.ndarray  # (3,) hand COM in the last link frame [m]

    def __post_init__(self) -> None:
        n = JOINTS_PER_ARM
        for name, shape in (("origin_xyz", (n, 3)), ("origin_rpy", (n, 3)), ("axis", (n, 3)),
                            ("link_mass", (n,)), ("link_com", (n, 3)), ("hand_com", (3,))):
            object.__setattr__(self, name, _f64(name, getattr(self, name), shape))
        if not np.allclose(np.linalg.norm(self.axis, axis=1), 1.0):
            raise ValueError("joint axes must be unit vectors")
        if np.any(self.link_mass <= 0):
            raise ValueError("link masses must be positive")

    @classmethod
    def from_urdf_rows(cls, rows: Sequence[h12.JointRow], hand_com: Sequence[float]) -> ArmChain:
        xyz, rpy, axis, mass, com = zip(*rows)
        return cls(np.array(xyz), np.array(rpy), np.array(axis), np.array(mass), np.array(com), np.array(hand_com))


@dataclass(frozen=True, eq=False)
class ArmGravityModel:
    """Gravity torques of both arms. ``scale`` (0..1) gives a partial compensation."""

    left: ArmChain
    right: ArmChain
    hand_mass_kg: float = h12.INSPIRE_RH56DFX_MASS_KG
    payload_kg: tuple[float, float] = (0.0, 0.0)  # (left hand, right hand)
    scale: float = 1.0
    g: float = STANDARD_GRAVITY
    # Derived from the fields in __post_init__, left arm first (leading axis 2), one row per joint (next axis 7).
    _frame_c: np.ndarray = field(init=False, repr=False)  # (2, 7, 4, 4): see __post_init__
    _frame_s: np.ndarray = field(init=False, repr=False)
    _frame_k: np.ndarray = field(init=False, repr=False)
    _points: np.ndarray = field(init=False, repr=False)  # (2, 7, 4, 2): [COM; 1] and [axis; 0] in each child frame
    _mass: np.ndarray = field(init=False, repr=False)  # (2, 7) child link masses, hand and payload in the last
    _mass_distal: np.ndarray = field(init=False, repr=False)  # (2, 7) mass beyond each joint
    _mass_upper: np.ndarray = field(init=False, repr=False)  # (2, 7, 7) [j, k] = m_k for k >= j, else 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hand_mass_kg <= 5.0:
            raise ValueError(f"hand_mass_kg must be within [0, 5] kg, got {self.hand_mass_kg}")
        payload = tuple(float(p) for p in self.payload_kg)
        if len(payload) != 2 or not all(0.0 <= p <= 10.0 for p in payload):
            raise ValueError(f"payload_kg needs (left, right) within [0, 10] kg, got {self.payload_kg}")
        object.__setattr__(self, "payload_kg", payload)
        if not 0.0 <= self.scale <= 1.0:
            raise ValueError(f"scale must be within [0, 1], got {self.scale}")
        if not 0.0 < self.g < 20.0:
            raise ValueError(f"g must be within (0, 20) m/s^2, got {self.g}")
        arms = (self.left, self.right)
        fixed = np.array([[rpy_matrix(r) for r in arm.origin_rpy] for arm in arms])
        axis = np.array([arm.axis for arm in arms])
        # Child frame in its parent, as a 4x4 transform: the origin (F, xyz), then the joint turn. Rodrigues, with K
        # the axis' cross-product matrix: F Rot(axis, q) = F (I + sin q K + (1 - cos q) K^2)
        # = (F + F K^2) + sin q F K - cos q F K^2.
        k1 = _skew(axis)
        frame_c = np.zeros((2, JOINTS_PER_ARM, 4, 4))
        frame_s, frame_k = np.zeros_like(frame_c), np.zeros_like(frame_c)
        frame_s[..., :3, :3] = fixed @ k1
        frame_k[..., :3, :3] = fixed @ k1 @ k1
        frame_c[..., :3, :3] = fixed + frame_k[..., :3, :3]
        frame_c[..., :3, 3] = [arm.origin_xyz for arm in arms]
        frame_c[..., 3, 3] = 1.0
        mass = np.array([arm.link_mass for arm in arms])
        com = np.array([arm.link_com for arm in arms])
        for i, arm in enumerate(arms):  # lump hand + payload into the last link: same cost per call
            extra = self.hand_mass_kg + payload[i]
            m_last = mass[i, -1] + extra
            com[i, -1] = (mass[i, -1] * com[i, -1] + extra * arm.hand_com) / m_last
            mass[i, -1] = m_last
        points = np.zeros((2, JOINTS_PER_ARM, 4, 2))
        points[..., :3, 0], points[..., 3, 0], points[..., :3, 1] = com, 1.0, axis
        upper = np.triu(np.ones((JOINTS_PER_ARM, JOINTS_PER_ARM)))
        for name, value in (("_frame_c", frame_c), ("_frame_s", frame_s), ("_frame_k", frame_k),
                            ("_points", points), ("_mass", mass), ("_mass_distal", mass @ upper.T),
                            ("_mass_upper", upper * mass[:, None, :])):
            object.__setattr__(self, name, value)

    @property
    def arm_mass_kg(self) -> tuple[float, float]:
        """Mass each shoulder carries (links, hand and payload) [kg], (left, right)."""
        return float(self._mass_distal[0, 0]), float(self._mass_distal[1, 0])

    def gravity_vector(self, torso_pitch: float = 0.0, torso_roll: float = 0.0) -> np.ndarray:
        """Gravitational acceleration in the torso frame [m/s^2]: R^T (0, 0, -g), with R = Ry(pitch) Rx(roll)."""
        return np.array(_gravity(self.g, torso_pitch, torso_roll))

    def kinematics(self, q14: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward kinematics in the torso frame, each of shape (2, 7, 3) (left arm first): the joint positions,
        the joint axes, and the COM of each joint's child link (the last one with the hand and payload)."""
        q = np.asarray(q14, dtype=np.float64)
        if q.shape != (NUM_ARM_JOINTS,) or not np.isfinite(q).all():
            raise ValueError(f"q needs {NUM_ARM_JOINTS} finite joint angles [rad], got shape {q.shape}")
        q = q.reshape(2, JOINTS_PER_ARM, 1, 1)
        frames = self._frame_c + np.sin(q) * self._frame_s - np.cos(q) * self._frame_k  # each child in its parent
        for d in (1, 2, 4):  # prefix products T0 T1 .. Tj in log2(7) batched steps (Hillis-Steele scan)
            frames[:, d:] = frames[:, :-d] @ frames[:, d:]
        points = frames @ self._points  # a joint's axis and position are those of its child frame
        return frames[..., :3, 3], points[..., :3, 1], points[..., :3, 0]

    def torques(self, q14: np.ndarray, torso_pitch: float = 0.0, torso_roll: float = 0.0) -> np.ndarray:
        """Joint torques [N m] (ARM_JOINT_NAMES order) that hold the arms still at ``q14`` [rad]."""
        pos, axes, coms = self.kinematics(q14)
        # moment_j = sum over links k >= j of m_k (r_k - p_j)
        moment = self._mass_upper @ coms - self._mass_distal[..., None] * pos
        # tau_j = -a_j . (moment_j x g_vec) = a_j . (g_vec x moment_j); scale folded into g
        gx, gy, gz = _gravity(self.scale * self.g, torso_pitch, torso_roll)
        g_cross_t = np.array([[0.0, gz, -gy], [-gz, 0.0, gx], [gy, -gx, 0.0]])  # (skew of g_vec)^T
        return np.einsum("aji,aji->aj", axes, moment @ g_cross_t).reshape(NUM_ARM_JOINTS)

    def __call__(self, q14: np.ndarray) -> np.ndarray:
        return self.torques(q14)

    def potential_energy(self, q14: np.ndarray, torso_pitch: float = 0.0, torso_roll: float = 0.0) -> float:
        """sum m g h [J], h the height of each COM (unscaled). ``torques`` with scale 1 is its gradient."""
        _, _, coms = self.kinematics(q14)
        return float(-np.sum(self._mass[..., None] * coms * self.gravity_vector(torso_pitch, torso_roll)))


def inspire_hand_com(hand_mount: tuple[Sequence[float], Sequence[float]] = h12.LEFT_HAND_MOUNT) -> np.ndarray:
    """COM of the URDF's left Inspire hand (fingers open) in the wrist_yaw_link frame [m]."""
    rots: list[np.ndarray] = []
    origins: list[np.ndarray] = []
    weighted = np.zeros(3)
    for parent, xyz, rpy, mass, com in h12.LEFT_HAND_LINKS:
        r_par = rots[parent] if parent >= 0 else np.eye(3)
        o_par = origins[parent] if parent >= 0 else np.zeros(3)
        rots.append(r_par @ rpy_matrix(rpy))
        origins.append(o_par + r_par @ np.array(xyz))
        weighted += mass * (origins[-1] + rots[-1] @ np.array(com))
    com_hand = weighted / h12.URDF_HAND_MASS_KG
    xyz, rpy = hand_mount
    return np.array(xyz) + rpy_matrix(rpy) @ com_hand


def h1_2_arm_gravity(hand_mass_kg: float = h12.INSPIRE_RH56DFX_MASS_KG, payload_kg: tuple[float, float] = (0.0, 0.0),
                     scale: float = 1.0) -> ArmGravityModel:
    """The H1-2 arms from the URDF, with an Inspire hand of ``hand_mass_kg`` on each (0 for no hands;
    ``h1_2_arm_inertia.URDF_HAND_MASS_KG`` for the URDF's own hand mass)."""
    left_hand = inspire_hand_com()
    right_hand = left_hand * np.array([1.0, -1.0, 1.0])  # the URDF's right hand mirrors the left to 0.1 mm
    return ArmGravityModel(
        ArmChain.from_urdf_rows(h12.LEFT_ARM, left_hand), ArmChain.from_urdf_rows(h12.RIGHT_ARM, right_hand),
        hand_mass_kg=hand_mass_kg, payload_kg=payload_kg, scale=scale)
