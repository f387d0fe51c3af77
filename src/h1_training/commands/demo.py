"""The main job in simulation: bring up the `sim` profile (robot emulators on loopback, the real drivers,
the recorder), let the scripted operator run human-in-the-loop episodes (policy drives, operator stops it and
corrects the arms in damping), then inspect the recorded HDF5 files and stop everything in order.

    h1-training demo                          # 2 episodes of 6 s policy + 6 s human, into data/demo
    h1-training demo --episodes 5 --save-dir /tmp/h1demo
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HELP = "run a simulated human-in-the-loop session end to end and inspect what it recorded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--policy-seconds", type=float, default=6.0)
    parser.add_argument("--human-seconds", type=float, default=6.0)
    parser.add_argument("--save-dir", default="data/demo", help="where episodes are written")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: a random free-ish id)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--quiet", action="store_true", help="do not echo the nodes' logs")


def run(args: argparse.Namespace) -> int:
    from h1_training.bringup import load_profile
    from h1_training.procs import ProcessGroup, loopback_ros_env, resolve_executable
    from h1_training.recording.inspect import inspect_path

    domain = args.domain if args.domain is not None else random.randint(100, 200)
    save_dir = Path(args.save_dir).resolve()
    save_dir.mkdir(parents=True, exist_ok=True)
    before = set(save_dir.rglob("episode_*.hdf5"))
    env = loopback_ros_env(domain)
    profile = load_profile("sim")
    group = ProcessGroup(env=env, echo=None if args.quiet else sys.stdout)
    print(f"[demo] ROS_DOMAIN_ID={domain}, loopback only; episodes go to {save_dir}", flush=True)
    code = 1
    try:
        for node in profile.nodes:
            tail = node.argv_tail()
            if node.executable == "episode_recorder":
                tail += ["-p", f"save_dir:={save_dir}"]
            group.start(node.name, resolve_executable(node.executable) + tail, extra_env=node.env or None)
        operator = group.start(
            "sim_operator",
            resolve_executable("sim_operator")
            + ["--ros-args", "-p", f"episodes:={args.episodes}", "-p", f"policy_seconds:={args.policy_seconds}",
               "-p", f"human_seconds:={args.human_seconds}"],
        )
        deadline = time.monotonic() + args.timeout
        while operator.running and time.monotonic() < deadline:
            dead = [c for c in group.exited() if c is not operator]
            if dead:
                print(f"[demo] {dead[0].name} exited with code {dead[0].proc.returncode}; aborting", flush=True)
                break
            time.sleep(0.2)
        if operator.running:
            print("[demo] the session did not finish in time; aborting", flush=True)
        else:
            code = operator.proc.returncode
    finally:
        group.stop()
    new_files = sorted(set(save_dir.rglob("episode_*.hdf5")) - before)
    print(f"[demo] {len(new_files)} new episode(s):", flush=True)
    valid = 0
    for path in new_files:
        for ep in inspect_path(path).episodes:
            if ep.valid:
                valid += 1
                print(f"  ok {ep.path}\n     {ep.frames} frames, {ep.duration_s:.1f} s at "
                      f"{ep.achieved_rate_hz or 0:.2f} Hz, missed ticks {ep.missed_ticks}, "
                      f"policy {ep.policy_frames} / human {ep.human_frames} frames, success label {ep.success}")
                for warning in ep.warnings:
                    print(f"     warning: {warning}")
            else:
                print(f"  INVALID {ep.path}: {'; '.join(ep.problems)}")
    if code == 0 and valid == len(new_files) == args.episodes:
        print(f"[demo] done: {valid} episodes recorded and valid. Look inside: h1-training inspect {save_dir}",
              flush=True)
        return 0
    print(f"[demo] FAILED (operator exit {code}, {valid}/{args.episodes} valid episodes)", flush=True)
    return 1
