"""Streaming HDF5 episode writer (no rclpy): the seed's layout, written while recording.

Every dataset of ``layout.COLUMNS`` is chunked and resizable; rows are appended in small batches and the file
is flushed (and fsync'ed) at least every ``flush_interval_s``, so a crash, kill -9 or power loss costs at most
about that much. While recording the file is ``episode_<i>.hdf5.partial``; ``finish()`` writes the contract
attributes, closes it and renames it to ``episode_<i>.hdf5`` without ever overwriting an existing episode.
JPEG bytes are stored exactly as they arrived (never decoded or re-encoded here).
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from h1_training.recording import layout as L
from h1_training.recording.sampler import Sample, achieved_rate
from h1_training.robot_model import CAMERA_NAMES


class RecorderError(Exception):
    """A failure an operator can act on; ``str()`` is the operator-readable reason."""


_ERRNO_RE = re.compile(r"errno\s*=\s*(\d+)")


def describe_os_error(exc: BaseException, path: Path | str, doing: str) -> str:
    """One line saying what went wrong and what to do, from an OSError or an h5py error text."""
    code = getattr(exc, "errno", None)
    if code is None:
        m = _ERRNO_RE.search(str(exc))
        code = int(m.group(1)) if m else None
    where = str(path)
    if code == errno.ENOSPC:
        return f"disk full while {doing} {where}: free space on that disk, then start a new episode"
    if code == errno.EFBIG:
        return f"file size limit reached while {doing} {where} (ulimit -f / filesystem limit)"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission for {doing} {where}: check save_dir's owner and mode"
    if code == errno.EROFS:
        return f"read-only filesystem: cannot {doing} {where}"
    if code == errno.ENOTDIR:
        return f"cannot {doing} {where}: a part of that path is a file, not a folder (check save_dir)"
    if code == errno.EDQUOT:
        return f"disk quota exceeded while {doing} {where}"
    return f"{doing} {where} failed: {exc}"


def free_mb(path: Path | str) -> float:
    """Free space of the filesystem holding ``path`` (or its nearest existing parent) in MB."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free / 1e6


def rlimit_fsize() -> int | None:
    """RLIMIT_FSIZE (``ulimit -f``) of this process right now; None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def filesystem_size_limit(folder: Path) -> int | None:
    """Largest file the filesystem holding ``folder`` allows (e.g. FAT32 USB sticks); None when huge."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        bits = os.pathconf(p, "PC_FILESIZEBITS")
    except (OSError, ValueError):
        return None
    return 2 ** (bits - 1) - 1 if 0 < bits < 63 else None


@dataclass(frozen=True)
class EpisodeMeta:
    epoch: int
    episode_index: int
    prompt: str = ""
    fps: float = 50.0
    stale_after_s: float = 0.2
    start_wall_ns: int = 0


@dataclass(frozen=True)
class EpisodeSummary:
    path: str
    frames: int
    policy_frames: int
    human_frames: int
    missed_ticks: int
    achieved_rate_hz: float
    bytes: int
    end_reason: str


# Sample field -> column, in layout.COLUMNS order (checked at import).
def _extractors() -> dict[str, Callable[[Sample], object]]:
    ex: dict[str, Callable[[Sample], object]] = {
        L.QPOS: lambda s: s.qpos,
        L.ACTION: lambda s: s.action,
        L.PHASE: lambda s: s.phase,
        L.EXTRA_SAMPLE_TIME_NS: lambda s: s.mono_ns,
        L.EXTRA_WALL_TIME_NS: lambda s: s.wall_ns,
        L.EXTRA_QPOS_STAMP_NS: lambda s: s.qpos_ns,
        L.EXTRA_HAND_STAMP_NS: lambda s: s.hand_ns,
        L.EXTRA_ACTION_STAMP_NS: lambda s: s.action_ns,
        L.EXTRA_PROPOSAL_STAMP_NS: lambda s: s.proposal_ns,
        L.EXTRA_HAND_STATE: lambda s: s.hand,
        L.EXTRA_MODEL_VERSION: lambda s: s.model_version,
        L.EXTRA_PROPOSED_ACTION: lambda s: s.proposal,
        L.EXTRA_PROPOSED_VALID: lambda s: s.proposal_valid,
    }
    for i, cam in enumerate(CAMERA_NAMES):
        ex[L.IMAGE_KEYS[i]] = lambda s, i=i: s.images[i]
        ex[L.image_stamp_key(cam)] = lambda s, i=i: s.image_ns[i]
        ex[L.placeholder_key(cam)] = lambda s, i=i: s.placeholder[i]
    for i, src in enumerate(L.STALE_SOURCES):
        ex[L.stale_key(src)] = lambda s, i=i: s.stale[i]
    missing = [c.key for c in L.COLUMNS if c.key not in ex]
    assert not missing, f"no sample field for columns {missing}"
    return ex


