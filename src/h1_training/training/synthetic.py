"""Synthetic seed-format episodes for tests and benchmarks (written with ``layout.write_episode``).

The arm follows smooth sinusoids around the home pose inside the URDF limits; the middle part of an episode can be
a human correction (phase "human", action zeros, as the seed records damping). Images are textured scenes with a
blob that moves with the arm, JPEG-encoded at the recorder's quality, so their size and decode cost are close to a
real 640x480 camera's (~40-60 kB).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from h1_training.recording import layout
from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD, CAMERA_NAMES, NUM_ARM_JOINTS

_NOISE_FRAMES = 5


def _noise_bank(width: int, height: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per-frame sensor noise (cycled): a static scene would make video encoding unrealistically cheap."""
    return [rng.integers(0, 16, (height, width, 3), dtype=np.uint8) for _ in range(_NOISE_FRAMES)]


def _backgrounds(width: int, height: int, rng: np.random.Generator) -> list[np.ndarray]:
    import cv2

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for c in range(len(CAMERA_NAMES)):
        img = np.stack([(xx / width * 180 + 40 * c), (yy / height * 160 + 30), (xx + yy) / (width + height) * 120],
                       axis=-1).astype(np.uint8)
        for _ in range(12):  # furniture: a few boxes of random colour
            x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
            x1, y1 = x0 + int(rng.integers(4, max(5, width // 4))), y0 + int(rng.integers(4, max(5, height // 4)))
            cv2.rectangle(img, (x0, y0), (x1, y1), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        noise = rng.normal(0, 6, img.shape)  # sensor noise keeps JPEG sizes realistic
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return out


def _render(bg: np.ndarray, noise: np.ndarray, q: np.ndarray, cam: int) -> bytes:
    import cv2

    h, w = bg.shape[:2]
    img = cv2.add(bg, noise)
    # the hand: a blob whose position follows two joints of the arm this camera looks at
    j = 0 if cam != 2 else 7
    cx = int((0.5 + 0.35 * np.sin(q[j] + q[j + 3])) * w)
    cy = int((0.5 + 0.35 * np.cos(q[j + 1] * 2)) * h)
    cv2.circle(img, (cx, cy), max(2, w // 12), (30, 200, 60), -1)
    cv2.circle(img, (cx, cy), max(1, w // 40), (240, 240, 240), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, layout.JPEG_QUALITY])
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def make_episode(frames: int, width: int = 640, height: int = 480, fps: float = 50.0,
                 human_span: tuple[float, float] | None = (0.4, 0.7), seed: int = 0, prompt: str = "pick up the cup",
                 pool: ThreadPoolExecutor | None = None) -> layout.Episode:
    """An in-memory episode of ``frames`` samples; ``human_span`` = (start, end) fractions of a human correction."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    freq = rng.uniform(0.2, 0.6, NUM_ARM_JOINTS)
    phase0 = rng.uniform(0, 2 * np.pi, NUM_ARM_JOINTS)
    amp = 0.25 * (ARM_UPPER_RAD - ARM_LOWER_RAD) / 2 * rng.uniform(0.2, 1.0, NUM_ARM_JOINTS)
    qpos = ARM_HOME_RAD[None, :] + amp[None, :] * np.sin(2 * np.pi * freq[None, :] * t[:, None] + phase0[None, :])
    qpos = np.clip(qpos, ARM_LOWER_RAD, ARM_UPPER_RAD).astype(np.float32)
    phase = ["policy"] * frames
    if human_span is not None:
        a, b = int(human_span[0] * frames), int(human_span[1] * frames)
        phase[a:b] = ["human"] * (b - a)
    # policy frames: the command leads the measured position by one tick (the arm tracks it)
    action = np.vstack([qpos[1:], qpos[-1:]]) + rng.normal(0, 1e-3, qpos.shape).astype(np.float32)
    action[np.array([p == "human" for p in phase])] = 0.0
    bgs = _backgrounds(width, height, rng)
    noise = _noise_bank(width, height, rng)

    def render(i: int) -> list[bytes]:
        return [_render(bgs[c], noise[(i + 2 * c) % _NOISE_FRAMES], qpos[i], c) for c in range(len(CAMERA_NAMES))]

    rows = list(pool.map(render, range(frames))) if pool is not None else [render(i) for i in range(frames)]
    images = {name: [row[c] for row in rows] for c, name in enumerate(CAMERA_NAMES)}
    return layout.Episode(qpos=qpos, action=action.astype(np.float32), phase=phase, images=images, fps=fps,
                          timestamp="2025-01-01T00:00:00", attrs={"prompt": prompt},
                          model_version=["synthetic-v0" if p == "policy" else "" for p in phase])


def write_session(save_dir: Path, epoch: int, episodes: int, frames: int, width: int = 640, height: int = 480,
                  fps: float = 50.0, seed: int = 0, workers: int = 2) -> list[Path]:
    """``episodes`` synthetic episodes at ``save_dir/training_session_epoch{epoch}/episode_{i}.hdf5``."""
    paths = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # cv2.imencode releases the GIL
        for i in range(episodes):
            ep = make_episode(frames, width, height, fps, seed=seed + i, pool=pool)
            paths.append(layout.write_episode(layout.episode_path(save_dir, epoch, i), ep))
    return paths


# Small policy configs for tests and CPU benchmarks (tiny images): the architectures of the real ones, scaled down.
TINY_POLICY_OPTIONS: dict[str, dict] = {
    "act": {"dim_model": 64, "n_heads": 2, "dim_feedforward": 128, "n_encoder_layers": 1, "n_vae_encoder_layers": 1,
            "chunk_size": 10, "n_action_steps": 10},
    "diffusion": {"down_dims": [32, 64], "horizon": 8, "n_action_steps": 4, "num_inference_steps": 3,
                  "spatial_softmax_num_keypoints": 8, "diffusion_step_embed_dim": 32},
    "cnn_lstm": {"chunk_size": 10, "n_action_steps": 10, "image_size": [48, 64], "cnn_channels": [8, 16],
                 "feature_dim": 32, "lstm_hidden": 32, "mlp_hidden": 64},
    "keypoint": {"chunk_size": 10, "cnn_channels": [8, 16, 16], "num_keypoints": 8, "mlp_hidden": 64},
}
