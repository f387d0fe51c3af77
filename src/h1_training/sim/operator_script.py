"""The scripted operator of the simulated session (no rclpy): what the "policy" commands and where the
operator's hand pulls the arms, as functions of time within an episode.

An episode is: ``policy`` for ``policy_s`` seconds (the arms reach toward a slightly wrong pose, as a weak
policy does), then ``human`` for ``human_s`` seconds (damping: the operator guides the arms to the right
pose and back toward home). Trajectories are minimum-jerk so nothing asks the arm for a jump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD


def min_jerk(start: np.ndarray, goal: np.ndarray, s: float) -> np.ndarray:
    """Minimum-jerk interpolation, s in [0, 1] (clipped)."""
    s = min(max(s, 0.0), 1.0)
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return start + (goal - start) * blend


# A two-handed reach in front of the torso (in-limit for both arms: see robot_model limits).
REACH_RAD = np.array([-0.9, 0.25, 0.0, 1.1, 0.0, 0.1, 0.0, -0.9, -0.25, 0.0, 1.1, 0.0, 0.1, 0.0])
# The pose a weak policy reaches instead: short of the object and off to the side.
POLICY_MISS_RAD = REACH_RAD + np.array([0.35, 0.15, 0.1, -0.3, 0.0, 0.0, 0.0, 0.35, -0.15, -0.1, -0.3, 0.0, 0.0, 0.0])


@dataclass
class OperatorScript:
    policy_s: float = 6.0
    human_s: float = 6.0
    start_pose: np.ndarray = field(default_factory=lambda: ARM_HOME_RAD.copy())

    def __post_init__(self) -> None:
        if self.policy_s <= 0 or self.human_s <= 0:
            raise ValueError("policy_s and human_s must be positive")
        for pose in (REACH_RAD, POLICY_MISS_RAD):
            assert np.all(pose >= ARM_LOWER_RAD) and np.all(pose <= ARM_UPPER_RAD)

    @property
    def duration_s(self) -> float:
        return self.policy_s + self.human_s

    def phase(self, t: float) -> str:
        return "policy" if t < self.policy_s else "human"

    def policy_target(self, t: float) -> np.ndarray:
        """Arm target the scripted policy commands at time t (reach, then hold where it ended)."""
        return min_jerk(self.start_pose, POLICY_MISS_RAD, t / (0.8 * self.policy_s))

    def operator_target(self, t: float, arm_at_handover: np.ndarray) -> np.ndarray:
        """Where the operator pulls the arms during damping: to the right pose, then back home."""
        th = t - self.policy_s
        half = self.human_s / 2
        if th < half:
            return min_jerk(arm_at_handover, REACH_RAD, th / (0.8 * half))
        return min_jerk(REACH_RAD, ARM_HOME_RAD, (th - half) / (0.8 * half))
