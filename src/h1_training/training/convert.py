"""HDF5 episodes (any variant of the seed's, read through ``recording.reader``) -> a LeRobotDataset (v3 layout of
lerobot 0.4.4).

    from h1_training.training.convert import convert_sessions
    summary = convert_sessions([Path("data/h1_data_auto/training_session_epoch3")], Path("data/lerobot/epoch3"))

Features of the dataset::

    observation.state                  [14] float32  qpos (robot_model.ARM_JOINT_NAMES)
    action                             [14] float32  policy frames: the recorded command;
                                                     human frames: qpos[t + lookahead] (see derive_actions)
    observation.images.cam_head        video HxWx3   (the HDF5's ego_cam; the name the policy server receives)
    observation.images.cam_left_wrist  video HxWx3
    observation.images.cam_right_wrist video HxWx3
    intervention                       [1] int64     1 = human correction frame, 0 = policy frame

Choices and why:
- fps is the episodes' recorded rate (``attrs["fps"]``, 50 Hz on the H1), never a constant; an episode at another
  rate than the first valid one is skipped (one dataset has one fps).
- Videos are encoded while frames are added (LeRobot's streaming encoder: no PNG round trip, which costs ~28 ms per
  640x480 frame here against ~8 ms for H.264). Its queue drops frames when full, which is right for live recording
  and wrong for conversion, so frames are only handed over when every camera's queue has room (``_wait_for_room``).
- JPEG decoding runs in a thread pool: ``cv2.imdecode`` releases the GIL, so threads decode in parallel without
  copying ~1 MB frames between processes; the next episode is read from disk while the current one is encoded.
- Image statistics (LeRobot computes running per-channel quantiles of every frame in its encoder threads) are taken
  on frames strided to at most ``STATS_MAX_SIDE`` px a side (``_cheap_image_stats``). ``h1-training bench convert``'s
  profile showed them costing more than the H.264 encoding: 4.2 ms per 640x480 camera frame (LeRobot strides it to
  160x120) against ~1.7 ms of encoding, and 9.5 ms at 224x224, which LeRobot does not downsample at all (under
  300 px) -- which is why ``--resize 224x224`` converted no faster than full size. 80x60 px per frame, over every
  frame of a dataset, estimates the normalization statistics of pixel values as well; the stats cost ~1.3 ms.
- A bad episode (unreadable, contract broken, truncated, undecodable JPEG, non-finite values, wrong rate) is skipped
  and the reason is kept in the summary; the run goes on.
- Every variant the seed wrote converts (``recording.reader``): the head camera as ``cam_head`` or ``ego_cam``, JPEG
  or raw RGB frames, with or without phase. A camera the file did not record (the seed's Humanoid Everyday converter
  keeps only the head camera) gets black frames, as the seed's own converter does, and is listed in the summary
  (``filled_cameras``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from h1_training.policy.models.base import (
    ACTION_KEY,
    INTERVENTION_KEY,
    STATE_KEY,
    ensure_offline_hub,
    image_key,
)
from h1_training.policy.obs import HDF5_TO_OBS_CAMERA
from h1_training.recording.layout import EPISODE_GLOB, PROVENANCE_FILE, episode_index_of, is_excluded
from h1_training.recording.reader import EpisodeView, open_episode
from h1_training.robot_model import ARM_JOINT_NAMES, NUM_ARM_JOINTS

log = logging.getLogger("h1_training.convert")

DEFAULT_REPO_ID = "local/h1_training"
DEFAULT_TASK = "manipulation"
HUMAN = "human"
STATS_MAX_SIDE = 80  # px: image statistics on frames strided to at most this size a side (see the docstring)
_WINDOW = 32  # frames decoded ahead of the encoder (bounded memory: ~3 MB per frame at 640x480x3 cameras)


@dataclass
class SkippedEpisode:
    path: str
    reason: str


@dataclass
class ConvertSummary:
    out_dir: str
    repo_id: str
    fps: int | None = None                 # the dataset's rate (LeRobot wants an int)
    recorded_fps: float | None = None      # as recorded in the episodes' attrs
    image_shape: list[int] | None = None   # [H, W, 3]
    vcodec: str = ""
    episodes: int = 0
    frames: int = 0
    human_frames: int = 0
    derived_frames: int = 0                # action targets derived from qpos (human frames + empty policy rows)
    resized_frames: int = 0                # camera frames resized to the dataset's image shape
    filled_cameras: dict[str, list[str]] = field(default_factory=dict)  # episode -> cameras given black frames
    variants: dict[str, int] = field(default_factory=dict)  # reader.Variant.describe() -> converted episodes
    skipped: list[SkippedEpisode] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        return out


def find_episodes(paths: list[Path]) -> list[Path]:
    """Episode files under ``paths`` (files, session folders or a save_dir of sessions), in session then
    episode order. In-progress files (``episode_N.hdf5.partial``) do not match and are left alone; episodes flagged
    "exclude from training" (``recording.layout.is_excluded``) are left out."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob(EPISODE_GLOB), key=_episode_sort_key))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    seen: set[Path] = set()
    return [f for f in found if not (f.resolve() in seen or seen.add(f.resolve())) and not is_excluded(f)]


