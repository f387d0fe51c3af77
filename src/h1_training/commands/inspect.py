"""Check recorded episodes (any variant of the seed's HDF5) and report on them.

For each episode: the variant it is in (ours, or e.g. "seed client layout, cam_head JPEG": every variant the seed
wrote is read), what was derived because the file lacks it, frames, duration, achieved rate, missed ticks,
policy/human split, success label, and camera problems (placeholder and stale shares, frames that do not decode,
cameras not recorded). Files that cannot be used (a truncated dataset, no head camera, unreadable) are INVALID with
the reason and make the exit code 1. Unsaved ``*.hdf5.partial`` files (recording now, or left by a crash) are
listed; ``--repair`` turns those left by a crash into valid truncated episodes (what the recorder does at start-up).

    h1-training inspect data/h1_data_sim
    h1-training inspect data/h1_data_sim/training_session_epoch1/episode_0.hdf5 --json
    h1-training inspect data/h1_data_sim --decode all --repair
"""

from __future__ import annotations

import argparse
import json

HELP = "check episode files (or a folder of them), in any variant of the seed's HDF5, and report on them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="an episode_N.hdf5 file or a folder searched recursively")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--decode", choices=("sample", "quick", "all", "none"), default="sample",
                        help="JPEGs to decode per camera: 12 spread over the episode (default), quick (first, "
                        "middle, last: "
                        "the catalog's scan), all, none")
    parser.add_argument("--repair", action="store_true",
                        help="repair *.hdf5.partial files left by a crash before inspecting")


def _fmt(v, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from h1_training.recording.inspect import inspect_path
    from h1_training.recording.layout import PARTIAL_SUFFIX
    from h1_training.recording.repair import repair_partial

    repairs = []
    if args.repair:
        target = Path(args.target)
        if target.is_dir():
            partials = sorted(target.rglob(f"*.hdf5{PARTIAL_SUFFIX}"))
        else:
            partials = [target] if target.name.endswith(PARTIAL_SUFFIX) else []
        repairs = [repair_partial(p) for p in partials]
    report = inspect_path(args.target, args.decode)
    code = 1 if report.invalid or (not report.episodes and not report.partials) else 0
    if args.json:
        out = report.as_dict()
        out["repairs"] = [r.line() for r in repairs]
        print(json.dumps(out, indent=2, default=str))
        return code
    for r in repairs:
        print(r.line())
    for e in report.episodes:
        if not e.valid:
            print(f"INVALID {e.path}" + (f" ({e.variant})" if e.variant else "") + "\n  "
                  + "\n  ".join(e.problems))
            continue
        total = max(e.frames, 1)
        print(f"ok      {e.path} ({e.variant})")
        print(f"  frames {e.frames}  duration {e.duration_s:.2f} s  rate {_fmt(e.achieved_rate_hz, '.2f')} Hz "
              f"(fps attr {e.fps:g})  missed ticks {_fmt(e.missed_ticks)}")
        print(f"  policy {e.policy_frames} ({e.policy_frames / total:.0%})  human {e.human_frames} "
              f"({e.human_frames / total:.0%})  success {_fmt(e.success)}"
              + (f"  prompt {e.prompt!r}" if e.prompt else ""))
        cams = "  ".join(
            f"{name}: {c.mean_kb:.0f} kB, placeholder {_fmt(c.placeholder_share, '.0%')}, "
            f"stale {_fmt(c.stale_share, '.0%')}" if c.recorded else f"{name}: not recorded"
            for name, c in e.cameras.items())
        print(f"  {cams}")
        for w in e.warnings:
            print(f"  warning: {w}")
    for p in report.partials:
        print(f"unsaved {p} (recording now, or left by a crash: the recorder repairs it at start-up; or --repair)")
    for p in report.unrecoverable:
        print(f"unrecoverable {p} (kept for manual inspection)")
    s = report.as_dict()["summary"]
    print(f"{s['files']} episode file(s), {s['invalid']} invalid; {s['frames']} frames, {s['duration_s']:.1f} s, "
          f"{s['policy_frames']} policy / {s['human_frames']} human, {s['missed_ticks']} missed ticks, "
          f"{s['recovered']} recovered")
    if not report.episodes and not report.partials:
        print(f"no episode files found at {args.target}")
    return code
