"""Recorder benchmark: record one episode at 50 Hz from 3 cameras (640x480 JPEG) and 14 + 12 joints, save it,
and measure the achieved rate, the p99 sample period, missed ticks, the time from "save" to the file being
complete, the file size, the recorder's CPU use (share of one core, psutil) and the peak resident memory of the
node and of its HDF5 writer process (VmHWM from the kernel: the whole life of each process, not sampled).

Inputs are stated in the output (``inputs``): camera frames are realistic by default (``--frames realistic``: the
sim camera's textured, noisy scene, 40-60 kB per 640x480 JPEG like a real camera at quality 85; the recorded mean
is ``jpeg_kb``); ``--frames plain`` is the flat-shaded scene (~15 kB), lighter and unrealistic.

The feed is the sim profile (emulators + real drivers, ``h1-training up sim``) when its executables exist and
deliver; otherwise a synthetic publisher process (``h1_training.nodes.sim.bench_feed``: the drivers' topics at their
rates). The ``feed`` key says which one was used and why.

``--full-stack``: the recorder under everything a session runs (``bench/stack.py``: the sim stack, hil_session
with the policy loop against ``h1-training serve``, workflow manager, dataset manager, gateway with a Foxglove
client subscribed to every channel (cameras included), the web app with its page open in chromium), recording the
session's own episode (the scripted operator lets the policy drive for ``--seconds``, then corrects for 2 s), once
as it is and once more with a CPU-heavy job beside it (one busy process per core): ``mean_hz``,
``p99_period_ms``, ``missed_ticks`` for each (``full_stack``, ``full_stack_cpu_load``), measured from the
saved file as above. The stack settles before the episode starts (recorder inputs fresh, page and Foxglove client
connected, load running) and the emulators (``h1_sim``, ``inspire_sim``, ``camera_sim``: the robot's own boards)
run at nice -10: a 100 ms gap in the emulated ``rt/lowstate`` puts the arm in FAULT and the session ends the
episode, which is what cut earlier runs to 0.4-1 s episodes. ``episode_s`` must reach the policy time asked; an
episode the session ended early fails that target and ``session_failures`` says why.

    h1-training bench recorder --seconds 60 --json
    h1-training bench recorder --seconds 10 --feed synthetic
    h1-training bench recorder --full-stack --seconds 60 --json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HUMAN_S = 2.0                                     # correction time of the full-stack episode
EMULATORS = ("h1_sim", "inspire_sim", "camera_sim")  # the robot's boards, emulated on this machine
CRITICAL = ("h1_arm_node", "episode_recorder", "hil_session")  # the laptop's processes the arm and the data need
EMULATOR_NICE = -10
HELP = "episode recorder: 50 Hz rate, p99 period, missed ticks, save time, file size, CPU, peak RSS"


def targets(frames: str) -> list:
    from h1_training.bench.report import Target

    realistic = [Target("jpeg_kb", ">=", 40.0)] if frames == "realistic" else []  # or the figures are too kind
    return realistic + [Target("mean_hz", "within", 50.0, tol=0.25), Target("p99_period_ms", "<=", 25.0),
            Target("missed_ticks", "==", 0), Target("save_s", "<=", 0.5), Target("cpu_pct", "<=", 35.0),
            # the seed's writer holds every frame in RAM (8.2 GB for 60 s); ours streams: bounded, whatever the length
            Target("peak_rss_mb.node", "<=", 400.0), Target("peak_rss_mb.writer", "<=", 400.0)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="episode length to record (default 60)")
    parser.add_argument("--feed", choices=("auto", "sim", "synthetic"), default="auto",
                        help="sim profile, synthetic publishers, or auto (sim when available)")
    parser.add_argument("--frames", choices=("realistic", "plain"), default="realistic",
                        help="camera frames: realistic 40-60 kB JPEGs (default) or the flat sim scene (~15 kB)")
    parser.add_argument("--keep", action="store_true", help="keep the recorded episode (path printed)")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: a free one, claimed)")
    parser.add_argument("--full-stack", action="store_true",
                        help="record the session's episode with the whole session stack running (and again with a "
                             "CPU-heavy job beside it)")
    parser.add_argument("--realtime", type=int, default=0, choices=range(0, 100), metavar="PRIO",
                        help="--full-stack: the recorder's sampler thread (sampler_rt_priority) and the emulated "
                             "robot boards (instead of nice -10) at SCHED_FIFO PRIO (1-99; default 0: off; needs "
                             "CAP_SYS_NICE or root)")
    parser.add_argument("--recorder-rt", type=int, default=0, choices=range(0, 100), metavar="PRIO",
                        help="--full-stack: the recorder's own process_rt_priority (its whole process SCHED_FIFO "
                             "PRIO; default 0: off)")
    parser.add_argument("--critical-fifo", type=int, default=0, choices=range(0, 100), metavar="PRIO",
                        help=f"--full-stack: every thread of {', '.join(CRITICAL)} at SCHED_FIFO PRIO (1-99; "
                             "default 0: off; needs CAP_SYS_NICE or root)")
    parser.add_argument("--critical-nice", type=int, default=0, choices=range(-20, 1), metavar="N",
                        help=f"--full-stack: run {', '.join(CRITICAL)} at this nice value (-20..0; default 0: as "
                             "every other process; negative needs CAP_SYS_NICE or root)")


def missing_sim_executables() -> list[str]:
    import importlib.util

    from h1_training.bringup import load_profile
    from h1_training.executables import ALL

    missing = []
    for node in load_profile("sim").nodes:
        module = ALL.get(node.executable, "").partition(":")[0]
        if not module or importlib.util.find_spec(module) is None:
            missing.append(node.executable)
    return missing


def _start_sim(group, save_dir: Path, frames: str) -> None:
    from h1_training.bringup import load_profile, start_profile

    start_profile(group, load_profile("sim"), {"episode_recorder": ["-p", f"save_dir:={save_dir}"],
                                               "camera_sim": ["-p", f"texture:={frames == 'realistic'}".lower()]})


def _start_synthetic(group, save_dir: Path, frames: str) -> None:
    group.start("feed", [sys.executable, "-m", "h1_training.nodes.sim.bench_feed", "--modes", "TRACK:20,DAMPING:10",
                         "--texture", frames])
    group.start_executable("episode_recorder", "episode_recorder", ["--ros-args", "-p", f"save_dir:={save_dir}"])


def _wait_fresh(status, seconds: float) -> None:
    status.wait(where=lambda m: not [s for s in m.stale_sources if s != "arm/mode"], timeout=seconds)


def _cpu(procs: list) -> float:
    """User + system CPU seconds of these processes (the recorder node and its writer)."""
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def measure(path: str) -> dict:
    import h5py
    import numpy as np

    from h1_training.recording import layout as L

    with h5py.File(path, "r") as f:
        ns = f[L.EXTRA_SAMPLE_TIME_NS][:].astype(np.int64)
        periods_ms = np.diff(ns) / 1e6
        t = len(ns)
        sizes = [len(f[L.IMAGE_KEYS[0]][i]) for i in range(0, t, max(1, t // 50))]
        return {
            "frames": int(t),
            "episode_s": round((ns[-1] - ns[0]) / 1e9, 2) if t > 1 else 0.0,
            "mean_hz": round((t - 1) / ((ns[-1] - ns[0]) / 1e9), 3) if t > 1 else 0.0,
            "p99_period_ms": round(float(np.percentile(periods_ms, 99)), 2) if t > 1 else 0.0,
            "max_period_ms": round(float(periods_ms.max()), 2) if t > 1 else 0.0,
            "missed_ticks": int(f.attrs[L.ATTR_MISSED_TICKS]),
            "jpeg_kb": round(float(np.mean(sizes)) / 1e3, 1),
            "stale_share": round(float(np.mean([f[L.stale_key(s)][:].mean() for s in L.STALE_SOURCES])), 4),
        }


def full_stack_targets(seconds: float) -> list:
    """Per run; ``episode_s`` (>= the policy time asked) says the session did not end the episode early."""
    from h1_training.bench.report import Target

    return [t for label in ("full_stack", "full_stack_cpu_load") for t in (
        Target(f"{label}.mean_hz", "within", 50.0, tol=0.25), Target(f"{label}.p99_period_ms", "<=", 25.0),
        Target(f"{label}.missed_ticks", "==", 0), Target(f"{label}.episode_s", ">=", seconds))]


EPISODE_FAILURE_MARKS = ("failed:", "Arm error", "Policy error", "Recorder error", "Stopping the episode")


def _session_failures(lines: list[str]) -> list[str]:
    """hil_session's own lines saying why an episode ended early (its safety stops: arm FAULT, policy failure)."""
    return [line.split("]: ", 1)[-1].strip() for line in lines if any(m in line for m in EPISODE_FAILURE_MARKS)]


