"""make_process_realtime, in a child process of its own: every thread SCHED_FIFO, later threads and children too
(not the programs procs.run starts), and a clear refusal (nothing half-changed) where the process may not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from h1_training.scheduling import make_process_realtime

CHILD = r"""
import json, os, subprocess, sys, threading, time
from pathlib import Path
from h1_training.scheduling import make_process_realtime
if sys.argv[1] == "drop":  # no CAP_SYS_NICE and no rtprio limit: a laptop user without the setup
    import resource
    resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
    os.setgid(65534); os.setuid(65534)
early = threading.Thread(target=time.sleep, args=(2,), daemon=True)  # a thread that exists before (DDS's)
early.start()
note = make_process_realtime(30)
late = {}
threading.Thread(target=lambda: late.update(policy=os.sched_getscheduler(0))).start()
time.sleep(0.2)
tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
child = -1 if sys.argv[1] == "drop" else subprocess.run(  # (nobody may not run this venv's python)
    [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], capture_output=True, text=True).stdout
via_run = []  # procs.run, the runner of rsync and the HDF5 repair: its children at normal priority
if sys.argv[1] != "drop":
    from h1_training.procs import run
    run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], on_line=via_run.append, timeout_s=30)
print(json.dumps({"via_run": int(via_run[-1]) if via_run else -1,
                  "note": note, "policies": sorted({os.sched_getscheduler(t) & 0xff for t in tids}),
                  "priority": os.sched_getparam(0).sched_priority, "later_thread": late.get("policy", -1) & 0xff,
                  "child": int(child)}))
"""


def _may_use_sched_fifo() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _may_use_sched_fifo(), reason="this machine may not use SCHED_FIFO (needs CAP_SYS_NICE)")
def test_every_thread_becomes_sched_fifo_and_so_do_children_except_those_procs_run_starts():
    got = _run("keep")
    assert got["note"] == ""
    assert got["policies"] == [os.SCHED_FIFO] and got["priority"] == 30
    assert got["later_thread"] == os.SCHED_FIFO  # a thread started afterwards inherits it
    assert got["child"] == os.SCHED_FIFO         # and a child process (the recorder's HDF5 writer)
    assert got["via_run"] == os.SCHED_OTHER      # but not rsync or a repair (procs.run resets it with chrt)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_a_process_that_may_not_is_told_why_and_nothing_changes():
    got = _run("drop")
    assert "could not make the process SCHED_FIFO 30" in got["note"] and "CAP_SYS_NICE" in got["note"]
    assert got["policies"] == [os.SCHED_OTHER]


def test_priority_out_of_range_is_refused():
    with pytest.raises(ValueError, match="1..99"):
        make_process_realtime(0)


@pytest.mark.skipif(not _may_use_sched_fifo(), reason="this machine may not use SCHED_FIFO (needs CAP_SYS_NICE)")
@pytest.mark.parametrize("executable", ["h1_arm_node", "hil_session"])
def test_a_node_with_process_rt_priority_runs_every_thread_sched_fifo(procs, executable):
    """The robot profile's process_rt_priority (config/params/robot.yaml), read back from the kernel for every
    thread of the real node process, its DDS threads included."""
    from pathlib import Path

    child = procs.start_executable(executable, executable, ["--ros-args", "-p", "process_rt_priority:=20"])
    procs.wait_for_line(executable, lambda line: "every thread of this process at SCHED_FIFO 20" in line,
                        timeout=60)
    tids = [int(t.name) for t in Path(f"/proc/{child.proc.pid}/task").iterdir()]
    assert len(tids) > 3  # rclpy's and DDS's threads exist by then
    assert {os.sched_getscheduler(t) & 0xff for t in tids} == {os.SCHED_FIFO}
    assert {os.sched_getparam(t).sched_priority for t in tids} == {20}
