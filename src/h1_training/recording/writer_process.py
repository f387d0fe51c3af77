"""The HDF5 writer in its own process (no rclpy).

Why a process: h5py holds Python's GIL for every HDF5 call, including a ``write()`` the kernel blocks while it
throttles dirty pages. In a thread, such a stall would delay the 50 Hz sampler; in a separate process it only
delays the file, and the sampler keeps its clock. Samples cross over a ``multiprocessing`` queue (pickled by
the queue's feeder thread, which releases the GIL while writing to the pipe).

Samples do not cross over the pipe: the parent's sampler thread appends each one to the episode's write-ahead
journal (``journal.py``) and sends only how many records the journal holds; this process reads them back from the
journal in order, appends them to the HDF5 file and deletes each journal segment once its records are inside an
fsync'ed flush. A kill -9 of both processes therefore loses at most the record being written, however far behind
this process is; the start-up repair replays the journal.

Protocol (tuples): parent -> child ``("start", final_path, EpisodeMeta, writer_kwargs, min_free_mb)``,
``("journal", records)``, ``("finish", success_label, end_reason, records)``, ``("discard",)``, ``("quit",)``;
child -> parent ``("started", partial_path)``, ``("progress", frames, flushed_frames, bytes)``,
``("finished", EpisodeSummary)``, ``("discarded",)``, ``("error", reason)`` (reply to start/finish/discard),
``("failed", reason, EpisodeSummary | None, partial_path)`` (unprompted: the episode ended on an error).

The child ignores SIGINT/SIGTERM (a Ctrl+C reaches the whole process group; the parent decides when to save)
and, if the parent disappears, saves what it received (end_reason ``orphaned``) instead of dropping it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Any

from h1_training.recording import journal as J
from h1_training.recording import layout as L
from h1_training.recording.writer import EpisodeWriter, RecorderError


def serve(inbox: Any, outbox: Any) -> None:
    """Child main loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    writer: EpisodeWriter | None = None
    reader: J.JournalReader | None = None
    min_free = 0.0
    reported = -1

    def fail(reason: str) -> None:
        nonlocal writer
        assert writer is not None
        summary = None
        try:
            summary = writer.finish(end_reason=f"error: {reason}")
        except RecorderError:
            writer.abort()  # the partial file and its journal stay for the repair
        else:
            J.remove(writer.path)
        outbox.put(("failed", reason, summary, str(writer.path)))
        writer = None

    def drain(limit: int | None) -> bool:
        """Journal records (seq < limit) into the HDF5 file; False when the episode ended on an error."""
        nonlocal reported
        assert writer is not None and reader is not None
        try:
            for _seq, missed, sample in reader.read(limit):
                writer.append(sample, missed)  # checks room for the next batch (disk space, file size limit)
                if writer.flushed_frames != reported:
                    reported = writer.flushed_frames
                    J.remove(writer.path, below=reported)
                    outbox.put(("progress", writer.frames, writer.flushed_frames, writer.bytes_written))
        except (RecorderError, J.JournalError) as exc:
            fail(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - any failure ends the episode with a reason
            fail(f"writer failed: {exc!r}")
            return False
        return True

    def close_reader() -> None:
        nonlocal reader
        if reader is not None:
            reader.close()
            reader = None

    while True:
        try:
            msg = inbox.get(timeout=0.2)
        except queue.Empty:
            if os.getppid() != parent:
                msg = ("orphaned",)
            else:
                continue
        except (EOFError, OSError):
            msg = ("orphaned",)
        kind = msg[0]
        if kind == "journal":
            if writer is not None:  # else the episode already ended on an error; the parent knows
                drain(msg[1])
        elif kind == "start":
            _, final, meta, kwargs, min_free = msg
            if writer is not None:
                writer.abort()
            close_reader()
            try:
                writer = EpisodeWriter(final, meta, min_free_mb=min_free, **kwargs)
                J.remove(writer.path)  # a journal no episode owns any more (the repair ran before this start)
                reader = J.JournalReader(writer.path)
                reported = -1
                outbox.put(("started", str(writer.path)))
            except RecorderError as exc:
                writer = None
                outbox.put(("error", str(exc)))
        elif kind == "finish":
            if writer is None:
                outbox.put(("error", "no episode is open in the writer"))
                continue
            if not drain(msg[3]):  # every record the sampler wrote, then the contract attributes
                outbox.put(("error", "the episode ended on an error while its last samples were written"))
                continue
            try:
                summary = writer.finish(success_label=msg[1], end_reason=msg[2])
                J.remove(writer.path)
                outbox.put(("finished", summary))
            except RecorderError as exc:
                outbox.put(("error", str(exc)))
            writer = None
            close_reader()
        elif kind == "discard":
            if writer is None:
                outbox.put(("discarded",))
                continue
            try:
                writer.discard()
                J.remove(writer.path)
                outbox.put(("discarded",))
            except RecorderError as exc:
                outbox.put(("error", str(exc)))
            writer = None
            close_reader()
        elif kind == "quit":
            if writer is not None:  # the parent saves before quitting; this is a last resort
                writer.abort()      # the partial file and its journal stay for the repair
            return
        elif kind == "orphaned":
            if writer is not None and reader is not None:  # never drop what was recorded: save it, saying why
                reader.strict = False  # whatever is intact, up to a record the parent's end cut short
                if drain(None):
                    why = ("the recorder process ended without saving; its writer saved every sample the journal "
                           "held")
                    try:
                        writer.finish(end_reason="orphaned", extra_attrs={L.ATTR_RECOVERED: True,
                                                                          L.ATTR_RECOVERED_REASON: why})
                        J.remove(writer.path)
                    except RecorderError:
                        writer.abort()
            return


class WriterProcess:
    """Parent-side handle: start once, send episodes and samples, read events."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # never fork a process that runs DDS threads
        self._proc: Any = None
        self.inbox: Any = None
        self.outbox: Any = None

    def ensure_started(self) -> None:
        if self.alive:
            return
        self.inbox = self._ctx.Queue()
        self.outbox = self._ctx.Queue()
        self._proc = self._ctx.Process(target=serve, args=(self.inbox, self.outbox), name="episode-writer",
                                       daemon=True)
        self._proc.start()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode if self._proc is not None else None

    def send(self, *msg: Any) -> None:
        self.inbox.put(msg)

    def event(self, timeout: float) -> tuple | None:
        if self.outbox is None:
            time.sleep(timeout)
            return None
        try:
            return self.outbox.get(timeout=timeout)
        except queue.Empty:
            return None
        except (EOFError, OSError, ValueError, AttributeError):  # closed or being replaced: wait, don't spin
            time.sleep(timeout)
            return None

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.is_alive():
            self.send("quit")
            self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2.0)
        self.inbox.close()
        self.outbox.close()
        self._proc = None
