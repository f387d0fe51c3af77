"""What every learned policy looks like to the server, and the observation -> model-input conversion they share.

The ``Policy`` protocol (also implemented by ``policy/scripted.py``)::

    policy.metadata            # JSON-safe dict: policy_type, model_id, action_horizon, action_dim, fps, ...
    policy.infer(obs) -> dict  # {"actions": [H, 14] float32, "policy_timing": {"infer_ms": ...}}
    policy.reset()             # forget history (start of an episode)

``obs`` is the H1 observation (DESIGN.md §3): ``{"images": {"cam_head", "cam_left_wrist", "cam_right_wrist"}``
(HxWx3 uint8, RGB), ``"state"``: [14] float, ``"prompt"``: str}. The recorder's HDF5 names the head camera
``ego_cam``; the dataset and the models use the wire name ``cam_head`` (``policy.obs.HDF5_TO_OBS_CAMERA``).

A malformed observation raises ``ValueError`` with what is wrong; the server turns that into the error frame.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from h1_training.policy.obs import OBS_CAMERAS, check_state
from h1_training.robot_model import NUM_ARM_JOINTS

# Accepted in an observation too, so a client that kept the recorder's name still works.
_CAMERA_ALIASES = {"ego_cam": "cam_head"}

# LeRobot feature keys of our datasets and models.
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
INTERVENTION_KEY = "intervention"  # per-frame 1 = human correction (its action derived from qpos), 0 = policy


def image_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


@runtime_checkable
class Policy(Protocol):
    metadata: dict[str, Any]

    def infer(self, obs: dict) -> dict: ...

    def reset(self) -> None: ...


def ensure_offline_hub() -> None:
    """Nothing is fetched from a hub at run time: set before lerobot / huggingface_hub are imported, and force the
    flag on when huggingface_hub was imported earlier with it off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - comes with lerobot
        pass


def configure_torch_threads(num_threads: int | None = None) -> None:
    """Bound torch's CPU threads (``H1_TORCH_THREADS`` or the argument); the default of one per core fights with
    everything else on a small machine."""
    import torch

    n = num_threads or int(os.environ.get("H1_TORCH_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def observation_state(obs: Any, state_dim: int = NUM_ARM_JOINTS) -> np.ndarray:
    """The [state_dim] float32 state of an observation, or ValueError saying what is wrong (policy/obs.py checks)."""
    return check_state(obs, state_dim)


def observation_image(obs: dict, camera: str, shape_chw: tuple[int, int, int]) -> np.ndarray:
    """Camera ``camera`` of an observation as float32 CHW in [0, 1] at the model's size (resized when the camera
    delivers another resolution). Accepts HxWx3 (the H1 format) and 3xHxW (openpi's ALOHA clients send that)."""
    images = obs.get("images")
    if not isinstance(images, dict):
        raise ValueError(f"observation needs 'images' (a map of camera -> HxWx3 uint8) for cameras {OBS_CAMERAS}")
    img = images.get(camera)
    if img is None:
        for alias, name in _CAMERA_ALIASES.items():
            if name == camera and alias in images:
                img = images[alias]
    if img is None:
        raise ValueError(f"observation has no image {camera!r} (images: {sorted(map(str, images))})")
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        desc = f"shape {img.shape} dtype {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"image {camera!r} must be an HxWx3 uint8 array, got {desc}")
    if img.shape[2] != 3 and img.shape[0] == 3:
        img = np.ascontiguousarray(img.transpose(1, 2, 0))
    if img.shape[2] != 3:
        raise ValueError(f"image {camera!r} must have 3 colour channels, got shape {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"image {camera!r} is too small: {img.shape}")
    _, h, w = shape_chw
    if img.shape[:2] != (h, w):
        import cv2

        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0


def observation_prompt(obs: dict) -> str:
    prompt = obs.get("prompt", "")
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise ValueError(f"'prompt' must be a string, got {type(prompt).__name__}")
    return prompt
