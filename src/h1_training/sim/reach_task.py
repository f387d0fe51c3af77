"""The simulated task of the learning demo (no rclpy, no torch): reach an object whose place on the table changes
every episode, and hold the hand on it.

- **Where the object is** is drawn per episode from a seeded range (:func:`sample_object`) in front of the left
  arm. It is visible only in the head camera's image (``scene_render``); the policy's state is the 14 arm joint
  positions, as on the robot, so nothing but the pixels tells it where to go.
- **Success** (:class:`SuccessCheck`): the left hand's centre within ``tolerance_m`` of the grasp point (the
  object's top) for ``hold_s`` without a break, within the episode's ``budget_s``. Recorded per episode: success,
  time to success (start of the hold that completed), final distance.
- **The operator** (:class:`ImperfectOperator`): a person watching the rollout. They stop the policy (``s``) when
  it is going wrong by a rule a person uses -- the hand moves away from the object, it stalls short of it, or time
  runs out -- after a reaction delay, then guide the arm to the object in damping with the imprecision of a hand:
  a per-episode aim error and a slow tremor. Their corrections are the data the next policy learns from.
- :func:`reach_pose`: the joint pose that puts the hand on a point (damped least squares on ``scene_render``'s
  arm kinematics), used only by the operator (a person knows where to put the arm; the policy does not).

Frame: x forward, y left, z up, origin between the shoulders (``scene_render``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD
from h1_training.sim.operator_script import min_jerk
from h1_training.sim.scene_render import OBJECT_RADIUS, TABLE_Z, arm_fk

# The task arm: the left one (robot_model order: left 0-6, right 7-13); the right arm stays home.
LEFT = slice(0, 7)
IK_JOINTS = np.array([0, 1, 2, 3])  # shoulder pitch, roll, yaw, elbow pitch: enough to place the hand
OBJECT_X_RANGE = (0.32, 0.52)  # [m] forward of the shoulders, on the table (scene_render.TABLE_X)
OBJECT_Y_RANGE = (0.02, 0.40)  # [m] left of centre: in front of the left arm
OBJECT_Z = TABLE_Z + OBJECT_RADIUS


def sample_object(rng: np.random.Generator) -> np.ndarray:
    """The object's centre for one episode, uniform over the task's range on the table."""
    return np.array([rng.uniform(*OBJECT_X_RANGE), rng.uniform(*OBJECT_Y_RANGE), OBJECT_Z])


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of episode ``index`` in a run seeded ``seed`` (same pair, same episode)."""
    return np.random.default_rng([int(seed), int(index)])


def grasp_point(object_xyz: np.ndarray) -> np.ndarray:
    """Where the hand's centre should be: just above the object's top."""
    return np.asarray(object_xyz, dtype=np.float64) + np.array([0.0, 0.0, OBJECT_RADIUS + 0.02])


def hand_position(arm_q: np.ndarray) -> np.ndarray:
    """The left hand's centre for 14 arm joint positions."""
    return arm_fk(np.asarray(arm_q)[LEFT], "left").tip


def reach_pose(point: np.ndarray, start: np.ndarray | None = None, iterations: int = 60) -> np.ndarray:
    """14 joint positions (right arm at home, left wrist straight) that put the left hand's centre on ``point``:
    damped least squares over the shoulder and elbow joints, inside the joint limits."""
    q = (ARM_HOME_RAD if start is None else np.asarray(start, dtype=np.float64)).copy()
    q[7:] = ARM_HOME_RAD[7:]
    q[4:7] = 0.0
    if start is None:
        q[IK_JOINTS] = (-0.8, 0.3, 0.0, 1.0)  # a forward reach: the solution branch a person uses
    point = np.asarray(point, dtype=np.float64)
    lam, eps = 0.05, 1e-4
    for _ in range(iterations):
        err = point - hand_position(q)
        if np.linalg.norm(err) < 1e-4:
            break
        jac = np.empty((3, len(IK_JOINTS)))
        for k, j in enumerate(IK_JOINTS):
            dq = q.copy()
            dq[j] += eps
            jac[:, k] = (hand_position(dq) - hand_position(q)) / eps
        step = jac.T @ np.linalg.solve(jac @ jac.T + lam**2 * np.eye(3), err)
        q[IK_JOINTS] = np.clip(q[IK_JOINTS] + step, ARM_LOWER_RAD[IK_JOINTS], ARM_UPPER_RAD[IK_JOINTS])
    return q


