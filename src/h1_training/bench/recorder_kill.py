"""Recorder crash benchmark: kill -9 the episode recorder (node and HDF5 writer, its whole process group) at a
seeded random moment of an episode, ``--runs`` times in a row; after each kill a recorder is started again, and its
start-up repair (``recording.repair``, the ``repair_on_start`` path every real restart takes) turns the partial
file into an episode. Measured per run: the samples lost (wall time from the last sample kept to the kill) and
whether the repaired file meets the HDF5 contract (``layout.validate``, ``recovered`` set, every tick from the first
to the last sample present or counted as missed).

Kill moments are uniform in [1 s, episode length) after the episode starts (``--seed``). The loss is bounded by
design, not by how fast the writer is: the sampler appends every sample to the episode's write-ahead journal
(``recording/journal.py``) before anything else, and the repair replays it after the rows the HDF5 file holds.
``--stall-writer-s S`` stops the writer process (SIGSTOP) S seconds before each kill, the worst case of an
overloaded machine made certain. The feed is the synthetic publisher process (the drivers' topics at
their rates, realistic 640x480 frames unless ``--small``); the recorder does not care where its topics come from.

    h1-training bench recorder-kill --runs 20 --json          # up to 20 x 60 s
    h1-training bench recorder-kill --runs 2 --episode-s 4 --small
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HELP = "kill -9 of the recorder at random moments: samples lost after the automatic repair, files valid"
SMALL_FEED = ["--width", "320", "--height", "240", "--fps", "15", "--frames", "8"]


def targets(runs: int) -> list:
    from h1_training.bench.report import Target

    return [Target("files_valid", "==", runs), Target("max_samples_lost_s", "<=", 1.0)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=20, help="kills in a row (default 20)")
    parser.add_argument("--episode-s", type=float, default=60.0, help="episode length the kill moment falls in")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--small", action="store_true", help="320x240 frames at 15 fps (light; for tests)")
    parser.add_argument("--stall-writer-s", type=float, default=0.0,
                        help="stop (SIGSTOP) the HDF5 writer this long before each kill: a kill with the writer "
                             "that far behind")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: a free one, claimed)")


@dataclass
class KillRun:
    kill_after_s: float
    valid: bool
    samples_lost_s: float | None
    frames: int
    problem: str = ""
    fresh_after_s: float | None = None  # restart to every source fresh again
    resubscriptions: int = 0  # streams the restarted recorder subscribed again (silent with a publisher)


def kill_moments(runs: int, episode_s: float, seed: int) -> list[float]:
    if runs < 1 or episode_s <= 1.0:
        raise ValueError(f"need runs >= 1 and an episode longer than 1 s (got {runs}, {episode_s} s)")
    rng = random.Random(seed)
    return [round(rng.uniform(1.0, episode_s), 3) for _ in range(runs)]


def check_repaired(path: Path, kill_wall_ns: int) -> KillRun:
    """The repaired episode against the contract, and the samples lost before the kill."""
    import h5py
    import numpy as np

    from h1_training.recording import layout as L

    if not path.exists():
        leftovers = sorted(p.name for p in path.parent.glob(path.name + "*"))
        return KillRun(0.0, False, None, 0, f"no repaired episode (left: {leftovers})")
    with h5py.File(path, "r") as f:
        problems = L.validate(f)
        if not bool(f.attrs.get(L.ATTR_RECOVERED, False)):
            problems.append("not marked recovered")
        wall = f[L.EXTRA_WALL_TIME_NS][:].astype(np.int64)
        sample = f[L.EXTRA_SAMPLE_TIME_NS][:].astype(np.int64)
        span_ticks = round((sample[-1] - sample[0]) / 20e6) + 1 if len(sample) else 0
        if len(sample) + int(f.attrs.get(L.ATTR_MISSED_TICKS, 0)) < span_ticks - 1:
            problems.append("samples missing inside the kept span (neither recorded nor counted as missed)")
        lost = (kill_wall_ns - int(wall[-1])) / 1e9 if len(wall) else None
        return KillRun(0.0, not problems, None if lost is None else round(lost, 3), len(wall), "; ".join(problems))


def stall_children(pid: int) -> list[int]:
    """SIGSTOP every child of the recorder (its HDF5 writer): a writer that gets no CPU at all, seconds behind."""
    import psutil

    stopped = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            child.send_signal(signal.SIGSTOP)
            stopped.append(child.pid)
        except psutil.Error:
            pass
    return stopped


def kill_series(group, probe, save_dir: Path, moments: list[float], log=None,
                stall_writer_s: float = 0.0) -> list[KillRun]:
    """Record, kill -9 at each moment, restart (repair at start-up), check; the recorder runs in ``group``.
    ``stall_writer_s``: the writer is stopped (SIGSTOP) that long before each kill, so the kill finds it that far
    behind (what an overloaded machine does to it, made certain)."""
    from h1_training.nodes.common import LATCHED_QOS

    status = probe.capture("h1_training_interfaces/msg/RecorderStatus", "/episode_recorder/status", LATCHED_QOS)
    start = ["--ros-args", "-p", f"save_dir:={save_dir}"]
    rec = group.start_executable("episode_recorder", "episode_recorder", start)
    probe.wait_for_service("/episode_recorder/start", timeout=60)
    status.wait(where=lambda m: not m.stale_sources, timeout=60)
    results = []
    for i, after in enumerate(moments):
        reply = probe.call("h1_training_interfaces/srv/StartEpisode", "/episode_recorder/start",
                           {"epoch": 0, "episode_index": -1, "prompt": f"kill {i}"}, timeout=15)
        if not reply.success:
            raise RuntimeError(f"run {i}: start failed: {reply.message}")
        stall = min(stall_writer_s, after)
        time.sleep(after - stall)
        if stall:
            if not stall_children(rec.proc.pid):
                raise RuntimeError("the recorder has no writer process to stall")
            time.sleep(stall)
        rec.signal(signal.SIGKILL)  # the node and its writer: a power cut of the recorder
        # stamped after the signal: a sample the node wrote between a stamp taken before and the kill landing
        # would count as negative loss (seen: -2 ms)
        kill_wall_ns = time.time_ns()
        rec.proc.wait(timeout=10)
        group.children.remove(rec)
        status.clear()
        rec = group.start_executable("episode_recorder", "episode_recorder", start)
        restarted = time.monotonic()
        status.wait(count=1, timeout=180)  # published after the start-up repair (slow on an overloaded machine)
        run = check_repaired(Path(reply.file_path), kill_wall_ns)
        run.kill_after_s = after
        results.append(run)
        if log is not None:
            log(f"[recorder-kill] run {i + 1}/{len(moments)}: killed {after:.1f} s in, {run.frames} frames kept, "
                f"lost {run.samples_lost_s} s, {'valid' if run.valid else 'INVALID: ' + run.problem}")
        try:
            status.wait(where=lambda m: not m.stale_sources and not m.recording, timeout=180)
            run.fresh_after_s = round(time.monotonic() - restarted, 2)
            run.resubscriptions = rec.output().count("subscribed again")
            if run.resubscriptions and log is not None:
                log(f"[recorder-kill] run {i + 1}: the restarted recorder subscribed {run.resubscriptions} silent "
                    f"stream(s) again; fresh {run.fresh_after_s} s after its start")
        except TimeoutError:
            # the series cannot go on; what was measured is kept and the reason said (which sources, which child)
            last = status.last()
            feed = next((c for c in group.children if c.name == "feed"), None)
            raise SeriesStopped(results, f"after run {i + 1} the restarted recorder never reported its sources fresh "
                                f"in 180 s (last status: {'none' if last is None else _describe(last)}; feed "
                                f"{'running' if feed is not None and feed.running else 'not running'}; recorder "
                                f"{'running' if rec.running else 'exited ' + str(rec.proc.returncode)}: "
                                f"{rec.output()[-400:]!r})") from None
    return results


class SeriesStopped(RuntimeError):
    """The series stopped before its last run: ``results`` holds the runs measured until then."""

    def __init__(self, results: list[KillRun], reason: str) -> None:
        super().__init__(reason)
        self.results = results


def _describe(msg) -> str:
    return f"recording={msg.recording}, stale={list(msg.stale_sources)}, error={msg.error!r}"


def summarize(results: list[KillRun]) -> dict:
    lost = [r.samples_lost_s for r in results if r.samples_lost_s is not None]
    return {
        "runs": len(results),
        "files_valid": sum(r.valid for r in results),
        "max_samples_lost_s": max(lost) if len(lost) == len(results) else None,
        "mean_samples_lost_s": round(sum(lost) / len(lost), 3) if lost else None,
        "resubscriptions": sum(r.resubscriptions for r in results),
        "max_fresh_after_s": max((r.fresh_after_s for r in results if r.fresh_after_s is not None), default=None),
        "per_run": [{"kill_after_s": r.kill_after_s, "frames_kept": r.frames, "samples_lost_s": r.samples_lost_s,
                     "valid": r.valid, "fresh_after_s": r.fresh_after_s, "resubscriptions": r.resubscriptions,
                     **({"problem": r.problem} if r.problem else {})} for r in results],
    }


def run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import evaluate
    from h1_training.procs import ProcessGroup, claim_ros_domain, loopback_ros_env

    moments = kill_moments(args.runs, args.episode_s, args.seed)
    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    from h1_training.nodes.probe import RosProbe

    save_dir = Path(tempfile.mkdtemp(prefix="bench_recorder_kill_"))
    try:
        with RosProbe("bench_recorder_kill_probe") as probe, ProcessGroup(env=loopback_ros_env(domain)) as group:
            group.start("feed", [sys.executable, "-m", "h1_training.nodes.sim.bench_feed", "--modes",
                                 "TRACK:20,DAMPING:10", *(SMALL_FEED if args.small else [])])
            stopped = ""
            try:
                results = kill_series(group, probe, save_dir, moments,
                                      log=lambda line: print(line, file=sys.stderr, flush=True),
                                      stall_writer_s=args.stall_writer_s)
            except SeriesStopped as exc:
                results, stopped = exc.results, str(exc)
                print(f"[recorder-kill] series stopped: {stopped}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)
    figures = summarize(results)
    if stopped:
        figures["series_stopped"] = stopped  # files_valid then falls short of the runs asked: the target says so
    figures["inputs"] = {"episode_s": args.episode_s, "seed": args.seed, "kill_moments_s": moments,
                         "frames": "320x240 @ 15 fps" if args.small else "640x480 @ 30 fps, realistic",
                         "kill": "SIGKILL to the recorder's process group (node + HDF5 writer)",
                         "repair": "the next recorder's start-up repair (HDF5 rows + write-ahead journal replay)",
                         "writer_stalled_s_before_kill": args.stall_writer_s}
    figures["targets"] = evaluate(figures, targets(args.runs))
    return figures
