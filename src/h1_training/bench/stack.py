"""The whole simulated session stack as the benches that need it run it (``bench soak``, ``bench recorder
--full-stack``): the ``sim_hil`` profile (emulators, real drivers, recorder, ``h1-training serve`` auto-training
the scripted fit, ``hil_session``, ``foxglove_gateway``, ``training_web_app``) plus the ``sim`` profile's
``training_workflow_manager`` and ``dataset_manager``, on private loopback ports (``bringup.plan_ports``) in one
run folder, with an rsync daemon on loopback as the "GPU server" the session syncs each epoch to (the real wire:
``rsync://``; it can be stopped to make the target unreachable) and the scripted operator (``sim_operator``,
session mode) pressing the keys.

    stack = FullStack(run_dir, domain)
    stack.start(); stack.start_operator(epochs=1000, episodes=1, policy_s=3, human_s=2)
    ...; stack.restart("policy_server"); ...; stack.stop()
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTRA_NODES = ("training_workflow_manager", "dataset_manager")  # from the sim profile, beside sim_hil's


@dataclass(frozen=True)
class StackDirs:
    run: Path

    @property
    def robot(self) -> Path:      # the recorder's and the session's save_dir
        return self.run / "robot"

    @property
    def gpu(self) -> Path:        # the rsync daemon's module = the server's --data-dir
        return self.run / "gpu_server" / "data"

    @property
    def models(self) -> Path:
        return self.run / "gpu_server" / "models"

    @property
    def exports(self) -> Path:
        return self.run / "exports"

    def make(self) -> None:
        for d in (self.robot, self.gpu, self.models, self.exports):
            d.mkdir(parents=True, exist_ok=True)


def stack_profile():
    """``sim_hil`` plus the workflow and dataset managers of ``sim``, as one profile (one port plan)."""
    from dataclasses import replace

    from h1_training.bringup import load_profile

    hil, sim = load_profile("sim_hil"), load_profile("sim")
    extra = tuple(n for n in sim.nodes if n.name in EXTRA_NODES)
    return replace(hil, name="sim_full_stack", nodes=hil.nodes + extra,
                   description=hil.description + " + " + ", ".join(EXTRA_NODES))


def _rsync_daemon_conf(dirs: StackDirs) -> Path:
    conf = dirs.run / "rsyncd.conf"
    conf.write_text(f"use chroot = false\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
                    f"pid file = {dirs.run / 'rsyncd.pid'}\n"
                    f"[gpu]\n  path = {dirs.gpu}\n  read only = false\n")
    return conf


class FullStack:
    """Start, fault and stop the full simulated session stack in a ``procs.ProcessGroup``."""

    def __init__(self, run_dir: Path, domain: int, echo: Any = None) -> None:
        from h1_training.procs import ProcessGroup, loopback_ros_env

        self.dirs = StackDirs(Path(run_dir))
        self.dirs.make()
        self.group = ProcessGroup(env=loopback_ros_env(domain), echo=echo)
        self.rsync_port = 0
        self.server_port = 0
        self.web_url = ""
        self.gateway_url = ""
        self.extra_params: dict[str, list[str]] = {}  # executable -> more ROS arguments (a bench's settings)

    def _extra(self, executable: str) -> list[str]:
        d = self.dirs
        return {
            "h1-training": ["--models-dir", str(d.models), "--data-dir", str(d.gpu)],
            "hil_session": ["-p", f"save_dir:={d.robot}", "-p", f"rsync_target:=rsync://127.0.0.1:{self.rsync_port}/gpu/"],
            "episode_recorder": ["-p", f"save_dir:={d.robot}"],
            "training_web_app": ["-p", "port:=0", "-p", f"data_roots:=['{d.run}']"],
            "training_workflow_manager": ["-p", f"workflow.data_dir:={d.robot}",
                                          "-p", f"workflow.state_file:={d.run / 'workflow_state.json'}"],
            "dataset_manager": ["-p", f"roots:=['{d.robot}']", "-p", f"export_dir:={d.exports}"],
        }.get(executable, []) + self.extra_params.get(executable, [])

    def start_rsync_daemon(self) -> None:
        from h1_training.bringup import free_port

        if not self.rsync_port:
            self.rsync_port = free_port()
        self.group.start("rsync_daemon", ["rsync", "--daemon", "--no-detach", "--address", "127.0.0.1",
                                          "--port", str(self.rsync_port), "--config",
                                          str(_rsync_daemon_conf(self.dirs))])

    def start(self, timeout: float = 120.0) -> None:
        from h1_training.bringup import plan_ports
        from h1_training.procs import resolve_executable

        self.start_rsync_daemon()
        profile = stack_profile()
        ports = plan_ports(profile)
        for node in profile.nodes:
            argv = resolve_executable(node.executable) + ports.argv_tail(node) + self._extra(node.executable)
            self.group.start(node.name, argv, extra_env=node.env or None)
        line = self.group.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout)
        self.server_port = int(line.rsplit(":", 1)[1])
        line = self.group.wait_for_line("training_web_app", lambda s: "listening on http://" in s, timeout)
        self.web_url = line.split("listening on ", 1)[1].strip()
        line = self.group.wait_for_line("foxglove_gateway", lambda s: "listening on ws://" in s, timeout)
        self.gateway_url = line.rsplit(" ", 1)[1]

    def start_operator(self, epochs: int, episodes: int, policy_s: float, human_s: float) -> None:
        from h1_training.procs import resolve_executable

        self.group.start("sim_operator", resolve_executable("sim_operator") + [
            "--ros-args", "-p", "mode:=session", "-p", f"epochs:={epochs}", "-p", f"episodes:={episodes}",
            "-p", f"policy_seconds:={float(policy_s)}", "-p", f"human_seconds:={float(human_s)}"])

    def kill(self, name: str, sig: int) -> None:
        child = self.group.get(name)
        if child.running:
            child.signal(sig)
        child.expect_exit = True
        child.proc.wait(timeout=20)

    def stop_one(self, name: str) -> None:
        self.group.stop_one(self.group.get(name))

    def restart(self, name: str) -> None:
        """Start ``name`` again with the same command line (after it was killed or stopped)."""
        old = self.group.get(name)
        if old.running:
            self.group.stop_one(old)
        self.group.children.remove(old)
        self.group.start(name, old.argv)

    def episodes(self) -> list[Path]:
        return sorted(self.dirs.robot.rglob("episode_*.hdf5"))

    def sync_markers(self) -> int:
        from h1_training.recording.layout import SYNC_MARKER

        return len(list(self.dirs.gpu.rglob(SYNC_MARKER)))

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.group.children if c.running}

    def stop(self) -> dict[str, int | None]:
        return self.group.stop()


def _each_thread(stack: FullStack, names: tuple[str, ...], apply: Any) -> list[str]:
    """``apply(tid)`` on every thread of these children (and of their children); the names it could set.
    Linux schedules threads: threads started later take the setting of the thread that starts them."""
    import psutil

    done = []
    for child in stack.group.children:
        if child.name not in names or not child.running:
            continue
        try:
            root = psutil.Process(child.proc.pid)
            for p in [root] + root.children(recursive=True):
                for t in p.threads():
                    apply(t.id)
            done.append(child.name)
        except (psutil.Error, OSError):
            pass
    return done


def renice(stack: FullStack, names: tuple[str, ...], nice: int) -> list[str]:
    """Set the nice value of these children (and their threads/children); the names it could set."""
    return _each_thread(stack, names, lambda tid: os.setpriority(os.PRIO_PROCESS, tid, nice))


def set_fifo(stack: FullStack, names: tuple[str, ...], priority: int) -> list[str]:
    """Make every thread of these children (and their children) SCHED_FIFO ``priority``; the names it could set."""
    return _each_thread(stack, names,
                        lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority)))


def cpu_burners(n: int | None = None) -> list:
    """A CPU-heavy job beside the stack: one busy process per core (plain Python arithmetic, nice 0)."""
    import subprocess

    code = "x = 0\nwhile True:\n    x = (x * 1103515245 + 12345) % 2147483648\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n or os.cpu_count() or 2)]


WAKEUP_PROBE = """
import json, os, signal, sys, time
policy = "nice"
try:
    if sys.argv[1] == "fifo":
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        policy = "SCHED_FIFO 50"
    else:
        os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[1]))
