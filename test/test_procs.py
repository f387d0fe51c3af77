"""procs.run, the one subprocess runner: streamed lines, timeouts, cancel, and a kill that takes the group."""

from __future__ import annotations

import os
import sys
import threading
import time

from h1_training import procs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by its dead parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_lines_stream_while_the_child_runs_and_stderr_is_kept():
    got: list[tuple[float, str]] = []
    code = ("import sys, time; print('first', flush=True); sys.stdout.write('a\\rb\\n'); sys.stdout.flush(); "
            "print('oops', file=sys.stderr); time.sleep(1.0); print('last')")
    t0 = time.monotonic()
    run = procs.run([sys.executable, "-c", code], on_line=lambda line: got.append((time.monotonic() - t0, line)),
                    split_cr=True)
    assert run.rc == 0 and run.stopped == "" and "oops" in run.stderr
    assert [line for _, line in got] == ["first", "a", "b", "last"]
    assert got[0][0] < got[-1][0] - 0.5  # "first" arrived a second before the end, not at exit


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    run = procs.run([sys.executable, "-c", code], timeout_s=1.5)
    assert run.stopped == "timeout" and run.rc is None and run.seconds < 10
    grandchild = int(pidfile.read_text())
    procs.wait_until(lambda: not _alive(grandchild), 5.0, "the grandchild to go with its group")


def test_idle_timeout_and_cancel():
    run = procs.run([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"],
                    idle_timeout_s=1.0)
    assert run.stopped == "idle" and run.seconds < 10
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    run = procs.run([sys.executable, "-c", "import time; time.sleep(60)"], cancel=cancel)
    assert run.stopped == "cancelled" and run.rc is None and run.seconds < 10


def test_a_failing_child_reports_its_exit_code():
    run = procs.run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert run.rc == 3 and run.stopped == ""


def test_children_of_a_killed_launcher_do_not_outlive_it():
    """kill -9 of a launcher (up, the demo, a bench) leaves no stack running unsupervised: its ProcessGroup's
    children get SIGTERM from the kernel (parent-death signal) and stop."""
    import shutil
    import signal
    import subprocess

    import pytest

    if not shutil.which("setpriv"):
        pytest.skip("util-linux setpriv is not installed")
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from h1_training.procs import ProcessGroup\n"
         "g = ProcessGroup(); c = g.start('sleeper', [sys.executable, '-c', 'import time; time.sleep(120)'])\n"
         "print(c.proc.pid, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(launcher.stdout.readline())
        deadline = time.monotonic() + 10  # past setpriv's exec (it sets the signal just before): the sleeper runs
        while b"setpriv" in open(f"/proc/{child}/cmdline", "rb").read() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _alive(child)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its killed launcher"
    finally:
        launcher.kill()


SLOW_TO_STOP = ("import signal, sys, time\n"
                "def stop(*_):\n"
                "    print('sigint', time.time(), flush=True); time.sleep(1.0); sys.exit(3)\n"
                "signal.signal(signal.SIGINT, stop); print('ready', flush=True)\n"
                "while True: time.sleep(0.05)\n")


def test_a_concurrent_stop_signals_every_child_at_once_and_returns_each_exit_code():
    """Test teardown stops a stack concurrently: each child gets SIGINT at once (not after the one before it has
    finished its own 1 s shutdown) and every exit code comes back."""
    group = procs.ProcessGroup()
    children = [group.start(f"slow{i}", [sys.executable, "-u", "-c", SLOW_TO_STOP]) for i in range(3)]
    for c in children:
        procs.wait_until(lambda c=c: "ready" in c.output(), timeout=20, what=f"{c.name} ready")
    codes = group.stop(timeout=5.0, concurrently=True)
    assert codes == {"slow2": 3, "slow1": 3, "slow0": 3}
    got = [float(next(x for x in c.lines if x.startswith("sigint")).split()[1]) for c in children]
    assert max(got) - min(got) < 0.9, got  # in order, each would have waited for the one before (>= 1 s apart)
