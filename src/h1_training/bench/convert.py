"""Conversion throughput and where its time goes: a generated episode set (640x480, three cameras, 50 Hz) ->
LeRobotDataset v3.

    h1-training bench convert --json
    h1-training bench convert --episodes 20 --seconds 3 --vcodec libsvtav1
    h1-training bench convert --resize 224x224 --json

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

Default 20 x 2 s (2000 frames): 1-2 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HELP = "HDF5 -> LeRobotDataset conversion frames/s, per-stage CPU profile and peak RSS on a generated set"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from exc
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each episode")
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--resize", type=_size, default=None, metavar="WxH", help="dataset image size")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="JPEG decoding threads")
    parser.add_argument("--vcodec", default="h264", choices=("h264", "hevc", "libsvtav1"))
    parser.add_argument("--min-frames-per-s", type=float, default=40.0,
                        help="target: conversion throughput (frames of three cameras per second)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the episodes and dataset under this folder")


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
        figures["targets"] = evaluate(figures, [Target("convert_frames_per_s", ">=", args.min_frames_per_s),
                                                Target("skipped", "==", 0),
                                                Target("peak_rss_mb.convert", "<=", 3000.0)])
        return figures
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