except OSError:
    policy = "nice (not permitted)"
late, stop = [], []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while not stop:
    t = time.perf_counter()
    time.sleep(0.001)
    late.append(time.perf_counter() - t - 0.001)
late.sort()
n = len(late)
print(json.dumps({"policy": policy, "nice": os.getpriority(os.PRIO_PROCESS, 0), "wakeups": n,
                  "late_p99_ms": round(late[int(0.99 * (n - 1))] * 1e3, 2),
                  "late_max_ms": round(late[-1] * 1e3, 2), "late_over_10ms": sum(x > 0.01 for x in late),
                  "late_over_50ms": sum(x > 0.05 for x in late)}), flush=True)
"""


def start_wakeup_probe(priority: int | str = -20):
    """A process that only sleeps 1 ms at a time and counts how late it wakes up, the way ``cyclictest`` does: what
    the machine itself lets a process do, whatever our processes do. ``priority``: a nice value (-20: ahead of
    every other normal process) or ``"fifo"`` (SCHED_FIFO 50, real-time: needs CAP_SYS_NICE; falls back to nice 0
    and says so). Stop it with :func:`stop_wakeup_probe`."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", WAKEUP_PROBE, str(priority)], stdout=subprocess.PIPE, text=True)


def stop_wakeup_probe(probe) -> dict:
    import json
    import signal

    if probe.poll() is not None:
        return {}
    probe.send_signal(signal.SIGTERM)
    out, _ = probe.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def stop_burners(burners: list) -> None:
    for p in burners:
        p.kill()
    for p in burners:
        p.wait(timeout=10)


def wait_for(check, timeout: float, what: str, period: float = 0.5) -> bool:
    """``procs.wait_until`` as a yes/no (a fault that did not recover is a figure here, not an exception)."""
    from h1_training.procs import wait_until

    try:
        return bool(wait_until(check, timeout, what, interval=period))
    except TimeoutError:
        return False