def _full_stack_once(seconds: float, domain: int, cpu_load: bool, emulator_nice: int = EMULATOR_NICE,
                     critical_nice: int = 0, realtime: int = 0, critical_fifo: int = 0,
                     recorder_rt: int = 0) -> dict:
    """One episode of the session, recorded with the whole stack running. The episode must be the one asked for:
    the stack settles first (recorder inputs fresh, the page and the Foxglove client connected, CPU load running),
    the scripted operator acknowledges an arm FAULT before it starts the episode (as the session tells a person
    to), and an episode the session ended early (its safety stops) is reported with the session's reason and
    fails the ``episode_s`` target instead of passing for a measurement of the recorder."""
    import shutil

    from h1_training.bench.browser import Browser, browser_missing
    from h1_training.bench.foxglove_client import FoxgloveCountingClient
    from h1_training.bench.stack import (
        FullStack,
        cpu_burners,
        renice,
        set_fifo,
        start_wakeup_probe,
        stop_burners,
        stop_wakeup_probe,
        wait_for,
    )
    from h1_training.nodes.common import LATCHED_QOS
    from h1_training.nodes.probe import RosProbe

    os.environ["ROS_DOMAIN_ID"] = str(domain)  # the in-process probe joins the stack's loopback domain
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    run_dir = Path(tempfile.mkdtemp(prefix="bench_recorder_full_"))
    stack = FullStack(run_dir, domain)
    recorder_params = (["-p", f"sampler_rt_priority:={realtime}"] if realtime else []) + (
        ["-p", f"process_rt_priority:={recorder_rt}"] if recorder_rt else [])
    stack.extra_params["episode_recorder"] = recorder_params
    client = browser = None
    wakeups: list = []
    burners: list = []
    page = browser_missing() or ""
    try:
        with RosProbe("bench_recorder_full_probe") as probe:
            status = probe.capture("h1_training_interfaces/msg/RecorderStatus", "/episode_recorder/status",
                                   LATCHED_QOS)
            stack.start()
            # the emulators stand for the robot's own computers (motor board, cameras, hands): they do not share
            # the laptop's CPU, so they run ahead of it; every process of ours keeps its nice value
            reniced = renice(stack, EMULATORS, emulator_nice)
            fifo = set_fifo(stack, EMULATORS, realtime) if realtime else []
            fifo += set_fifo(stack, CRITICAL, critical_fifo) if critical_fifo else []
            wanted = (EMULATORS if realtime else ()) + (CRITICAL if critical_fifo else ())
            if set(fifo) != set(wanted):
                raise RuntimeError(f"could not make {set(wanted) - set(fifo)} SCHED_FIFO (needs CAP_SYS_NICE or "
                                   "root)")
            critical = renice(stack, CRITICAL, critical_nice) if critical_nice else []
            if len(critical) != (len(CRITICAL) if critical_nice else 0):
                raise RuntimeError(f"could not set nice {critical_nice} on {set(CRITICAL) - set(critical)} "
                                   "(negative needs CAP_SYS_NICE or root)")
            client = FoxgloveCountingClient(stack.gateway_url)  # every channel it advertises, the cameras included
            if not page:
                browser = Browser()
                # the page is open once chromium has its response (it goes on loading and running beside the
                # stack); waiting for its load event timed out at 30 s on a machine at load 50-70
                browser.goto(stack.web_url, until="commit")
                page = f"open: {stack.web_url}"
            if cpu_load:
                burners = cpu_burners()
            _wait_fresh(status, 120)
            if not wait_for(lambda: sum(client.messages.values()) > 0, 60, "Foxglove client messages"):
                raise RuntimeError("the Foxglove client received nothing from the gateway in 60 s")
            t0 = time.monotonic()
            wakeups = [start_wakeup_probe(-20), start_wakeup_probe("fifo")]
            stack.start_operator(epochs=1, episodes=1, policy_s=seconds, human_s=HUMAN_S)
            if not wait_for(lambda: stack.episodes(), seconds + 240, "the session's episode", period=1.0):
                raise RuntimeError(f"no episode saved in {seconds + 240:.0f} s")
            episode_wall_s = time.monotonic() - t0
            wakeup = [stop_wakeup_probe(p) for p in wakeups]
        session = stack.group.get("hil_session")
        figures = measure(str(stack.episodes()[0]))
        failures = _session_failures(session.lines)
        recorder_gc = [line.split("]: ", 1)[-1] for line in stack.group.get("episode_recorder").lines
                       if "garbage collection" in line]
        # why the arm left TRACK, in the arm node's own words (e.g. how long rt/lowstate was silent)
        arm_faults = [line.split("]: ", 1)[-1] for line in stack.group.get("h1_arm_node").lines
                      if "FAULT" in line or "rt/lowstate" in line]
        figures.update({"session_failures": failures[:6], "arm_faults": arm_faults[:6], "recorder_gc": recorder_gc[-1:],
                        "machine_wakeups": wakeup,
                        "client_channels": len(client.topics),
                        "client_messages": sum(client.messages.values()), "web_page": page or "not open",
                        "episode_wall_s": round(episode_wall_s, 1), "cpu_burners": len(burners),
                        "emulator_nice": {n: emulator_nice for n in reniced},
                        "critical_nice": {n: critical_nice for n in critical},
                        "sched_fifo": ({n: realtime for n in fifo if n in EMULATORS}
                                       | {n: critical_fifo for n in fifo if n in CRITICAL}
                                       | ({"episode_recorder sampler": realtime} if realtime else {})
                                       | ({"episode_recorder process": recorder_rt} if recorder_rt else {}))})
        return figures
    finally:
        stop_burners(burners)
        for p in wakeups or []:
            if p.poll() is None:
                p.kill()
                p.wait()
        if client is not None:
            client.close()
        if browser is not None:
            browser.close()
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def run_full_stack(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import evaluate
    from h1_training.procs import claim_ros_domain

    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    figures: dict = {}
    for label, load in (("full_stack", False), ("full_stack_cpu_load", True)):
        figures[label] = _full_stack_once(args.seconds, domain, load, critical_nice=args.critical_nice,
                                          realtime=args.realtime, critical_fifo=args.critical_fifo,
                                          recorder_rt=args.recorder_rt)
    figures["inputs"] = {"policy_seconds": args.seconds, "human_seconds": HUMAN_S, "cameras": "3 x 640x480 @ 30 fps",
                         "cpu_load": f"{os.cpu_count()} busy Python processes (nice 0) beside the stack",
                         "emulators": f"{', '.join(EMULATORS)} at nice {EMULATOR_NICE} (they stand for the robot's "
                                      "own boards); the laptop's processes and the load at nice 0 unless the "
                                      "realtime, critical_* or recorder_process_rt_priority inputs say otherwise",
                         "critical_fifo": (f"{', '.join(CRITICAL)} (every thread) at SCHED_FIFO {args.critical_fifo}"
                                           if args.critical_fifo else "none"),
                         "recorder_process_rt_priority": args.recorder_rt,
                         "realtime": (f"the recorder's sampler thread and {', '.join(EMULATORS)} at SCHED_FIFO "
                                      f"{args.realtime}" if args.realtime else "none"),
                         "critical_nice": (f"{', '.join(CRITICAL)} at nice {args.critical_nice}" if args.critical_nice
                                           else "none (every laptop process at nice 0)")}
    figures["targets"] = evaluate(figures, full_stack_targets(args.seconds))
    return figures


def run(args: argparse.Namespace) -> dict:
    import psutil

    if getattr(args, "full_stack", False):
        return run_full_stack(args)

    from h1_training.bench.report import evaluate, peak_rss_mb, process_role
    from h1_training.procs import ProcessGroup, claim_ros_domain, loopback_ros_env

    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain)  # the in-process probe joins the same loopback domain
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    from h1_training.nodes.common import LATCHED_QOS
    from h1_training.nodes.probe import RosProbe

    feed = args.feed
    why = ""
    if feed in ("auto", "sim"):
        missing = missing_sim_executables()
        if missing:
            if feed == "sim":
                raise SystemExit(f"bench recorder: sim executables missing: {', '.join(missing)}")
            feed, why = "synthetic", f"sim executables missing: {', '.join(missing)}"
        else:
            feed = "sim"
    save_dir = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    figures: dict = {}
    with RosProbe("bench_recorder_probe") as probe:
        status = probe.capture("h1_training_interfaces/msg/RecorderStatus", "/episode_recorder/status", LATCHED_QOS)
        for attempt in ("first", "fallback"):
            group = ProcessGroup(env=loopback_ros_env(domain))
            try:
                (_start_sim if feed == "sim" else _start_synthetic)(group, save_dir, args.frames)
                probe.wait_for_service("/episode_recorder/start", timeout=60)
                _wait_fresh(status, 60 if feed == "sim" else 30)
            except (TimeoutError, RuntimeError) as exc:
                group.stop()
                if feed == "sim" and args.feed == "auto" and attempt == "first":
                    feed, why = "synthetic", f"sim stack did not deliver fresh data ({exc})"
                    status.clear()
                    continue
                raise
            break
        try:
            rec = group.get("episode_recorder")
            proc = psutil.Process(rec.proc.pid)
            reply = probe.call("h1_training_interfaces/srv/StartEpisode", "/episode_recorder/start",
                               {"epoch": 0, "episode_index": -1, "prompt": "bench"}, timeout=15)
            if not reply.success:
                raise RuntimeError(f"start failed: {reply.message}")
            family = [proc] + proc.children(recursive=True)  # the node and its HDF5 writer process
            # another benchmark's load during the episode (bench foxglove: a Foxglove client on every channel)
            during = getattr(args, "during", None)
            finish_during = during(group) if during is not None else None
            cpu0, t0 = _cpu(family), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = _cpu(family), time.monotonic()
            s0 = time.monotonic()
            saved = probe.call("h1_training_interfaces/srv/SaveEpisode", "/episode_recorder/save",
                               {"success_label": -1}, timeout=30)
            save_s = time.monotonic() - s0
            if not saved.success:
                raise RuntimeError(f"save failed: {saved.message}")
            cpu = cpu1 - cpu0
            # peak memory before the writer exits (it ends with the node): VmHWM of each live process
            rss = {"node": peak_rss_mb(proc.pid)}
            for child in family[1:]:  # spawn context: the writer, and multiprocessing's resource tracker
                role = {"spawned": "writer"}.get(process_role(child), process_role(child))
                rss[role if role not in rss else f"{role}_{child.pid}"] = peak_rss_mb(child.pid)
            figures = measure(saved.file_path)
            if finish_during is not None:
                figures.update(finish_during())
            figures.update({
                "save_s": round(save_s, 3),
                "file_mb": round(os.path.getsize(saved.file_path) / 1e6, 1),
                "cpu_pct": round(100.0 * cpu / (t1 - t0), 1),  # node + writer process, % of one core
                "recorder_processes": len(family),
                "seconds": args.seconds,
                "feed": feed if feed == "sim" else "synthetic publishers (h1_training.nodes.sim.bench_feed)"
                + (f": {why}" if why else ""),
                "peak_rss_mb": rss,
                "inputs": {"cameras": 3, "camera_size": "640x480", "camera_fps": 30, "frames": args.frames,
                           "jpeg_kb_recorded": figures["jpeg_kb"], "arm_joints": 14, "hand_joints": 12,
                           "sample_hz": 50, "episode_s": args.seconds},
            })
            figures["targets"] = evaluate(figures, targets(args.frames))
            if args.keep:
                figures["file"] = saved.file_path
        finally:
            group.stop()
    if not args.keep:
        import shutil

        shutil.rmtree(save_dir, ignore_errors=True)
    return figures
