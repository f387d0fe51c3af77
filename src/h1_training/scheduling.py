"""Real-time scheduling of a whole process (no rclpy), for the robot laptop's processes that must keep their rate.

Why the whole process: a Python thread that must run on time (the recorder's 50 Hz sampler) also needs the
interpreter lock, which the process's other threads (ROS callbacks) hold in turn; one of those preempted by other
work leaves the sampler waiting however high its own priority. Measured with ``h1-training bench recorder
--full-stack`` on a 2-core machine: the sampler thread alone at SCHED_FIFO missed 17 ticks a minute; the recorder
process at SCHED_FIFO missed none, also with a CPU-heavy job beside it. Linux keeps 5 % of each second for normal
work (``sched_rt_runtime_us``), so a runaway real-time process cannot lock the machine up.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_process_realtime(priority: int) -> str:
    """Put every thread of this process under SCHED_FIFO ``priority`` (1-99); threads and child processes started
    later inherit it (SCHED_RESET_ON_FORK would also reset new threads, the sampler's included). Returns "" on
    success, else why not (CAP_SYS_NICE or an rtprio limit is needed); nothing is changed then."""
    if not 1 <= priority <= 99:
        raise ValueError(f"a SCHED_FIFO priority is 1..99, got {priority}")
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling is not available on this system"
    tids = sorted(int(t.name) for t in Path("/proc/self/task").iterdir())
    done = []
    try:
        for tid in tids:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            done.append(tid)
    except OSError as exc:
        for tid in done:  # all or nothing: half a real-time process is the priority inversion this avoids
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        return (f"could not make the process SCHED_FIFO {priority} ({exc.strerror}; needs CAP_SYS_NICE or an "
                "rtprio limit)")
    return ""
