"""The H1 observation and action as they travel to and from the policy server (DESIGN.md §3), checked in one place.

Observation (a msgpack map)::

    {"images": {"cam_head": HxWx3 uint8, "cam_left_wrist": HxWx3 uint8, "cam_right_wrist": HxWx3 uint8},
     "state": [14] float (arm joint positions, robot_model.ARM_JOINT_NAMES order, rad),
     "prompt": str}

``images`` and ``prompt`` may be left out for policies that do not use them (the scripted one; a learned policy
then answers with its own ValueError); a camera that is present must be an HxWx3 (or 3xHxW) uint8 array.
Result: ``{"actions": [H, 14] float32, ...}`` with finite values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from h1_training.robot_model import NUM_ARM_JOINTS

# The HDF5 camera names (robot_model.CAMERA_NAMES) -> the observation / dataset names (DESIGN.md §3).
HDF5_TO_OBS_CAMERA = {"ego_cam": "cam_head", "cam_left_wrist": "cam_left_wrist", "cam_right_wrist": "cam_right_wrist"}
OBS_CAMERAS = tuple(HDF5_TO_OBS_CAMERA.values())


def check_state(obs: Any, state_dim: int = NUM_ARM_JOINTS) -> np.ndarray:
    """The [state_dim] float32 state of an observation, or ValueError saying what is wrong."""
    if not isinstance(obs, dict):
        raise ValueError(f"observation must be a map, got {type(obs).__name__}")
    if "state" not in obs:
        raise ValueError(f"observation has no 'state' (keys: {sorted(map(str, obs))})")
    raw = obs["state"]
    if not isinstance(raw, (np.ndarray, list, tuple)):
        raise ValueError(f"'state' must be an array of {state_dim} numbers, got {type(raw).__name__}")
    arr = np.asarray(raw)
    if arr.shape != (state_dim,) or arr.dtype.kind not in "fiu":
        raise ValueError(f"'state' must be {state_dim} numbers, got shape {arr.shape} dtype {arr.dtype}")
    if not np.isfinite(arr).all():  # the method: np.all's Python wrapper costs more than the check itself
        raise ValueError("'state' contains NaN or inf")
    return arr.astype(np.float32)


def check_observation(obs: Any) -> dict:
    """Return ``obs`` when it is a well-formed H1 observation; otherwise raise ValueError saying what is wrong."""
    check_state(obs)
    images = obs.get("images", {})
    if not isinstance(images, dict):
        raise ValueError(f"'images' must be a map of camera name -> HxWx3 uint8, got {type(images).__name__}")
    for name, img in images.items():
        # HxWx3 is the H1 format; 3xHxW is accepted too (openpi's ALOHA clients send that, the adapters transpose).
        if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and 3 in (img.shape[0],
                                                                                                 img.shape[2])):
            desc = f"shape {img.shape} dtype {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"image {name!r} must be an HxWx3 uint8 array, got {desc}")
    prompt = obs.get("prompt", "")
    if not isinstance(prompt, str):
        raise ValueError(f"'prompt' must be a string, got {type(prompt).__name__}")
    return obs


def check_result(result: Any, action_dim: int = NUM_ARM_JOINTS) -> dict:
    """A policy's answer must hold finite ``actions`` [H, action_dim]; a NaN never reaches the robot."""
    if not isinstance(result, dict) or "actions" not in result:
        raise ValueError("policy returned no 'actions'")
    actions = result["actions"]
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.shape[1] != action_dim:
        shape = getattr(actions, "shape", type(actions).__name__)
        raise ValueError(f"policy 'actions' must be [H, {action_dim}], got {shape}")
    if actions.shape[0] < 1 or not np.isfinite(actions).all():
        raise ValueError("policy 'actions' are empty or not finite")
    if actions.dtype != np.float32:
        result["actions"] = actions.astype(np.float32)
    return result
