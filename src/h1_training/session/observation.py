"""The policy server's observation built from the latest arm state and camera JPEGs (no rclpy)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from h1_training.jpeg import decode_jpeg_rgb
from h1_training.policy.obs import HDF5_TO_OBS_CAMERA
from h1_training.robot_model import NUM_ARM_JOINTS


class ObservationBuilder:
    """The policy server's observation (policy/obs.py) from the latest arm state and camera JPEGs.

    ``refresh`` (set by the node) pulls the newest messages in; ``build`` then returns
    ``{"state": [14] float32, "images": {cam_head, cam_left_wrist, cam_right_wrist: HxWx3 uint8 RGB},
    "prompt": str}``. A state older than ``state_timeout_s`` (or none) is a ValueError: never infer on a stale
    pose. A camera that has not published is left out (a policy that needs it says so in its error).
    """

    def __init__(self, prompt: str = "", *, send_images: bool = True, image_size: tuple[int, int] = (0, 0),
                 state_timeout_s: float = 0.5, refresh: Callable[[ObservationBuilder], None] | None = None,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.prompt = prompt
        self.send_images = send_images
        self.image_size = image_size
        self.state_timeout_s = state_timeout_s
        self.refresh = refresh
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        self._state: np.ndarray | None = None
        self._state_ns = 0
        self._jpeg: dict[str, bytes] = {}
        self._decoded: dict[str, np.ndarray] = {}

    def set_state(self, positions: np.ndarray, stamp_ns: int) -> None:
        with self._lock:
            self._state, self._state_ns = np.asarray(positions, np.float32), int(stamp_ns)

    def set_image(self, camera: str, jpeg: bytes) -> None:
        """``camera``: a recorder name (robot_model.CAMERA_NAMES); decoded lazily at the next build."""
        with self._lock:
            self._jpeg[camera] = jpeg
            self._decoded.pop(camera, None)

    def build(self) -> dict:
        if self.refresh is not None:
            self.refresh(self)
        with self._lock:
            state, stamp, jpegs = self._state, self._state_ns, dict(self._jpeg)
        if state is None:
            raise ValueError("no joint_states received: is h1_arm_node running?")
        age = (self._wall_ns() - stamp) / 1e9
        if age > self.state_timeout_s:
            raise ValueError(f"joint_states are {age:.2f} s old (limit {self.state_timeout_s} s): no fresh arm state")
        if state.shape != (NUM_ARM_JOINTS,) or not np.all(np.isfinite(state)):
            raise ValueError(f"arm state is not {NUM_ARM_JOINTS} finite positions")
        obs: dict[str, Any] = {"state": state.copy(), "prompt": self.prompt}
        if self.send_images:
            images = {}
            for cam, data in jpegs.items():
                img = self._decoded.get(cam)
                if img is None:
                    img = decode_jpeg_rgb(data, self.image_size)
                    with self._lock:
                        if self._jpeg.get(cam) is data:
                            self._decoded[cam] = img
                images[HDF5_TO_OBS_CAMERA.get(cam, cam)] = img
            obs["images"] = images
        return obs
