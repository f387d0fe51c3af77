"""Write-ahead journal of an episode's samples (no rclpy): what a kill -9 of the recorder cannot take away.

The sampler thread appends every sample to the journal with one ``writev`` the moment it takes it; the HDF5
writer process reads the samples back from the journal, in order, and appends them to the episode. Once
``writev`` returned, a record is in the kernel's page cache, which outlives the process: a kill -9 or crash of
the recorder (node and writer together) costs at most the sample being written, however far behind the HDF5
writer is (a CPU-starved writer, seconds of backlog). The start-up repair (``recording.repair``) copies the rows
the HDF5 file holds and replays the journal's records after them. The journal is not fsync'ed: a power loss is
bounded by the writer's fsync'ed flushes (``flush_interval_s``), as before.

The journal is a series of segment files of ``segment_frames`` records beside the episode, each named after its
first record (``episode_3.hdf5.journal-000125.partial``: the ``.partial`` ending keeps them out of rsync, catalogs
and ``find_partials``), so a reader needs no setting to find its way. The writer deletes a segment once every
record in it is inside an fsync'ed HDF5 flush, so the journal holds about a second of samples plus whatever the
writer is behind, never a copy of the episode.

Record: ``MAGIC``, u32 payload length, u32 CRC-32 of the payload, payload = a fixed little-endian struct (sequence
number = row index, missed ticks before it, tick, times, flags), the four joint vectors as float32, the model
version text and the three JPEGs exactly as they arrived. A reader stops at the first record that is incomplete,
fails its CRC or breaks the sequence: everything before it is intact.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from h1_training.recording import layout as L
from h1_training.recording.sampler import Sample
from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS, NUM_HAND_JOINTS

MAGIC = b"H1JR"
_HEAD = struct.Struct("<4sII")                 # magic, payload length, crc32(payload)
# seq, missed, tick, 6 times + 1 spare, 3 image stamps, flags, len(model version), 3 len(jpeg)
_FIXED = struct.Struct("<QIq7q3qIH3I")
_FLOATS = 3 * NUM_ARM_JOINTS + NUM_HAND_JOINTS  # qpos, hand, action, proposal
_NCAM = len(CAMERA_NAMES)
_NSTALE = len(L.STALE_SOURCES)
_F_PROPOSAL_VALID = 1 << (_NCAM + _NSTALE)
_F_HUMAN = _F_PROPOSAL_VALID << 1
SEGMENT_FRAMES = 25                             # 0.5 s at 50 Hz per segment file
_SEGMENT_RE = re.compile(r"\.journal-(\d{6,})" + re.escape(L.PARTIAL_SUFFIX) + "$")


class JournalError(Exception):
    """The journal cannot be written (disk full, permissions) or read back (damaged record); ``str()`` says why."""


def segment_path(partial: str | Path, first: int) -> Path:
    """The journal segment of ``episode_3.hdf5.partial`` whose first record is ``first``:
    ``episode_3.hdf5.journal-000125.partial``."""
    partial = Path(partial)
    final_name = partial.name[: -len(L.PARTIAL_SUFFIX)] if partial.name.endswith(L.PARTIAL_SUFFIX) else partial.name
    return partial.with_name(f"{final_name}.journal-{first:06d}{L.PARTIAL_SUFFIX}")


def segments(partial: str | Path) -> list[tuple[int, Path]]:
    """(first record, path) of the journal segments of ``partial`` on disk, in order."""
    partial = Path(partial)
    prefix = segment_path(partial, 0).name.split(".journal-")[0] + ".journal-"
    out = []
    try:
        names = os.listdir(partial.parent)
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix) and (m := _SEGMENT_RE.search(name)):
            out.append((int(m.group(1)), partial.parent / name))
    return sorted(out)


def remove(partial: str | Path, below: int | None = None) -> int:
    """Delete the journal of ``partial`` (only the segments whose records all have seq < ``below`` when given:
    those followed by a segment starting at or before it); returns how many were deleted."""
    n = 0
    found = segments(partial)
    for i, (_first, path) in enumerate(found):
        if below is not None and (i + 1 == len(found) or found[i + 1][0] > below):
            continue
        try:
            path.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def encode(seq: int, sample: Sample, missed: int) -> list:
    """The record as a list of buffers for ``os.writev`` (the JPEGs are not copied)."""
    flags = 0
    for i, p in enumerate(sample.placeholder):
        flags |= bool(p) << i
    for i, st in enumerate(sample.stale):
        flags |= bool(st) << (_NCAM + i)
    if sample.proposal_valid:
        flags |= _F_PROPOSAL_VALID
    if sample.phase == L.PHASE_HUMAN:
        flags |= _F_HUMAN
    mv = sample.model_version.encode()
    images = [memoryview(img).cast("B") for img in sample.images]
    fixed = _FIXED.pack(seq, missed, sample.tick, sample.mono_ns, sample.wall_ns, sample.qpos_ns, sample.hand_ns,
                        sample.action_ns, sample.proposal_ns, 0, *sample.image_ns, flags, len(mv),
                        *(m.nbytes for m in images))
    floats = np.concatenate([sample.qpos, sample.hand, sample.action, sample.proposal]).astype("<f4").tobytes()
    body = [fixed, floats, mv, *images]
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    return [_HEAD.pack(MAGIC, sum(len(b) if isinstance(b, bytes) else b.nbytes for b in body), crc), *body]


def decode(payload: bytes) -> tuple[int, int, Sample]:
    """(seq, missed, Sample) from one record's payload (CRC already checked); the JPEGs are views of it."""
    (seq, missed, tick, mono_ns, wall_ns, qpos_ns, hand_ns, action_ns, proposal_ns, _spare, *rest
     ) = _FIXED.unpack_from(payload, 0)
    image_ns, flags, mv_len, img_lens = tuple(rest[:_NCAM]), rest[_NCAM], rest[_NCAM + 1], rest[_NCAM + 2:]
    off = _FIXED.size
    floats = np.frombuffer(payload, dtype="<f4", count=_FLOATS, offset=off).astype(np.float32)
    off += 4 * _FLOATS
    a = NUM_ARM_JOINTS
    qpos, hand = floats[:a], floats[a:a + NUM_HAND_JOINTS]
    action, proposal = floats[a + NUM_HAND_JOINTS:2 * a + NUM_HAND_JOINTS], floats[2 * a + NUM_HAND_JOINTS:]
    view = memoryview(payload)
    mv = bytes(view[off:off + mv_len]).decode()
    off += mv_len
    images = []
    for n in img_lens:
        images.append(view[off:off + n])
        off += n
    if off != len(payload):
        raise JournalError(f"record {seq}: {len(payload)} bytes, its fields need {off}")
    sample = Sample(
        tick=tick, mono_ns=mono_ns, wall_ns=wall_ns, qpos=qpos, qpos_ns=qpos_ns, hand=hand, hand_ns=hand_ns,
        images=tuple(images), image_ns=image_ns,
        placeholder=tuple(bool(flags >> i & 1) for i in range(_NCAM)),
        stale=tuple(bool(flags >> (_NCAM + i) & 1) for i in range(_NSTALE)),
        action=action, action_ns=action_ns, model_version=mv,
        phase=L.PHASE_HUMAN if flags & _F_HUMAN else L.PHASE_POLICY,
        proposal=proposal, proposal_ns=proposal_ns, proposal_valid=bool(flags & _F_PROPOSAL_VALID),
    )
    return seq, missed, sample


