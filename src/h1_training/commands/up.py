"""Start every process of a bring-up profile, prefix their logs, stop them all in order on Ctrl+C.

    h1-training up sim             # simulated robot (emulators on loopback) + drivers + recorder
    h1-training up real            # drivers against the real H1-2 (run on the robot laptop)
    h1-training up sim --domain 42 # pick the ROS domain

Nothing is restarted silently: if a process exits, `up` says so and stops the rest (exit code 1).

Loopback endpoints of the profile (the emulators' Modbus and image-server ports, the local policy server) move to
free ports, so two stacks run side by side on one machine (`bringup.plan_ports`; the map is printed).
``H1_PORT_5555=15555`` pins one, ``H1_FIXED_PORTS=1`` keeps the parameter files' ports. A robot's address never
moves.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

HELP = "start the processes of a bring-up profile (sim, real, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", help="profile name in config/bringup (see `h1-training profiles`)")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID for all processes")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop by itself after this many seconds (0 = run until Ctrl+C)")


def run(args: argparse.Namespace) -> int:
    from h1_training.bringup import ProfileError, load_profile, loopback_only, plan_ports
    from h1_training.procs import ProcessGroup, loopback_ros_env, resolve_executable

    try:
        profile = load_profile(args.profile)
        ports = plan_ports(profile)
        commands = [(n, resolve_executable(n.executable) + ports.argv_tail(n)) for n in profile.nodes]
    except (ProfileError, FileNotFoundError) as exc:
        print(f"h1-training up: {exc}", file=sys.stderr)
        return 2
    if loopback_only(profile):
        env = loopback_ros_env(args.domain)
    else:
        import os

        env = dict(os.environ)
        if args.domain is not None:
            env["ROS_DOMAIN_ID"] = str(args.domain)

    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    group = ProcessGroup(env=env, echo=sys.stdout)
    print(f"[up] profile {profile.name}: {len(commands)} processes ({profile.description})", flush=True)
    if ports.mapping:
        moved = ", ".join(f"{old}->{new}" for old, new in ports.mapping.items())
        print(f"[up] loopback ports (parameter file -> this stack): {moved}", flush=True)
    code = 0
    try:
        for node, argv in commands:
            group.start(node.name, argv, extra_env=node.env or None)
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stopping:
            dead = group.exited()
            if dead:
                for child in dead:
                    print(f"[up] {child.name} exited with code {child.proc.returncode}; stopping the others "
                          f"(nothing is restarted automatically)", flush=True)
                code = 1
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        print("[up] stopping processes in reverse order", flush=True)
        codes = group.stop()
        for name, rc in codes.items():
            print(f"[up] {name}: exit {rc}", flush=True)
    return code
