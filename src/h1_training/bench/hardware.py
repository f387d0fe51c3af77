"""Benchmark: the robot hardware layer on the simulator, all processes together on this machine.

    h1-training bench hardware --json                 # 20 s, the sim profile minus the recorder
    h1-training bench hardware --seconds 60

Starts the processes of the ``sim`` bring-up profile except ``episode_recorder`` (emulators + drivers), waits
until joint_states flow, then measures over ``--seconds``:

- ``lowcmd_hz`` / ``lowcmd_p99_period_ms``: rt/lowcmd as the (simulated) robot receives it, from h1_sim's
  counters (reset at the start of the window; periods between accepted LowCmd_ arrivals);
- ``joint_states_hz``: joint_states received by a probe node;
- ``cpu_pct``: CPU % of one core per process (psutil, user + system, children included) and ``cpu_pct_total``.

Targets (booleans under ``targets``; ``h1-training bench`` exits 1 when one is missed): lowcmd within 2 % of the
configured rate, p99 period under 2x nominal, the whole set under 60 % of one core, no process exited. A node
whose executable is missing or that exits is reported under ``missing`` / ``exited``; the rest are still measured.

Isolation from anything else running here (tests, `h1-training up sim`): its own ROS domain (the unitree DDS
traffic too, claimed with a lock file: ``procs.claim_ros_domain``), and every loopback TCP port of the profile moved
to a free port, consistently across the nodes that share it (``bringup.plan_ports``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

HELP = "H1-2 hardware layer on the sim: lowcmd rate/jitter, joint_states rate, CPU per process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window [s] (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="settling time before the window [s]")
    parser.add_argument("--profile", default="sim", help="bring-up profile to take the processes from")
    parser.add_argument("--domain", type=int, default=None,
                        help="ROS (and unitree) DDS domain; default one derived from this process id")
    parser.add_argument("--realtime-priority", type=int, default=0,
                        help="h1_arm_node realtime_priority (SCHED_FIFO of its write thread; 0 = default, off)")


def _status_values(msg) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values} if msg is not None and msg.status else {}


def _fresh(capture, after: float, timeout: float = 3.0):
    """First message of a Capture received after monotonic time ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with capture._lock:
            pairs = list(zip(capture.times, capture.messages))
        for t, msg in pairs:
            if t > after:
                return msg
        time.sleep(0.05)
    return None


