"""Conversion throughput and where its time goes: a generated episode set (640x480, three cameras, 50 Hz) ->
LeRobotDataset v3, by our converter and, side by side on the same episodes, by LeRobot's dataset writer used the
plain way.

    h1-training bench convert --json
    h1-training bench convert --episodes 20 --seconds 3 --vcodec libsvtav1
    h1-training bench convert --resize 224x224 --json
    h1-training bench convert --no-plain --json          # ours alone

The plain side (``write_plain``) is what the seed's converter does: for every frame, decode the JPEGs and
``LeRobotDataset.add_frame``, then ``save_episode`` per episode, with ``LeRobotDataset.create``'s defaults
(frames written as PNG files by ``add_frame``, then encoded per camera in a process pool by ``save_episode`` with
LeRobot's default codec, ``libsvtav1``; ``--plain-vcodec h264`` for the same codec as ours). It writes the same
features and values as ours (``training.convert``'s feature table and action derivation), so only the writing
differs. It runs in its own process too: ``peak_rss_mb.lerobot_plain`` is that process's peak and
``peak_rss_mb.lerobot_plain_encoders`` the largest of its encoder processes (``RUSAGE_CHILDREN``).
``ratio`` = ``convert_frames_per_s`` / ``lerobot_plain_frames_per_s`` (target >= 3); ``cpu_ratio`` = the plain
side's CPU time per frame (its process and its encoder processes) / ours (the comparison that a busy shared machine
moves least: the two sides run one after the other, under whatever load there is then); ``profile_plain``
splits its wall time into decode (JPEG), resize, ``add_frame`` (the PNG writes) and ``save_episode`` (video
encoding, image statistics, parquet).

Episodes are written with ``layout.write_episode`` (``training/synthetic.py``: textured scenes with per-frame
sensor noise, JPEG quality 85, 40-60 kB per frame, a human correction in the middle of each); generation is timed
apart from conversion. The conversion runs in its own process, so ``peak_rss_mb`` is the conversion's alone (the
kernel's peak for that process), and its CPU time is split by thread (``/proc/self/task/*/stat``, sampled every
0.1 s) into the stages of the pipeline (``profile``):

- ``decode`` / ``resize``: the JPEG pool threads (``cv2.imdecode`` of 640x480 frames, then ``cv2.resize`` when
  ``--resize`` asks for another size; split by a single-thread timing of both on a sample of the frames);
- ``encode``: LeRobot's per-camera encoder threads (RGB -> YUV, H.264 via PyAV, per-frame running image
  statistics) and the codec's own threads;
- ``write``: the main thread (``add_frame``, ``save_episode``: parquet, metadata, episode statistics);
- ``read``: the HDF5 reader thread.

Default 20 x 2 s (2000 frames): 1-2 minutes for ours on a 2-core machine, several more for the plain side.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from h1_training.bench.report import size_arg

HELP = "HDF5 -> LeRobotDataset conversion frames/s, per-stage CPU profile and peak RSS on a generated set"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each episode")
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--resize", type=size_arg, default=None, metavar="WxH", help="dataset image size")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="JPEG decoding threads")
    parser.add_argument("--vcodec", default="h264", choices=("h264", "hevc", "libsvtav1"))
    parser.add_argument("--min-frames-per-s", type=float, default=40.0,
                        help="target: conversion throughput (frames of three cameras per second)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the episodes and dataset under this folder")
    parser.add_argument("--no-plain", dest="plain", action="store_false",
                        help="skip the plain LeRobot writer (ours alone, no ratio)")
    parser.add_argument("--plain-vcodec", default="libsvtav1", choices=("h264", "hevc", "libsvtav1"),
                        help="codec of the plain LeRobot side (default: LeRobotDataset.create's own, libsvtav1)")
    parser.add_argument("--min-ratio", type=float, default=3.0,
                        help="target: our frames/s over the plain LeRobot writer's")


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# --- per-thread CPU accounting ----------------------------------------------------------------------------------
def _task_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


class _ThreadProfiler:
    """Samples every thread's CPU time and files it under a stage by the Python thread that runs it."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.cpu: dict[int, float] = {}
        self.stage: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-profiler", daemon=True)

    def _classify(self) -> None:
        main = threading.main_thread().native_id
        for th in threading.enumerate():
            if th.native_id is None or th.native_id in self.stage:
                continue
            name = type(th).__name__
            if th.native_id == main:
                stage = "write"
            elif th.name.startswith("jpeg"):
                stage = "decode+resize"
            elif th.name.startswith("hdf5"):
                stage = "read"
            elif "Encoder" in name:
                stage = "encode"
            elif th is self._thread:
                stage = "profiler"
            else:
                stage = "other python threads"
            self.stage[th.native_id] = stage

    def sample(self) -> None:
        self._classify()
        for tid, secs in _task_cpu().items():
            self.cpu[tid] = max(self.cpu.get(tid, 0.0), secs)

    def _run(self) -> None:
        from h1_training.rates import Ticker

        ticker = Ticker(1.0 / self.period)
        while ticker.wait(self._stop) is not None:
            self.sample()

    def __enter__(self) -> _ThreadProfiler:
        self.base = _task_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def by_stage(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, secs in self.cpu.items():
            # native threads nobody in Python started: the video codec's worker threads (libx264 threads=auto),
            # OpenCV's and the BLAS libraries' pools
            stage = self.stage.get(tid, "native threads")
            out[stage] = out.get(stage, 0.0) + secs - self.base.get(tid, 0.0)
        return out


def _decode_resize_split(episodes: Path, resize: tuple[int, int] | None,
                         n: int = 30) -> tuple[float, float, float]:
    """Single-thread ms per frame of JPEG decode and of resize, and the mean JPEG kB, on the generated set."""
    import cv2
    import h5py

    from h1_training.jpeg import decode_jpeg_rgb
    from h1_training.recording import layout as L

    path = next(episodes.rglob(L.EPISODE_GLOB))
    with h5py.File(path, "r") as f:
        frames = [bytes(f[L.IMAGE_KEYS[0]][i]) for i in range(min(n, len(f[L.IMAGE_KEYS[0]])))]
    t0 = time.thread_time()
    images = [decode_jpeg_rgb(b) for b in frames]
    decode = (time.thread_time() - t0) / len(frames)
    resize_s = 0.0
    if resize is not None and images[0].shape[1::-1] != tuple(resize):
        t0 = time.thread_time()
        for img in images:
            cv2.resize(img, resize, interpolation=cv2.INTER_AREA)
        resize_s = (time.thread_time() - t0) / len(images)
    return decode * 1e3, resize_s * 1e3, sum(map(len, frames)) / len(frames) / 1e3


def _convert_child(episodes: Path, dataset: Path, workers: int, vcodec: str,
                   resize: tuple[int, int] | None) -> dict[str, Any]:
    """In a fresh process: convert, with the per-thread CPU profile and this process's peak RSS."""
    import resource

    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401 - imports are not the conversion's time

    from h1_training.bench.report import self_peak_rss_mb
    from h1_training.training.convert import convert_sessions

    before = resource.getrusage(resource.RUSAGE_SELF)
    with _ThreadProfiler() as prof:
        summary = convert_sessions([episodes], dataset, workers=workers, vcodec=vcodec, resize=resize,
                                   overwrite=True, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"summary": summary.to_dict(), "stages_cpu_s": prof.by_stage(), "peak_rss_mb": self_peak_rss_mb(),
            "process_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def write_plain(episodes: Path, dataset: Path, vcodec: str = "libsvtav1",
                resize: tuple[int, int] | None = None) -> dict[str, Any]:
    """LeRobot's dataset writer the plain way: ``LeRobotDataset.create`` (its defaults but ``vcodec``), then per
    frame the decoded images and ``add_frame``, per episode ``save_episode``. Same features, values and order as
    ``training.convert.convert_sessions`` (its feature table, action derivation and episode order), so a dataset of
    the same frames. Returns frames, episodes, wall time and the time of each stage (seconds)."""
    import warnings

    import av
    import cv2
    import datasets
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from h1_training.policy.models.base import (
        ACTION_KEY,
        INTERVENTION_KEY,
        STATE_KEY,
        ensure_offline_hub,
        image_key,
    )
    from h1_training.policy.obs import HDF5_TO_OBS_CAMERA
    from h1_training.recording.reader import open_episode
    from h1_training.training.convert import DEFAULT_REPO_ID, DEFAULT_TASK, _features, derive_actions, find_episodes

    ensure_offline_hub()
    av.logging.set_libav_level(av.logging.ERROR)
    datasets.disable_progress_bars()
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (its banner is 20 lines per encoded video)
    stages = {"decode": 0.0, "resize": 0.0, "add_frame": 0.0, "save_episode": 0.0}
    ds = None
    frames = n_episodes = 0
    t_start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Conversion of an array with ndim > 0", category=DeprecationWarning)
        for path in find_episodes([episodes]):
            with open_episode(path) as ep:
                if ds is None:
                    h, w = ep.cameras[next(iter(HDF5_TO_OBS_CAMERA))].rgb(0).shape[:2]
                    if resize is not None:
                        w, h = resize
                    ds = LeRobotDataset.create(DEFAULT_REPO_ID, fps=int(round(ep.fps)), root=dataset,
                                               features=_features((h, w, 3)), robot_type="unitree_h1_2",
                                               vcodec=vcodec)
                actions, intervention, _ = derive_actions(ep.qpos, ep.action, ep.phase)
                qpos = ep.qpos.astype(np.float32)
                task = str(ep.attrs.get("prompt") or DEFAULT_TASK)
                for i in range(ep.length):
                    t0 = time.perf_counter()
                    images = {image_key(name): ep.cameras[cam].rgb(i) for cam, name in HDF5_TO_OBS_CAMERA.items()}
                    t1 = time.perf_counter()
                    if resize is not None:
                        images = {k: cv2.resize(v, resize, interpolation=cv2.INTER_AREA) if v.shape[1::-1] !=
                                  tuple(resize) else v for k, v in images.items()}
                    t2 = time.perf_counter()
                    ds.add_frame({STATE_KEY: qpos[i], ACTION_KEY: actions[i],
                                  INTERVENTION_KEY: intervention[i:i + 1], **images, "task": task})
                    t3 = time.perf_counter()
                    stages["decode"] += t1 - t0
                    stages["resize"] += t2 - t1
                    stages["add_frame"] += t3 - t2
                t0 = time.perf_counter()
                ds.save_episode()
                stages["save_episode"] += time.perf_counter() - t0
                frames += ep.length
                n_episodes += 1
        if ds is not None:
            ds.finalize()
    return {"frames": frames, "episodes": n_episodes, "duration_s": time.perf_counter() - t_start,
            "stages_s": stages}


def _plain_child(episodes: Path, dataset: Path, vcodec: str, resize: tuple[int, int] | None) -> dict[str, Any]:
    """In a fresh process: the plain LeRobot writer, with this process's peak RSS and its encoders' largest."""
    import resource

    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401 - imports are not the conversion's time

    from h1_training.bench.report import self_peak_rss_mb

    before = resource.getrusage(resource.RUSAGE_SELF)
    out = write_plain(episodes, dataset, vcodec, resize)
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.update(peak_rss_mb=self_peak_rss_mb(), encoders_peak_rss_mb=round(children.ru_maxrss / 1024.0, 1),
               process_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
               encoders_cpu_s=children.ru_utime + children.ru_stime)
    return out


def _plain_figures(plain: dict[str, Any], ours_fps: float, ours_cpu_s: float, ours_frames: int) -> dict[str, Any]:
    rate = plain["frames"] / plain["duration_s"] if plain["duration_s"] > 0 else 0.0
    stages = plain["stages_s"]
    ours_cpu = ours_cpu_s * 1e3 / max(1, ours_frames)
    plain_cpu = (plain["process_cpu_s"] + plain["encoders_cpu_s"]) * 1e3 / max(1, plain["frames"])
    return {
        # CPU time per frame (all processes and threads of each side): the comparison a busy machine moves least
        "cpu_ms_per_frame": {"convert": round(ours_cpu, 1), "lerobot_plain": round(plain_cpu, 1)},
        "cpu_ratio": round(plain_cpu / ours_cpu, 2) if ours_cpu > 0 else None,
        "lerobot_plain_frames_per_s": round(rate, 2),
        "lerobot_plain_s": round(plain["duration_s"], 2),
        "lerobot_plain_frames": plain["frames"],
        "ratio": round(ours_fps / rate, 2) if rate > 0 else None,
        "profile_plain": {
            "wall_share": {k: round(v / plain["duration_s"], 3) for k, v in stages.items()},
            "ms_per_frame": {k: round(v * 1e3 / max(1, plain["frames"]), 2) for k, v in stages.items()},
            "cpu_s": {"main_process": round(plain["process_cpu_s"], 1),
                      "encoder_processes": round(plain["encoders_cpu_s"], 1)},
        },
    }


def run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import Target, evaluate
    from h1_training.training.synthetic import write_session

    frames = max(2, int(round(args.seconds * args.fps)))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="h1_bench_convert_"))
    try:
        t0 = time.perf_counter()
        write_session(work / "episodes", 1, args.episodes, frames, args.width, args.height, args.fps,
                      workers=args.workers)
        generate_s = time.perf_counter() - t0
        hdf5_mb = _size_mb(work / "episodes")
        decode_ms, resize_ms, jpeg_kb = _decode_resize_split(work / "episodes", args.resize)
        with mp.get_context("spawn").Pool(1) as pool:
            child = pool.apply(_convert_child, (work / "episodes", work / "dataset", args.workers, args.vcodec,
                                                args.resize))
        s = child["summary"]
        stages = dict(child["stages_cpu_s"])
        both = stages.pop("decode+resize", 0.0)
        share_resize = resize_ms / (decode_ms + resize_ms) if decode_ms + resize_ms > 0 else 0.0
        stages["decode"], stages["resize"] = both * (1 - share_resize), both * share_resize
        stages.pop("profiler", None)
        total = sum(stages.values()) or 1.0
        n = max(1, s["frames"])
        figures: dict[str, Any] = {
            "convert_frames_per_s": round(s["frames_per_s"], 2),
            "convert_s": round(s["duration_s"], 2),
            "episodes": s["episodes"],
            "frames": s["frames"],
            "skipped": len(s["skipped"]),
            "fps": s["fps"],
            "image_shape": s["image_shape"],
            "vcodec": args.vcodec,
            "workers": args.workers,
            "generate_s": round(generate_s, 2),
            "hdf5_mb": round(hdf5_mb, 1),
            "dataset_mb": round(_size_mb(work / "dataset"), 1),
            "peak_rss_mb": {"convert": child["peak_rss_mb"]},
            "cpu_s": round(child["process_cpu_s"], 1),
            "cpu_cores_busy": round(child["process_cpu_s"] / s["duration_s"], 2) if s["duration_s"] else None,
            "profile": {
                "cpu_share": {k: round(v / total, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
                "cpu_ms_per_frame": {k: round(v * 1e3 / n, 2) for k, v in stages.items()},
                "single_thread_ms_per_camera_frame": {"decode": round(decode_ms, 2), "resize": round(resize_ms, 2)},
            },
            "inputs": {"episodes": args.episodes, "frames_per_episode": frames, "cameras": 3,
                       "camera_size": f"{args.width}x{args.height}", "jpeg_kb": round(jpeg_kb, 1),
                       "resize": "x".join(map(str, args.resize)) if args.resize else None},
        }
        targets = [Target("convert_frames_per_s", ">=", args.min_frames_per_s), Target("skipped", "==", 0),
                   Target("peak_rss_mb.convert", "<=", 3000.0)]
        if getattr(args, "plain", True):
            # its own process (peak RSS of its own); not a multiprocessing.Pool worker: those are daemonic and
            # save_episode starts its encoder processes
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                plain = pool.submit(_plain_child, work / "episodes", work / "plain", args.plain_vcodec,
                                    args.resize).result()
            figures.update(_plain_figures(plain, s["frames_per_s"], child["process_cpu_s"], s["frames"]))
            figures["plain_vcodec"] = args.plain_vcodec
            figures["peak_rss_mb"].update(lerobot_plain=plain["peak_rss_mb"],
                                          lerobot_plain_encoders=plain["encoders_peak_rss_mb"])
            targets += [Target("ratio", ">=", args.min_ratio),
                        Target("lerobot_plain_frames", "==", s["frames"])]
        figures["targets"] = evaluate(figures, targets)
        return figures
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
