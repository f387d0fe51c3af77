"""A scripted policy (no torch): the epoch-0 policy of the sim demo and the policy of the protocol tests.

It implements the same Policy protocol as the learned adapters in ``policy/models`` (``metadata``,
``infer(obs) -> {"actions": [H, 14] float32}``, ``reset()``), so everything that serves or consumes a policy can be
exercised without a checkpoint:

- ``mode="reach"``: a straight line in joint space from the observed arm state to ``target`` (a reach pose in front
  of the robot by default), all joints arriving together: cruise at ``max_speed`` rad/s on the joint with the
  farthest to go, then an exponential approach (time constant ``approach_tau_s``) that slows down smoothly instead
  of stopping dead at the target. Each row is a fixed function of the previous one (the state has no velocity), so
  the plan is receding-horizon: re-planning from any row of it, after 1 row or after the whole chunk, continues the
  same motion at the same speed, and it converges even when the human has moved the arms in between.
- ``mode="hold"``: hold ``target`` (ARM_HOME_RAD by default) — every action row is the target.

Actions are absolute joint position targets in ``robot_model.ARM_JOINT_NAMES`` order, clipped to the URDF limits.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD, NUM_ARM_JOINTS

POLICY_TYPE = "scripted"
_LOWER, _UPPER = np.asarray(ARM_LOWER_RAD, np.float64), np.asarray(ARM_UPPER_RAD, np.float64)
CONFIG_FILE = "config.json"

# Arms raised forward with the elbows bent: a reachable pose inside the H1-2 URDF limits (left then right).
REACH_TARGET_RAD = np.array([-0.8, 0.25, 0.0, 1.0, 0.0, 0.0, 0.0,
                             -0.8, -0.25, 0.0, 1.0, 0.0, 0.0, 0.0])


@dataclass
class ScriptedConfig:
    mode: str = "reach"                       # "reach" or "hold"
    target: list[float] | None = None         # 14 joint targets [rad]; None = the mode's default pose
    horizon: int = 50                         # action rows per inference (1 s at 50 Hz)
    fps: float = 50.0                         # control rate the rows are spaced at
    max_speed: float = 0.6                    # [rad/s] cruise speed of the joint with the farthest to go
    approach_tau_s: float = 0.2               # [s] time constant of the final approach (slows down within
                                              # max_speed * approach_tau_s of the target)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("reach", "hold"):
            raise ValueError(f"scripted mode must be 'reach' or 'hold', got {self.mode!r}")
        if self.target is not None and len(self.target) != NUM_ARM_JOINTS:
            raise ValueError(f"scripted target needs {NUM_ARM_JOINTS} joint values, got {len(self.target)}")
        if not 1 <= int(self.horizon) <= 1000:
            raise ValueError(f"horizon must be in 1..1000, got {self.horizon}")
        if not (self.fps > 0 and self.max_speed > 0 and self.approach_tau_s > 0):
            raise ValueError("fps, max_speed and approach_tau_s must be > 0")


def _state_of(obs: Any) -> np.ndarray:
    """The 14 arm joint positions of an observation (DESIGN.md §3); a clear ValueError when malformed."""
    if not isinstance(obs, dict):
        raise ValueError(f"observation must be a map, got {type(obs).__name__}")
    if "state" not in obs:
        raise ValueError(f"observation has no 'state' (keys: {sorted(map(str, obs))})")
    state = np.asarray(obs["state"])
    if state.shape != (NUM_ARM_JOINTS,) or state.dtype.kind not in "fiu":
        raise ValueError(f"'state' must be {NUM_ARM_JOINTS} numbers, got shape {state.shape} dtype {state.dtype}")
    state = state.astype(np.float64)
    if not np.all(np.isfinite(state)):
        raise ValueError("'state' contains NaN or inf")
    return state


class ScriptedPolicy:
    """Smooth reach (or hold) toward a fixed joint target; see the module docstring."""

    def __init__(self, config: ScriptedConfig | None = None, model_id: str = "scripted") -> None:
        self.config = config or ScriptedConfig()
        default = REACH_TARGET_RAD if self.config.mode == "reach" else ARM_HOME_RAD
        target = np.asarray(self.config.target if self.config.target is not None else default, np.float64)
        self.target = np.clip(target, ARM_LOWER_RAD, ARM_UPPER_RAD)
        self.model_id = model_id
        # numpy on 14 numbers, ~5 us a row: instant at the usual horizons, so the server may run it on its event
        # loop (serve/server.py); a long horizon goes to a worker thread like every learned model
        self.infer_inline = int(self.config.horizon) <= 100
        self.metadata: dict[str, Any] = {
            "policy_type": POLICY_TYPE,
            "model_id": model_id,
            "mode": self.config.mode,
            "action_horizon": int(self.config.horizon),
            "action_dim": NUM_ARM_JOINTS,
            "fps": float(self.config.fps),
            "target": [float(x) for x in self.target],
        }

    def step(self, q: np.ndarray) -> np.ndarray:
        """The reach's next row from ``q``: the whole plan is this map iterated, so it depends on the state only
        and re-planning from any row continues it unchanged."""
        delta = self.target - q
        dist = float(np.max(np.abs(delta)))
        if dist == 0.0:
            return self.target.copy()
        dt = 1.0 / self.config.fps
        # The fraction of the remaining way covered in one row: the cruise step (max_speed on the farthest joint)
        # or the exponential approach's, whichever is smaller; < 1, so never past the target.
        frac = min(self.config.max_speed * dt / dist, 1.0 - np.exp(-dt / self.config.approach_tau_s))
        return q + frac * delta

    def plan(self, q: np.ndarray, rows: int) -> np.ndarray:
        """``rows`` iterations of :meth:`step` from ``q``, computed at once: each step shrinks the offset to the
        target by the factor ``1 - frac`` on every joint alike, so only the scalar distance is iterated and the
        rows are ``target - offset * cumprod(1 - frac)`` (the same rows as the loop, ~20x faster at 50)."""
        delta = self.target - q
        dist = float(np.max(np.abs(delta)))
        if dist == 0.0:
            return np.repeat(self.target[None, :], rows, axis=0)
        dt = 1.0 / self.config.fps
        cruise, approach = self.config.max_speed * dt, 1.0 - np.exp(-dt / self.config.approach_tau_s)
        keep = np.empty(rows)
        for k in range(rows):  # scalar: the remaining distance after each row
            frac = min(cruise / dist, approach) if dist > 0.0 else 1.0
            dist *= 1.0 - frac
            keep[k] = 1.0 - frac
        return self.target - np.cumprod(keep)[:, None] * delta[None, :]

    def reset(self) -> None:
        """Stateless: every call plans from the observed state."""

    def infer(self, obs: dict) -> dict:
        t0 = time.perf_counter()
        state = _state_of(obs)
        h = int(self.config.horizon)
        if self.config.mode == "hold":
            actions = np.repeat(self.target[None, :], h, axis=0)
        else:
            actions = self.plan(state, h)
        # Clipping per joint never lengthens a step; the target is inside the limits, so only a state outside
        # them is affected.
        actions = np.minimum(np.maximum(actions, _LOWER), _UPPER).astype(np.float32)  # np.clip, less overhead
        return {"actions": actions, "policy_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3}}

    # -- on disk: a model directory holds config.json only -------------------------------------------------
    def save(self, model_dir: str | Path) -> Path:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
        cfg["target"] = [float(x) for x in self.target]
        (model_dir / CONFIG_FILE).write_text(json.dumps({"policy_type": POLICY_TYPE, **cfg}, indent=2))
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path, model_id: str | None = None) -> ScriptedPolicy:
        model_dir = Path(model_dir)
        raw = json.loads((model_dir / CONFIG_FILE).read_text())
        if raw.pop("policy_type", POLICY_TYPE) != POLICY_TYPE:
            raise ValueError(f"{model_dir} is not a scripted policy")
        raw.pop("min_duration_s", None)  # the minimum-jerk planner's (before approach_tau_s): no meaning now
        return cls(ScriptedConfig(**raw), model_id=model_id or model_dir.name)


def is_scripted_dir(model_dir: str | Path) -> bool:
    path = Path(model_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text()).get("policy_type") == POLICY_TYPE
    except (OSError, ValueError, AttributeError):
        return False


class NoopPolicy:
    """The wire baseline: answers every observation with the same precomputed [horizon, 14] zero chunk, without
    looking at it. Serving it measures the server, codec and WebSocket alone (``h1-training bench serve``); it
    is never deployed to a robot (zeros are not a safe arm target) and the registry cannot hold one."""

    def __init__(self, horizon: int = 50, model_id: str = "noop") -> None:
        self.model_id = model_id
        self.infer_inline = True  # returns a precomputed array: the server runs it on its event loop
        self._actions = np.zeros((horizon, NUM_ARM_JOINTS), np.float32)
        self.metadata: dict[str, Any] = {"policy_type": "noop", "model_id": model_id, "action_horizon": horizon,
                                         "action_dim": NUM_ARM_JOINTS}

    def reset(self) -> None:
        """Stateless."""

    def infer(self, obs: dict) -> dict:  # noqa: ARG002 - a no-op by definition
        return {"actions": self._actions, "policy_timing": {"infer_ms": 0.0}}
