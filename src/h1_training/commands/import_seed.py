"""Copy a seed data folder into our layout, verifying every frame; the source is only ever read.

Any variant the seed wrote is taken (the recording client's ``cam_head`` JPEG files, ``ego_cam`` JPEG or raw RGB
arrays, with or without phase). Episodes land in ``DST/training_session_epoch<E>/episode_<i>.hdf5``, E from the
``epoch_<E>`` folder they were in (else ``--epoch``); JPEG frames are copied byte for byte, raw frames encoded at
quality 85 and checked against the source; a camera the source lacks gets flagged placeholder frames.
``DST/seed_import.json`` records what was imported, so running it again only adds new files. Unusable episodes
(truncated, no head camera, frames that do not decode) are skipped with the reason; the exit code is 1 when
something was skipped.

    h1-training import-seed ~/openpi/examples/h1_control_client/h1_data_auto data/h1_data
    h1-training import-seed converted/move_lid data/h1_data --epoch 0 --json
    h1-training inspect data/h1_data && h1-training convert data/h1_data data/lerobot/all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "copy a seed data folder (any of its HDF5 variants) into our layout, verifying every frame"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="a seed data folder (searched recursively) or one episode file")
    parser.add_argument("dst", type=Path, help="our save_dir: episodes go to DST/training_session_epoch<E>/")
    parser.add_argument("--epoch", type=int, default=1,
                        help="epoch for episodes not under an epoch_<E> folder (default 1)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from h1_training.recording.seed import import_seed

    if args.epoch < 0:
        print(f"error: --epoch must be >= 0, got {args.epoch}", file=sys.stderr)
        return 2
    try:
        report = import_seed(args.src, args.dst, epoch=args.epoch,
                             log=(lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines()[len(report.done):]:
            if not line.startswith("skipped"):
                print(line)
        print(f"{len(report.done)} imported, {len(report.already)} already imported, {len(report.skipped)} skipped "
              f"-> {args.dst}")
    return 1 if report.skipped or not (report.done or report.already) else 0
