"""Repair an episode a crash left behind (``episode_<i>.hdf5.partial``) into a valid, truncated episode.

The writer records ``frames_flushed`` at every flush; rows up to it are known complete on disk. Repair copies
that prefix row-checked (monotonic sample times, JPEG start-of-image marker, a known phase) into a fresh file,
stops at the first row that cannot be read or fails a check, then replays the episode's write-ahead journal
(``journal.py``: every sample the sampler took, the ones the writer had not flushed yet included) from the next
row on, up to its first incomplete or damaged record, writes the contract attributes counted from what
was kept, marks it ``recovered=True`` with the reason, and renames it atomically to ``episode_<i>.hdf5``.
The partial file is removed only after the repaired episode is safely on disk. A file that cannot be read at
all is renamed ``*.unrecoverable`` (never deleted) and reported.

HDF5 can loop forever on some damaged files (seen here on files cut short), so the reading runs in a child
process (``python -m h1_training.recording.repair``) that reports each verified block; if it stops making
progress it is killed and the repair is redone up to the last verified row (with no row verified: from the
journal alone, which holds every sample from record 0). A recorder's start-up can therefore never hang on a
damaged leftover. Silence is judged from the worker's first line on (``ready``): its interpreter and h5py
imports take seconds on a loaded machine and are no hang; the journal replay and the new file's writing
report each block too (``alive``), so a long episode is never taken for a hung one.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h1_training import procs
from h1_training.recording import journal as J
from h1_training.recording import layout as L
from h1_training.recording.sampler import achieved_rate
from h1_training.recording.writer import (
    EXTRACT,
    append_rows,
    create_columns,
    fsync_dir,
    publish_atomically,
    write_final_attrs,
)

_EOF_RE = re.compile(r"stored[_ ]eof\s*=\s*(\d+)")
_BLOCK = 50  # rows verified per progress report: a hang inside a block costs at most this many more
_PROGRESS = "progress "
_ALIVE = "alive"
_READY = "ready"
_RESULT = "result "
START_TIMEOUT_S = 180.0  # the worker's start (interpreter, numpy, h5py) before its first line: load, not a hang
UNRECOVERABLE_SUFFIX = L.UNRECOVERABLE_SUFFIX


@dataclass(frozen=True)
class RepairResult:
    partial: str
    ok: bool
    path: str = ""          # the repaired episode ("" when nothing was recovered)
    frames: int = 0
    frames_on_disk: int = 0  # rows the partial file's datasets held
    skipped: bool = False    # in use by a live recorder: left alone
    reason: str = ""         # operator-readable account

    def line(self) -> str:
        if self.skipped:
            return f"left {self.partial} alone: {self.reason}"
        if self.ok:
            return f"repaired {self.partial} -> {self.path}: {self.frames} frames kept ({self.reason})"
        return f"could not repair {self.partial}: {self.reason}"


def _in_use(path: Path) -> bool:
    """True when another process holds a lock on the file (HDF5 locks files it has open for writing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _open(path: Path) -> tuple[h5py.File, str]:
    """Open read-only; a file cut short (power loss) is padded with zeros up to the length its superblock
    records so HDF5 opens it, and the row checks then drop whatever the zeros replaced."""
    try:
        return h5py.File(path, "r", locking=False), ""
    except OSError as exc:
        m = _EOF_RE.search(str(exc))
        if not m or "truncated" not in str(exc).lower():
            raise
        stored = int(m.group(1))
        actual = path.stat().st_size
        os.truncate(path, stored)
        note = f"file was cut short ({actual} of {stored} bytes on disk)"
        return h5py.File(path, "r", locking=False), note


def _row_ok(block: dict[str, np.ndarray], i: int, prev_ns: int) -> bool:
    t = int(block[L.EXTRA_SAMPLE_TIME_NS][i])
    if t <= 0 or t <= prev_ns:
        return False
    phase = block[L.PHASE][i]
    phase = phase.decode() if isinstance(phase, bytes) else str(phase)
    if phase not in (L.PHASE_POLICY, L.PHASE_HUMAN):
        return False
    for key in L.IMAGE_KEYS:
        jpeg = block[key][i]
        if len(jpeg) < 4 or jpeg[0] != 0xFF or jpeg[1] != 0xD8:  # JPEG SOI marker
            return False
    return True


def _read_block(src: h5py.File, a: int, b: int) -> dict[str, np.ndarray]:
    return {col.key: src[col.key][a:b] for col in L.COLUMNS}


def _good_prefix(src: h5py.File, limit: int, progress: Callable[[int], None]) -> tuple[int, list]:
    """Rows [0, n) that read back and pass the row checks, as blocks; ``progress(n)`` after each block."""
    blocks, n, prev_ns = [], 0, 0
    while n < limit:
        start, b = n, min(limit, n + _BLOCK)
        try:
            block = _read_block(src, start, b)
        except Exception:  # noqa: BLE001 - an unreadable chunk ends the good prefix; go row by row to find it
            block = None
            for r in range(start, b):
                try:
                    row = _read_block(src, r, r + 1)
                except Exception:  # noqa: BLE001
                    break
                block = row if block is None else {k: np.concatenate([block[k], row[k]]) for k in block}
            if block is None:
                break
        rows = len(block[L.EXTRA_SAMPLE_TIME_NS])
        good = 0
        for i in range(rows):
            if not _row_ok(block, i, prev_ns):
                break
            prev_ns = int(block[L.EXTRA_SAMPLE_TIME_NS][i])
            good += 1
        if good:
            blocks.append({k: v[:good] for k, v in block.items()})
        n = start + good
        progress(n)
        if good < b - start:
            break
    return n, blocks


def _inspect(src: h5py.File, max_rows: int | None, progress: Callable[[int], None]
             ) -> tuple[int, int | None, int, list, dict]:
    """(rows on disk, frames_flushed attr, rows kept, kept blocks, attrs); rows on disk -1 = datasets missing
    (then the blocks list holds their names)."""
    missing = [c.key for c in L.COLUMNS if c.key not in src]
    if missing:
        return -1, None, 0, missing, {}
    on_disk = min(src[c.key].shape[0] for c in L.COLUMNS)
    limit = on_disk
    flushed = src.attrs.get(L.ATTR_FRAMES_FLUSHED)
    if flushed is not None:
        flushed = int(flushed)
        limit = min(limit, flushed)
    if max_rows is not None:
        limit = min(limit, max_rows)
    kept, blocks = _good_prefix(src, limit, progress)
    attrs = {}
    for k in src.attrs:
        try:
            attrs[k] = src.attrs[k]
        except Exception:  # noqa: BLE001 - an unreadable attribute is dropped, the rows matter more
            pass
    return on_disk, flushed, kept, blocks, attrs


def repair_partial(partial: str | Path, why: str = "the recorder stopped without saving (crash, kill or power "
                   "loss)", hang_timeout_s: float = 20.0) -> RepairResult:
    """Repair one ``*.hdf5.partial``; reading happens in a watched child process (see the module doc)."""
    partial = Path(partial)
    if not partial.name.endswith(L.PARTIAL_SUFFIX):
        return RepairResult(str(partial), False, reason=f"not a partial episode (no {L.PARTIAL_SUFFIX} suffix)")
    if _in_use(partial):
        return RepairResult(str(partial), False, skipped=True, reason="in use by a running recorder")
    result, verified = _run_worker(partial, why, None, hang_timeout_s)
    if result is not None:
        return result
    # it hung past the last verified block: redo it without touching the rows beyond (none verified: the
    # journal alone, from its record 0, rebuilds the episode)
    note = f"{why}; HDF5 hung reading row {verified} or later of the damaged file"
    result, _ = _run_worker(partial, note, verified, hang_timeout_s)
    if result is not None:
        return result
    return _give_up(partial, f"HDF5 hung reading the damaged file (row {verified} or later) and the journal did "
                    "not rebuild it")


def _run_worker(partial: Path, why: str, max_rows: int | None, hang_timeout_s: float
                ) -> tuple[RepairResult | None, int]:
    """(result or None if the worker hung or died, rows verified before that)."""
    cmd = [sys.executable, "-m", "h1_training.recording.repair", str(partial), "--why", why]
    if max_rows is not None:
        cmd += ["--max-rows", str(max_rows)]
    state: dict[str, Any] = {"verified": 0, "result": None, "ready": False, "last": time.monotonic()}

    def line(text: str) -> None:
        state["last"] = time.monotonic()
        state["ready"] = True
        if text.startswith(_PROGRESS):
            state["verified"] = int(text[len(_PROGRESS):])
        elif text.startswith(_RESULT):
            state["result"] = RepairResult(**json.loads(text[len(_RESULT):]))

    # a worker silent for hang_timeout_s once it has started is stuck inside HDF5: kill it at once (nothing to
    # save); before its first line it is still importing (START_TIMEOUT_S)
    hung, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            limit = hang_timeout_s if state["ready"] else max(hang_timeout_s, START_TIMEOUT_S)
            if time.monotonic() - state["last"] > limit:
                hung.set()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = procs.run(cmd, on_line=line, cancel=hung, stop_signals=((signal.SIGKILL, 5.0),),
                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        done.set()
    if state["result"] is None and not run.stopped and run.rc not in (0, -9):
        # the worker crashed (not a hang we caused): report with its last words, keep the file
        tail = run.stderr.strip().splitlines()[-1:] or [f"exit code {run.rc}"]
        return _give_up(partial, f"the repair worker failed ({tail[0]})"), state["verified"]
    return state["result"], state["verified"]


def repair_in_this_process(partial: str | Path, why: str, max_rows: int | None = None,
                           progress: Callable[[int], None] = lambda n: None,
                           alive: Callable[[], None] = lambda: None) -> RepairResult:
    """The repair itself (runs in the worker process; call ``repair_partial`` instead). ``progress(rows)``
    after each verified block of the damaged file, ``alive()`` after each block replayed or written."""
    partial = Path(partial)
    final = Path(str(partial)[: -len(L.PARTIAL_SUFFIX)])
    try:
        src, note = _open(partial)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be opened is reported, the file is kept
        return _give_up(partial, f"not readable as HDF5 ({exc})")
    try:
        with src:
            on_disk, flushed, kept, blocks, attrs = _inspect(src, max_rows, progress)
    except Exception as exc:  # noqa: BLE001 - damaged metadata: report and keep the file
        return _give_up(partial, f"its structure is damaged ({exc})")
    if on_disk < 0:
        return _give_up(partial, "datasets missing: " + ", ".join(blocks[:4]))
    last_ns = int(blocks[-1][L.EXTRA_SAMPLE_TIME_NS][-1]) if kept else 0
    tail, tail_missed, tail_note = _journal_tail(partial, kept, last_ns, alive)
    if tail:
        blocks = blocks + tail
    replayed = sum(len(b[L.EXTRA_SAMPLE_TIME_NS]) for b in tail)
    if kept + replayed == 0:
        if on_disk == 0:
            partial.unlink()
            J.remove(partial)
            return RepairResult(str(partial), False, reason="the episode ended before its first sample was "
                                "written; nothing to recover (file removed)")
        return _give_up(partial, f"none of its {on_disk} rows could be read back intact")

    tmp = Path(str(final) + ".repairing")
    with h5py.File(tmp, "w") as dst:
        datasets = create_columns(dst, 100)
        n = 0
        for block in blocks:
            n = append_rows(datasets, n, block)
            alive()
        sample_ns = dst[L.EXTRA_SAMPLE_TIME_NS]
        rate = achieved_rate(n, int(sample_ns[0]), int(sample_ns[n - 1]))
        reason = f"{why}; kept {kept} of {on_disk} rows found (last flush recorded {flushed} rows)"
        reason += f"; {replayed} more replayed from the journal" + (f" ({tail_note})" if tail_note else "")
        if note:
            reason += f"; {note}"
        extra = {k: v for k, v in attrs.items() if k not in L.CONTRACT_ATTRS}
        extra.update({
            L.ATTR_RECOVERED: True,
            L.ATTR_RECOVERED_REASON: reason,
            L.ATTR_END_REASON: "recovered",
            L.ATTR_ACHIEVED_RATE: float(rate),
            # the file's count covers the rows its writer flushed: none of them kept (the journal alone rebuilt
            # the episode) means the journal's own count is the whole story
            L.ATTR_MISSED_TICKS: (int(attrs.get(L.ATTR_MISSED_TICKS, 0)) if kept else 0) + tail_missed,
        })
        ts = attrs.get("timestamp", "")
        write_final_attrs(dst, n, float(attrs.get("fps", 50.0)), ts.decode() if isinstance(ts, bytes) else str(ts),
                          dst[L.PHASE][:], extra)
        dst.flush()
        os.fsync(dst.id.get_vfd_handle())
    path = publish_atomically(tmp, final)
    partial.unlink()
    J.remove(partial)
    fsync_dir(partial.parent)
    return RepairResult(str(partial), True, str(path), kept + replayed, on_disk, reason=reason)


def _journal_tail(partial: Path, start: int, after_ns: int, alive: Callable[[], None] = lambda: None
                  ) -> tuple[list[dict], int, str]:
    """The journal's records from row ``start`` on, as column blocks: (blocks, missed ticks in them, why the
    replay stopped before the journal's end, "" when it read to the end)."""
    reader = J.JournalReader(partial, start=start, strict=False)
    blocks: list[dict] = []
    rows: list = []
    missed = 0
    note = ""
    prev = after_ns
    try:
        for _seq, m, sample in reader.read():
            if sample.mono_ns <= prev:
                note = f"record {_seq} is not later than the row before it"
                break
            prev = sample.mono_ns
            rows.append(sample)
            missed += m
            if len(rows) == _BLOCK:
                blocks.append({key: [fn(s) for s in rows] for key, fn in EXTRACT.items()})
                rows = []
                alive()
    except OSError as exc:
        note = f"journal unreadable: {exc}"
    finally:
        reader.close()
    if rows:
        blocks.append({key: [fn(s) for s in rows] for key, fn in EXTRACT.items()})
    return blocks, missed, note or reader.stopped


def _give_up(partial: Path, reason: str) -> RepairResult:
    keep = Path(str(partial) + UNRECOVERABLE_SUFFIX)
    try:
        os.replace(partial, keep)
    except OSError:
        keep = partial
    return RepairResult(str(partial), False, reason=f"{reason}; file kept as {keep}")


def repair_all(save_dir: str | Path) -> list[RepairResult]:
    """Repair every partial episode under ``save_dir`` (what the recorder does at start-up); then delete the
    journals left beside episodes that were saved (a writer ended between the save and that clean-up)."""
    results = [repair_partial(p) for p in L.find_partials(save_dir)]
    root = Path(save_dir)
    if root.is_dir():
        for seg in root.glob(f"{L.SESSION_PREFIX}*/{L.EPISODE_GLOB}.journal-*{L.PARTIAL_SUFFIX}"):
            episode = seg.with_name(seg.name.split(".journal-")[0])
            if episode.exists() and not L.partial_path(episode).exists():
                J.remove(L.partial_path(episode))
    return results


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: prints ``progress <rows>`` lines, then ``result <json>``."""
    ap = argparse.ArgumentParser(description="repair one partial episode (worker of repair_partial)")
    ap.add_argument("partial")
    ap.add_argument("--why", default="the recorder stopped without saving (crash, kill or power loss)")
    ap.add_argument("--max-rows", type=int, default=None)
    args = ap.parse_args(argv)
    print(_READY, flush=True)  # imports done: silence from here on is judged as a hang
    result = repair_in_this_process(args.partial, args.why, args.max_rows,
                                    lambda n: print(f"{_PROGRESS}{n}", flush=True),
                                    lambda: print(_ALIVE, flush=True))
    print(_RESULT + json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
