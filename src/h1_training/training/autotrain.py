"""Automatic mode of the server: watch the synced data dir and train when a new epoch's data is complete.

The data dir is what the robot side rsyncs to (``save_dir`` layout, DESIGN.md §4)::

    data_dir/training_session_epoch{E}/episode_{i}.hdf5

An epoch folder is **complete** when all of these hold:

1. it holds at least ``min_episodes`` files named ``episode_<i>.hdf5``;
2. nothing in it is still being written: no ``*.partial`` / ``*.tmp`` file (the recorder's in-progress names) and
   no hidden file (rsync writes ``.episode_3.hdf5.XXXXXX`` and renames it when the transfer is done);
3. either the marker file ``SYNC_COMPLETE`` is in the folder (the robot side writes it after the data has
   arrived: rsync the episodes, then the marker), or — unless ``require_marker`` — no file in it has changed for
   ``quiet_s`` seconds.

Before a job is submitted, the episodes of a complete epoch are opened through ``recording.reader`` (shapes and
attrs, cached by file mtime and size): any variant of the seed's HDF5 counts, and an epoch whose files are all
unusable (truncated, no head camera, not HDF5) waits with the reason in the status instead of starting a job that
would convert nothing.

Each complete epoch E is trained once (remembered in ``work_dir/autotrain_state.json``, with the file list it saw
and its job's outcome). A job the server did not see finish -- the server was stopped or killed while it was queued
or running (jobs live in the server's memory) -- is submitted again after the restart, so the robot side, waiting
for the epoch's new weights, gets them.
The job trains on every complete epoch up to E (data aggregation, as HG-DAgger/Sirius do with human corrections),
fine-tunes the current default model when it has the same policy type, and is deployed when it finishes, so
``/training_status`` then reports ``ready: true`` with the next epoch. Episodes that arrive in an epoch after it
was trained are picked up by the next epoch's job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from h1_training.policy.train_request import DEFAULT_TRAINING_DEVICE
from h1_training.recording.layout import SYNC_MARKER, is_episode_name, is_in_progress_name, session_epoch_of
from h1_training.recording.reader import check_files
from h1_training.training.jobs import TrainRequest

log = logging.getLogger("h1_training.serve.autotrain")

STATE_FILE = "autotrain_state.json"
UNFINISHED = ("queued", "running", "paused")  # a job in one of these when the server stopped never finished


@dataclass
class AutoTrainConfig:
    policy_type: str = "act"
    steps: int = 2000
    batch_size: int = 8
    lr: float | None = None            # None: the policy's preset
    device: str = DEFAULT_TRAINING_DEVICE
    human_weight: float = 2.0          # up-weight human corrections (IWR/Sirius)
    pre_intervention_s: float = 0.0    # policy frames this long before a takeover get weight 0 (Sirius)
    action_lookahead: int = 1          # conversion: a human frame's action is qpos this many frames later
    quiet_s: float = 60.0              # no change for this long = complete (without a marker)
    require_marker: bool = False       # only SYNC_COMPLETE counts
    min_episodes: int = 1
    scan_interval_s: float = 5.0
    aggregate: bool = True             # train on all complete epochs up to the new one
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quiet_s < 0 or self.scan_interval_s <= 0 or self.min_episodes < 1:
            raise ValueError("quiet_s >= 0, scan_interval_s > 0 and min_episodes >= 1 are required")
        if not self.require_marker and self.quiet_s == 0:
            raise ValueError("quiet_s = 0 without require_marker would train on data still being synced")


@dataclass
class EpochData:
    epoch: int
    path: Path
    episodes: list[str]
    complete: bool
    reason: str                       # why (in)complete, for the operator
    usable: list[str] | None = None   # episodes the reader can use (checked once complete), None: not checked
    unusable: dict[str, str] = field(default_factory=dict)  # episode name -> why not

    def signature(self) -> list[str]:
        return sorted(self.episodes)


def scan(data_dir: Path, cfg: AutoTrainConfig, now: float | None = None) -> list[EpochData]:
    """Every ``training_session_epoch*`` folder of ``data_dir`` with its completeness (rules in the docstring)."""
    now = time.time() if now is None else now
    out = []
    if not Path(data_dir).is_dir():
        return out
    for folder in Path(data_dir).iterdir():
        epoch = session_epoch_of(folder)
        if epoch is None or not folder.is_dir():
            continue
        files = [p for p in folder.iterdir() if p.is_file()]
        episodes = sorted(p.name for p in files if is_episode_name(p.name))
        busy = [p.name for p in files if is_in_progress_name(p.name)]
        newest = max((p.stat().st_mtime for p in files), default=0.0)
        marker = (folder / SYNC_MARKER).exists()
        if len(episodes) < cfg.min_episodes:
            complete, reason = False, f"{len(episodes)} episode(s), need {cfg.min_episodes}"
        elif busy:
            complete, reason = False, f"still being written: {busy[:3]}"
        elif marker:
            complete, reason = True, f"{SYNC_MARKER} present"
        elif cfg.require_marker:
            complete, reason = False, f"waiting for {SYNC_MARKER}"
        elif now - newest >= cfg.quiet_s:
            complete, reason = True, f"unchanged for {now - newest:.0f} s"
        else:
            complete, reason = False, f"changed {now - newest:.0f} s ago (quiet period {cfg.quiet_s:.0f} s)"
        out.append(EpochData(epoch, folder, episodes, complete, reason))
    return sorted(out, key=lambda e: e.epoch)


class AutoTrainer:
    """A thread that scans ``data_dir`` and submits one job per newly complete epoch (one job at a time)."""

    def __init__(self, cfg: AutoTrainConfig, data_dir: Path, jobs: Any, pool: Any, state_dir: Path | None) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.jobs = jobs
        self.pool = pool
        self.state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.trained: dict[str, Any] = self._load_state()   # str(epoch) -> {"episodes", "job_id", "time"}
        self.current_job: str | None = None
        self.last_scan: list[EpochData] = []
        self.last_error: str | None = None
        self._checked: dict[str, tuple[tuple[int, int], str | None]] = {}  # path -> ((mtime_ns, size), problem)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load_state(self) -> dict[str, Any]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            trained = dict(json.loads(self.state_path.read_text()).get("trained", {}))
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s: %s", self.state_path, exc)
            return {}
        for epoch, entry in list(trained.items()):
            if entry.get("status") in UNFINISHED:  # entries written before statuses were kept have none: done
                log.warning("auto-train: epoch %s's job %s did not finish before the server stopped (%s); training "
                            "it again", epoch, entry.get("job_id"), entry["status"])
                del trained[epoch]
        return trained

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"trained": self.trained}, indent=2))
        tmp.replace(self.state_path)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="autotrain", daemon=True)
        self._thread.start()
        log.info("auto-train watching %s (%s, quiet %.0f s, marker %s)", self.data_dir, self.cfg.policy_type,
                 self.cfg.quiet_s, "required" if self.cfg.require_marker else "optional")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as exc:  # keep watching; say why this round failed
                log.exception("auto-train scan failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(self.cfg.scan_interval_s)

    def _check_usable(self, epoch: EpochData) -> None:
        """Fill ``epoch.usable`` / ``unusable`` through the reader; a file is re-read only when it changed."""
        epoch.usable, epoch.unusable = [], {}
        for name in epoch.episodes:
            path = epoch.path / name
            try:
                st = path.stat()
            except OSError as exc:
                epoch.unusable[name] = f"gone: {exc.strerror}"
                continue
            key = (st.st_mtime_ns, st.st_size)
            cached = self._checked.get(str(path))
            if cached is None or cached[0] != key:
                found = check_files([path])
                cached = (key, None if found.usable else found.unusable.get(str(path), "unusable"))
                self._checked[str(path)] = cached
            if cached[1] is None:
                epoch.usable.append(name)
            else:
                epoch.unusable[name] = cached[1]

    def tick(self, now: float | None = None) -> str | None:
        """One scan; submits a job for the oldest complete, untrained epoch. Returns the job id, if any."""
        if self.current_job is not None:
            job = self.jobs.get(self.current_job)
            if job.status in UNFINISHED:
                return None
            self._record_outcome(job)
            self.current_job = None
        self.last_scan = scan(self.data_dir, self.cfg, now)
        complete = [e for e in self.last_scan if e.complete]
        todo = [e for e in complete if str(e.epoch) not in self.trained]
        ready = []
        for e in todo:
            self._check_usable(e)
            if len(e.usable or []) >= self.cfg.min_episodes:
                ready.append(e)
            else:
                e.reason += (f"; but {len(e.usable or [])} usable episode(s), need {self.cfg.min_episodes}: "
                             + "; ".join(f"{n} ({why})" for n, why in list(e.unusable.items())[:3]))
        if not ready:
            return None
        target = ready[0]
        included = [e for e in complete if e.epoch <= target.epoch] if self.cfg.aggregate else [target]
        default = self.pool.default_model
        parent = default.model_id if default.info.get("policy_type") == self.cfg.policy_type else None
        req = TrainRequest(policy_type=self.cfg.policy_type, dataset=[str(e.path) for e in included],
                           steps=self.cfg.steps, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                           device=self.cfg.device, human_weight=self.cfg.human_weight,
                           pre_intervention_s=self.cfg.pre_intervention_s,
                           action_lookahead=self.cfg.action_lookahead, parent_model=parent,
                           deploy=True, data_epoch=target.epoch, extra=dict(self.cfg.extra))
        req.validate()
        job = self.jobs.submit(req)
        self.current_job = job.id
        self.trained[str(target.epoch)] = {"episodes": target.signature(), "job_id": job.id, "time": time.time(),
                                           "epochs_used": [e.epoch for e in included], "status": job.status}
        self._save_state()
        log.info("auto-train: epoch %d complete (%s) -> job %s on epochs %s", target.epoch, target.reason, job.id,
                 [e.epoch for e in included])
        return job.id

    def _record_outcome(self, job: Any) -> None:
        for entry in self.trained.values():
            if entry.get("job_id") == job.id:
                entry["status"] = job.status
        self._save_state()

    def status(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "data_dir": str(self.data_dir),
            "trained_epochs": sorted(int(e) for e in self.trained),
            "current_job": self.current_job,
            "epochs": [{"epoch": e.epoch, "episodes": len(e.episodes), "complete": e.complete, "reason": e.reason,
                        "unusable": e.unusable} for e in self.last_scan],
            "last_error": self.last_error,
        }