def _cpu_seconds(proc) -> float | None:
    import psutil

    try:
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil

    from h1_training.bench.report import Target, evaluate, peak_rss_mb
    from h1_training.bringup import load_profile, plan_ports
    from h1_training.nodes.common import LATCHED_QOS, SENSOR_QOS
    from h1_training.nodes.probe import RosProbe
    from h1_training.procs import (
        ProcessGroup,
        claim_ros_domain,
        executable_exists,
        loopback_ros_env,
        resolve_executable,
    )

    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain)  # before rclpy starts in this process (the probe)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    profile = load_profile(args.profile)
    nodes = [n for n in profile.nodes if n.executable != "episode_recorder"]
    missing = [n.name for n in nodes if not executable_exists(n.executable)]
    result: dict[str, Any] = {"profile": profile.name, "seconds": args.seconds, "domain": domain,
                              "processes": [n.name for n in nodes if n.name not in missing], "missing": missing,
                              "exited": {}, "notes": []}
    group = ProcessGroup(env=loopback_ros_env(domain))
    probe = None
    ports = plan_ports(profile)
    result["port_map"] = {str(old): new for old, new in ports.mapping.items()}
    try:
        for node in nodes:
            if node.name in missing:
                continue
            argv = resolve_executable(node.executable) + ports.argv_tail(node)
            if node.executable in ("h1_sim", "h1_arm_node") and node.ros:
                argv += ["-p", f"dds_domain:={domain}"]  # the unitree wire on this run's domain too
            if node.executable == "h1_arm_node" and args.realtime_priority:
                argv += ["-p", f"realtime_priority:={args.realtime_priority}"]
            group.start(node.name, argv, extra_env=node.env or None)
        probe = RosProbe(f"bench_hardware_{os.getpid()}")
        joints = probe.capture("sensor_msgs/msg/JointState", "joint_states", SENSOR_QOS, keep=100000)
        sim_status = probe.capture("diagnostic_msgs/msg/DiagnosticArray", "sim/h1_status", LATCHED_QOS, keep=100)
        diagnostics = probe.capture("diagnostic_msgs/msg/DiagnosticArray", "diagnostics", 50, keep=500)
        try:
            joints.wait(10, timeout=30)
        except TimeoutError:
            result["notes"].append("no joint_states within 30 s (is h1_arm_node or h1_sim missing?)")
        time.sleep(args.warmup)
        ours = {n.name for n in nodes if n.ros and n.name not in missing}
        names = probe.node_names()
        doubles = sorted(n for n in ours if names.count(n) > 1)
        if doubles or probe.node.count_publishers("/joint_states") > 1:
            result["domain_conflict"] = True
            result["notes"].append(f"another ROS graph shares domain {domain} ({', '.join(doubles) or 'joint_states'}"
                                   " twice): figures unreliable, rerun with --domain N")
        for child in group.exited():
            result["exited"][child.name] = {"code": child.proc.returncode, "last_lines": child.lines[-5:]}
        result["exited_count"] = len(result["exited"])

        running = [c for c in group.children if c.running]
        procs = {c.name: psutil.Process(c.proc.pid) for c in running}
        has_sim = any(n.executable == "h1_sim" for n in nodes if n.name not in missing)
        if has_sim:
            try:
                probe.call("std_srvs/srv/Trigger", "/sim/reset_counters", timeout=5.0)
            except TimeoutError as exc:
                result["notes"].append(f"h1_sim counters not reset: {exc}")
        t0 = time.monotonic()
        cpu0 = {name: _cpu_seconds(p) for name, p in procs.items()}
        joints.clear()
        time.sleep(args.seconds)
        t1 = time.monotonic()
        cpu1 = {name: _cpu_seconds(p) for name, p in procs.items()}
        wall = t1 - t0
        result["peak_rss_mb"] = {name: peak_rss_mb(p.pid) for name, p in procs.items()}

        cpu = {name: round((cpu1[name] - cpu0[name]) / wall * 100, 1)
               for name in procs if cpu0[name] is not None and cpu1[name] is not None}
        result["cpu_pct"] = cpu
        result["cpu_pct_total"] = round(sum(cpu.values()), 1)

        with joints._lock:
            times = list(joints.times)
        result["joint_states_hz"] = round((len(times) - 1) / (times[-1] - times[0]), 2) if len(times) > 2 else 0.0

        sim = _status_values(_fresh(sim_status, t1)) if has_sim else {}
        if sim:
            span = float(sim["sim_monotonic_s"]) - float(sim["counters_since_s"])
            result["lowcmd_hz"] = round(int(sim["lowcmd_count"]) / span, 2) if span > 0 else 0.0
            p99 = float(sim["lowcmd_p99_period_ms"])
            result["lowcmd_p99_period_ms"] = round(p99, 3) if p99 == p99 else None
            result["lowcmd_p50_period_ms"] = float(sim["lowcmd_p50_period_ms"])
            result["lowcmd_bad_crc"] = int(sim["bad_crc_count"])
            result["lowstate_hz"] = round(int(sim["lowstate_count"]) / span, 2) if span > 0 else 0.0
        else:
            result["lowcmd_hz"] = None
            result["lowcmd_p99_period_ms"] = None
            result["notes"].append("no sim/h1_status: lowcmd not measured")

        target = 250.0
        arm = None
        with diagnostics._lock:
            for msg in reversed(diagnostics.messages):
                arm = next((s for s in msg.status if s.name.startswith("h1_arm_node")), None)
                if arm is not None:
                    break
        if arm is not None:
            values = {kv.key: kv.value for kv in arm.values}
            target = float(values.get("lowcmd_target_hz", target))
            result["arm_writer"] = {k: values.get(k) for k in ("lowcmd_rate_hz", "lowcmd_p99_period_ms", "mode",
                                                              "write_loop_overruns", "fast_codec",
                                                              "realtime_write_thread")}
        result["lowcmd_target_hz"] = target

        result["targets"] = evaluate(result, [
            Target("lowcmd_hz", "within", target, tol=0.02 * target),
            Target("lowcmd_p99_period_ms", "<", 2 * 1000.0 / target),
            Target("cpu_pct_total", "<", 60.0),
            Target("exited_count", "==", 0),
        ])
        result["inputs"] = {"profile": profile.name, "processes": len(result["processes"]),
                            "window_s": args.seconds, "lowcmd_target_hz": target}
        return result
    finally:
        if probe is not None:
            probe.close()
        group.stop()