EXTRACT = _extractors()


def column_values(col: L.Column, values: list) -> np.ndarray:
    """A batch of one column as the array h5py writes (JPEGs as an object array of uint8 views)."""
    if col.kind == "jpeg":
        arr = np.empty(len(values), dtype=L.JPEG_DTYPE)
        for i, v in enumerate(values):
            arr[i] = np.frombuffer(v, dtype=np.uint8)  # zero-copy view of the bytes as received
        return arr
    if col.kind == "str":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    return np.asarray(values, dtype=col.dtype)


def create_columns(f: h5py.File, chunk_rows: int) -> dict[str, h5py.Dataset]:
    out = {}
    for col in L.COLUMNS:
        shape = (0, col.width) if col.width else (0,)
        maxshape = (None, col.width) if col.width else (None,)
        chunks = (chunk_rows, col.width) if col.width else (chunk_rows,)
        out[col.key] = f.create_dataset(col.key, shape=shape, maxshape=maxshape, chunks=chunks, dtype=col.dtype)
    return out


def append_rows(datasets: dict[str, h5py.Dataset], start: int, columns: dict[str, np.ndarray | list]) -> int:
    """Append one batch (same row count in every column) at row ``start``; returns the new length."""
    n = None
    for col in L.COLUMNS:
        data = columns[col.key]
        if not isinstance(data, np.ndarray) or (col.kind == "jpeg" and h5py.check_vlen_dtype(data.dtype) is None):
            data = column_values(col, list(data))
        n = len(data)
        ds = datasets[col.key]
        ds.resize(start + n, axis=0)
        if col.kind == "jpeg":
            # write_direct skips h5py's guesswork that turns equal-length JPEG lists into a 2-D array
            ds.write_direct(data, dest_sel=np.s_[start:start + n])
        elif n:
            ds[start:start + n] = data
    return start + (n or 0)


def iso_time(wall_ns: int) -> str:
    return _dt.datetime.fromtimestamp(wall_ns / 1e9, tz=_dt.timezone.utc).astimezone().isoformat(
        timespec="milliseconds")


def write_final_attrs(f: h5py.File, frames: int, fps: float, timestamp: str, phases: np.ndarray | list,
                      extra: dict) -> tuple[int, int]:
    """Contract attributes (counted from the phase rows actually in the file) plus ``extra``."""
    phases = [p.decode() if isinstance(p, bytes) else str(p) for p in phases]
    policy = phases.count(L.PHASE_POLICY)
    human = phases.count(L.PHASE_HUMAN)
    f.attrs["episode_length"] = frames
    f.attrs["fps"] = float(fps)
    f.attrs["timestamp"] = timestamp
    f.attrs["policy_frames"] = policy
    f.attrs["human_frames"] = human
    f.attrs[L.ATTR_FRAMES_FLUSHED] = frames
    for k, v in extra.items():
        f.attrs[k] = v
    return policy, human