class JournalWriter:
    """Appends records (one ``writev`` each) to the segments of one episode's journal; the sampler thread's."""

    def __init__(self, partial: str | Path, segment_frames: int = SEGMENT_FRAMES) -> None:
        if segment_frames < 1:
            raise ValueError("segment_frames must be >= 1")
        self.partial = Path(partial)
        self.segment_frames = segment_frames
        self.seq = 0          # records written = the next record's sequence number
        self._fd = -1

    def append(self, sample: Sample, missed: int) -> int:
        """Write one record; returns the number of records in the journal. JournalError on a failed write."""
        if self.seq % self.segment_frames == 0:
            self._open(self.seq)
        parts = encode(self.seq, sample, missed)
        size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
        try:
            written = os.writev(self._fd, parts)
        except OSError as exc:
            raise JournalError(f"writing record {self.seq} of the journal of {self.partial} failed: "
                               f"{exc.strerror or exc}") from exc
        if written != size:  # a regular file writes it all or fails (disk full mid-record)
            raise JournalError(f"the journal took {written} of {size} bytes of record {self.seq} (disk full?)")
        self.seq += 1
        return self.seq

    def _open(self, first: int) -> None:
        self.close()
        path = segment_path(self.partial, first)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot create the journal segment {path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class JournalReader:
    """Reads an episode's journal in order from record ``start`` (a live one while it is written, or one a crash
    left behind).

    ``read()`` yields ``(seq, missed, Sample)`` for every complete record not yet read and returns at the end of
    what is there (a record still being written is read next time). A damaged record (bad magic or CRC) or a gap
    in the sequence raises JournalError when ``strict``, else ends the reading (``self.stopped`` says why)."""

    def __init__(self, partial: str | Path, start: int = 0, strict: bool = True) -> None:
        self.partial = Path(partial)
        self.next_seq = start
        self.strict = strict
        self.stopped = ""
        self._fd = -1
        self._first = -1       # first record of the open segment
        self._offset = 0

    def _open(self, first: int) -> None:
        self.close()
        self._fd = os.open(segment_path(self.partial, first), os.O_RDONLY)
        self._first, self._offset = first, 0

    def _open_for_next(self) -> bool:
        """Open the segment holding ``next_seq`` (the last one starting at or before it)."""
        starts = [first for first, _ in segments(self.partial) if first <= self.next_seq]
        if not starts:
            return False
        try:
            self._open(starts[-1])
        except FileNotFoundError:  # deleted meanwhile (a writer cleaning up): nothing more to read here
            return False
        return True

    def _bad(self, why: str) -> None:
        self.stopped = why
        if self.strict:
            raise JournalError(why)

    def read(self, limit: int | None = None) -> Iterator[tuple[int, int, Sample]]:
        """Complete records with seq < ``limit`` (all there are when None)."""
        while not self.stopped and (limit is None or self.next_seq < limit):
            if self._fd < 0 and not self._open_for_next():
                return  # not written yet (live), or nothing (left) to replay
            head = os.pread(self._fd, _HEAD.size, self._offset)
            if len(head) < _HEAD.size:
                # the end of this segment: the next one exists once every record of this one was written
                if self._first != self.next_seq and segment_path(self.partial, self.next_seq).exists():
                    self._open(self.next_seq)
                    continue
                return
            where = f"journal segment {self._first}, byte {self._offset}"
            magic, length, crc = _HEAD.unpack(head)
            if magic != MAGIC:
                self._bad(f"{where}: not a record")
                return
            payload = os.pread(self._fd, length, self._offset + _HEAD.size)
            if len(payload) < length:
                return  # still being written, or cut short by the crash
            if zlib.crc32(payload) != crc:
                self._bad(f"{where}: the record fails its CRC")
                return
            try:
                seq, missed, sample = decode(payload)
            except (struct.error, ValueError, UnicodeDecodeError, JournalError) as exc:
                self._bad(f"{where}: unreadable record ({exc})")
                return
            self._offset += _HEAD.size + length
            if seq < self.next_seq:
                continue  # before the start (the repair starts inside a segment)
            if seq != self.next_seq:
                self._bad(f"journal: record {self.next_seq} expected, found {seq}")
                return
            self.next_seq += 1
            yield seq, missed, sample

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
