"""Convert seed-format HDF5 episodes into a LeRobotDataset (v3 layout of lerobot 0.4.4).

Examples::

    h1-training convert data/h1_data_auto/training_session_epoch3 data/lerobot/epoch3
    h1-training convert data/h1_data_auto data/lerobot/all --overwrite          # every session under a save_dir
    h1-training convert data/synced/training_session_epoch* data/lerobot/e1-5 --resize 320x240 --json

Human-correction frames (zero action in the seed format) get their action from the recorded trajectory
(qpos[t + lookahead]) and are flagged in the ``intervention`` column; bad episodes are skipped with a reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from h1_training.bench.report import size_arg

HELP = "convert HDF5 episodes to a LeRobotDataset (v3)"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="SESSION",
                        help="episode files, session folders (training_session_epochN) or a save_dir; the last "
                             "path given is the output dataset folder")
    parser.add_argument("--repo-id", default="local/h1_training", help="the dataset's repo id (never pushed)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="JPEG decoding threads")
    parser.add_argument("--task", default="manipulation", help="task text for episodes without a 'prompt' attr")
    parser.add_argument("--lookahead", type=int, default=1,
                        help="human frames: action = qpos[t + LOOKAHEAD] (frames, default 1)")
    parser.add_argument("--vcodec", default="h264", choices=("h264", "hevc", "libsvtav1"), help="video codec")
    parser.add_argument("--resize", type=size_arg, default=None, metavar="WxH",
                        help="image size in the dataset (default: the head camera's)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import logging

    from h1_training.training.convert import convert_sessions

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.inputs) < 2:
        print("error: give at least one session and the output folder", file=sys.stderr)
        return 2
    *sessions, out = args.inputs
    try:
        summary = convert_sessions(sessions, out, repo_id=args.repo_id, workers=args.workers, task=args.task,
                                   lookahead=args.lookahead, vcodec=args.vcodec, resize=args.resize,
                                   overwrite=args.overwrite, progress=not args.no_progress)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(f"{summary.episodes} episode(s), {summary.frames} frames ({summary.human_frames} human) at "
              f"{summary.fps} Hz -> {summary.out_dir} in {summary.duration_s:.1f} s ({summary.frames_per_s:.0f} "
              f"frames/s)")
        for skipped in summary.skipped:
            print(f"  skipped {skipped.path}: {skipped.reason}")
    return 0 if summary.episodes else 1
