"""Child processes, the one place that starts them (no rclpy).

- :func:`run`: the one subprocess runner for jobs that end (rsync of the session sync, the HDF5 repair worker,
  the training worker): own process group, output streamed line by line to a callback as it comes, a wall-clock
  timeout, an idle (hang) timeout, a cancel event, and a group kill (every signal of ``stop_signals`` in turn)
  that takes the child's own children (ssh, rsync's receiver) with it.
- :class:`ProcessGroup`: long-running named children (``h1-training up``, the tests and the benchmarks), each
  in its own process group, output prefixed with its name; ``stop()`` ends them in reverse start order: SIGINT,
  then SIGTERM, then SIGKILL, each with a timeout. Nothing is restarted silently: a child that exits is
  reported with its exit code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TextIO


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes (TimeoutError naming
    ``what``): the one readiness wait of tests, benches and the probe, instead of fixed sleeps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")


def loopback_ros_env(domain_id: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for processes that must talk over loopback only (tests, sim, benchmarks)."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")  # see h1_training/nodes/__init__.py
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DomainClaim:
    """A ROS domain id held by this process for as long as it lives (or until ``release()``): an exclusive
    ``flock`` on ``<tmp>/h1_training_ros_domains/<id>.lock``. The kernel drops the lock when the process ends, so a
    crashed run never leaves a domain blocked; two test runs, benches or demos on one machine never share a domain."""

    def __init__(self, domain_id: int, fd: int) -> None:
        self.domain_id = domain_id
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_CLAIMS: list[DomainClaim] = []  # claims of this process stay referenced (their fds open) until exit


def claim_ros_domain(first: int = 10, last: int = 101, lock_dir: str | os.PathLike | None = None) -> DomainClaim:
    """Claim a free ROS domain id in [first, last] (0-101 suit Fast DDS's port arithmetic with many participants),
    starting at a pid-dependent offset so parallel claimers rarely probe the same file first."""
    import fcntl
    import tempfile

    folder = Path(lock_dir or Path(tempfile.gettempdir()) / "h1_training_ros_domains")
    folder.mkdir(parents=True, exist_ok=True)
    span = last - first + 1
    start = os.getpid() % span
    for i in range(span):
        domain = first + (start + i) % span
        fd = os.open(folder / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        claim = DomainClaim(domain, fd)
        _CLAIMS.append(claim)
        return claim
    raise RuntimeError(f"every ROS domain in {first}-{last} is claimed by another run (locks in {folder})")


def resolve_executable(name: str) -> list[str]:
    """Command line that runs console script ``name`` of this installation.

    An executable of this package (``executables.ALL``) runs its entry point through this interpreter, so
    the child runs the very code this process imports (a stale install or another checkout cannot slip in).
    Other names: beside the interpreter (venv bin/), in lib/h1_training (ament layout), then on PATH.
    """
    from h1_training.executables import ALL

    if name in ALL:
        module, _, func = ALL[name].partition(":")
        return [sys.executable, "-c", f"import sys; from {module} import {func} as m; sys.exit(m())"]
    bindir = Path(sys.executable).parent
    for candidate in (bindir / name, bindir.parent / "lib" / "h1_training" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which(name)
    if found:
        return [found]
    eps = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == name]
    if eps:
        module, _, func = eps[0].value.partition(":")
        return [sys.executable, "-c", f"import sys; from {module} import {func} as m; sys.exit(m())"]
    raise FileNotFoundError(f"no executable named {name!r} is installed (console_scripts of h1_training)")


def executable_exists(name: str) -> bool:
    try:
        resolve_executable(name)
        return True
    except FileNotFoundError:
        return False


Signals = Sequence[tuple[int, float]]  # (signal, seconds to wait for the exit before the next one)


def kill_group(proc: subprocess.Popen, signals: Signals) -> None:
    """Send each signal to the child's process group in turn until it exits (its own children go too)."""
    for sig, wait in signals:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class RunResult:
    rc: int | None          # exit code; None when we stopped it (see ``stopped``)
    stopped: str = ""       # "", "timeout" (wall clock), "idle" (no output for idle_timeout_s), "cancelled"
    stderr: str = ""        # collected stderr (stderr="pipe")
    seconds: float = 0.0


def at_normal_priority(argv: Sequence[str]) -> list[str]:
    """``argv`` to run at normal scheduling when the caller is real-time (a node's ``process_rt_priority``):
    SCHED_FIFO is inherited by child processes, and a CPU-heavy child (rsync's checksums, an HDF5 repair) at
    SCHED_FIFO would starve the laptop's other work. Through ``chrt --other 0`` (util-linux): subprocess's
    ``preexec_fn`` is not safe in a process with threads. Unchanged for a normal caller or without chrt."""
    try:
        realtime = os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
    except (AttributeError, OSError):
        realtime = False
    chrt = shutil.which("chrt") if realtime else None
    return [chrt, "--other", "0", *argv] if chrt else list(argv)


def run(argv: Sequence[str], *, on_line: Callable[[str], None] | None = None, timeout_s: float | None = None,
        idle_timeout_s: float | None = None, cancel: threading.Event | None = None,
        stderr: str | IO[bytes] = "pipe", env: dict[str, str] | None = None, split_cr: bool = False,
        stop_signals: Signals = ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)),
        on_start: Callable[[subprocess.Popen], None] | None = None) -> RunResult:
    """Run ``argv`` to its end in its own process group; the one subprocess runner (module docstring).

    ``on_line`` gets every stdout line (decoded, without its end; with ``split_cr`` a carriage return ends a
    line too: progress meters redraw with \\r) from a reader thread, as soon as it is read. ``stderr``:
    "pipe" (collected into the result), "stdout" (merged into the lines) or a binary file to write to.
    Stops the group with ``stop_signals`` on ``timeout_s`` (wall clock), ``idle_timeout_s`` (no stdout line
    for that long: a hung child) or ``cancel``; a child that outlives the last signal is left to the OS.
    ``on_start`` gets the Popen once started (an owner that must be able to stop the group from elsewhere
    keeps it for ``kill_group``).
    """
    t0 = time.monotonic()
    err_target: Any = subprocess.PIPE if stderr == "pipe" else subprocess.STDOUT if stderr == "stdout" else stderr
    proc = subprocess.Popen(at_normal_priority(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=err_target, env=env, start_new_session=True)
    if on_start is not None:
        on_start(proc)
    last_output = [time.monotonic()]
    err_chunks: list[bytes] = []
    splitter = re.compile(rb"[\r\n]" if split_cr else rb"\n")

    def pump_out() -> None:
        assert proc.stdout is not None
        buf = b""
        while chunk := proc.stdout.read1(65536):
            last_output[0] = time.monotonic()
            buf += chunk
            *lines, buf = splitter.split(buf)
            if on_line is not None:
                for raw in lines:
                    on_line(raw.decode(errors="replace"))
        if buf and on_line is not None:
            on_line(buf.decode(errors="replace"))

    def pump_err() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(65536):
            err_chunks.append(chunk)

    readers = [threading.Thread(target=pump_out, daemon=True)]
    if proc.stderr is not None:
        readers.append(threading.Thread(target=pump_err, daemon=True))
    for t in readers:
        t.start()
    stopped = ""
    while proc.poll() is None:
        now = time.monotonic()
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
        elif timeout_s is not None and now - t0 >= timeout_s:
            stopped = "timeout"
        elif idle_timeout_s is not None and now - last_output[0] > idle_timeout_s:
            stopped = "idle"
        if stopped:
            kill_group(proc, stop_signals)
            break
        try:
            proc.wait(0.05)
        except subprocess.TimeoutExpired:
            pass
    for t in readers:
        t.join(5.0)
    return RunResult(None if stopped else proc.returncode, stopped,
                     b"".join(err_chunks).decode(errors="replace"), time.monotonic() - t0)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    # True when its exit is part of the plan: started with ``expect_exit=True`` (a one-shot tool, a scripted
    # operator that finishes), or stopped through ``stop_one``/``stop``. Any other exit is unexpected.
    expect_exit: bool = False

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int, group: bool = True) -> None:
        """Send ``sig`` to the child (its whole process group by default, as Ctrl+C or `up` does) and declare its
        exit expected: a test that kills a child on purpose says so this way."""
        self.expect_exit = True
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)


def parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM --``: the kernel sends the child SIGTERM when its parent dies, so a stack whose
    launcher was killed (``kill -9`` of ``up``, the demo or a bench) does not keep running unsupervised. Only from
    the main thread (the signal follows the thread that started the child) and where util-linux's ``setpriv``
    exists; ``exec`` keeps the setting and the pid. Without it, a killed launcher leaves its children orphaned."""
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class ProcessGroup:
    """Start, watch and stop a set of named child processes."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        echo: TextIO | None = None,
        keep_lines: int = 2000,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.echo = echo
        self.keep_lines = keep_lines
        self.cwd = cwd
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self.width = 12

    def start(self, name: str, argv: Sequence[str], extra_env: dict[str, str] | None = None,
              expect_exit: bool = False) -> Child:
        """Start ``argv`` as child ``name``. ``expect_exit=True`` declares that it ends by itself (tests fail on
        any other child that exits while they run, see ``unexpected_exits``)."""
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        proc = subprocess.Popen(
            parent_death_prefix() + list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            text=True,
            bufsize=1,
            start_new_session=True,  # own process group: Ctrl+C in the terminal reaches us, we stop them in order
        )
        child = Child(name=name, argv=list(argv), proc=proc, expect_exit=expect_exit)
        self.width = max(self.width, len(name))
        child._reader = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child._reader.start()
        with self._lock:
            self.children.append(child)
        return child

    def start_executable(self, name: str, executable: str, args: Sequence[str] = (), **kw) -> Child:
        return self.start(name, resolve_executable(executable) + list(args), **kw)

    def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        for raw in child.proc.stdout:
            line = raw.rstrip("\n")
            with self._lock:
                child.lines.append(line)
                if len(child.lines) > self.keep_lines:
                    del child.lines[: len(child.lines) - self.keep_lines]
                if self.echo is not None:
                    self.echo.write(f"[{child.name:<{self.width}}] {line}\n")
                    self.echo.flush()

    def get(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def wait_for_line(self, name: str, predicate: Callable[[str], bool], timeout: float) -> str:
        """Wait until a child prints a line that satisfies ``predicate``; raise with its output if not."""
        child = self.get(name)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                lines = child.lines[seen:]
                seen = len(child.lines)
            for line in lines:
                if predicate(line):
                    return line
            if not child.running and not lines:
                raise RuntimeError(f"{name} exited with {child.proc.returncode}:\n{child.output()}")
            time.sleep(0.02)
        raise TimeoutError(f"{name}: expected line not seen in {timeout:.1f}s. Output:\n{child.output()}")

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.running]

    def unexpected_exits(self) -> list[Child]:
        """Children that ended although nobody stopped them and they were not declared ``expect_exit``."""
        return [c for c in self.children if not c.running and not c.expect_exit]

    def unexpected_exit_report(self, tail: int = 6000) -> str:
        """"" when no child exited unexpectedly; else which ones, with their exit codes and output (tests fail
        with this: ``pytest.fail(report, pytrace=False)``)."""
        dead = self.unexpected_exits()
        if not dead:
            return ""
        head = "child exited unexpectedly during the test: " + ", ".join(
            f"{c.name} (exit {c.proc.returncode})" for c in dead)
        return head + "".join(f"\n----- output of {c.name} (exit {c.proc.returncode}) -----\n"
                              f"{c.output()[-tail:]}\n" for c in dead)

    def stop_one(self, child: Child, timeout: float = 5.0) -> int | None:
        """Stop one child (SIGINT, SIGTERM, SIGKILL to its process group); its exit is expected from now on."""
        if child.running:
            child.expect_exit = True
            kill_group(child.proc, ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)))
        else:
            # the leader exited; make sure nothing it spawned lingers in its group
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if child._reader is not None:
            child._reader.join(timeout=1.0)
        return child.proc.returncode

    def stop(self, timeout: float = 5.0, concurrently: bool = False) -> dict[str, int | None]:
        """Stop all children in reverse start order; return their exit codes. ``concurrently``: every child gets
        its signals at once, each on its own thread (a test's teardown: nothing depends on the order there, and
        a dozen rclpy nodes stopped one after the other cost seconds per test); a robot stack (`up`, the demo)
        stops in order, so the session's last HOLD and save still find the arm and the recorder running."""
        children = list(reversed(list(self.children)))
        codes: dict[str, int | None] = {}
        if not concurrently:
            for child in children:
                codes[child.name] = self.stop_one(child, timeout)
            return codes
        threads = [threading.Thread(target=lambda c=child: codes.__setitem__(c.name, self.stop_one(c, timeout)),
                                    daemon=True) for child in children]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 6.0)  # stop_one's own SIGTERM and SIGKILL waits follow the timeout
        return {child.name: codes.get(child.name, child.proc.returncode) for child in children}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
