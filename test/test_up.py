"""`h1-training up` as a supervisor: a child that exits stops the others in reverse order and `up` says which one
died (exit 1); each is asked with SIGINT, then SIGTERM, then SIGKILL (a child that ignores the first two is
killed, and its exit status says so); Ctrl+C stops everything (exit 0); nothing is left running either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from h1_training.procs import wait_until


def _profile(tmp_path: Path, *nodes: str) -> dict[str, str]:
    (tmp_path / "bringup").mkdir()
    (tmp_path / "bringup" / "t.yaml").write_text("description: up under test\nnodes:\n" + "".join(nodes))
    return {**os.environ, "H1_TRAINING_CONFIG": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _server(tmp_path: Path, name: str) -> str:
    # a long-running non-ROS child whose command line names this test's folder (to find leftovers)
    return (f"  - {{name: {name}, executable: h1-training, ros: false, "
            f"args: [serve, --port, '0', --log-level, WARNING, --models-dir, '{tmp_path / name}']}}\n")


def _leftovers(tmp_path: Path) -> list[str]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(tmp_path) in cmd and "pytest" not in cmd:
            out.append(cmd)
    return out


def _up_until_dies(env: dict[str, str]) -> str:
    """`h1-training up t` whose child `dies` exits with code 2: up stops the others and exits 1; its stdout."""
    out = subprocess.run([sys.executable, "-m", "h1_training.cli", "up", "t"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[up] dies exited with code 2; stopping the others" in out.stdout, out.stdout
    return out.stdout


def test_a_child_that_exits_stops_the_others_in_reverse_order(tmp_path):
    env = _profile(tmp_path, _server(tmp_path, "first"), _server(tmp_path, "second"),
                   # dies once the servers are up: an argparse error, exit code 2
                   "  - {name: dies, executable: h1-training, ros: false, args: [bench, no_such_bench]}\n")
    text = _up_until_dies(env)
    stops = [line for line in text.splitlines() if line.startswith("[up] ") and ": exit " in line]
    assert [s.split(":")[0] for s in stops] == ["[up] dies", "[up] second", "[up] first"]  # reverse start order
    assert not _leftovers(tmp_path)


def test_ctrl_c_stops_everything(tmp_path):
    env = _profile(tmp_path, _server(tmp_path, "first"), _server(tmp_path, "second"))
    up = subprocess.Popen([sys.executable, "-m", "h1_training.cli", "up", "t"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in up.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: sum("listening on ws://" in line for line in list(lines)) == 2, 60,
                   "both servers listening")
        up.send_signal(signal.SIGINT)  # what the terminal sends to `up` (its children run in their own groups)
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    reader.join(timeout=10)
    text = "\n".join(lines)
    assert "[up] second: exit 0" in text and "[up] first: exit 0" in text, text
    assert not _leftovers(tmp_path)


def _stubborn(tmp_path: Path, name: str) -> str:
    # ignores SIGINT and SIGTERM (says when each arrives), only SIGKILL ends it; its $0 names this test's folder
    script = ("trap 'echo got SIGINT' INT; trap 'echo got SIGTERM' TERM; echo stubborn ready; "
              "while :; do sleep 0.1; done")
    return (f"  - {{name: {name}, executable: bash, ros: false, "
            f"args: [-c, \"{script}\", '{tmp_path / name}']}}\n")


def test_a_child_that_ignores_sigint_and_sigterm_is_killed_and_the_exit_status_says_so(tmp_path):
    env = _profile(tmp_path, _server(tmp_path, "first"), _stubborn(tmp_path, "stubborn"),
                   "  - {name: dies, executable: h1-training, ros: false, args: [bench, no_such_bench]}\n")
    text = _up_until_dies(env)
    assert "stubborn ready" in text, text
    stops = [line for line in text.splitlines() if line.startswith("[up] ") and ": exit " in line]
    assert stops[:2] == ["[up] dies: exit 2", f"[up] stubborn: exit {-signal.SIGKILL}"], stops
    # the server stops at the first ask (0 once its handler is installed, -SIGINT while it is still starting)
    assert stops[2:] in (["[up] first: exit 0"], [f"[up] first: exit {-signal.SIGINT}"]), stops
    # it was asked twice, in order, before it was killed
    said = [line for line in text.splitlines() if "got SIG" in line]
    assert [line.rsplit(" ", 1)[1] for line in said][:2] == ["SIGINT", "SIGTERM"], said
    assert not _leftovers(tmp_path)
