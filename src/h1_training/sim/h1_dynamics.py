"""Joint dynamics of the simulated H1-2 (no rclpy, no DDS): what ``h1_sim`` integrates between lowstates.

Each of the 35 motor slots is an independent joint: inertia, viscous friction, hard stops at the URDF limits,
and the motor's PD law exactly as a unitree motor applies a LowCmd_ motor command:

    tau = kp * (q_cmd - q) + kd * (dq_cmd - dq) + tau_ff        (only while mode == 1 and the command is fresh)

so kp = 0 with kd > 0 is pure damping, and kp = kd = 0 leaves the joint free. By default there is no gravity: the
arms stay where they are left, which keeps HOLD/DAMPING behaviour easy to see and test. With a ``gravity`` model
(``drivers.arm_gravity.h1_2_arm_gravity()``: the 14 torques a motor must supply to hold the arms still) each arm
joint also feels the load ``-gravity(q)``: in HOLD the PD sags by about gravity / kp, in damping the arms sink
toward hanging unless the driver feeds the gravity torque forward in ``tau``. The joints stay independent (no
inertial coupling): the load is the URDF's, the motion it causes is only roughly an arm's.

The simulated operator's hand pulls the arm joints toward a target with a spring (``operator_stiffness``) but
only on joints whose commanded kp is below ``operator_kp_threshold`` (damping, E-stop, disabled or timed-out
motors): a person can move an arm in damping, not one that holds position at kp 140 (what the H1 seed's
operator does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from h1_training.params import param
from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_MOTOR_INDICES, ARM_UPPER_RAD, NUM_MOTORS

ARM = np.array(ARM_MOTOR_INDICES)
# The gravity load is evaluated at most once per this much simulated time (one call per 250 Hz tick; the model costs
# ~50-80 us): the pose moves little in 4 ms, and a starved loop's long steps still re-evaluate it.
GRAVITY_UPDATE_S = 0.004


@dataclass(frozen=True)
class DynamicsConfig:
    """The ``param`` fields are also h1_sim's ROS parameters (declared here once, see nodes/common.py)."""

    arm_inertia: float = param(0.15, "effective inertia per arm joint [kg m^2]", min=0.01, max=5.0)
    other_inertia: float = 1.0  # legs and torso (not used by the arm tests; they just stay put)
    viscous_friction: float = param(0.3, "joint viscous friction [Nm s/rad]", min=0.0, max=20.0)
    operator_stiffness: float = param(40.0, "stiffness of the operator's pull [Nm/rad]", min=0.0, max=500.0)
    operator_damping: float = 2.0  # [Nm s/rad] the hand's own damping
    operator_kp_threshold: float = param(1.0, "the hand moves only joints whose commanded kp is below this", min=0.0,
        max=50.0)
    command_timeout_s: float = param(0.5, "motors go passive when no valid lowcmd arrives this long [s]", min=0.01,
        max=10.0)
    substep_s: float = 0.002  # integration step (semi-implicit Euler: stable while h * sqrt(kp/I) << 2; 0.06 at
    #                           kp 140, I 0.15; the tests also run kp 420 with 20 ms ticks)

    def __post_init__(self) -> None:
        for name in ("arm_inertia", "other_inertia", "substep_s", "command_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("viscous_friction", "operator_stiffness", "operator_damping", "operator_kp_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class MotorCommands:
    """Per-slot command arrays of one LowCmd_ (length NUM_MOTORS)."""

    mode: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray
    kp: np.ndarray
    kd: np.ndarray

    @classmethod
    def zeros(cls) -> MotorCommands:
        z = np.zeros(NUM_MOTORS)
        return cls(np.zeros(NUM_MOTORS, dtype=np.uint8), z.copy(), z.copy(), z.copy(), z.copy(), z.copy())

    def validate(self) -> None:
        for name in ("mode", "q", "dq", "tau", "kp", "kd"):
            v = getattr(self, name)
            if np.shape(v) != (NUM_MOTORS,):
                raise ValueError(f"MotorCommands.{name} needs {NUM_MOTORS} values, got {np.shape(v)}")
        # one check over all five (every LowCmd_ at 250-500 Hz comes through here); the loop only names the field
        if not np.isfinite((self.q, self.dq, self.tau, self.kp, self.kd)).all():
            for name in ("q", "dq", "tau", "kp", "kd"):
                if not np.all(np.isfinite(getattr(self, name))):
                    raise ValueError(f"MotorCommands.{name} has NaN/inf")


class H1Dynamics:
    def __init__(self, config: DynamicsConfig | None = None, arm_q: np.ndarray | None = None,
                 gravity: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.config = config or DynamicsConfig()
        # arm q (14) -> the torques that hold the arms still; None: no gravity. May be swapped between steps.
        self.gravity = gravity
        self.tau_gravity = np.zeros(len(ARM))  # the last gravity load evaluated (what holding takes) [N m]
        self.q = np.zeros(NUM_MOTORS)
        self.q[ARM] = ARM_HOME_RAD if arm_q is None else np.asarray(arm_q, dtype=np.float64)
        self.dq = np.zeros(NUM_MOTORS)
        self.ddq = np.zeros(NUM_MOTORS)
        self.tau_motor = np.zeros(NUM_MOTORS)
        self.lower = np.full(NUM_MOTORS, -math.pi)
        self.upper = np.full(NUM_MOTORS, math.pi)
        self.lower[ARM], self.upper[ARM] = ARM_LOWER_RAD, ARM_UPPER_RAD
        self.inertia = np.full(NUM_MOTORS, self.config.other_inertia)
        self.inertia[ARM] = self.config.arm_inertia
        self.cmd = MotorCommands.zeros()
        self.cmd_age = math.inf
        self.operator_target: np.ndarray | None = None  # 14 arm positions, or None (hand off)
        self.time = 0.0

    def apply_command(self, cmd: MotorCommands) -> None:
        cmd.validate()
        self.cmd = cmd
        self.cmd_age = 0.0

    def set_operator_target(self, arm_q: np.ndarray | None) -> None:
        if arm_q is None:
            self.operator_target = None
            return
        arm_q = np.asarray(arm_q, dtype=np.float64)
        if arm_q.shape != (len(ARM),) or not np.all(np.isfinite(arm_q)):
            raise ValueError(f"operator target needs {len(ARM)} finite arm positions")
        self.operator_target = arm_q.copy()

    def motors_active(self) -> np.ndarray:
        return (self.cmd.mode == 1) & (self.cmd_age <= self.config.command_timeout_s)

    def operator_can_move(self) -> np.ndarray:
        """Per arm joint: True where the hand can move it (commanded kp below the threshold, or motor passive)."""
        active = self.motors_active()[ARM]
        return ~active | (self.cmd.kp[ARM] < self.config.operator_kp_threshold)

    def step(self, dt: float) -> None:
        if dt <= 0:
            return
        c = self.config
        n = max(1, math.ceil(dt / c.substep_s - 1e-9))
        h = dt / n
        # which motors are on, and where the hand may pull, is decided once per call (commands arrive between calls)
        active = self.motors_active()
        cmd = self.cmd
        kp, kd = np.where(active, cmd.kp, 0.0), np.where(active, cmd.kd, 0.0)
        ff = np.where(active, cmd.tau, 0.0)
        movable = self.operator_can_move() if self.operator_target is not None else None
        gravity = self.gravity
        every = max(1, round(GRAVITY_UPDATE_S / h)) if gravity is not None else 0
        for i in range(n):
            tau = kp * (cmd.q - self.q) + kd * (cmd.dq - self.dq) + ff
            self.tau_motor = tau
            total = tau - c.viscous_friction * self.dq
            if gravity is not None:
                if i % every == 0:
                    self.tau_gravity = self._gravity_load(gravity)
                total[ARM] -= self.tau_gravity
            if movable is not None:
                pull = c.operator_stiffness * (self.operator_target - self.q[ARM]) - c.operator_damping * self.dq[ARM]
                total[ARM] += np.where(movable, pull, 0.0)
            self.ddq = total / self.inertia
            self.dq += self.ddq * h
            self.q += self.dq * h
            hit = (self.q < self.lower) | (self.q > self.upper)  # hard stops
            if hit.any():
                self.q = np.clip(self.q, self.lower, self.upper)
                self.dq[hit] = 0.0
            self.cmd_age += h
            self.time += h

    def _gravity_load(self, gravity: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        load = np.asarray(gravity(self.q[ARM]), dtype=np.float64)
        if load.shape != (len(ARM),) or not np.all(np.isfinite(load)):
            raise ValueError(f"gravity model gave {load.shape} / non-finite torques, need {len(ARM)} finite")
        return load

    @property
    def arm_q(self) -> np.ndarray:
        return self.q[ARM].copy()

    @property
    def arm_dq(self) -> np.ndarray:
        return self.dq[ARM].copy()
