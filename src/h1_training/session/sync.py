"""The session's sync step: rsync one epoch's episodes to the GPU side, then the ``SYNC_COMPLETE`` marker (no rclpy).

    cfg = SyncConfig(target="yuxin@p6000:/data/h1_training/")   # training_config.yaml rsync.target
    result = sync_epoch("data/h1_data_auto", 1, cfg, on_progress=print, cancel=stop_event)
    result.ok, result.files, result.bytes, result.seconds, result.error

``save_dir/training_session_epoch{E}/`` goes to ``<target>/training_session_epoch{E}/``. Targets: a local folder,
``[user@]host:/path/`` (ssh, key authentication only: BatchMode, no password prompt can hang the session) or an
rsync daemon (``rsync://host[:port]/module/path/``, ``host::module/path``). The target folder must exist (as the
seed's troubleshooting says); the epoch folder in it is created.

What the GPU side's auto-train (``training/autotrain.py``) counts as complete: ``episode_*.hdf5`` files, no
``*.partial``/``*.tmp``/hidden file, and ``SYNC_MARKER`` in the folder. So the data run:

- never sends the recorder's in-progress ``*.partial`` files, ``*.tmp`` or hidden files;
- before sending anything, deletes on the receiver a ``SYNC_MARKER`` left by an earlier sync of the same epoch
  and rsync temp files (``.episode_*.hdf5.XXXXXX``) a killed receiver left behind; nothing else there is touched
  (every other receiver file is protected from deletion);
- keeps interrupted files in ``.rsync-partial/`` (``--partial-dir``, a folder, which auto-train ignores) so the
  next run resumes them; ``--checksum`` compares content, not size and time, to decide what to send.

The marker is sent by a second rsync run, only after the data run exited 0, as an atomic rename on the receiver.
Each run is limited in wall time (``attempt_timeout_s``) and in silence (``--timeout``); failed runs are retried
with exponential backoff when the cause can pass (network, timeout), not when it cannot (no such folder, no
SSH key). ``cancel`` (a threading.Event) stops a run at once; a cancelled or failed sync never leaves a marker.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from h1_training import procs
from h1_training.backoff import Backoff
from h1_training.recording.layout import PARTIAL_SUFFIX, SYNC_MARKER, episode_index_of, session_dir

PARTIAL_DIR = ".rsync-partial"
TargetKind = Literal["local", "ssh", "daemon"]

# rsync(1) EXIT VALUES
RSYNC_EXIT = {1: "syntax or usage error", 2: "protocol incompatibility", 3: "errors selecting input/output files",
              5: "error starting client-server protocol", 10: "error in socket I/O", 11: "error in file I/O",
              12: "error in rsync protocol data stream", 20: "received SIGINT, SIGTERM or SIGHUP",
              23: "partial transfer due to error", 24: "some source files vanished", 30: "timeout in data send/receive",
              35: "timeout waiting for daemon connection", 255: "ssh error"}
_RETRY_EXIT = {10, 12, 20, 24, 30, 35, 255}     # may pass on their own; 255 only for network-ish ssh errors
_PERMANENT = ("No such file or directory", "Unknown module", "Permission denied", "Could not resolve hostname",
              "Host key verification failed", "No space left on device", "auth failed")


@dataclass
class SyncConfig:
    target: str                          # training_config.yaml rsync.target
    io_timeout_s: float = 30.0           # rsync --timeout: give up when no data moved for this long
    connect_timeout_s: float = 10.0      # ssh ConnectTimeout / rsync --contimeout
    attempt_timeout_s: float = 1800.0    # wall-clock limit of one rsync run
    max_attempts: int = 3
    backoff_s: float = 2.0               # first retry delay; doubles per attempt
    max_backoff_s: float = 30.0
    checksum: bool = True
    bwlimit_kbps: int = 0                # 0: no limit (set one to leave the robot network room)
    rsync: str = "rsync"
    ssh: str = "ssh"

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise ValueError("rsync target is empty (training_config.yaml rsync.target)")
        if min(self.io_timeout_s, self.connect_timeout_s, self.attempt_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.bwlimit_kbps < 0:
            raise ValueError("max_attempts >= 1, backoff_s, max_backoff_s and bwlimit_kbps >= 0 are required")


@dataclass(frozen=True)
class SyncProgress:
    bytes: int                           # transferred so far in this run
    percent: int
    rate: str                            # as rsync prints it, e.g. "10.5MB/s"
    files_transferred: int
    files_to_check: int
    files_total: int


@dataclass
class SyncResult:
    ok: bool
    epoch: int
    dest: str                            # the epoch folder at the target
    files: int = 0                       # files transferred (0 when the target was already up to date)
    bytes: int = 0                       # size of the files transferred
    sent_bytes: int = 0                  # on the wire (less than ``bytes`` when a partial file was resumed)
    seconds: float = 0.0
    attempts: int = 0
    error: str = ""                      # one line for the operator
    detail: str = ""                     # rsync's own error line
    episodes: list[str] = field(default_factory=list)


def target_kind(target: str) -> TargetKind:
    """How rsync reads ``target``: a colon before the first slash means a remote host (rsync(1) USAGE)."""
    if target.startswith("rsync://"):
        return "daemon"
    head, sep, _ = target.partition(":")
    if not sep or not head or "/" in head:
        return "local"
    return "daemon" if target[len(head):].startswith("::") else "ssh"


def target_host(target: str) -> str:
    kind = target_kind(target)
    if kind == "local":
        return ""
    if target.startswith("rsync://"):
        return target[len("rsync://"):].split("/", 1)[0]
    return target.split(":", 1)[0]


def epoch_dest(target: str, epoch: int) -> str:
    """``<target>/training_session_epoch{E}/``."""
    name = session_dir("", epoch).name
    return f"{target}{name}/" if target.endswith(("/", ":")) else f"{target}/{name}/"


def _transport_args(cfg: SyncConfig, kind: TargetKind) -> list[str]:
    args = [f"--timeout={math.ceil(cfg.io_timeout_s)}"]
    if kind == "daemon":
        args.append(f"--contimeout={math.ceil(cfg.connect_timeout_s)}")
    elif kind == "ssh":
        # BatchMode: no password prompt (nobody can answer it); keepalives notice a dead link
        args += ["-e", f"{cfg.ssh} -o BatchMode=yes -o ConnectTimeout={math.ceil(cfg.connect_timeout_s)} "
                       "-o ServerAliveInterval=10 -o ServerAliveCountMax=3"]
    return args


def build_argv(src_dir: str | Path, dest: str, cfg: SyncConfig) -> list[str]:
    """The data run: ``src_dir/`` -> ``dest`` (an epoch folder, see :func:`epoch_dest`)."""
    argv = [cfg.rsync, "--archive", "--no-owner", "--no-group", "--partial", f"--partial-dir={PARTIAL_DIR}",
            *_transport_args(cfg, target_kind(dest)),
            "--delete-before",
            # first match wins; "-s" rules hide from the sender only, R/P rules act on the receiver only
            f"--filter=-s *{PARTIAL_SUFFIX}", "--filter=-s *.tmp", "--filter=-s .*",
            f"--filter=R /{SYNC_MARKER}", "--filter=R /.episode_*.hdf5.*", "--filter=P *",
            "--stats", "--info=progress2", "--no-human-readable"]
    if cfg.checksum:
        argv.append("--checksum")
    if cfg.bwlimit_kbps:
        argv.append(f"--bwlimit={cfg.bwlimit_kbps}")
    return argv + [f"{str(src_dir).rstrip('/')}/", dest]


def marker_argv(marker_file: str | Path, dest: str, cfg: SyncConfig) -> list[str]:
    """The marker run (after the data run succeeded): rsync renames it into place atomically."""
    return [cfg.rsync, "--times", *_transport_args(cfg, target_kind(dest)), str(marker_file), dest + SYNC_MARKER]


_PROGRESS_RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)\s+\d+:\d{2}:\d{2}"
                          r"(?:\s+\(xfr#(\d+), (?:to|ir)-chk=(\d+)/(\d+)\))?")
_STATS = {"files": re.compile(r"^Number of regular files transferred: ([\d,]+)"),
          "bytes": re.compile(r"^Total transferred file size: ([\d,]+)"),
          "sent_bytes": re.compile(r"^Total bytes sent: ([\d,]+)")}


def parse_progress(line: str) -> SyncProgress | None:
    m = _PROGRESS_RE.match(line)
    if not m:
        return None
    xfr, chk, total = (int(g) if g else 0 for g in m.group(4, 5, 6))
    return SyncProgress(int(m.group(1).replace(",", "")), int(m.group(2)), m.group(3), xfr, chk, total)


def parse_stats(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        for key, rx in _STATS.items():
            m = rx.match(line.strip())
            if m:
                out[key] = int(m.group(1).replace(",", ""))
    return out


@dataclass
class _Run:
    rc: int | None                       # None: stopped by us (timeout or cancel)
    stdout: str
    stderr: str
    stopped: str = ""                    # "timeout" or "cancelled"
    seconds: float = 0.0


def _run(argv: list[str], timeout_s: float, cancel: threading.Event | None,
         on_progress: Callable[[SyncProgress], None] | None) -> _Run:
    """rsync through the one runner (procs.run): SIGTERM to its group first (the receiver then keeps the
    partial file for the next run), SIGKILL if it lingers; ssh and a local receiver go too."""
    out_lines: list[str] = []

    def line(text: str) -> None:
        prog = parse_progress(text) if on_progress is not None else None
        if prog is not None:
            on_progress(prog)
        elif text.strip():
            out_lines.append(text)

    # progress2 redraws its line with \r
    run = procs.run(argv, on_line=line, timeout_s=timeout_s, cancel=cancel, split_cr=True)
    return _Run(run.rc, "\n".join(out_lines), run.stderr, run.stopped, run.seconds)


def _detail(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:  # rsync's cause comes before its generic "rsync error: ... (code N)" line
        if not ln.startswith("rsync error:") and not ln.startswith("Warning: Permanently added"):
            return ln
    return lines[-1] if lines else ""


def explain(run: _Run, dest: str, cfg: SyncConfig) -> tuple[str, bool]:
    """(one line for the operator, whether trying again may help)."""
    host = target_host(dest) or "the target"
    err = run.stderr
    resumes = "; sync again to resume"
    if run.stopped == "cancelled":
        return "sync cancelled; no SYNC_COMPLETE written" + resumes, False
    if run.stopped == "timeout":
        return f"rsync ran longer than {cfg.attempt_timeout_s:.0f} s" + resumes, True
    if "mkdir" in err and "No such file or directory" in err:
        parent = dest.rstrip("/").rsplit("/", 1)[0] + "/"
        return f"target folder {parent} does not exist on {host}: create it there, or fix rsync.target", False
    if "Unknown module" in err:
        return f"the rsync daemon on {host} has no such module ({dest}): fix rsync.target", False
    if "Permission denied (publickey" in err or "Permission denied, please try again" in err:
        return (f"SSH login to {host} refused: set up key authentication (`ssh {host}` must work without a "
                "password)"), False
    if "Could not resolve hostname" in err:
        return f"unknown host {host}: fix rsync.target or the network's DNS", False
    if "Host key verification failed" in err:
        return f"SSH host key of {host} not trusted: run `ssh {host}` once and accept it", False
    if "Connection refused" in err:
        server = "sshd" if target_kind(dest) == "ssh" else "the rsync daemon"
        return f"{host} refused the connection: is {server} running there?", True
    if "No space left on device" in err:
        return f"the disk at {host} is full", False
    if "Permission denied" in err or "auth failed" in err:
        return f"no permission to write {dest}", False
    if run.rc == 30:
        return f"no data moved for {cfg.io_timeout_s:.0f} s (network down?)" + resumes, True
    if run.rc == 35:
        return f"timed out connecting to the rsync daemon at {host}", True
    if run.rc in (10, 12) or "connection unexpectedly closed" in err:
        return f"connection to {host} lost during the transfer" + resumes, True
    if run.rc is not None and run.rc < 0:
        return f"rsync was killed by signal {-run.rc}" + resumes, True
    meaning = RSYNC_EXIT.get(run.rc or 0, "unknown")
    permanent = any(p in err for p in _PERMANENT)
    return f"rsync failed with exit code {run.rc} ({meaning})", run.rc in _RETRY_EXIT and not permanent


def _episodes(src: Path) -> list[str]:
    return sorted((p.name for p in src.iterdir() if p.is_file() and episode_index_of(p.name) is not None),
                  key=lambda n: episode_index_of(n) or 0)


def sync_epoch(save_dir: str | Path, epoch: int, cfg: SyncConfig, *,
               on_progress: Callable[[SyncProgress], None] | None = None, cancel: threading.Event | None = None,
               sleep: Callable[[float], None] | None = None) -> SyncResult:
    """rsync ``save_dir/training_session_epoch{epoch}/`` to the target, then the marker. Never raises for a
    failed transfer: the result says what went wrong. ``on_progress`` is called from a reader thread."""
    t0 = time.monotonic()
    src = session_dir(save_dir, epoch)
    dest = epoch_dest(cfg.target, epoch)
    res = SyncResult(False, epoch, dest)
    if shutil.which(cfg.rsync) is None:
        res.error = f"{cfg.rsync} is not installed (apt-get install rsync)"
        return res
    if not src.is_dir():
        res.error = f"nothing to sync: {src} does not exist"
        return res
    res.episodes = _episodes(src)
    if not res.episodes:
        res.error = f"nothing to sync: no episode_*.hdf5 in {src}"
        return res
    if target_kind(cfg.target) == "local" and not Path(cfg.target).is_dir():
        res.error = f"target folder {cfg.target} does not exist: create it, or fix rsync.target"
        return res
    wait = sleep if sleep is not None else (cancel.wait if cancel is not None else time.sleep)
    with tempfile.TemporaryDirectory(prefix="h1_sync_") as tmp:
        marker = Path(tmp) / SYNC_MARKER
        backoff = Backoff(cfg.backoff_s, cfg.max_backoff_s)
        for attempt in range(1, cfg.max_attempts + 1):
            res.attempts = attempt
            run = _run(build_argv(src, dest, cfg), cfg.attempt_timeout_s, cancel, on_progress)
            if run.rc == 0:
                stats = parse_stats(run.stdout)
                res.files += stats.get("files", 0)
                res.bytes += stats.get("bytes", 0)
                res.sent_bytes += stats.get("sent_bytes", 0)
                marker.write_text(json.dumps({"epoch": epoch, "episodes": res.episodes, "source": socket.gethostname(),
                                              "synced_at": time.time()}) + "\n")
                run = _run(marker_argv(marker, dest, cfg), cfg.attempt_timeout_s, cancel, None)
                if run.rc == 0:
                    res.ok, res.error, res.detail = True, "", ""
                    break
            res.error, retry = explain(run, dest, cfg)
            res.detail = _detail(run.stderr)
            if not retry or attempt == cfg.max_attempts or (cancel is not None and cancel.is_set()):
                break
            wait(backoff.next_delay())
            if cancel is not None and cancel.is_set():
                res.error = "sync cancelled; no SYNC_COMPLETE written; sync again to resume"
                break
    res.seconds = time.monotonic() - t0
    if not res.ok and res.attempts > 1:
        res.error += f" (after {res.attempts} attempts)"
    return res