def base_attrs(meta: EpisodeMeta) -> dict:
    """Attributes known when recording starts (the contract's counts are provisional until the end)."""
    return {
        "episode_length": 0,
        "fps": float(meta.fps),
        "timestamp": iso_time(meta.start_wall_ns or time.time_ns()),
        "policy_frames": 0,
        "human_frames": 0,
        L.ATTR_EPOCH: int(meta.epoch),
        L.ATTR_EPISODE_INDEX: int(meta.episode_index),
        L.ATTR_PROMPT: meta.prompt,
        L.ATTR_FORMAT_VERSION: L.FORMAT_VERSION,
        L.ATTR_STALE_AFTER_S: float(meta.stale_after_s),
        L.ATTR_RECOVERED: False,
        L.ATTR_SUCCESS: -1,
    }


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_atomically(src: Path, final: Path) -> Path:
    """Rename ``src`` to ``final`` atomically without overwriting; if ``final`` is taken, use the next free
    episode index in that folder. Returns the path used."""
    target = final
    for _ in range(1000):
        try:
            os.link(src, target)  # fails if target exists: never overwrites a saved episode
        except FileExistsError:
            target = final.parent / L.episode_name(L.next_episode_index(final.parent))
            continue
        os.unlink(src)
        fsync_dir(final.parent)
        return target
    raise RecorderError(f"could not find a free episode name beside {final}")


