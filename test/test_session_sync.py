"""hil_session's sync step (session/sync.py) against real rsync: a local folder and an rsync daemon on 127.0.0.1.

"Complete" is judged by the GPU side's own rule (policy/autotrain.scan with the marker required)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from h1_training.recording.layout import SYNC_MARKER
from h1_training.session.sync import (
    PARTIAL_DIR,
    SyncConfig,
    build_argv,
    epoch_dest,
    parse_progress,
    parse_stats,
    sync_epoch,
    target_kind,
)
from h1_training.training.autotrain import AutoTrainConfig, scan

BIG = 4_000_000                                  # with bwlimit 1000 KB/s: ~4 s, time to interrupt it


def complete(root: Path, epoch: int = 1) -> bool:
    found = [e for e in scan(root, AutoTrainConfig(require_marker=True)) if e.epoch == epoch]
    return bool(found) and found[0].complete


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    ep = tmp_path / "save" / "training_session_epoch1"
    ep.mkdir(parents=True)
    (ep / "episode_0.hdf5").write_bytes(os.urandom(BIG))
    (ep / "episode_1.hdf5").write_bytes(os.urandom(1000))
    (ep / "episode_2.hdf5.partial").write_bytes(b"being recorded")   # never sent
    (ep / ".DS_Store").write_bytes(b"x")                               # never sent
    return tmp_path / "save"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``rsync --daemon`` bound to 127.0.0.1 with module ``h1`` at ``root``; killed with its forked children."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.root = tmp / "server"
        self.root.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.conf = tmp / "rsyncd.conf"
        self.conf.write_text(f"pid file = {tmp}/rsyncd.pid\nlock file = {tmp}/rsyncd.lock\n"
                             f"log file = {tmp}/rsyncd.log\nuse chroot = no\nuid = {os.getuid()}\n"
                             f"gid = {os.getgid()}\n[h1]\n  path = {self.root}\n  read only = no\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/h1/"

    def start(self) -> Daemon:
        (self.conf.parent / "rsyncd.pid").unlink(missing_ok=True)
        self.proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={self.conf}",
                                      f"--port={self.port}", "--address=127.0.0.1"], start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, "rsync daemon exited"
                time.sleep(0.05)
        raise TimeoutError("rsync daemon did not listen")

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the transfer runs in a forked child
            except ProcessLookupError:
                pass
            self.proc.wait(5)


@pytest.fixture
def daemon(tmp_path: Path):
    d = Daemon(tmp_path).start()
    yield d
    d.kill()


def cfg(target: str, **kw) -> SyncConfig:
    kw.setdefault("io_timeout_s", 10)
    kw.setdefault("connect_timeout_s", 5)
    kw.setdefault("attempt_timeout_s", 60)
    kw.setdefault("max_attempts", 1)
    return SyncConfig(target, **kw)


@pytest.mark.parametrize("target,kind,dest", [
    ("yuxin@p6000:/data/h1_training/", "ssh", "yuxin@p6000:/data/h1_training/training_session_epoch3/"),
    ("p6000:", "ssh", "p6000:training_session_epoch3/"),
    ("rsync://127.0.0.1:873/h1", "daemon", "rsync://127.0.0.1:873/h1/training_session_epoch3/"),
    ("host::h1/data", "daemon", "host::h1/data/training_session_epoch3/"),
    ("data/synced/", "local", "data/synced/training_session_epoch3/"),
    ("./a:b/", "local", "./a:b/training_session_epoch3/"),
])
def test_targets_and_argv(target, kind, dest):
    assert (target_kind(target), epoch_dest(target, 3)) == (kind, dest)
    argv = build_argv("save/training_session_epoch3", dest, SyncConfig(target, io_timeout_s=30))
    assert argv[-2:] == ["save/training_session_epoch3/", dest]
    assert {"--partial", f"--partial-dir={PARTIAL_DIR}", "--timeout=30", "--checksum"} <= set(argv)
    assert ("--contimeout=10" in argv) == (kind == "daemon")
    assert any("BatchMode=yes" in a for a in argv) == (kind == "ssh")


def test_parse_progress_and_stats():
    p = parse_progress("      3,000,000  99%  404.25MB/s    0:00:00 (xfr#1, to-chk=1/3)")
    assert (p.bytes, p.percent, p.rate, p.files_transferred, p.files_to_check, p.files_total) == \
           (3_000_000, 99, "404.25MB/s", 1, 1, 3)
    assert parse_progress("Number of files: 3") is None
    assert parse_stats("Number of regular files transferred: 2\nTotal transferred file size: 3,000,003 bytes\n"
                       "Total bytes sent: 3000943\n") == {"files": 2, "bytes": 3_000_003, "sent_bytes": 3000943}


def test_local_target_sends_episodes_then_marker(save_dir: Path, tmp_path: Path):
    dest = tmp_path / "synced"
    (dest / "training_session_epoch1").mkdir(parents=True)
    (dest / "training_session_epoch1" / SYNC_MARKER).write_text("{}")              # from an earlier sync
    (dest / "training_session_epoch1" / ".episode_0.hdf5.Ab12Cd").write_bytes(b"x")  # a killed receiver's temp
    (dest / "training_session_epoch1" / "notes.txt").write_text("server-side file")  # not ours: kept
    res = sync_epoch(save_dir, 1, cfg(f"{dest}/"))
    assert res.ok, res.error
    assert (res.files, res.bytes, res.attempts) == (2, BIG + 1000, 1)
    assert res.episodes == ["episode_0.hdf5", "episode_1.hdf5"]
    got = sorted(p.name for p in (dest / "training_session_epoch1").iterdir())
    assert got == sorted(["episode_0.hdf5", "episode_1.hdf5", "notes.txt", SYNC_MARKER]) and complete(dest)
    assert (dest / "training_session_epoch1" / "episode_0.hdf5").read_bytes() == \
           (save_dir / "training_session_epoch1" / "episode_0.hdf5").read_bytes()
    again = sync_epoch(save_dir, 1, cfg(str(dest)))                                  # up to date: nothing sent
    assert again.ok and again.files == 0 and complete(dest)


def test_daemon_wire_with_progress(save_dir: Path, daemon: Daemon):
    seen = []
    res = sync_epoch(save_dir, 1, cfg(daemon.url), on_progress=seen.append)
    assert res.ok, res.error
    assert res.files == 2 and complete(daemon.root)
    assert seen and seen[-1].bytes == BIG + 1000 and seen[-1].percent == 100


def _interrupt_when(n_bytes: int, action):
    fired = threading.Event()

    def on_progress(p):
        if p.bytes >= n_bytes and not fired.is_set():
            fired.set()
            action()
    return on_progress, fired


def test_daemon_killed_midway_no_marker_then_rerun_completes(save_dir: Path, daemon: Daemon, tmp_path: Path):
    on_progress, fired = _interrupt_when(500_000, daemon.kill)
    res = sync_epoch(save_dir, 1, cfg(daemon.url, bwlimit_kbps=1000, io_timeout_s=5), on_progress=on_progress)
    assert fired.is_set() and not res.ok
    assert "sync again to resume" in res.error and res.detail, res   # connection lost (or stalled)
    assert not (daemon.root / "training_session_epoch1" / SYNC_MARKER).exists() and not complete(daemon.root)
    daemon.start()
    res = sync_epoch(save_dir, 1, cfg(daemon.url))
    assert res.ok, res.error
    assert complete(daemon.root)                 # incl. no hidden temp file left by the killed receiver


def test_cancel_midway_keeps_partial_and_resumes(save_dir: Path, daemon: Daemon):
    epoch_dir = daemon.root / "training_session_epoch1"
    epoch_dir.mkdir()
    (epoch_dir / SYNC_MARKER).write_text("{}")   # an earlier sync's marker must go before new data lands
    cancel = threading.Event()
    on_progress, fired = _interrupt_when(1_000_000, cancel.set)
    res = sync_epoch(save_dir, 1, cfg(daemon.url, bwlimit_kbps=1000), on_progress=on_progress, cancel=cancel)
    assert fired.is_set() and not res.ok and "cancelled" in res.error
    assert not (epoch_dir / SYNC_MARKER).exists() and not complete(daemon.root)
    partial = epoch_dir / PARTIAL_DIR / "episode_0.hdf5"
    assert partial.exists() and 0 < partial.stat().st_size < BIG
    res = sync_epoch(save_dir, 1, cfg(daemon.url))
    assert res.ok, res.error
    assert res.sent_bytes < BIG - 500_000        # resumed: the partial part was not sent again
    assert complete(daemon.root) and not (epoch_dir / PARTIAL_DIR).exists()


def test_missing_targets_are_clear_errors_and_not_retried(save_dir: Path, daemon: Daemon, tmp_path: Path):
    res = sync_epoch(save_dir, 1, cfg(f"{tmp_path}/nope/", max_attempts=3))
    assert not res.ok and res.attempts == 0 and "does not exist" in res.error
    res = sync_epoch(save_dir, 1, cfg(daemon.url + "no/such/", max_attempts=3, backoff_s=0))
    assert (res.ok, res.attempts) == (False, 1)
    assert res.error.startswith(f"target folder rsync://127.0.0.1:{daemon.port}/h1/no/such/ does not exist"), res
    res = sync_epoch(save_dir, 1, cfg(f"rsync://127.0.0.1:{daemon.port}/nomodule/", max_attempts=3, backoff_s=0))
    assert (res.ok, res.attempts) == (False, 1) and "no such module" in res.error
    assert "nothing to sync" in sync_epoch(save_dir, 7, cfg(daemon.url)).error


def test_connection_refused_is_retried_with_backoff(save_dir: Path, tmp_path: Path):
    later = Daemon(tmp_path)                     # nothing listens on its port yet
    delays = []

    def sleep(s: float) -> None:                 # the backoff: the server comes up meanwhile
        delays.append(s)
        later.start()
    try:
        res = sync_epoch(save_dir, 1, cfg(later.url, max_attempts=3, backoff_s=0.5), sleep=sleep)
    finally:
        later.kill()
    assert res.ok and res.attempts == 2 and delays == [0.5], res
    assert complete(later.root)
