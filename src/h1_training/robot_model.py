"""Facts about the H1-2 arms and Inspire RH56 hands that several modules share (no rclpy).

Sources (facts only, cited):
- Arm motor indices and joint order: unitree_sdk2_python ``example/h1_2/low_level/`` and xr_teleoperate
  ``teleop/robot_control/robot_arm.py`` (H1_2_JointArmIndex: left 13-19, right 20-26).
- Joint limits: H1-2 URDF (``h1_2.urdf`` in unitree_ros / xr_teleoperate assets); the right arm mirrors
  shoulder roll/yaw and elbow roll.
- Gains: xr_teleoperate (shoulders + elbow pitch kp 140 / kd 3, elbow roll + wrists kp 50 / kd 2).
- Inspire DOF order: TechShare-inc/inspire_demos (pinky, ring, middle, index, thumb bend, thumb rotation).
"""

from __future__ import annotations

import numpy as np

NUM_MOTORS = 35  # LowCmd_/LowState_ motor slots in unitree_hg (27 used on H1-2)
NUM_ARM_JOINTS = 14
NUM_HAND_JOINTS = 12

_ARM_JOINTS = (
    "shoulder_pitch", "shoulder_roll", "shoulder_yaw", "elbow_pitch", "elbow_roll", "wrist_pitch", "wrist_yaw",
)
ARM_JOINT_NAMES: tuple[str, ...] = tuple(f"left_{j}_joint" for j in _ARM_JOINTS) + tuple(
    f"right_{j}_joint" for j in _ARM_JOINTS
)
# Motor slot of each arm joint, in ARM_JOINT_NAMES order.
ARM_MOTOR_INDICES: tuple[int, ...] = tuple(range(13, 20)) + tuple(range(20, 27))

# [rad], ARM_JOINT_NAMES order (H1-2 URDF).
_LEFT_LIMITS = [(-3.14, 1.57), (-0.38, 3.4), (-2.66, 3.01), (-0.95, 3.18), (-3.01, 2.75), (-0.47, 0.47),
                (-1.27, 1.27)]
_RIGHT_LIMITS = [(-3.14, 1.57), (-3.4, 0.38), (-3.01, 2.66), (-0.95, 3.18), (-2.75, 3.01), (-0.47, 0.47),
                 (-1.27, 1.27)]
ARM_LOWER_RAD = np.array([lo for lo, _ in _LEFT_LIMITS + _RIGHT_LIMITS], dtype=np.float64)
ARM_UPPER_RAD = np.array([hi for _, hi in _LEFT_LIMITS + _RIGHT_LIMITS], dtype=np.float64)

# Practical gains (xr_teleoperate): per joint in ARM_JOINT_NAMES order.
_KP_ONE_ARM = [140.0, 140.0, 140.0, 140.0, 50.0, 50.0, 50.0]
_KD_ONE_ARM = [3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0]
ARM_KP = np.array(_KP_ONE_ARM * 2, dtype=np.float64)
ARM_KD = np.array(_KD_ONE_ARM * 2, dtype=np.float64)

# A relaxed, in-limit pose: arms down and slightly forward, elbows bent.
ARM_HOME_RAD = np.array([0.0, 0.2, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, -0.2, 0.0, 0.5, 0.0, 0.0, 0.0])

HAND_DOF_NAMES = ("pinky", "ring", "middle", "index", "thumb_bend", "thumb_rotation")
HAND_JOINT_NAMES: tuple[str, ...] = tuple(f"left_hand_{d}" for d in HAND_DOF_NAMES) + tuple(
    f"right_hand_{d}" for d in HAND_DOF_NAMES
)
HAND_RAW_MAX = 1000  # Inspire register values 0..1000, 1000 = open

CAMERA_NAMES = ("ego_cam", "cam_left_wrist", "cam_right_wrist")
# what the operator reads for each camera (placeholder frames, camera health)
DISPLAY_NAMES = {
    "ego_cam": "head camera",
    "cam_left_wrist": "left wrist camera",
    "cam_right_wrist": "right wrist camera",
}


def display_name(camera: str) -> str:
    return DISPLAY_NAMES.get(camera, camera)
