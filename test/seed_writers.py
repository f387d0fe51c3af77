"""Independent writers of the seed's HDF5 variants, for tests: h5py and PIL directly, following the names, dtypes and
attrs of the seed's own code (ThomasChen98/openpi, auto_training, examples/h1_control_client/), not our writer:

- ``utils/episode_writer_hdf5.py`` as the recording client uses it: images under the names the client passes
  (``cam_head``, ``cam_left_wrist``, ``cam_right_wrist``, 224x224 RGB), each frame JPEG-encoded with PIL at
  quality 85 into a ``vlen_dtype(uint8)`` dataset of shape (T,); qpos and action float32 with gzip; phase as
  ``np.array(phases, dtype='S10')`` with gzip; attrs episode_length, fps, timestamp (ISO), advantage,
  policy_frames, human_frames. The older version of the same writer has no phase, advantage or frame counts.
- ``convert_humanoid_everyday_to_hdf5.py``: action and observations/qpos float32 (gzip), observations/images/ego_cam
  raw RGB (N, H, W, 3) uint8 (gzip), no wrist cameras, no phase; attrs fps=30, num_frames, source, arm_dof=14.

And a reading function that follows the seed's ``convert_h1_data_to_lerobot.py`` documented behaviour (names and
dtypes): ``cam_head`` first (JPEG when the dataset is object-typed or 1-D, else raw), else ``ego_cam`` read as raw
arrays; wrist cameras optional, JPEG or raw; the first 14 columns of action and qpos.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def scene(t: int, height: int, width: int, cam: int, seed: int = 0) -> list[np.ndarray]:
    """``t`` RGB frames: a gradient per camera with a square that moves, so frames differ and compress like images."""
    rng = np.random.default_rng(seed + cam)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1),
                     np.full_like(xx, 60 + 60 * cam)], axis=-1).astype(np.uint8)
    out = []
    for i in range(t):
        img = base.copy()
        x = (i * 3 + int(rng.integers(0, 4))) % max(1, width - 8)
        img[height // 3: height // 3 + 8, x: x + 8] = (250, 250, 250)
        out.append(img)
    return out


def trajectory(t: int, width: int = 14, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = np.arange(t)[:, None]
    return (0.3 * np.sin(0.1 * k + rng.uniform(0, 6, (1, width)))).astype(np.float32)


def _pil_jpeg(frame: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=85)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def write_client_episode(path: Path, t: int = 30, *, head: str = "cam_head", size: tuple[int, int] = (224, 224),
                         phase: bool = True, hands: bool = False, fps: int = 30, advantage: bool | None = True,
                         human_from: float = 0.6, truncate_camera: str | None = None, seed: int = 0) -> Path:
    """The seed client's episode_writer_hdf5.py layout. ``truncate_camera``: that camera's dataset is 5 frames
    short (what a writer that died mid-save leaves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width = 26 if hands else 14
    qpos = trajectory(t, width, seed)
    action = np.vstack([qpos[1:], qpos[-1:]])
    phases = ["policy" if i < int(human_from * t) else "human" for i in range(t)]
    action[[p == "human" for p in phases]] = 0.0
    h, w = size
    with h5py.File(path, "w") as f:
        obs = f.create_group("observations")
        obs.create_dataset("qpos", data=qpos, compression="gzip")
        images = obs.create_group("images")
        for c, name in enumerate((head, "cam_left_wrist", "cam_right_wrist")):
            frames = [_pil_jpeg(img) for img in scene(t, h, w, c, seed)]
            if name == truncate_camera:
                frames = frames[:-5]
            ds = images.create_dataset(name, (len(frames),), dtype=h5py.vlen_dtype(np.dtype("uint8")))
            for i, jpeg in enumerate(frames):
                ds[i] = jpeg
        f.create_dataset("action", data=action, compression="gzip")
        if phase:
            f.create_dataset("phase", data=np.array(phases, dtype="S10"), compression="gzip")
        f.attrs["episode_length"] = t
        f.attrs["fps"] = fps
        f.attrs["timestamp"] = datetime(2025, 12, 7, 10, 0, 0).isoformat()
        if phase:
            if advantage is not None:
                f.attrs["advantage"] = advantage
            f.attrs["policy_frames"] = sum(1 for p in phases if p == "policy")
            f.attrs["human_frames"] = sum(1 for p in phases if p == "human")
    return path


def write_converter_episode(path: Path, t: int = 30, *, size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """convert_humanoid_everyday_to_hdf5.py's layout: ego_cam raw RGB, head camera only, no phase."""
    path.parent.mkdir(parents=True, exist_ok=True)
    qpos = trajectory(t, 14, seed)
    actions = np.vstack([qpos[1:], qpos[-1:]])   # the next arm state is the action target
    ego_cam = np.array(scene(t, size[0], size[1], 0, seed), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("action", data=actions, compression="gzip")
        obs = f.create_group("observations")
        obs.create_dataset("qpos", data=qpos, compression="gzip")
        obs.create_group("images").create_dataset("ego_cam", data=ego_cam, compression="gzip")
        f.attrs["fps"] = 30
        f.attrs["num_frames"] = len(actions)
        f.attrs["source"] = "humanoid_everyday"
        f.attrs["arm_dof"] = 14
    return path


def seed_converter_load(hdf5_path: Path) -> dict:
    """What the seed's convert_h1_data_to_lerobot.py reads from one file (its documented behaviour): raises the way
    it does (KeyError without a head camera; an ``ego_cam`` of JPEG bytes is not an image array)."""

    def frames(data) -> np.ndarray:
        if data.dtype == object or len(data.shape) == 1:
            return np.array([np.array(Image.open(io.BytesIO(bytes(b)))) for b in data])
        return data

    with h5py.File(hdf5_path, "r") as f:
        actions = f["action"][:]
        qpos = f["observations"]["qpos"][:]
        images = f["observations"]["images"]
        if "cam_head" in images:
            ego_cam = frames(images["cam_head"][:])
        elif "ego_cam" in images:
            ego_cam = images["ego_cam"][:]          # the seed assumes raw arrays here
        else:
            raise KeyError(f"No head camera found in {hdf5_path}. Expected 'cam_head' or 'ego_cam'")
        wrists = {name: frames(images[name][:]) if name in images else None
                  for name in ("cam_left_wrist", "cam_right_wrist")}
        advantage = bool(f.attrs["advantage"]) if "advantage" in f.attrs else False
    return {"actions": actions[:, :14], "qpos": qpos[:, :14], "ego_cam": ego_cam, **wrists, "advantage": advantage}


def seed_converter_frame(image: np.ndarray) -> np.ndarray:
    """The seed converter's per-frame step: cv2.resize to 224x224 (fails unless ``image`` is an HxWx3 array)."""
    import cv2

    return cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
