"""The recorder (no rclpy): slots filled by the node's callbacks, the 50 Hz sampler thread, the writer
process, and start / save / discard / status. ``nodes/recorder_node.py`` only wires ROS to this class.

The sampler wakes on its own monotonic clock and appends each sample to the episode's write-ahead journal
(``journal.py``: one ``writev`` into the page cache, no fsync, no image decoding); the writer process
(``writer_process.py``) reads the journal, appends to HDF5 in small batches and flushes at least every
``flush_interval_s``. A kill -9 of the recorder therefore loses at most the sample being written, even with the
writer seconds behind; the next start's repair replays the journal. An HDF5 or fsync stall cannot hold the
sampler's interpreter lock (it happens in the writer process). Any write failure (disk full, permissions, a file
size limit, a writer that cannot keep up or dies) stops the episode, keeps what was written and is reported as an
operator-readable error on the status and in the reply of the next save call: never a silent loss.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from h1_training.params import param
from h1_training.recording import layout as L
from h1_training.recording.journal import SEGMENT_FRAMES, JournalError, JournalWriter
from h1_training.recording.repair import RepairResult, repair_all
from h1_training.recording.sampler import Sample, Sampler, SamplerLoop, Slots
from h1_training.recording.writer import EpisodeMeta, EpisodeSummary, free_mb
from h1_training.recording.writer_process import WriterProcess

# RecorderStatus.state values (msg_srv/msg/RecorderStatus.msg)
IDLE, RECORDING, SAVING, ERROR = 0, 1, 2, 3


@dataclass
class RecorderConfig:
    """The recorder's settings; the ``param`` fields are also episode_recorder's ROS parameters (declared here
    once, see nodes/common.py)."""

    save_dir: str = param("data/h1_data", "folder holding training_session_epoch{E}/episode_{i}.hdf5 "
        "(relative to the working directory)")
    rate_hz: float = param(50.0, "sampling rate [Hz] (the H1 seed records at 50 Hz); applies at the next episode",
        min=1.0, max=500.0)
    stale_after_s: float = param(0.2, "an input older than this (since it arrived) is flagged stale per sample [s]",
        min=0.02, max=10.0)
    proposal_stale_s: float = param(0.5, "a policy proposal older than this is not stored for a human frame [s]",
        min=0.02, max=10.0)
    batch_frames: int = param(25, "samples appended to the file per write (a flush writes a smaller batch "
        "sooner); fewer, larger writes cost less CPU", min=1, max=100)
    flush_interval_s: float = param(0.5, "longest time between flushes to disk: what a crash may cost [s]", min=0.05,
        max=1.0)
    fsync: bool = param(True, "fsync at every flush so a power loss also costs at most flush_interval_s")
    min_free_mb: float = param(200.0, "refuse to start, or stop and save, when the disk has less free space [MB]",
        min=0.0, max=1e7)
    max_backlog_s: float = param(30.0, "stop with an error when the writer is this far behind [s] (what waits is in "
        "the journal on disk, safe from a kill; this bounds the journal's disk use and how long a save waits)",
        min=0.5, max=60.0)
    chunk_rows: int = 100
    sampler_nice: int = param(-10, "nice value of the 50 Hz sampler thread (negative = ahead of other work; "
        "needs CAP_SYS_NICE, else a warning); 0 leaves it alone", min=-20, max=19)
    sampler_rt_priority: int = param(0, "SCHED_FIFO priority of the 50 Hz sampler thread (1-99; 0 = off, "
        "sampler_nice applies): a real-time thread is woken on time where even nice -20 is not; needs "
        "CAP_SYS_NICE or an rtprio limit, else a warning and sampler_nice", min=0, max=99)

    def __post_init__(self) -> None:
        if not self.save_dir:
            raise ValueError("save_dir must not be empty")
        if not 1.0 <= self.rate_hz <= 500.0:
            raise ValueError(f"rate_hz must be in [1, 500], got {self.rate_hz}")
        if self.flush_interval_s <= 0 or self.flush_interval_s > 1.0:
            raise ValueError("flush_interval_s must be in (0, 1] (a crash may cost at most about that much)")


@dataclass
class Status:
    state: int = IDLE
    recording: bool = False
    file_path: str = ""
    frames: int = 0
    policy_frames: int = 0
    human_frames: int = 0
    missed_ticks: int = 0
    target_rate_hz: float = 50.0
    achieved_rate_hz: float = 0.0
    bytes_written: int = 0
    duration_s: float = 0.0
    stale_sources: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class Result:
    ok: bool
    message: str
    path: str = ""
    frames: int = 0
    policy_frames: int = 0
    human_frames: int = 0
    episode_index: int = -1


def make_placeholder_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A flat grey JPEG stored (and flagged) for a camera that has sent nothing; encoded once at start-up."""
    import cv2
    import numpy as np

    img = np.full((height, width, 3), 64, dtype=np.uint8)
    cv2.putText(img, "NO FRAME", (width // 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, width / 320, (0, 0, 255), 2)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, L.JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the placeholder JPEG")
    return buf.tobytes()


class Recorder:
    def __init__(
        self,
        config: RecorderConfig,
        placeholder_jpeg: bytes = b"",
        log: Callable[[str, str], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.slots = Slots()
        self.placeholder_jpeg = placeholder_jpeg or make_placeholder_jpeg()
        self._log = log or (lambda level, msg: None)
        self._on_change = on_change or (lambda: None)
        self._lock = threading.RLock()
        self._state = IDLE
        self._error = ""
        self._loop: SamplerLoop | None = None
        self._wp = WriterProcess()
        self._replies: queue.Queue = queue.Queue()
        self._listener: threading.Thread | None = None
        self._closing = False
        self._failure: Result | None = None      # an episode that ended on an error, reported by the next save
        self._child_failure: tuple | None = None  # ("failed", reason, summary, partial) from the writer
        self._last = Status(target_rate_hz=config.rate_hz)
        self._index = -1
        self._partial = ""
        self._final = ""
        self._progress = (0, 0, 0)  # frames written, frames flushed, bytes
        self._journal: JournalWriter | None = None
        self._ensure_writer()       # spawn it now, not on the first start request

    # --- writer process -----------------------------------------------------------------------------------
    def _ensure_writer(self) -> None:
        if not self._wp.alive:
            self._wp.ensure_started()
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(target=self._listen, name="writer-events", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        cfg = self.config
        while not self._closing:
            ev = self._wp.event(0.25)
            if ev is None:
                if self._state == RECORDING and not self._wp.alive and not self._closing:
                    self._fail_async(f"the writer process died (exit code {self._wp.exitcode}); the unsaved file "
                                     f"{self._partial} is repaired at the next start")
                    time.sleep(0.5)
                continue
            kind = ev[0]
            if kind == "progress":
                self._progress = ev[1:]
                loop = self._loop
                if self._state == RECORDING and loop is not None:
                    waiting = loop.stats.frames - self._progress[0]
                    if waiting > max(10, cfg.max_backlog_s * cfg.rate_hz):
                        self._fail_async(f"the disk cannot keep up: {waiting} samples waiting to be written; "
                                         "recording stopped")
            elif kind == "failed":
                self._child_failure = ev
                self._fail_async(ev[1])
            else:
                self._replies.put(ev)

    def _request(self, *msg: object, timeout: float = 30.0) -> tuple:
        while not self._replies.empty():  # nothing stale may answer this request
            self._replies.get_nowait()
        if not self._wp.alive:
            return ("error", f"the writer process is not running (exit code {self._wp.exitcode})")
        self._wp.send(*msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._replies.get(timeout=0.25)
            except queue.Empty:
                if not self._wp.alive:
                    return ("error", f"the writer process died (exit code {self._wp.exitcode})")
        return ("error", f"the writer process did not answer within {timeout:.0f} s")

    # --- start-up ---------------------------------------------------------------------------------------
    def repair_leftovers(self) -> list[RepairResult]:
        """Repair episodes a previous run left unsaved (crash, kill -9, power loss)."""
        results = repair_all(self.config.save_dir)
        for r in results:
            self._log("warn" if r.ok or r.skipped else "error", r.line())
        return results

    # --- episodes -----------------------------------------------------------------------------------------
    def start(self, epoch: int, episode_index: int = -1, prompt: str = "") -> Result:
        with self._lock:
            if self._state in (RECORDING, SAVING):
                return Result(False, f"already recording {self._partial}; save or discard it first")
            if epoch < 0 or episode_index < -1:
                return Result(False, f"invalid epoch {epoch} / episode_index {episode_index} "
                                     "(epoch >= 0, episode_index >= 0 or -1 for the next free one)")
            cfg = self.config
            self._failure = None
            self._child_failure = None
            self._error = ""
            if not self._wp.alive:  # it died with an earlier episode: start a new one, repair what it left
                self._ensure_writer()
                self.repair_leftovers()
            try:
                free = free_mb(cfg.save_dir)
            except OSError as exc:
                return self._refuse(f"cannot check free space for save_dir {cfg.save_dir}: {exc}")
            if free < cfg.min_free_mb:
                return self._refuse(f"disk almost full: {free:.0f} MB free for save_dir {cfg.save_dir}, "
                                    f"min_free_mb is {cfg.min_free_mb:.0f}; free space before recording")
            folder = L.session_dir(cfg.save_dir, epoch)
            index = episode_index
            if index < 0:
                try:
                    index = L.next_episode_index(folder)
                except OSError as exc:
                    return self._refuse(f"cannot list {folder}: {exc}")
            final = L.episode_path(cfg.save_dir, epoch, index)
            meta = EpisodeMeta(epoch=epoch, episode_index=index, prompt=prompt, fps=cfg.rate_hz,
                               stale_after_s=cfg.stale_after_s, start_wall_ns=time.time_ns())
            kwargs = {"batch_frames": cfg.batch_frames, "flush_interval_s": cfg.flush_interval_s,
                      "fsync": cfg.fsync, "chunk_rows": cfg.chunk_rows}
            reply = self._request("start", str(final), meta, kwargs, float(cfg.min_free_mb), timeout=20.0)
            if reply[0] != "started":
                return self._refuse(str(reply[1]) if len(reply) > 1 else f"unexpected writer reply {reply!r}")
            self._partial, self._final, self._index = reply[1], str(final), index
            self._journal = JournalWriter(self._partial, SEGMENT_FRAMES)
            self._progress = (0, 0, 0)
            sampler = Sampler(self.slots, cfg.stale_after_s, cfg.proposal_stale_s, self.placeholder_jpeg)
            self._loop = SamplerLoop(sampler, cfg.rate_hz, self._enqueue, nice=cfg.sampler_nice,
                                     rt_priority=cfg.sampler_rt_priority)
            self._state = RECORDING
            self._loop.start()
        self._log("info", f"recording episode {index} of epoch {epoch} to {self._partial}")
        time.sleep(0.001)  # let the sampler thread apply its priority before we report on it
        if self._loop.priority_note:
            self._log("warn", self._loop.priority_note + "; ticks may be late when the machine is busy")
        self._on_change()
        return Result(True, f"recording to {self._partial}", self._final, episode_index=index)

    def _refuse(self, reason: str) -> Result:
        self._state = ERROR
        self._error = reason
        self._log("error", f"cannot start an episode: {reason}")
        self._on_change()
        return Result(False, reason)

    def _enqueue(self, sample: Sample, missed: int) -> None:
        """The sampler thread's sink: the sample into the journal, then a few bytes to wake the writer."""
        journal = self._journal
        if journal is None:
            return
        try:
            records = journal.append(sample, missed)
        except JournalError as exc:
            self._journal = None
            self._fail_async(f"{exc}; recording stopped")
            raise  # ends the sampler thread: no sample after one that could not be kept
        self._wp.send("journal", records)

    def _close_journal(self) -> int:
        """After the sampler stopped: close the journal; the number of records in it (the episode's samples)."""
        journal, self._journal = self._journal, None
        if journal is None:
            return self._loop.stats.frames if self._loop is not None else 0
        journal.close()
        return journal.seq

    def _fail_async(self, reason: str) -> None:
        threading.Thread(target=self._fail, args=(reason,), daemon=True).start()

    def _fail(self, reason: str) -> None:
        """The episode cannot continue: stop sampling, keep what was written, report."""
        with self._lock:
            if self._state != RECORDING:
                return  # a save in progress reports it
            self._state = SAVING
            self._failure = self._close_on_error(reason)
            self._state = ERROR
            self._error = self._failure.message
        self._log("error", f"episode stopped: {self._error}")
        self._on_change()

    def _close_on_error(self, reason: str) -> Result:
        """Stop the sampler and get the episode's data saved (or left for repair) after ``reason``."""
        if self._loop is not None:
            self._loop.stop()
        records = self._close_journal()
        child = self._child_failure
        summary, path = None, self._partial
        if child is not None:  # the writer already closed the episode
            summary, path = child[2], child[3]
        elif self._wp.alive:
            reply = self._request("finish", -1, f"error: {reason}", records)
            if reply[0] == "finished":
                summary = reply[1]
        if summary is not None:
            kept = f"; the {summary.frames} frames written before it were saved to {summary.path}"
            self._remember(summary)
            return Result(False, reason + kept, summary.path, summary.frames, summary.policy_frames,
                          summary.human_frames, self._index)
        frames = self._progress[1]
        self._last = Status(state=IDLE, file_path=path, frames=frames, target_rate_hz=self.config.rate_hz,
                            bytes_written=self._progress[2])
        return Result(False, reason + f"; about {frames} frames are in the unsaved file {path}, which is repaired "
                      "at the next start", path, frames, episode_index=self._index)

    def _remember(self, summary: EpisodeSummary) -> None:
        stats = self._loop.stats if self._loop else None
        self._last = Status(
            state=IDLE, recording=False, file_path=summary.path, frames=summary.frames,
            policy_frames=summary.policy_frames, human_frames=summary.human_frames,
            missed_ticks=summary.missed_ticks, target_rate_hz=self.config.rate_hz,
            achieved_rate_hz=summary.achieved_rate_hz, bytes_written=summary.bytes,
            duration_s=stats.duration_s if stats else 0.0,
        )

    def save(self, discard: bool = False, success_label: int = -1, end_reason: str = "saved") -> Result:
        with self._lock:
            if self._state == ERROR and self._failure is not None:
                failure, self._failure = self._failure, None
                return failure
            if self._state != RECORDING:
                return Result(False, "not recording: start an episode first")
            if success_label not in (-1, 0, 1):
                return Result(False, f"success_label must be -1, 0 or 1, got {success_label}")
            self._state = SAVING
            self._on_change()
            assert self._loop is not None
            self._loop.stop()  # no sample after this point; the writer drains the journal, in order
            frames = self._loop.stats.frames
            records = self._close_journal()
            if discard:
                reply = self._request("discard")
                if reply[0] == "discarded":
                    self._state = IDLE
                    self._last = Status(target_rate_hz=self.config.rate_hz)
                    result = Result(True, f"discarded episode {self._index} ({frames} frames)",
                                    episode_index=self._index)
                else:
                    result = self._end_error(str(reply[1]))
            else:
                # the writer drains the journal first: give it the time a backlog takes (a loaded machine)
                behind = max(0, records - self._progress[0]) / self.config.rate_hz
                reply = self._request("finish", success_label, end_reason, records, timeout=30.0 + 2.0 * behind)
                if reply[0] == "finished":
                    summary: EpisodeSummary = reply[1]
                    self._remember(summary)
                    self._state = IDLE
                    result = Result(True, f"saved {summary.frames} frames ({summary.policy_frames} policy, "
                                    f"{summary.human_frames} human, {summary.missed_ticks} missed ticks) to "
                                    f"{summary.path}", summary.path, summary.frames, summary.policy_frames,
                                    summary.human_frames, self._index)
                else:
                    result = self._end_error(str(reply[1]))
        self._log("info" if result.ok else "error", result.message)
        self._on_change()
        return result

    def _end_error(self, reason: str) -> Result:
        """A save/discard that failed, or an episode the writer had already closed on an error."""
        if self._child_failure is not None:
            reason = self._child_failure[1]
        result = self._close_on_error(reason)
        self._state = ERROR
        self._error = result.message
        return result

    def shutdown(self) -> Result | None:
        """Ctrl+C / SIGTERM: an episode in progress is saved, not lost; then the writer process ends."""
        result = None
        with self._lock:
            recording = self._state == RECORDING
        if recording:
            self._log("warn", "shutting down while recording: saving the episode")
            result = self.save(discard=False, end_reason="shutdown")
        self._closing = True
        self._wp.stop()
        return result

    # --- status -------------------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._state == RECORDING

    @property
    def writer_pid(self) -> int | None:
        return self._wp.pid

    def status(self) -> Status:
        cfg = self.config
        stale = self.slots.stale_sources(time.monotonic_ns(), int(cfg.stale_after_s * 1e9))
        with self._lock:
            loop, state = self._loop, self._state
            if state in (RECORDING, SAVING) and loop is not None:
                st = loop.stats
                return Status(
                    state=state, recording=state == RECORDING, file_path=self._partial, frames=st.frames,
                    policy_frames=st.policy_frames, human_frames=st.human_frames, missed_ticks=st.missed,
                    target_rate_hz=cfg.rate_hz, achieved_rate_hz=st.achieved_rate_hz,
                    bytes_written=int(self._progress[2]), duration_s=st.duration_s, stale_sources=stale,
                )
            last = Status(**{**self._last.__dict__})
            last.state = state
            last.recording = False
            last.stale_sources = stale
            last.error = self._error if state == ERROR else ""
            return last
