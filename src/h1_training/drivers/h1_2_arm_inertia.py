"""Mass properties and kinematics of the H1-2 arms, as facts read from Unitree's URDF (no logic, no rclpy).

Source: unitreerobotics/unitree_ros, ``robots/h1_2_description/h1_2.urdf``, commit
d2a7facd3383c9b35bc61b8bcb28cf36f5ca379d. Values are copied as numbers; nothing else is taken from it.

Chain: pelvis -> ``torso_joint`` (the waist: revolute about z, origin 0) -> ``torso_link`` -> 7 arm joints per
side -> a fixed joint to the Inspire hand base. The arm chain starts at ``torso_link``. The URDF's joint names are
shoulder_pitch/roll/yaw, elbow, wrist_roll/pitch/yaw. ``robot_model.ARM_JOINT_NAMES`` calls the 4th and 5th
joints elbow_pitch and elbow_roll (the names used by Unitree's SDK examples). The order and the limits are the
same.

All ``<inertial>`` blocks of the arm links have rpy 0, so a COM is a point in its link frame. The inertia tensors
do not matter for static gravity, so they are not copied here.

Each joint row holds: the joint origin in its parent link frame (xyz [m], rpy [rad]), the joint axis in the child
frame, and the child link's mass [kg] and COM [m] in the child frame.
"""

from __future__ import annotations

import math

# (origin_xyz, origin_rpy, axis, child_mass, child_com), shoulder_pitch .. wrist_yaw
JointRow = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float,
                 tuple[float, float, float]]

LEFT_ARM: tuple[JointRow, ...] = (
    ((0.0, 0.14806, 0.42333), (0.2618, 0.0, 0.0), (0.0, 1.0, 0.0), 1.327, (0.003053, 0.06042, -0.0059)),
    ((0.0342, 0.061999, -0.0060011), (-0.2618, 0.0, 0.0), (1.0, 0.0, 0.0), 1.393, (-0.030932, -1e-06, -0.10609)),
    ((-0.0342, 0.0, -0.1456), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 1.505, (0.004583, 0.001128, -0.001128)),
    ((0.006, 0.0329, -0.182), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.691, (0.077092, -0.028751, -0.009714)),
    ((0.121, -0.0329, -0.011), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), 0.683, (0.035281, -0.002320, 0.000337)),
    ((0.087, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.484, (0.020395, 0.000036, -0.002973)),
    ((0.020, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 0.124, (0.027967, 0.000096, 0.000739)),
)

# The right arm as the URDF gives it. It mirrors the left (y -> -y) except the wrist_roll and wrist_pitch
# links, whose COM rows are identical to the left ones (y not negated): a 2.3 mm asymmetry on 0.68 kg.
RIGHT_ARM: tuple[JointRow, ...] = (
    ((0.0, -0.14806, 0.42333), (-0.2618, 0.0, 0.0), (0.0, 1.0, 0.0), 1.327, (0.003053, -0.06042, -0.0059)),
    ((0.0342, -0.061999, -0.0060011), (0.2618, 0.0, 0.0), (1.0, 0.0, 0.0), 1.393, (-0.030932, 1e-06, -0.10609)),
    ((-0.0342, 0.0, -0.1456), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 1.505, (0.004583, -0.001128, -0.001128)),
    ((0.006, -0.0329, -0.182), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.691, (0.077092, 0.028751, -0.009714)),
    ((0.121, 0.0329, -0.011), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), 0.683, (0.035281, -0.002320, 0.000337)),
    ((0.087, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.484, (0.020395, 0.000036, -0.002973)),
    ((0.020, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 0.124, (0.027967, -0.000096, 0.000739)),
)

# Fixed joints wrist_yaw_link -> hand base (``L_base_link_joint`` / ``R_base_link_joint``): xyz, rpy.
LEFT_HAND_MOUNT = ((0.054, 0.0, 0.0), (0.0, 0.0, math.pi / 2))
RIGHT_HAND_MOUNT = ((0.054, 0.0, 0.0), (math.pi, 0.0, -math.pi / 2))

# The URDF models the Inspire hand (``L_hand_base_link`` + 11 finger links). Left hand, fingers open (finger joint
# angles 0). Each row: (parent index, -1 = hand base; joint xyz; joint rpy; mass; COM in the link frame).
HandRow = tuple[int, tuple[float, float, float], tuple[float, float, float], float, tuple[float, float, float]]
LEFT_HAND_LINKS: tuple[HandRow, ...] = (
    (-1, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.14143, (-0.002551, -0.066047, -0.0019357)),  # 0 L_hand_base_link
    (0, (-0.01696, -0.0691, 0.02045), (1.5708, -1.5708, 0.0), 0.0018869, (0.0048817, 0.00038782, -0.00722)),
    (1, (0.0099867, 0.0098242, -0.0089), (-1.5708, 0.0, 0.16939), 0.0066101, (0.021936, -0.01279, -0.0080386)),
    (2, (0.04407, -0.034553, -0.0008), (0.0, 0.0, 0.0), 0.0037844, (0.0095531, 0.0016282, -0.0072002)),
    (3, (0.020248, -0.010156, -0.0012), (0.0, 0.0, 0.0), 0.003344, (0.0092888, -0.004953, -0.0060033)),
    (0, (0.00028533, -0.13653, 0.032268), (-0.034907, 0.0, 0.0), 0.0042405, (0.0012971, -0.011934, -0.0059998)),
    (5, (-0.0024229, -0.032041, -0.001), (0.0, 0.0, 0.0), 0.0045682, (0.0021753, -0.019567, -0.005)),
    (0, (0.00028533, -0.1371, 0.01295), (0.0, 0.0, 0.0), 0.0042405, (0.0012971, -0.011934, -0.0059999)),
    (7, (-0.0024229, -0.032041, -0.001), (0.0, 0.0, 0.0), 0.0050397, (0.001921, -0.020796, -0.0049999)),
    (0, (0.00028533, -0.13691, -0.0062872), (0.05236, 0.0, 0.0), 0.0042405, (0.0012971, -0.011934, -0.0059999)),
    (9, (-0.0024229, -0.032041, -0.001), (0.0, 0.0, 0.0), 0.0045682, (0.0021753, -0.019567, -0.005)),
    (0, (0.00028533, -0.13571, -0.025488), (0.10472, 0.0, 0.0), 0.0042405, (0.0012971, -0.011934, -0.0059999)),
    (11, (-0.0024229, -0.032041, -0.001), (0.0, 0.0, 0.0), 0.0036036, (0.0024788, -0.016208, -0.0050001)),
)
URDF_HAND_MASS_KG = sum(row[3] for row in LEFT_HAND_LINKS)  # 0.192 kg: well below the real hand's weight

# Inspire RH56DFX (no wrist module) weighs 540 g: vendor product page, en.inspire-robots.com/product/rh56dfx/
# ("Product Parameters" table; the RH56DFXW with the 2-DoF wrist weighs 650 g).
INSPIRE_RH56DFX_MASS_KG = 0.54

# URDF effort limits [N m] per arm joint, shoulder_pitch .. wrist_yaw (both arms).
EFFORT_LIMITS_NM = (40.0, 40.0, 18.0, 18.0, 19.0, 19.0, 19.0)
