"""A LeRobotDataset held in memory, for small datasets trained on a CPU.

``LeRobotDataset.__getitem__`` decodes each sample's video frames on its own (seek to a key frame, decode up to the
frame), for every camera of the dataset: on 2 CPU cores that costs far more than a small policy's training step.
Here every episode's video is decoded once, front to back (:meth:`LeRobotDataset._query_videos` with all of the
episode's timestamps, one pass per camera), and only the cameras the policy uses are kept, as uint8. A batch is
then a few array gathers: the same keys, shapes and padding rules as LeRobot's items (``action`` [B, chunk, dim]
with ``action_is_pad`` where the chunk runs past the episode's end, images float32 CHW in [0, 1]).

The trainer uses it when the decoded images fit in ``max_bytes`` and only one process trains (``preload``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("h1_training.train")


def image_bytes(meta: Any, image_keys: list[str]) -> int:
    """Bytes the decoded uint8 frames of ``image_keys`` take for the whole dataset."""
    total = 0
    for key in image_keys:
        total += int(np.prod(meta.features[key]["shape"])) * int(meta.total_frames)
    return total


def _column(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return np.stack(list(arr)) if arr.dtype == object else arr


class MemoryDataset:
    """Every frame of ``dataset`` (a LeRobotDataset) as arrays; ``batch(indices)`` gives a training batch."""

    def __init__(self, dataset: Any, image_keys: list[str], delta_indices: dict[str, list[int]] | None) -> None:
        import torch

        hf = dataset.hf_dataset.with_format("numpy")
        table = {k: _column(v) for k, v in hf[:].items()}  # one read of every column
        self.num_frames = int(dataset.num_frames)
        self.episode_index = table["episode_index"].reshape(-1).astype(np.int64)
        meta = dataset.meta
        starts = np.asarray(meta.episodes["dataset_from_index"], dtype=np.int64)
        ends = np.asarray(meta.episodes["dataset_to_index"], dtype=np.int64)
        episode_ids = np.asarray(meta.episodes["episode_index"], dtype=np.int64)
        lookup = {int(e): k for k, e in enumerate(episode_ids)}
        row = np.array([lookup[int(e)] for e in self.episode_index])
        self.ep_start, self.ep_end = starts[row], ends[row]
        self.delta = {k: np.asarray(v, dtype=np.int64) for k, v in (delta_indices or {}).items()}
        self.arrays: dict[str, np.ndarray] = {}
        for key, feat in dataset.features.items():
            if feat["dtype"] in ("video", "image", "string") or key in ("index", "episode_index", "frame_index",
                                                                         "task_index", "timestamp"):
                continue
            self.arrays[key] = table[key]
        tasks = table["task_index"].reshape(-1) if "task_index" in table else None
        self.tasks = [dataset.meta.tasks.index[int(t)] if tasks is not None else "" for t in
                      (tasks if tasks is not None else np.zeros(self.num_frames, dtype=int))]
        self.images: dict[str, np.ndarray] = {}
        timestamps = table["timestamp"].astype(np.float64).reshape(-1)
        for key in image_keys:
            shape = tuple(dataset.meta.features[key]["shape"])  # H, W, C
            out = np.empty((self.num_frames, shape[2], shape[0], shape[1]), dtype=np.uint8)
            for k, ep in enumerate(episode_ids):
                a, b = int(starts[k]), int(ends[k])
                if dataset.meta.video_keys and key in dataset.meta.video_keys:
                    frames = dataset._query_videos({key: timestamps[a:b].tolist()}, int(ep))[key]
                    if frames.ndim == 3:
                        frames = frames[None]
                    out[a:b] = (frames.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
                else:
                    for i in range(a, b):
                        img = dataset[i][key]
                        out[i] = (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
            self.images[key] = out
        log.info("dataset in memory: %d frames, cameras %s (%.0f MB)", self.num_frames, image_keys,
                 sum(v.nbytes for v in self.images.values()) / 1e6)

    def batch(self, indices: np.ndarray) -> dict[str, Any]:
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        out: dict[str, Any] = {}
        for key, values in self.arrays.items():
            if key in self.delta:
                want = idx[:, None] + self.delta[key][None, :]
                lo, hi = self.ep_start[idx][:, None], self.ep_end[idx][:, None] - 1
                pad = (want < lo) | (want > hi)
                out[key] = torch.from_numpy(np.ascontiguousarray(values[np.clip(want, lo, hi)], dtype=np.float32))
                out[f"{key}_is_pad"] = torch.from_numpy(pad)
            else:
                out[key] = torch.from_numpy(np.ascontiguousarray(values[idx]))
        for key, values in self.images.items():
            if key in self.delta:  # an observation history: [B, T, C, H, W], as LeRobot stacks it
                want = idx[:, None] + self.delta[key][None, :]
                lo, hi = self.ep_start[idx][:, None], self.ep_end[idx][:, None] - 1
                out[key] = torch.from_numpy(values[np.clip(want, lo, hi)]).float().div_(255.0)
                out[f"{key}_is_pad"] = torch.from_numpy((want < lo) | (want > hi))
            else:
                out[key] = torch.from_numpy(values[idx]).float().div_(255.0)
        out["task"] = [self.tasks[i] for i in idx]
        out["index"] = torch.from_numpy(idx)
        return out