@dataclass(frozen=True)
class TaskConfig:
    tolerance_m: float = 0.05   # hand centre to grasp point
    hold_s: float = 0.5         # ... for this long without a break
    budget_s: float = 6.0       # time the policy has to succeed
    human_extra_s: float = 4.0  # an episode a person took over may run this much past the budget
    fps: float = 50.0

    def __post_init__(self) -> None:
        for name in ("tolerance_m", "hold_s", "budget_s", "fps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.human_extra_s < 0:
            raise ValueError("human_extra_s must be >= 0")
        if self.hold_s >= self.budget_s:
            raise ValueError("hold_s must be shorter than budget_s")


# Partial credit of a trial (as "Beyond Binary Success" argues: a near miss is evidence too): 1 for a success;
# otherwise the share of SCORE_SPAN_M the hand closed beyond the tolerance, at most FAILURE_SCORE_CAP, so a
# failure never ties a success. 0 at SCORE_SPAN_M past the tolerance or farther.
SCORE_SPAN_M = 0.25
FAILURE_SCORE_CAP = 0.9


def partial_credit(success: bool, final_distance_m: float, config: TaskConfig) -> float:
    """The trial's score in [0, 1] (see SCORE_SPAN_M)."""
    if success:
        return 1.0
    closed = 1.0 - max(0.0, float(final_distance_m) - config.tolerance_m) / SCORE_SPAN_M
    return FAILURE_SCORE_CAP * min(1.0, max(0.0, closed))


@dataclass
class SuccessCheck:
    """Feed the hand's distance to the grasp point every frame; ``succeeded`` once it stayed within tolerance for
    ``hold_s`` (``time_to_success_s``: when that hold began)."""

    config: TaskConfig
    inside_since: float | None = None
    succeeded: bool = False
    time_to_success_s: float | None = None
    distance_m: float = math.inf

    def update(self, t: float, distance_m: float) -> bool:
        self.distance_m = float(distance_m)
        if self.succeeded:
            return True
        if distance_m <= self.config.tolerance_m:
            if self.inside_since is None:
                self.inside_since = t
            if t - self.inside_since >= self.config.hold_s - 1e-9:
                self.succeeded, self.time_to_success_s = True, self.inside_since
        else:
            self.inside_since = None
        return self.succeeded


@dataclass(frozen=True)
class OperatorConfig:
    """How the simulated person behaves (times in seconds, distances in metres)."""

    reaction_s: float = 0.3        # from seeing the problem to the arm in damping
    reaction_jitter_s: float = 0.1  # uniform +- on the reaction
    away_m: float = 0.05           # hand this much farther from the object than its closest so far: going wrong
    stall_s: float = 1.0           # less than stall_progress_m of progress in this long, short of the object...
    stall_progress_m: float = 0.01
    grace_s: float = 0.6           # no judgement in the first moments of a rollout
    time_margin_s: float = 2.0     # takes over when this little of the budget is left and the hand is not there
    guide_s: float = 1.2           # hand-guided move to the object
    aim_error_m: float = 0.012     # per-episode standard deviation of where the person aims (x, y, z)
    tremor_rad: float = 0.015      # amplitude of the slow wobble of the guiding hand, per joint

    def __post_init__(self) -> None:
        if self.reaction_s < 0 or self.reaction_jitter_s < 0 or self.reaction_jitter_s > self.reaction_s:
            raise ValueError("reaction_s >= reaction_jitter_s >= 0")
        for name in ("away_m", "stall_s", "guide_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass
class ImperfectOperator:
    """The person of one episode. Call :meth:`watch` every frame while the policy drives (returns why it takes
    over, once the reaction delay has passed, else ""), then :meth:`guide` every frame in damping (where the hand
    pulls the arm)."""

    config: OperatorConfig
    task: TaskConfig
    object_xyz: np.ndarray
    rng: np.random.Generator
    best_m: float = math.inf
    history: list[tuple[float, float]] = field(default_factory=list)
    decided_at: float | None = None
    reason: str = ""
    _react_s: float = 0.0
    _aim: np.ndarray | None = None
    _goal: np.ndarray | None = None
    _phase: np.ndarray | None = None
    _handover: np.ndarray | None = None
    _t0: float = 0.0

    def __post_init__(self) -> None:
        c = self.config
        self._react_s = c.reaction_s + self.rng.uniform(-c.reaction_jitter_s, c.reaction_jitter_s)
        self._aim = grasp_point(self.object_xyz) + self.rng.normal(0.0, c.aim_error_m, 3)
        self._phase = self.rng.uniform(0, 2 * np.pi, 14)

    def judge(self, t: float, distance_m: float) -> str:
        """Is the rollout going wrong now? (the rule, without the reaction delay)"""
        c, task = self.config, self.task
        self.best_m = min(self.best_m, distance_m)
        self.history.append((t, distance_m))
        if t < c.grace_s:
            return ""
        if distance_m <= task.tolerance_m:
            return ""
        if distance_m > self.best_m + c.away_m:
            return f"moving away from the object ({distance_m * 100:.0f} cm, was {self.best_m * 100:.0f} cm)"
        if t >= c.stall_s:
            past = [d for (s, d) in self.history if s <= t - c.stall_s]
            if past and past[-1] - distance_m < c.stall_progress_m:
                return f"stalled {distance_m * 100:.0f} cm from the object"
        if t >= task.budget_s - c.time_margin_s:
            return f"running out of time, {distance_m * 100:.0f} cm from the object"
        return ""

    def watch(self, t: float, distance_m: float) -> str:
        if self.decided_at is None:
            why = self.judge(t, distance_m)
            if why:
                self.decided_at, self.reason = t, why
            return ""
        return self.reason if t - self.decided_at >= self._react_s else ""

    def guide(self, t: float, arm_q: np.ndarray) -> np.ndarray:
        """Where the person's hand pulls the 14 joints ``t`` seconds into the episode (first call: the handover)."""
        if self._handover is None:
            self._handover, self._t0 = np.asarray(arm_q, dtype=np.float64).copy(), t
            self._goal = reach_pose(self._aim, start=None)
        s = (t - self._t0) / self.config.guide_s
        target = min_jerk(self._handover, self._goal, s)
        wobble = self.config.tremor_rad * np.sin(2 * np.pi * 0.7 * (t - self._t0) + self._phase)
        wobble[7:] = 0.0
        return np.clip(target + wobble, ARM_LOWER_RAD, ARM_UPPER_RAD)
