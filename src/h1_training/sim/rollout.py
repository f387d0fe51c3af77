"""One episode of the reach task in pure Python, faster than real time (no rclpy, no torch): the H1-2 joint
dynamics ``h1_sim`` integrates (``sim/h1_dynamics.py``), the cameras ``camera_sim`` renders
(``sim/scene_render.py``, JPEG as on the wire), the task and the simulated person (``sim/reach_task.py``).

Per 50 Hz frame: render the cameras, measure the hand's distance to the object (the success check), then either
ask the policy (a callable: H1 observation -> action chunk [H, 14]; the chunk's ``exec_index`` row becomes the
arms' position target, replanned every frame) and hold the arms to it with the TRACK gains of the arm node, or --
after the person took over -- leave the arms in damping (kp 0, the arm node's damping kd) while the person's hand
pulls them. ``on_frame`` receives every frame as the recorder would store it (images, qpos, action, phase).

What this path leaves out, on purpose: the arm node's per-tick velocity clamp and gain ramps, DDS and JPEG
transport latency, and the hands. Per-epoch success figures of the demo come from here (same seeded objects
every epoch: a paired comparison); the README says which numbers come from which path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import (
    ARM_HOME_RAD,
    ARM_KD,
    ARM_KP,
    ARM_LOWER_RAD,
    ARM_MOTOR_INDICES,
    ARM_UPPER_RAD,
    CAMERA_NAMES,
)
from h1_training.sim.h1_dynamics import DynamicsConfig, H1Dynamics, MotorCommands
from h1_training.sim.reach_task import (
    ImperfectOperator,
    SuccessCheck,
    TaskConfig,
    grasp_point,
    hand_position,
    partial_credit,
)
from h1_training.sim.scene_render import SceneRenderer, SceneState

ARM = np.array(ARM_MOTOR_INDICES)
DAMPING_KD = 2.0  # drivers/arm_controller.ArmControllerConfig.damping_kd's default
OBS_NAME = {"ego_cam": "cam_head", "cam_left_wrist": "cam_left_wrist", "cam_right_wrist": "cam_right_wrist"}
PolicyFn = Callable[[dict], np.ndarray]


@dataclass
class Frame:
    t: float
    qpos: np.ndarray
    jpegs: tuple[bytes, ...]       # per robot_model.CAMERA_NAMES
    action: np.ndarray             # the command sent (policy) or zeros (human, as the recorder stores it)
    phase: str                     # "policy" or "human"


@dataclass
class EpisodeResult:
    object_xyz: list[float]
    success: bool
    time_to_success_s: float | None
    final_distance_m: float
    intervened: bool
    takeover_s: float | None
    takeover_reason: str
    frames: int
    human_frames: int
    duration_s: float
    policy_success: bool = False   # succeeded with no human help
    score: float = 0.0             # partial credit of the policy's trial (reach_task.partial_credit)
    notes: dict = field(default_factory=dict)

    def outcome(self) -> dict:
        """The trial as the statistics see it (success, partial credit, time, final distance)."""
        return {"success": bool(self.policy_success), "score": round(float(self.score), 4),
                "time_to_success_s": self.time_to_success_s, "final_distance_m": round(float(self.final_distance_m), 4)}

    def attrs(self) -> dict:
        """The per-episode record written into the HDF5 file's attributes."""
        return {
            "task_object_xyz": np.asarray(self.object_xyz, dtype=np.float64),
            "task_success": int(self.success),
            "task_policy_success": int(self.policy_success),
            "task_time_to_success_s": -1.0 if self.time_to_success_s is None else float(self.time_to_success_s),
            "task_final_distance_m": float(self.final_distance_m),
            "task_intervened": int(self.intervened),
            "task_takeover_s": -1.0 if self.takeover_s is None else float(self.takeover_s),
            "task_takeover_reason": self.takeover_reason,
            "task_score": float(self.score),
        }


