"""Conversion throughput: a generated 20-episode set (640x480, three cameras, 50 Hz) -> LeRobotDataset v3.

    h1-training bench convert --json
    h1-training bench convert --episodes 20 --seconds 3 --vcodec libsvtav1

Episodes are written with ``layout.write_episode`` (synthetic scenes with per-frame sensor noise, JPEG quality 85,
a human correction in the middle of each); generation is timed apart from conversion. Default 20 x 2 s (2000
frames): about 1-2 minutes on this 2-core machine, most of it H.264 encoding (~13 ms per 640x480 frame per
camera) and LeRobot's per-frame image statistics (~6 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

HELP = "HDF5 -> LeRobotDataset conversion frames/s on a generated 20-episode set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each episode")
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="JPEG decoding threads")
    parser.add_argument("--vcodec", default="h264", choices=("h264", "hevc", "libsvtav1"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the episodes and dataset under this folder")


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def run(args: argparse.Namespace) -> dict:
    from h1_training.training.convert import convert_sessions
    from h1_training.training.synthetic import write_session

    frames = max(2, int(round(args.seconds * args.fps)))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="h1_bench_convert_"))
    try:
        t0 = time.perf_counter()
        write_session(work / "episodes", 1, args.episodes, frames, args.width, args.height, args.fps,
                      workers=args.workers)
        generate_s = time.perf_counter() - t0
        hdf5_mb = _size_mb(work / "episodes")
        load = os.getloadavg()[0]
        summary = convert_sessions([work / "episodes"], work / "dataset", workers=args.workers, vcodec=args.vcodec,
                                   overwrite=True, progress=False)
        return {
            "convert_frames_per_s": round(summary.frames_per_s, 2),
            "convert_s": round(summary.duration_s, 2),
            "episodes": summary.episodes,
            "frames": summary.frames,
            "skipped": len(summary.skipped),
            "fps": summary.fps,
            "image_shape": summary.image_shape,
            "cameras": 3,
            "vcodec": args.vcodec,
            "workers": args.workers,
            "generate_s": round(generate_s, 2),
            "hdf5_mb": round(hdf5_mb, 1),
            "dataset_mb": round(_size_mb(work / "dataset"), 1),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": round(load, 2),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
