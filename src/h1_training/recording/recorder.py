"""The recorder (no rclpy): slots filled by the node's callbacks, the 50 Hz sampler thread, the writer thread,
and start / save / discard / status. ``nodes/recorder_node.py`` only wires ROS to this class.

Threads: the sampler wakes on its own monotonic clock and queues each sample; the writer thread appends them
to HDF5 in small batches and flushes at least every ``flush_interval_s``. Nothing on the 50 Hz path touches
the disk or decodes an image. Any write failure (disk full, permissions, a file size limit, a writer that
cannot keep up) stops the episode, keeps what was written and is reported as an operator-readable error on
the status and in the reply of the next save call: never a silent loss.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from h1_training.recording import layout as L
from h1_training.recording.repair import RepairResult, repair_all
from h1_training.recording.sampler import Sample, Sampler, SamplerLoop, Slots
from h1_training.recording.writer import EpisodeMeta, EpisodeWriter, RecorderError, free_mb

# RecorderStatus.state values (msg_srv/msg/RecorderStatus.msg)
IDLE, RECORDING, SAVING, ERROR = 0, 1, 2, 3
_STOP = object()


@dataclass
class RecorderConfig:
    save_dir: str
    rate_hz: float = 50.0
    stale_after_s: float = 0.2
    proposal_stale_s: float = 0.5
    batch_frames: int = 5
    flush_interval_s: float = 0.5
    fsync: bool = True
    min_free_mb: float = 200.0
    max_backlog_s: float = 5.0
    chunk_rows: int = 100

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
        self._writer: EpisodeWriter | None = None
        self._loop: SamplerLoop | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._failure: Result | None = None  # an episode that ended on an error, reported by the next save
        self._last = Status(target_rate_hz=config.rate_hz)
        self._index = -1
        self._writer_error = ""

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
                return Result(False, f"already recording {self._writer.path if self._writer else ''}; "
                                     "save or discard it first")
            if epoch < 0 or episode_index < -1:
                return Result(False, f"invalid epoch {epoch} / episode_index {episode_index} "
                                     "(epoch >= 0, episode_index >= 0 or -1 for the next free one)")
            cfg = self.config
            self._failure = None
            self._error = ""
            self._writer_error = ""
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
            meta = EpisodeMeta(epoch=epoch, episode_index=index, prompt=prompt, fps=cfg.rate_hz,
                               stale_after_s=cfg.stale_after_s, start_wall_ns=time.time_ns())
            try:
                writer = EpisodeWriter(L.episode_path(cfg.save_dir, epoch, index), meta, cfg.batch_frames,
                                       cfg.flush_interval_s, cfg.fsync, cfg.chunk_rows)
            except RecorderError as exc:
                return self._refuse(str(exc))
            sampler = Sampler(self.slots, cfg.stale_after_s, cfg.proposal_stale_s, self.placeholder_jpeg)
            self._queue = queue.SimpleQueue()
            self._writer = writer
            self._index = index
            self._loop = SamplerLoop(sampler, cfg.rate_hz, self._enqueue)
            self._writer_thread = threading.Thread(target=self._write_loop, args=(writer, self._queue, self._loop),
                                                   name="episode-writer", daemon=True)
            self._state = RECORDING
            self._writer_thread.start()
            self._loop.start()
        self._log("info", f"recording episode {index} of epoch {epoch} to {writer.path}")
        self._on_change()
        return Result(True, f"recording to {writer.path}", str(writer.final_path), episode_index=index)

    def _refuse(self, reason: str) -> Result:
        self._state = ERROR
        self._error = reason
        self._log("error", f"cannot start an episode: {reason}")
        self._on_change()
        return Result(False, reason)

    def _enqueue(self, sample: Sample, missed: int) -> None:
        self._queue.put((sample, missed))

    def _write_loop(self, writer: EpisodeWriter, q: queue.SimpleQueue, loop: SamplerLoop) -> None:
        cfg = self.config
        backlog_limit = max(10, int(cfg.max_backlog_s * cfg.rate_hz))
        next_space_check = time.monotonic()
        try:
            while True:
                try:
                    item = q.get(timeout=0.5)
                except queue.Empty:
                    if loop.error is not None:
                        raise RecorderError(f"the sampler stopped: {loop.error!r}") from loop.error
                    continue
                if item is _STOP:
                    writer.flush()
                    return
                writer.append(*item)
                now = time.monotonic()
                if now >= next_space_check:
                    next_space_check = now + 1.0
                    free = free_mb(writer.path)
                    if free < cfg.min_free_mb:
                        raise RecorderError(f"disk almost full: {free:.0f} MB free (min_free_mb "
                                            f"{cfg.min_free_mb:.0f}); recording stopped")
                    if q.qsize() > backlog_limit:
                        raise RecorderError(f"the disk cannot keep up: {q.qsize()} samples waiting to be "
                                            "written; recording stopped")
        except Exception as exc:  # noqa: BLE001 - every failure ends the episode with a reason
            reason = str(exc) if isinstance(exc, RecorderError) else f"writer failed: {exc!r}"
            self._writer_error = reason
            threading.Thread(target=self._fail, args=(reason,), daemon=True).start()

    def _fail(self, reason: str) -> None:
        """Writer failure: stop sampling, keep what was written, report."""
        with self._lock:
            if self._state not in (RECORDING, SAVING) or self._writer is None:
                return
            loop, writer = self._loop, self._writer
            if loop is not None:
                loop.stop()
            try:
                summary = writer.finish(end_reason=f"error: {reason}")
                kept = f"; {summary.frames} frames written before it were saved to {summary.path}"
                path = summary.path
                self._remember(writer, summary.path, summary.bytes)
            except RecorderError as exc:
                writer.abort()
                kept = f"; saving what was written failed too ({exc})"
                path = str(writer.path)
                self._remember(writer, path, writer.bytes_written)
            message = reason + kept
            self._failure = Result(False, message, path, writer.frames, writer.policy_frames, writer.human_frames,
                                   self._index)
            self._state = ERROR
            self._error = message
            self._writer = None
        self._log("error", f"episode stopped: {message}")
        self._on_change()

    def _remember(self, writer: EpisodeWriter, path: str, size: int) -> None:
        stats = self._loop.stats if self._loop else None
        self._last = Status(
            state=IDLE, recording=False, file_path=path, frames=writer.frames,
            policy_frames=writer.policy_frames, human_frames=writer.human_frames,
            missed_ticks=writer.missed_ticks, target_rate_hz=self.config.rate_hz,
            achieved_rate_hz=writer.achieved_rate_hz, bytes_written=size,
            duration_s=stats.duration_s if stats else 0.0,
        )

    def _stop_threads(self) -> None:
        assert self._loop is not None and self._writer_thread is not None
        self._loop.stop()
        self._queue.put(_STOP)
        self._writer_thread.join(timeout=30.0)

    def save(self, discard: bool = False, success_label: int = -1, end_reason: str = "saved") -> Result:
        with self._lock:
            if self._failure is not None and self._state == ERROR:
                failure, self._failure = self._failure, None
                return failure
            if self._state != RECORDING or self._writer is None:
                return Result(False, "not recording: start an episode first")
            if success_label not in (-1, 0, 1):
                return Result(False, f"success_label must be -1, 0 or 1, got {success_label}")
            self._state = SAVING
            writer = self._writer
        self._on_change()
        with self._lock:
            self._stop_threads()
            if self._writer_error:  # the writer failed (maybe while draining): save what it wrote, report
                self._fail(self._writer_error)
                failure, self._failure = self._failure, None
                return failure or Result(False, self._error)
            self._writer = None
            if discard:
                try:
                    writer.discard()
                except RecorderError as exc:
                    return self._end_error(str(exc), writer)
                self._state = IDLE
                self._last = Status(target_rate_hz=self.config.rate_hz)
                result = Result(True, f"discarded episode {self._index} ({writer.frames} frames)",
                                episode_index=self._index)
            else:
                try:
                    summary = writer.finish(success_label=success_label, end_reason=end_reason)
                except RecorderError as exc:
                    return self._end_error(str(exc), writer)
                self._remember(writer, summary.path, summary.bytes)
                self._state = IDLE
                result = Result(True, f"saved {summary.frames} frames ({summary.policy_frames} policy, "
                                f"{summary.human_frames} human, {summary.missed_ticks} missed ticks) to "
                                f"{summary.path}", summary.path, summary.frames, summary.policy_frames,
                                summary.human_frames, self._index)
        self._log("info", result.message)
        self._on_change()
        return result

    def _end_error(self, reason: str, writer: EpisodeWriter) -> Result:
        self._state = ERROR
        self._error = reason
        self._remember(writer, str(writer.path), writer.bytes_written)
        self._log("error", reason)
        self._on_change()
        return Result(False, reason, str(writer.path), writer.frames, writer.policy_frames, writer.human_frames,
                      self._index)

    def shutdown(self) -> Result | None:
        """Ctrl+C / SIGTERM: an episode in progress is saved, not lost."""
        with self._lock:
            recording = self._state == RECORDING
        if not recording:
            return None
        self._log("warn", "shutting down while recording: saving the episode")
        return self.save(discard=False, end_reason="shutdown")

    # --- status -------------------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self._state == RECORDING

    def status(self) -> Status:
        cfg = self.config
        stale = self.slots.stale_sources(time.monotonic_ns(), int(cfg.stale_after_s * 1e9))
        with self._lock:
            writer, loop, state = self._writer, self._loop, self._state
            if state in (RECORDING, SAVING) and writer is not None and loop is not None:
                st = loop.stats
                return Status(
                    state=state, recording=state == RECORDING, file_path=str(writer.path), frames=st.frames,
                    policy_frames=st.policy_frames, human_frames=st.human_frames, missed_ticks=st.missed,
                    target_rate_hz=cfg.rate_hz, achieved_rate_hz=st.achieved_rate_hz,
                    bytes_written=writer.bytes_written, duration_s=st.duration_s, stale_sources=stale,
                )
            last = Status(**{**self._last.__dict__})
            last.state = state
            last.recording = False
            last.stale_sources = stale
            last.error = self._error if state == ERROR else ""
            return last