class SimRollout:
    """Runs episodes; keeps one renderer per camera (their static backgrounds are drawn once)."""

    def __init__(self, task: TaskConfig | None = None, image_wh: tuple[int, int] = (96, 72), jpeg_quality: int = 85,
                 cameras: tuple[str, ...] = CAMERA_NAMES, dynamics: DynamicsConfig | None = None) -> None:
        import cv2

        self.cv2 = cv2
        self.task = task or TaskConfig()
        self.dynamics = dynamics or DynamicsConfig()
        unknown = set(cameras) - set(CAMERA_NAMES)
        if unknown:
            raise ValueError(f"unknown cameras {sorted(unknown)}; use {CAMERA_NAMES}")
        self.cameras = cameras
        self.renderers = {c: SceneRenderer(c, image_wh[0], image_wh[1], jpeg_quality) for c in cameras}
        self.blank = {c: b"" for c in CAMERA_NAMES}

    def _commands(self, target: np.ndarray | None) -> MotorCommands:
        cmd = MotorCommands.zeros()
        cmd.mode[ARM] = 1
        if target is None:  # damping
            cmd.kd[ARM] = DAMPING_KD
        else:
            cmd.q[ARM], cmd.kp[ARM], cmd.kd[ARM] = target, ARM_KP, ARM_KD
        return cmd

    def episode(self, object_xyz: np.ndarray, operator: ImperfectOperator | None = None, *, demonstration: bool = False,
                on_frame: Callable[[Frame], None] | None = None, exec_index: int = 0,
                prompt: str = "reach the object", decode_cameras: tuple[str, ...] = ("ego_cam",)) -> EpisodeSim:
        """A stepper for one episode (see :class:`EpisodeSim`), for running many in lockstep."""
        return EpisodeSim(self, object_xyz, operator, demonstration, on_frame, exec_index, prompt, decode_cameras)

    def run(self, object_xyz: np.ndarray, policy: PolicyFn | None, operator: ImperfectOperator | None = None,
            on_frame: Callable[[Frame], None] | None = None, exec_index: int = 0, prompt: str = "reach the object",
            decode_cameras: tuple[str, ...] = ("ego_cam",)) -> EpisodeResult:
        """One episode from the home pose. ``policy`` None: the person guides from the first frame (a
        demonstration; needs an ``operator``). Without an operator the policy runs alone for ``budget_s``."""
        ep = self.episode(object_xyz, operator, demonstration=policy is None, on_frame=on_frame,
                          exec_index=exec_index, prompt=prompt, decode_cameras=decode_cameras)
        while not ep.done:
            obs = ep.begin_frame()
            ep.end_frame(None if obs is None else policy(obs))
        return ep.result()


def run_batch(episodes: list[EpisodeSim],
              policy_batch: Callable[[list[dict]], list[np.ndarray]]) -> list[EpisodeResult]:
    """Run episodes in lockstep, one batched policy call per frame for all that need the policy."""
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        wants = [(ep, obs) for ep in active if (obs := ep.begin_frame()) is not None]
        chunks = policy_batch([obs for _, obs in wants]) if wants else []
        for (ep, _), chunk in zip(wants, chunks):
            ep.end_frame(chunk)
        for ep in active:
            if ep.pending:
                ep.end_frame(None)
    return [ep.result() for ep in episodes]