class EpisodeWriter:
    """Writes one episode. Not thread-safe: one thread calls ``append``/``finish``/``discard``."""

    def __init__(
        self,
        final_path: str | Path,
        meta: EpisodeMeta,
        batch_frames: int = 25,
        flush_interval_s: float = 0.5,
        fsync: bool = True,
        chunk_rows: int = 100,
        min_free_mb: float = 0.0,
        guard: bool = True,
    ) -> None:
        if batch_frames < 1 or chunk_rows < 1 or flush_interval_s <= 0:
            raise ValueError("batch_frames and chunk_rows must be >= 1 and flush_interval_s > 0")
        self.final_path = Path(final_path)
        self.path = L.partial_path(self.final_path)
        self.meta = meta
        self.batch_frames = batch_frames
        self.flush_interval_s = flush_interval_s
        self.fsync = fsync
        self.min_free_mb = min_free_mb
        self.guard = guard
        self._fs_limit = filesystem_size_limit(self.final_path.parent) if guard else None
        self.frames = 0          # rows in the datasets (written to HDF5)
        self.flushed_frames = 0  # rows known to be on disk
        self.missed_ticks = 0
        self.bytes_written = 0
        self.policy_frames = 0
        self.human_frames = 0
        self._first_ns = 0
        self._last_ns = 0
        self._pending: list[Sample] = []
        self._last_flush = time.monotonic()
        self._closed = False
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecorderError(describe_os_error(exc, self.final_path.parent, "creating the episode folder")) from exc
        if self.final_path.exists():
            raise RecorderError(f"{self.final_path} already exists; refusing to overwrite a saved episode")
        try:
            self.f = h5py.File(self.path, "w-")
        except (OSError, FileExistsError) as exc:
            if self.path.exists() and "exist" in str(exc).lower():
                raise RecorderError(f"{self.path} already exists (another recorder, or a crash not yet "
                                    "repaired); restart the recorder to repair it") from exc
            raise RecorderError(describe_os_error(exc, self.path, "creating")) from exc
        try:
            self.datasets = create_columns(self.f, chunk_rows)
            for k, v in base_attrs(meta).items():
                self.f.attrs[k] = v
            self.f.attrs[L.ATTR_FRAMES_FLUSHED] = 0
            self.f.attrs[L.ATTR_END_REASON] = "recording"
            self._fd = self.f.id.get_vfd_handle()
            self._flush()
        except Exception as exc:
            self._close_quietly()
            raise RecorderError(describe_os_error(exc, self.path, "writing")) from exc

    # --- streaming ------------------------------------------------------------------------------------
    def append(self, sample: Sample, missed: int = 0) -> None:
        """Queue one row; writes a batch when it is full and flushes when the interval is up. Raises
        RecorderError (the episode must end; ``finish`` still works) when the next batch would not fit."""
        self.missed_ticks += missed
        self._pending.append(sample)
        write = len(self._pending) >= self.batch_frames
        flush = time.monotonic() - self._last_flush >= self.flush_interval_s
        if (write or flush) and self.guard:
            self._check_room(sum(len(img) for s in self._pending for img in s.images) + 400 * len(self._pending))
        if write:
            self.write_pending()
        if flush:
            self.flush()

    def _check_room(self, batch_bytes: int) -> None:
        """Stop one batch early rather than let HDF5 hit ENOSPC/EFBIG mid-write: a failed HDF5 write can
        leave metadata pointing past the end of the file, which no reader can open. The pending batch stays
        pending and ``finish`` writes it into the room kept here."""
        need = 2 * batch_bytes + 2_000_000  # this batch, one more, and the closing metadata
        size = os.fstat(self._fd).st_size
        limits = [x for x in (self._fs_limit, rlimit_fsize()) if x is not None]
        if limits and size + need > min(limits):
            raise RecorderError(f"file size limit reached: {self.path} is {size / 1e6:.1f} MB and files may not "
                                f"exceed {min(limits) / 1e6:.1f} MB here (ulimit -f or the filesystem); "
                                "recording stopped")
        if self.min_free_mb > 0:
            free = free_mb(self.path)
            if free - need / 1e6 < self.min_free_mb:
                raise RecorderError(f"disk almost full: {free:.0f} MB free (min_free_mb {self.min_free_mb:.0f}); "
                                    "recording stopped")

    def write_pending(self) -> None:
        if not self._pending or self._closed:
            return
        rows = self._pending
        columns = {col.key: [EXTRACT[col.key](s) for s in rows] for col in L.COLUMNS}
        try:
            self.frames = append_rows(self.datasets, self.frames, columns)
        except Exception as exc:
            raise RecorderError(describe_os_error(exc, self.path, "writing")) from exc
        for s in rows:
            if s.phase == L.PHASE_HUMAN:
                self.human_frames += 1
            else:
                self.policy_frames += 1
        if not self._first_ns:
            self._first_ns = rows[0].mono_ns
        self._last_ns = rows[-1].mono_ns
        self._pending = []

    def flush(self) -> None:
        """Everything appended so far reaches the disk (fsync'ed unless disabled)."""
        self.write_pending()
        self._flush()

    def _flush(self) -> None:
        try:
            self.f.attrs[L.ATTR_FRAMES_FLUSHED] = self.frames
            self.f.attrs[L.ATTR_MISSED_TICKS] = self.missed_ticks
            self.f.flush()
            if self.fsync:
                os.fsync(self._fd)
            self.bytes_written = os.fstat(self._fd).st_size
        except Exception as exc:
            raise RecorderError(describe_os_error(exc, self.path, "flushing")) from exc
        self.flushed_frames = self.frames
        self._last_flush = time.monotonic()

    @property
    def achieved_rate_hz(self) -> float:
        return achieved_rate(self.frames, self._first_ns, self._last_ns)

    # --- ending -----------------------------------------------------------------------------------------
    def finish(self, success_label: int = -1, end_reason: str = "saved",
               extra_attrs: dict | None = None) -> EpisodeSummary:
        """Write what is pending, the contract attributes, close, fsync and rename atomically."""
        if self._closed:
            raise RecorderError("episode already closed")
        try:
            self.write_pending()
            extra = {
                L.ATTR_SUCCESS: int(success_label),
                L.ATTR_MISSED_TICKS: int(self.missed_ticks),
                L.ATTR_ACHIEVED_RATE: float(self.achieved_rate_hz),
                L.ATTR_END_REASON: end_reason,
                **(extra_attrs or {}),
            }
            write_final_attrs(self.f, self.frames, self.meta.fps, str(self.f.attrs["timestamp"]),
                              self.datasets[L.PHASE][:], extra)
            self.f.flush()
            if self.fsync:
                os.fsync(self._fd)
            self.f.close()
        except Exception as exc:
            self._close_quietly()
            raise RecorderError(describe_os_error(exc, self.path, "saving") +
                                f"; the unsaved file {self.path} is kept and is repaired at the next start") from exc
        self._closed = True
        try:
            final = publish_atomically(self.path, self.final_path)
        except OSError as exc:
            raise RecorderError(describe_os_error(exc, self.final_path, "renaming to")) from exc
        self.bytes_written = final.stat().st_size
        return EpisodeSummary(str(final), self.frames, self.policy_frames, self.human_frames, self.missed_ticks,
                              self.achieved_rate_hz, self.bytes_written, end_reason)

    def discard(self) -> None:
        self._pending = []
        self._close_quietly()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RecorderError(describe_os_error(exc, self.path, "deleting")) from exc

    def abort(self) -> None:
        """Close without saving; the partial file stays for repair."""
        self._close_quietly()

    def _close_quietly(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - already failing; the caller reports the first error
            pass
