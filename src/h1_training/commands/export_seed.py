"""Write episodes in the variant the seed's converter reads, so a seed user can go back.

The seed's ``convert_h1_data_to_lerobot.py`` reads ``observations/images/ego_cam`` as raw RGB arrays (ours holds
JPEG bytes, as the seed README documents, which it cannot read). Each episode (any variant) is written to
``DST/<its folder>/<its name>`` with ``ego_cam`` as raw [T,H,W,3] uint8 (gzip), wrist cameras as JPEG bytes, qpos,
action and phase as the seed client writes them, and the seed client's attrs (``advantage`` from our success
label); every frame is checked against the source, nothing is overwritten. The dataset manager's export service
offers the same as format ``seed``.

    h1-training export-seed data/h1_data/training_session_epoch3 out/seed_epoch3
    # then, in the seed checkout: convert_h1_data_to_lerobot.py --data_dir out/seed_epoch3/training_session_epoch3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "write episodes in the HDF5 variant the seed's converter reads (ego_cam as raw RGB arrays)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="SRC",
                        help="episode files or folders (searched recursively); the last path is the output folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from h1_training.recording.seed import export_seed, find_sources

    if len(args.inputs) < 2:
        print("error: give at least one source and the output folder", file=sys.stderr)
        return 2
    *sources, dst = args.inputs
    try:
        episodes = [p for s in sources for p in find_sources(s)]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = export_seed(episodes, dst, log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{len(report.done)} exported, {len(report.skipped)} skipped -> {dst}")
    return 1 if report.skipped or not report.done else 0