class EpisodeSim:
    """One episode, a frame at a time: :meth:`begin_frame` measures, renders and lets the person judge; it returns
    the policy's observation when the policy acts this frame (else None); :meth:`end_frame` applies the policy's
    chunk (or the person's hand), records the frame and advances the dynamics by one frame."""

    def __init__(self, rollout: SimRollout, object_xyz: np.ndarray, operator: ImperfectOperator | None,
                 demonstration: bool, on_frame: Callable[[Frame], None] | None, exec_index: int, prompt: str,
                 decode_cameras: tuple[str, ...]) -> None:
        if demonstration and operator is None:
            raise ValueError("a demonstration needs an operator")
        self.rollout, self.task = rollout, rollout.task
        self.operator, self.on_frame, self.exec_index, self.prompt = operator, on_frame, exec_index, prompt
        self.decode_cameras = decode_cameras
        self.object_xyz = np.asarray(object_xyz, dtype=np.float64)
        self.dt = 1.0 / self.task.fps
        self.dyn = H1Dynamics(rollout.dynamics, arm_q=ARM_HOME_RAD)
        self.goal = grasp_point(self.object_xyz)
        self.check = SuccessCheck(self.task)
        self.state = SceneState(object_xyz=self.object_xyz.copy())
        self.human = demonstration
        self.takeover_s: float | None = 0.0 if demonstration else None
        self.reason = "demonstration" if demonstration else ""
        self.limit = self.task.budget_s + (self.task.human_extra_s if operator is not None else 0.0)
        self.last_k = int(math.ceil(self.limit * self.task.fps))
        self.k = 0
        self.t = 0.0
        self.frames = self.human_frames = 0
        self.done = False
        self.pending = False
        self._q = ARM_HOME_RAD.copy()
        self._jpegs: tuple[bytes, ...] = ()
        self._finished = False

    def begin_frame(self) -> dict | None:
        if self.done or self.pending:
            raise RuntimeError("begin_frame out of order")
        self.pending = True
        self.t = t = self.k * self.dt
        q = self._q = self.dyn.arm_q
        distance = float(np.linalg.norm(hand_position(q) - self.goal))
        self._finished = self.check.update(t, distance)
        self.state.arm_q = q
        key = self.state.key()
        renderers = self.rollout.renderers
        self._jpegs = tuple(renderers[c].render(self.state, key) if c in renderers else b"" for c in CAMERA_NAMES)
        if not self.human and self.operator is not None and not self._finished:
            why = self.operator.watch(t, distance)
            if why:
                self.human, self.takeover_s, self.reason = True, t, why
        if self.human:
            return None
        cv2 = self.rollout.cv2
        obs: dict = {"images": {}, "state": q.astype(np.float32), "prompt": self.prompt}
        for cam in self.decode_cameras:
            img = cv2.imdecode(np.frombuffer(self._jpegs[CAMERA_NAMES.index(cam)], np.uint8), cv2.IMREAD_COLOR)
            obs["images"][OBS_NAME[cam]] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return obs

    def end_frame(self, chunk: np.ndarray | None) -> None:
        if not self.pending:
            raise RuntimeError("end_frame without begin_frame")
        self.pending = False
        dyn, t, q = self.dyn, self.t, self._q
        if self.human:
            dyn.apply_command(self.rollout._commands(None))
            dyn.set_operator_target(self.operator.guide(t, q))
            action = np.zeros(len(ARM))
            self.human_frames += 1
        else:
            if chunk is None:
                raise ValueError("the policy acts this frame: end_frame needs its action chunk")
            chunk = np.asarray(chunk, dtype=np.float64)
            row = chunk[min(self.exec_index, len(chunk) - 1)]
            if row.shape != (len(ARM),) or not np.all(np.isfinite(row)):
                raise ValueError(f"the policy returned a bad action row {row.shape}")
            action = np.clip(row, ARM_LOWER_RAD, ARM_UPPER_RAD)
            dyn.set_operator_target(None)
            dyn.apply_command(self.rollout._commands(action))
        self.frames += 1
        if self.on_frame is not None:
            self.on_frame(Frame(t, q.astype(np.float32), self._jpegs, action.astype(np.float32),
                                "human" if self.human else "policy"))
        if (self._finished or (self.takeover_s is None and t >= self.task.budget_s - 1e-9)
                or self.k >= self.last_k):
            self.done = True
            return
        dyn.step(self.dt)
        self.k += 1

    def result(self) -> EpisodeResult:
        check, task = self.check, self.task
        intervened = self.takeover_s is not None
        in_time = check.time_to_success_s is not None and check.time_to_success_s + task.hold_s <= task.budget_s + 1e-9
        policy_success = check.succeeded and not intervened and in_time
        return EpisodeResult(
            object_xyz=[float(v) for v in self.object_xyz], success=check.succeeded,
            time_to_success_s=check.time_to_success_s, final_distance_m=check.distance_m, intervened=intervened,
            takeover_s=self.takeover_s, takeover_reason=self.reason, frames=self.frames,
            human_frames=self.human_frames, duration_s=round(self.t, 3),
            policy_success=policy_success, score=partial_credit(policy_success, check.distance_m, task),
        )