def _episode_sort_key(path: Path) -> tuple:
    index = episode_index_of(path)
    return (str(path.parent), index if index is not None else 1 << 30, path.name)


def derive_actions(qpos: np.ndarray, action: np.ndarray, phase: list[str],
                   lookahead: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Action targets for every frame. The seed records zeros as the action while the human moves the arm
    (damping), so a human frame's target is where the arm went: ``qpos[t + lookahead]`` (the last frame holds its
    own position). A policy frame keeps its recorded command, unless the row is all zeros (no command was recorded
    at that tick), which is derived the same way.

    Returns (actions [T, 14] float32, intervention [T] int64 (1 = human frame), derived [T] bool)."""
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1 frame, got {lookahead}")
    t = qpos.shape[0]
    human = np.array([p == HUMAN for p in phase], dtype=bool)
    empty = ~np.any(action != 0.0, axis=1)
    derived = human | empty
    target = np.minimum(np.arange(t) + lookahead, t - 1)
    out = np.array(action, dtype=np.float32, copy=True)
    out[derived] = qpos[target[derived]]
    return out, human.astype(np.int64), derived


def _fit(img: np.ndarray, shape_hw: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    if shape_hw is not None and img.shape[:2] != shape_hw:
        import cv2

        return cv2.resize(img, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_AREA), True
    return img, False


def _open_episode(path: Path) -> EpisodeView:
    """Open an episode for conversion (JPEG rows read into memory); ValueError with the reasons when unusable."""
    ep = open_episode(path)
    try:
        if ep.problems:
            raise ValueError("; ".join(ep.problems))
        for cam in ep.cameras.values():
            cam.preload()
        return ep
    except BaseException:
        ep.close()
        raise


def _check_episode(ep: EpisodeView, min_frames: int,
                   cameras: tuple[str, ...] = tuple(HDF5_TO_OBS_CAMERA)) -> str | None:
    if ep.length < min_frames:
        return f"too short: {ep.length} frames (need >= {min_frames})"
    if not np.all(np.isfinite(ep.qpos)):
        return "qpos contains NaN or inf"
    if not np.all(np.isfinite(ep.action)):
        return "action contains NaN or inf"
    if not (ep.fps and np.isfinite(ep.fps) and ep.fps > 0):
        return f"invalid fps attribute {ep.fps!r}"
    for cam, frames in ep.cameras.items():
        if cam not in cameras:
            continue
        empty = frames.empty_frames()
        if empty:
            return f"camera {cam} has {empty} empty frame(s) (truncated recording)"
    return None


def _features(image_shape: tuple[int, int, int], cameras: tuple[str, ...] = tuple(HDF5_TO_OBS_CAMERA)) -> dict:
    feats = {
        STATE_KEY: {"dtype": "float32", "shape": (NUM_ARM_JOINTS,), "names": list(ARM_JOINT_NAMES)},
        ACTION_KEY: {"dtype": "float32", "shape": (NUM_ARM_JOINTS,), "names": list(ARM_JOINT_NAMES)},
        INTERVENTION_KEY: {"dtype": "int64", "shape": (1,), "names": None},
    }
    for cam in cameras:
        feats[image_key(HDF5_TO_OBS_CAMERA[cam])] = {"dtype": "video", "shape": image_shape,
                                                     "names": ["height", "width", "channels"]}
    return feats


def _wait_for_room(ds, stop_after_s: float = 120.0) -> None:
    """Back-pressure on LeRobot's streaming encoder (lerobot 0.4.4 internals, pinned in setup.py): wait until every
    camera queue can take a frame, so that ``add_frame`` never drops one."""
    queues = getattr(getattr(ds, "_streaming_encoder", None), "_frame_queues", None) or {}
    deadline = time.monotonic() + stop_after_s
    while any(q.full() for q in queues.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"video encoder made no progress for {stop_after_s:.0f} s")
        time.sleep(0.001)


def _stats_downsample(img: np.ndarray, target_size: int = STATS_MAX_SIDE, max_size_threshold: int = 0) -> np.ndarray:
    """``img`` [C, H, W] strided so that neither side exceeds ``STATS_MAX_SIDE`` (a view, no copy). Same signature
    as ``lerobot.datasets.compute_stats.auto_downsample_height_width``, which it stands in for (the arguments of
    that one are ignored: one rule for every size)."""
    _, height, width = img.shape
    step = max(1, -(-max(height, width) // STATS_MAX_SIDE))
    return img[:, ::step, ::step]


@contextmanager
def _cheap_image_stats() -> Iterator[None]:
    """While converting, LeRobot's streaming encoder threads (lerobot 0.4.4, pinned in setup.py) downsample frames
    for their running image statistics with ``_stats_downsample``: each thread looks the function up in
    ``compute_stats`` when it starts, so it is swapped there, and put back afterwards."""
    from lerobot.datasets import compute_stats

    original = compute_stats.auto_downsample_height_width
    compute_stats.auto_downsample_height_width = _stats_downsample
    try:
        yield
    finally:
        compute_stats.auto_downsample_height_width = original


def _dropped_frames(ds) -> int:
    return sum((getattr(getattr(ds, "_streaming_encoder", None), "_dropped_frames", None) or {}).values())


class _Converter:
    def __init__(self, out_dir: Path, repo_id: str, workers: int, task: str, lookahead: int, vcodec: str,
                 resize: tuple[int, int] | None, min_frames: int, progress: bool,
                 cameras: tuple[str, ...] = tuple(HDF5_TO_OBS_CAMERA)) -> None:
        self.out_dir = out_dir
        self.cameras = cameras
        self.repo_id = repo_id
        self.task = task
        self.lookahead = lookahead
        self.vcodec = vcodec
        self.resize_hw = (resize[1], resize[0]) if resize else None
        self.min_frames = min_frames
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="jpeg")
        self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hdf5")
        self.ds = None
        self.summary = ConvertSummary(out_dir=str(out_dir), repo_id=repo_id, vcodec=vcodec)
        self._resized_lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.reader.shutdown(wait=True, cancel_futures=True)
        if self.ds is not None:
            self.ds.finalize()

    def _create(self, ep: EpisodeView) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        if self.resize_hw is None:
            # the first selected camera this file holds sets the size (a missing one is padded black below)
            cam = next((c for c in self.cameras if c in ep.cameras), next(iter(ep.cameras)))
            self.resize_hw = ep.cameras[cam].rgb(0).shape[:2]
        shape = (int(self.resize_hw[0]), int(self.resize_hw[1]), 3)
        fps = int(round(ep.fps))
        self.ds = LeRobotDataset.create(
            self.repo_id, fps=fps, root=self.out_dir, features=_features(shape, self.cameras),
            robot_type="unitree_h1_2",
            use_videos=True, streaming_encoding=True, vcodec=self.vcodec, video_backend="pyav",
            encoder_queue_maxsize=_WINDOW,
        )
        self.summary.fps = fps
        self.summary.recorded_fps = float(ep.fps)
        self.summary.image_shape = list(shape)

    def _decode_frame(self, ep: EpisodeView, i: int) -> dict[str, np.ndarray]:
        out = {}
        for cam in self.cameras:
            name = HDF5_TO_OBS_CAMERA[cam]
            frames = ep.cameras.get(cam)
            if frames is None:  # not recorded in this file: black, as the seed's converter pads a missing camera
                out[image_key(name)] = np.zeros((*self.resize_hw, 3), np.uint8)
                continue
            img, resized = _fit(frames.rgb(i), self.resize_hw)
            if resized:
                with self._resized_lock:
                    self.summary.resized_frames += 1
            out[image_key(name)] = img
        return out

    def _decoded(self, ep: EpisodeView) -> Iterator[dict[str, np.ndarray]]:
        """Frames in order, decoded up to one window ahead."""
        pending: list[Future] = []
        nxt = 0
        while nxt < ep.length or pending:
            while nxt < ep.length and len(pending) < _WINDOW:
                pending.append(self.pool.submit(self._decode_frame, ep, nxt))
                nxt += 1
            yield pending.pop(0).result()

    def _write(self, ep: EpisodeView, bar) -> None:
        actions, intervention, derived = derive_actions(ep.qpos, ep.action, ep.phase, self.lookahead)
        task = str(ep.attrs.get("prompt") or self.task)
        qpos = ep.qpos.astype(np.float32)
        frames = self._decoded(ep)
        try:
            for i, images in enumerate(frames):
                _wait_for_room(self.ds)
                self.ds.add_frame({STATE_KEY: qpos[i], ACTION_KEY: actions[i],
                                   INTERVENTION_KEY: intervention[i:i + 1], **images, "task": task})
                if bar is not None:
                    bar.update(1)
            dropped = _dropped_frames(self.ds)
            if dropped:
                raise RuntimeError(f"the video encoder dropped {dropped} frame(s)")
        except BaseException:
            frames.close()
            self.ds.clear_episode_buffer()
            raise
        self.ds.save_episode()
        s = self.summary
        s.episodes += 1
        s.frames += ep.length
        s.human_frames += int(intervention.sum())
        s.derived_frames += int(derived.sum())
        desc = ep.variant.describe()
        s.variants[desc] = s.variants.get(desc, 0) + 1
        if ep.missing_cameras:
            s.filled_cameras[str(ep.path)] = list(ep.missing_cameras)

    def run(self, episodes: list[Path]) -> ConvertSummary:
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=_count_frames(episodes), unit="frame", desc="convert", dynamic_ncols=True)
        futures = [self.reader.submit(_open_episode, episodes[0])] if episodes else []
        try:
            for n, path in enumerate(episodes):
                if n + 1 < len(episodes):  # read the next file while this one is encoded
                    futures.append(self.reader.submit(_open_episode, episodes[n + 1]))
                ep = None
                try:
                    ep = futures[n].result()
                    futures[n] = None  # free the JPEG bytes once converted
                    problem = _check_episode(ep, self.min_frames, self.cameras)
                    if problem is None and self.ds is not None and int(round(ep.fps)) != self.summary.fps:
                        problem = f"recorded at {ep.fps:g} Hz, the dataset is {self.summary.fps} Hz"
                    if problem is not None:
                        raise ValueError(problem)
                    if self.ds is None:
                        self._create(ep)
                    self._write(ep, bar)
                    self.summary.sources.append(str(path))
                except (ValueError, RuntimeError, OSError, KeyError) as exc:
                    reason = str(exc).replace(f"{path}: ", "")
                    log.warning("skipping %s: %s", path, reason)
                    self.summary.skipped.append(SkippedEpisode(str(path), reason))
                finally:
                    if ep is not None:
                        ep.close()
                if bar is not None:
                    bar.set_postfix(episodes=self.summary.episodes, skipped=len(self.summary.skipped))
        finally:
            if bar is not None:
                bar.close()
            for fut in futures:  # episodes opened ahead of a failure that ended the run
                if fut is not None and fut.done() and fut.exception() is None:
                    fut.result().close()
        return self.summary


def _count_frames(episodes: list[Path]) -> int:
    """Frames the files hold (shapes only; a damaged file counts 0), for the progress bar."""
    total = 0
    for p in episodes:
        try:
            with open_episode(p) as ep:
                total += ep.length
        except ValueError:
            pass
    return total


def convert_sessions(sessions: list[Path], out_dir: Path, repo_id: str = DEFAULT_REPO_ID,
                     workers: int = min(4, os.cpu_count() or 1), *, task: str = DEFAULT_TASK, lookahead: int = 1,
                     vcodec: str = "h264", resize: tuple[int, int] | None = None, overwrite: bool = False,
                     min_frames: int = 2, progress: bool = True,
                     cameras: tuple[str, ...] | None = None) -> ConvertSummary:
    """Convert the episodes under ``sessions`` into a LeRobotDataset at ``out_dir`` (its ``root``).

    ``resize``: (width, height) of the dataset's images; default: the first episode's head camera size (all
    cameras share one size, as ACT and Diffusion require). ``vcodec``: "h264" (default: fast to encode and decode on
    a CPU), "hevc" or "libsvtav1" (LeRobot's default, smaller, ~2x slower to encode here). ``cameras``: the HDF5
    cameras to convert (default: all three; a policy that looks at one camera needs only that one). Writes
    ``out_dir/h1_conversion.json`` (the summary: sources, skipped episodes with reasons, rates) beside the dataset.
    Raises FileExistsError when ``out_dir`` holds something and ``overwrite`` is False; a run where every episode
    is skipped returns a summary with ``episodes == 0`` and creates no dataset.
    """
    ensure_offline_hub()
    import av
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401 - import cost stays out of the timing

    # FFmpeg prints muxer/encoder chatter at INFO; lerobot restores the default callback after every file, so the
    # level is set in libav itself rather than through the Python callback.
    av.logging.set_libav_level(av.logging.ERROR)
    datasets.disable_progress_bars()        # one progress bar (ours), not one per saved episode
    out_dir = Path(out_dir)
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1 frame, got {lookahead}")
    if resize is not None and (len(resize) != 2 or min(resize) < 8 or any(v % 2 for v in resize)):
        raise ValueError(f"resize must be (width, height), even and >= 8 px (video encoders need even sizes): {resize}")
    cams = tuple(cameras) if cameras else tuple(HDF5_TO_OBS_CAMERA)
    unknown = [c for c in cams if c not in HDF5_TO_OBS_CAMERA]
    if unknown:
        raise ValueError(f"unknown camera(s) {unknown}; the episodes hold {list(HDF5_TO_OBS_CAMERA)}")
    episodes = find_episodes(sessions)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty (use overwrite=True / --overwrite to replace it)")
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()  # LeRobotDataset.create insists on making the folder itself
    t0 = time.perf_counter()
    conv = _Converter(out_dir, repo_id, workers, task, lookahead, vcodec, resize, min_frames, progress, cams)
    with warnings.catch_warnings(), _cheap_image_stats():
        # datasets encodes LeRobot's shape-(1,) columns (our intervention flag) with int(array): NumPy deprecation
        warnings.filterwarnings("ignore", message="Conversion of an array with ndim > 0", category=DeprecationWarning)
        try:
            summary = conv.run(episodes)
        finally:
            conv.close()
    summary.duration_s = time.perf_counter() - t0
    if summary.episodes:
        (out_dir / PROVENANCE_FILE).write_text(json.dumps(summary.to_dict(), indent=2))
    elif out_dir.exists():
        shutil.rmtree(out_dir)  # every episode was skipped: leave no empty dataset behind
    log.info("converted %d episode(s), %d frames in %.1f s (%.0f frames/s); skipped %d",
             summary.episodes, summary.frames, summary.duration_s, summary.frames_per_s, len(summary.skipped))
    return summary


