"""Soak: the whole simulated session stack (``bench/stack.py``: emulators, drivers, recorder, hil_session with the
policy server, workflow manager, dataset manager, gateway, web app, an rsync daemon as the GPU side, the scripted
operator) runs HIL episodes for ``--minutes`` while faults are injected on a seeded schedule, one at a time:

- ``policy_server``: ``h1-training serve`` killed (SIGKILL), started again after the down time;
- ``camera``: ``camera_sim`` (the robot's image server) stopped, started again (camera_node reconnects);
- ``modbus``: ``inspire_sim`` (both hands' Modbus TCP servers) killed: the link drops; started again;
- ``rsync``: the rsync daemon stopped (the sync target unreachable: the session's sync retries with backoff),
  started again.

A fault is *recovered* when, within ``--recover-s`` of the restart, the stack is whole again: every child running,
the recorder's sources fresh again (no stale camera / hand state), a new valid episode saved after the restart, and
for ``rsync`` a new epoch marker (``SYNC_COMPLETE``) on the GPU side; for ``policy_server`` the server answering
``/training_status``. The next fault waits for the recovery (or its timeout). A child that exits outside a fault
(the operator giving up included) is counted in ``unexpected_exits``; the operator is then started again so the
soak goes on.

Figures: ``episodes`` (files saved), ``episodes_valid`` (``layout.validate`` clean, not a repaired leftover; any
``*.partial`` left counts as invalid), ``samples_lost_s`` (ticks with no sample in the saved episodes, as seconds),
``recorder_missed_ticks`` (the same count), ``faults_injected``, ``faults_recovered``, ``rss_growth_mb`` and
``fd_growth`` per process incarnation (children such as the recorder's writer counted with their parent), from its
baseline (its first sample once an episode was saved after it started and ``--settle-s`` passed) to the end:
``rss_growth_mb`` compares the median RSS of the last 2 minutes with that of the first 2 minutes after the baseline
(``Usage.growth_mb``: RSS swings within an episode), ``rss_last_minus_base_mb`` the two single samples,
``rss_growth_second_half_mb`` the later half alone (~0 for a level, about half for a steady leak).

    h1-training bench soak --minutes 60 --json
    h1-training bench soak --minutes 3
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h1_training.bench.stack import wait_for

HELP = "the whole sim stack for N minutes with faults on a seeded schedule: episodes valid, faults recovered, leaks"
FAULTS = ("policy_server", "camera", "modbus", "rsync")
CAMERA_SOURCES = ("ego_cam", "cam_left_wrist", "cam_right_wrist")
GROWTH_WINDOW_S = 120.0  # growth compares medians over windows this long (or a quarter of the history)


def targets() -> list:
    from h1_training.bench.report import Target

    return [Target("episodes", ">", 0), Target("invalid_episodes", "==", 0), Target("faults_unrecovered", "==", 0),
            Target("unexpected_exits_count", "==", 0), Target("max_rss_growth_mb", "<=", 50.0),
            Target("max_fd_growth", "<=", 10)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="soak length after the stack is up (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--fault-every-s", type=float, default=45.0, help="a fault this often (after recovery)")
    parser.add_argument("--recover-s", type=float, default=120.0, help="how long a fault may take to recover")
    parser.add_argument("--settle-s", type=float, default=30.0,
                        help="a (re)started process's memory baseline is taken this long after its start")
    parser.add_argument("--policy-seconds", type=float, default=3.0, help="policy time per episode")
    parser.add_argument("--human-seconds", type=float, default=2.0, help="correction time per episode")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (path printed)")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: a free one, claimed)")


@dataclass
class Fault:
    kind: str
    at_s: float
    down_s: float
    recovered: bool = False
    recover_s: float | None = None
    note: str = ""


def schedule(seed: int, count: int) -> list[tuple[str, float]]:
    """(kind, down time) for ``count`` faults: each kind once per round, in a seeded order; 3-10 s down."""
    rng = random.Random(seed)
    out: list[tuple[str, float]] = []
    while len(out) < count:
        kinds = list(FAULTS)
        rng.shuffle(kinds)
        out += [(k, round(rng.uniform(3.0, 10.0), 1)) for k in kinds]
    return out[:count]


@dataclass
class Usage:
    """Memory and file descriptors of one process incarnation (with its children)."""

    pid: int
    started: float
    episodes_at_start: int = 0
    base_rss_mb: float | None = None
    base_fds: int | None = None
    last_rss_mb: float = 0.0
    last_fds: int = 0
    peak_rss_mb: float = 0.0
    history: list[tuple[float, float]] = field(default_factory=list)  # (time, rss MB) of every sample from the base

    def _median(self, lo: float, hi: float) -> float:
        """Median RSS of the samples taken in [lo, hi]."""
        values = sorted(rss for at, rss in self.history if lo <= at <= hi)
        return values[len(values) // 2]

    def _window_s(self) -> float:
        return min(GROWTH_WINDOW_S, (self.history[-1][0] - self.history[0][0]) / 4)

    def growth_mb(self) -> float | None:
        """Median RSS over the last window minus the median over the first window after the baseline. A process's
        RSS swings within an episode (hil_session: +-20 MB as images are decoded and freed in per-thread malloc
        arenas), so one sample against another measures where in that swing each fell, not growth."""
        if len(self.history) < 2:
            return None
        window, t0, t1 = self._window_s(), self.history[0][0], self.history[-1][0]
        return round(self._median(t1 - window, t1) - self._median(t0, t0 + window), 1)

    def second_half_growth_mb(self) -> float | None:
        """Growth over the later half of the time since the baseline (medians as in ``growth_mb``): ~0 where memory
        levelled off (allocator caches, a model pool at its cap), about half the whole growth where it leaks
        steadily."""
        if len(self.history) < 2:
            return None
        window, t0, t1 = self._window_s(), self.history[0][0], self.history[-1][0]
        middle = (t0 + t1) / 2
        return round(self._median(t1 - window, t1) - self._median(middle, middle + window), 1)


def _tree_usage(pid: int) -> tuple[float, int] | None:
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root] + root.children(recursive=True)
        rss = fds = 0
        for p in family:
            try:
                rss += p.memory_info().rss
                fds += p.num_fds()
            except psutil.Error:
                pass
        return rss / 1e6, fds
    except psutil.Error:
        return None


@dataclass
class Watch:
    usage: dict[str, Usage] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def sample(self, pids: dict[str, int], now: float, settle_s: float, episodes: int) -> None:
        """``episodes``: episodes saved so far. A process's baseline is its first sample once an episode was saved
        after it started (it has done its work once: a restarted policy server its first inferences, with their
        buffers) and ``settle_s`` passed."""
        for name, pid in pids.items():
            u = self.usage.get(name)
            if u is None or u.pid != pid:
                u = self.usage[name] = Usage(pid, now, episodes)
            got = _tree_usage(pid)
            if got is None:
                continue
            rss, fds = got
            u.last_rss_mb, u.last_fds, u.peak_rss_mb = rss, fds, max(u.peak_rss_mb, rss)
            if u.base_rss_mb is None and episodes > u.episodes_at_start and now - u.started >= settle_s:
                u.base_rss_mb, u.base_fds = rss, fds
            if u.base_rss_mb is not None:
                u.history.append((now, rss))


def episode_figures(paths: list[Path], partials: list[Path]) -> dict[str, Any]:
    """Episodes saved, valid (``layout.validate`` clean, not a repaired leftover), missed ticks, problems."""
    import h5py

    from h1_training.recording import layout as L

    valid, missed, problems = 0, 0, []
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                bad = L.validate(f)
                if bool(f.attrs.get(L.ATTR_RECOVERED, False)):
                    bad.append(f"repaired after a crash ({f.attrs.get(L.ATTR_RECOVERED_REASON, '')})")
                missed += int(f.attrs.get(L.ATTR_MISSED_TICKS, 0))
        except OSError as exc:
            bad = [f"unreadable: {exc}"]
        if bad:
            problems.append(f"{path.name}: {'; '.join(bad)[:200]}")
        else:
            valid += 1
    problems += [f"{p.name}: left unsaved" for p in partials]
    return {"episodes": len(paths) + len(partials), "episodes_valid": valid,
            "invalid_episodes": len(paths) + len(partials) - valid, "recorder_missed_ticks": missed,
            "samples_lost_s": round(missed / 50.0, 2), "episode_problems": problems[:20]}


FAULT_CHILD = {"policy_server": "policy_server", "camera": "camera_sim", "modbus": "inspire_sim",
               "rsync": "rsync_daemon"}


class Recovery:
    """Is the stack whole again after a fault? Every child running, the recorder's sources fresh, a new episode
    saved after the fault, for ``rsync`` a new epoch marker, for ``policy_server`` the server answering."""

    def __init__(self, stack: Any, rec_status: Any, check_children: Any = lambda: None) -> None:
        self.stack = stack
        self.rec_status = rec_status      # a RosProbe capture of /episode_recorder/status
        self.check_children = check_children

    def stale_now(self) -> set[str]:
        last = self.rec_status.last()
        if last is None:
            return set(CAMERA_SOURCES)
        # arm/mode is published on change (bench recorder ignores it the same way)
        return {s for s in last.stale_sources if s != "arm/mode"}

    def server_up(self) -> bool:
        from h1_training.policy.client import PolicyClientError, get_training_status

        try:
            get_training_status("127.0.0.1", self.stack.server_port, timeout=2.0)
            return True
        except PolicyClientError:
            return False

    def whole(self, kind: str, before_eps: int, before_sync: int) -> bool:
        self.check_children()
        stack = self.stack
        if not all(c.running for c in stack.group.children):
            return False
        if self.stale_now():
            return False
        if len(stack.episodes()) <= before_eps:
            return False
        if kind == "rsync" and stack.sync_markers() <= before_sync:
            return False
        return kind != "policy_server" or self.server_up()


def inject_and_recover(stack: Any, recovery: Recovery, kind: str, down_s: float, at_s: float,
                       recover_s: float, log: Any = lambda text: None) -> Fault:
    """One fault: the child behind ``kind`` killed (SIGKILL: the policy server, the Modbus link) or stopped (the
    camera server, the rsync daemon), started again after ``down_s``, then up to ``recover_s`` for the stack to be
    whole again (``Recovery.whole``)."""
    fault = Fault(kind, at_s, down_s)
    before_eps, before_sync = len(stack.episodes()), stack.sync_markers()
    name = FAULT_CHILD[kind]
    if kind in ("policy_server", "modbus"):
        stack.kill(name, signal.SIGKILL)
    else:
        stack.stop_one(name)
    time.sleep(down_s)
    stack.restart(name)
    restored = time.monotonic()
    fault.recovered = wait_for(lambda: recovery.whole(kind, before_eps, before_sync), recover_s,
                               f"recovery from {kind}", period=1.0)
    fault.recover_s = round(time.monotonic() - restored, 1) if fault.recovered else None
    if not fault.recovered:
        fault.note = (f"stale: {sorted(recovery.stale_now())}; episodes {len(stack.episodes())} "
                      f"(before {before_eps}); markers {stack.sync_markers()} (before {before_sync})")
    log(f"  {kind}: " + (f"recovered in {fault.recover_s} s" if fault.recovered else f"NOT recovered: {fault.note}"))
    return fault


def run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import evaluate
    from h1_training.bench.stack import FullStack
    from h1_training.nodes.common import LATCHED_QOS
    from h1_training.procs import claim_ros_domain

    domain = args.domain if args.domain is not None else claim_ros_domain().domain_id
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    from h1_training.nodes.probe import RosProbe

    def log(text: str) -> None:
        print(f"[soak {time.monotonic() - t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="bench_soak_"))
    stack = FullStack(run_dir, domain)
    faults: list[Fault] = []
    watch = Watch()
    restarts = {"sim_operator": 0}
    with RosProbe("bench_soak_probe") as probe:
        rec_status = probe.capture("h1_training_interfaces/msg/RecorderStatus", "/episode_recorder/status",
                                   LATCHED_QOS, keep=50)
        try:
            stack.start()
            stack.start_operator(epochs=1000, episodes=1, policy_s=args.policy_seconds, human_s=args.human_seconds)
            log(f"stack up in {time.monotonic() - t0:.0f} s (server :{stack.server_port}, web {stack.web_url}, "
                f"rsync :{stack.rsync_port}); waiting for the first episode")
            if not wait_for(lambda: stack.episodes(), 240, "the first episode"):
                raise RuntimeError("no episode saved within 240 s of the stack's start")
            start = time.monotonic()
            end = start + args.minutes * 60.0
            plan = schedule(args.seed, max(1, int(args.minutes * 60.0 / args.fault_every_s) + 1))
            next_fault = start + args.fault_every_s / 2
            last_sample = 0.0

            def check_children() -> None:
                for child in list(stack.group.unexpected_exits()):
                    what = f"{child.name} exited with {child.proc.returncode}: " + " | ".join(child.lines[-3:])
                    watch.unexpected.append(what[:400])
                    log(what[:400])
                    child.expect_exit = True
                    if child.name == "sim_operator":  # the person starts the script again
                        restarts["sim_operator"] += 1
                        stack.restart("sim_operator")

            def sample(now: float) -> None:
                watch.sample(stack.pids(), now, args.settle_s, len(stack.episodes()))

            recovery = Recovery(stack, rec_status, check_children)

            while time.monotonic() < end:
                now = time.monotonic()
                check_children()
                if now - last_sample >= 5.0:
                    sample(now)
                    last_sample = now
                if now >= next_fault and len(faults) < len(plan) and end - now > args.recover_s / 2:
                    kind, down = plan[len(faults)]
                    log(f"fault {len(faults) + 1}: {kind} down for {down} s")
                    faults.append(inject_and_recover(stack, recovery, kind, down, round(now - start, 1),
                                                     args.recover_s, log))
                    next_fault = time.monotonic() + args.fault_every_s
                time.sleep(0.5)
            sample(time.monotonic())
            soak_s = time.monotonic() - start
        finally:
            stack.stop()
    figures = episode_figures(stack.episodes(), sorted(stack.dirs.robot.rglob("*.partial")))
    rss = {n: g for n, u in watch.usage.items() if (g := u.growth_mb()) is not None}
    rss_single = {n: round(u.last_rss_mb - u.base_rss_mb, 1) for n, u in watch.usage.items()
                  if u.base_rss_mb is not None}
    fds = {n: u.last_fds - u.base_fds for n, u in watch.usage.items() if u.base_fds is not None}
    figures.update({
        "minutes": round(soak_s / 60.0, 2),
        "faults_injected": len(faults),
        "faults_recovered": sum(f.recovered for f in faults),
        "faults_unrecovered": sum(not f.recovered for f in faults),
        "faults": [vars(f) for f in faults],
        "unexpected_exits": watch.unexpected,
        "unexpected_exits_count": len(watch.unexpected),
        "rss_growth_mb": rss,
        "rss_last_minus_base_mb": rss_single,
        "rss_growth_second_half_mb": {n: g for n, u in watch.usage.items()
                                      if (g := u.second_half_growth_mb()) is not None},
        "fd_growth": fds,
        "max_rss_growth_mb": max(rss.values()) if rss else None,
        "max_fd_growth": max(fds.values()) if fds else None,
        "peak_rss_mb": {n: round(u.peak_rss_mb, 1) for n, u in watch.usage.items()},
        "epochs_synced": stack.sync_markers(),
        "inputs": {"seed": args.seed, "fault_every_s": args.fault_every_s, "policy_seconds": args.policy_seconds,
                   "human_seconds": args.human_seconds, "cameras": "3 x 640x480 @ 30 fps (camera_sim)"},
    })
    figures["targets"] = evaluate(figures, targets())
    if args.keep:
        figures["run_dir"] = str(run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return figures
