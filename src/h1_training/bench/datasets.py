"""Dataset catalog refresh cost and playback timing (dataset_manager's logic, no ROS).

    h1-training bench datasets --json                 # 1,000 generated episodes, a 60 s playback at 1x
    h1-training bench datasets --episodes 200 --playback-seconds 0 --no-fail

``refresh_1000_s``: the first ``Catalog.refresh`` of a fresh catalog with no index over the generated tree (cold:
every episode inspected and scored, shared among ``refresh_workers`` processes; the pool's start-up is counted);
``incremental_refresh_s``: the refresh after one more episode was written (the others come from the cache: a stat
each). Targets: under 2 s and under 0.2 s. ``restart_refresh_s`` (no target): the first refresh of a new catalog
over the persistent index the cold one wrote (a restarted dataset_manager: nothing re-read);
``refresh_1000_cpu_s``: CPU seconds the cold refresh's inspection cost, all workers together (the figure that
depends least on the load of a shared machine).
``playback_rate_hz``: frames published per second while a 60 s, 50 Hz episode plays at 1x through
``datasets.playback.Player`` (first to last frame); target within 2 % of 50 Hz. Exit status 1 when a target is
missed, unless ``--no-fail``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

HELP = "dataset catalog refresh (1,000 episodes, cold and incremental) and playback timing"
TARGET_COLD_S = 2.0
TARGET_INCREMENTAL_S = 0.2
TARGET_PLAYBACK_PCT = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=50, help="frames per generated episode (50 = 1 s)")
    parser.add_argument("--sessions", type=int, default=10, help="training_session_epoch* folders")
    parser.add_argument("--playback-seconds", type=float, default=60.0, help="0 = no playback measurement")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--workers", type=int, default=0, help="inspection processes (0 = one per CPU, at most 8)")
    parser.add_argument("--keep", type=Path, default=None, help="generate under this folder and keep it")


def run(args: argparse.Namespace) -> dict:
    from h1_training.datasets.catalog import Catalog, default_workers
    from h1_training.datasets.playback import Player
    from h1_training.recording import layout as L
    from h1_training.training.synthetic import make_episode

    root = args.keep or Path(tempfile.mkdtemp(prefix="h1_bench_datasets_"))
    try:
        t0 = time.perf_counter()
        template = [make_episode(args.frames, 32, 24, seed=s) for s in range(8)]
        per_session = max(1, args.episodes // args.sessions)
        for i in range(args.episodes):
            L.write_episode(L.episode_path(root, i // per_session, i % per_session), template[i % 8])
        generate_s = time.perf_counter() - t0

        index = root / ".catalog_index.sqlite3"
        t0 = time.perf_counter()
        catalog = Catalog([root], index_file=index, workers=args.workers)
        catalog.refresh()
        cold = time.perf_counter() - t0
        cold_cpu = catalog.last.inspect_cpu_s
        episodes, workers = catalog.last.episodes, catalog.last.parallel
        L.write_episode(L.episode_path(root, 0, per_session + 1), template[0])
        t0 = time.perf_counter()
        catalog.refresh()
        incremental = time.perf_counter() - t0
        inspected = catalog.last.inspected
        t0 = time.perf_counter()
        restarted = Catalog([root], index_file=index, workers=args.workers)
        restarted.refresh()
        restart = time.perf_counter() - t0

        figures: dict = {"episodes": episodes, "generate_s": round(generate_s, 2), "refresh_1000_s": round(cold, 3),
                         "refresh_1000_cpu_s": round(cold_cpu, 3), "refresh_workers": workers,
                         "incremental_refresh_s": round(incremental, 4), "incremental_inspected": inspected,
                         "restart_refresh_s": round(restart, 4), "restart_inspected": restarted.last.inspected,
                         "refresh_1000_ok": cold < TARGET_COLD_S, "incremental_refresh_ok": incremental <
                         TARGET_INCREMENTAL_S, "loadavg_1m": round(os.getloadavg()[0], 2),
                         "cpus": default_workers()}
        if args.playback_seconds > 0:
            frames = int(round(args.playback_seconds * 50))
            path = L.write_episode(root / "playback" / "episode_0.hdf5",
                                   make_episode(frames, 64, 48, human_span=None))
            times: list[float] = []
            player = Player(lambda f: times.append(time.monotonic()))
            try:
                player.load(path, "bench", 0, speed=1.0, autoplay=True)
                while player.state.name != "FINISHED":
                    time.sleep(0.1)
            finally:
                player.close()
            rate = (len(times) - 1) / (times[-1] - times[0])
            err = abs(rate - 50.0) / 50.0 * 100
            figures.update(playback_frames=len(times), playback_skipped=player.skipped,
                           playback_rate_hz=round(rate, 3), playback_rate_error_pct=round(err, 3),
                           playback_ok=err < TARGET_PLAYBACK_PCT and player.skipped == 0)
        figures["targets"] = {k: bool(v) for k, v in figures.items() if k.endswith("_ok")}
        figures["targets_met"] = all(figures["targets"].values())
        return figures
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
