"""Episode playback for the Dataset Browser (no rclpy): a recorded episode republished frame by frame at its
recorded rate (or ``speed`` times it), with play / pause / step / seek.

Timing: frame ``k`` is due at ``anchor + (k - anchor_frame) / (fps * speed)`` on the monotonic clock; the anchor
moves only on play, seek and speed changes. Deadlines are absolute, so a late frame never pushes the later ones
back (no drift over a long episode); when the player falls more than ``max_lag_s`` behind (a stalled machine), it
skips to the frame that is due and counts the skipped ones instead of bursting them out.

Reading: the file stays open while loaded; arm and hand states are read once (small), camera JPEGs row by row
when their frame is published, so a 60 s, three-camera episode does not sit in memory.

``Player`` runs the clock in its own thread and calls ``publish(frame: Frame)`` for each frame; the node turns a
``Frame`` into ROS messages. Every name the node gets from a request is resolved through the catalog and
``datasets.paths.inside`` before anything is opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import h5py
import numpy as np

from h1_training.recording import layout as L


class PlayState(IntEnum):
    """Values are ``h1_training_interfaces/PlaybackStatus`` STATE_*."""
    IDLE = 0
    PAUSED = 1
    PLAYING = 2
    FINISHED = 3


@dataclass
class Frame:
    index: int
    time_s: float                         # episode time (index / fps)
    qpos: np.ndarray                      # [14]
    hand_state: np.ndarray | None         # [12] or None when the file has none
    images: dict[str, bytes]              # camera name -> JPEG
    phase: str


@dataclass
class EpisodeSource:
    """An open episode file: states in memory, images read per frame."""
    path: Path
    fps: float
    qpos: np.ndarray
    hand_state: np.ndarray | None
    phase: list[str]
    cameras: list[str]
    _file: h5py.File = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> EpisodeSource:
        f = h5py.File(path, "r")
        try:
            problems = L.validate(f)
            if problems:
                raise ValueError(f"{path} breaks the episode contract: {problems[0]}")
            qpos = np.asarray(f[L.QPOS][()], dtype=np.float64)
            hand = np.asarray(f[L.EXTRA_HAND_STATE][()], dtype=np.float64) if L.EXTRA_HAND_STATE in f else None
            phase = [p.decode() if isinstance(p, bytes) else str(p) for p in f[L.PHASE][()]]
            cameras = [k.split("/")[-1] for k in L.IMAGE_KEYS if k in f]
            fps = float(f.attrs["fps"])
        except Exception:
            f.close()
            raise
        if not fps > 0:
            f.close()
            raise ValueError(f"{path}: fps {fps} is not positive")
        return cls(Path(path), fps, qpos, hand, phase, cameras, f)

    @property
    def frames(self) -> int:
        return len(self.qpos)

    def frame(self, k: int, with_images: bool = True) -> Frame:
        images = {}
        if with_images:
            for cam in self.cameras:
                images[cam] = self._file[f"{L.IMAGES}/{cam}"][k].tobytes()
        return Frame(k, k / self.fps, self.qpos[k], None if self.hand_state is None else self.hand_state[k], images,
                     self.phase[k])

    def close(self) -> None:
        self._file.close()


@dataclass
class PlaybackClock:
    """Which frame is due when (pure; ``now`` is a monotonic time in seconds)."""
    fps: float
    frames: int
    speed: float = 1.0
    anchor_t: float = 0.0
    anchor_frame: int = 0

    def due_time(self, k: int) -> float:
        return self.anchor_t + (k - self.anchor_frame) / (self.fps * self.speed)

    def due_frame(self, now: float) -> int:
        """The last frame whose deadline has passed (may be < anchor_frame before the anchor)."""
        return self.anchor_frame + int(np.floor((now - self.anchor_t) * self.fps * self.speed + 1e-9))

    def rebase(self, now: float, frame: int) -> None:
        self.anchor_t, self.anchor_frame = now, frame


def check_speed(speed: float) -> float:
    if not (0.01 <= speed <= 100.0):
        raise ValueError(f"speed must be within 0.01..100 (1 = recorded rate), got {speed}")
    return float(speed)


class Player:
    """Plays one episode at a time; thread-safe (service callbacks and the playing thread)."""

    def __init__(self, publish: Callable[[Frame], None], on_status: Callable[[], None] = lambda: None,
                 max_lag_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.publish = publish
        self.on_status = on_status
        self.max_lag_s = max_lag_s
        self.clock = clock
        self.source: EpisodeSource | None = None
        self.name = ("", -1)                   # (dataset, index)
        self.state = PlayState.IDLE
        self.next_frame = 0                    # the next frame to publish
        self.last_time_s = 0.0
        self.skipped = 0
        self.published = 0
        self.message = "nothing loaded"
        self._clock: PlaybackClock | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="playback", daemon=True)
        self._thread.start()

    # --- control ---------------------------------------------------------------------------------------------
    def load(self, path: str | Path, dataset: str, index: int, speed: float = 1.0, autoplay: bool = False) -> None:
        speed = check_speed(speed)
        source = EpisodeSource.open(path)  # raises before anything changes
        with self._cond:
            if self.source is not None:
                self.source.close()
            self.source, self.name = source, (dataset, index)
            self._clock = PlaybackClock(source.fps, source.frames, speed)
            self.next_frame, self.skipped, self.published, self.last_time_s = 0, 0, 0, 0.0
            self.state = PlayState.PAUSED
            self.message = f"loaded {Path(path).name}: {source.frames} frames at {source.fps:g} Hz"
            if autoplay:
                self._play_locked()
            self._cond.notify_all()
        self.on_status()

    def _need(self) -> EpisodeSource:
        if self.source is None:
            raise ValueError("no episode loaded (call /playback/load first)")
        return self.source

    def play(self) -> None:
        with self._cond:
            self._need()
            self._play_locked()
            self._cond.notify_all()
        self.on_status()

    def _play_locked(self) -> None:
        assert self._clock is not None and self.source is not None
        if self.next_frame >= self.source.frames:
            self.next_frame = 0  # play after the end starts over
        self._clock.rebase(self.clock(), self.next_frame)
        self.state = PlayState.PLAYING
        self.message = f"playing at {self._clock.speed:g}x"

    def pause(self) -> None:
        with self._cond:
            self._need()
            if self.state == PlayState.PLAYING:
                self.state = PlayState.PAUSED
                self.message = "paused"
            self._cond.notify_all()
        self.on_status()

    def set_speed(self, speed: float) -> None:
        speed = check_speed(speed)
        with self._cond:
            if self._clock is not None:
                self._clock.speed = speed
                self._clock.rebase(self.clock(), self.next_frame)
            self._cond.notify_all()
        self.on_status()

    def seek(self, frame: int | None = None, time_s: float | None = None) -> int:
        with self._cond:
            src = self._need()
            if frame is None:
                if time_s is None or not np.isfinite(time_s):
                    raise ValueError("give a frame >= 0 or a finite time_s")
                frame = int(round(time_s * src.fps))
            if not 0 <= frame < src.frames:
                last = src.frames - 1
                raise ValueError(f"frame {frame} outside 0..{last} (time 0..{last / src.fps:.2f} s)")
            self._emit(frame)
            self.next_frame = frame + 1
            if self.state == PlayState.PLAYING:
                assert self._clock is not None
                self._clock.rebase(self.clock(), self.next_frame)
            elif self.state == PlayState.FINISHED:
                self.state = PlayState.PAUSED
            self.message = f"at frame {frame}"
            self._cond.notify_all()
        self.on_status()
        return frame

    def step(self, frames: int = 1) -> int:
        with self._cond:
            src = self._need()
            if frames == 0:
                raise ValueError("frames must not be 0")
            current = self.next_frame - 1
            target = min(max(current + frames, 0), src.frames - 1)
            self.state = PlayState.PAUSED
        return self.seek(target)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(5.0)
        if self.source is not None:
            self.source.close()

    # --- the playing thread ----------------------------------------------------------------------------------
    def _emit(self, k: int) -> None:
        assert self.source is not None
        frame = self.source.frame(k)
        self.publish(frame)
        self.published += 1
        self.last_time_s = frame.time_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self.state != PlayState.PLAYING:
                    self._cond.wait()
                if self._stop:
                    return
                clk, src = self._clock, self.source
                assert clk is not None and src is not None
                k = self.next_frame
                if k >= src.frames:
                    self.state = PlayState.FINISHED
                    self.message = f"finished ({self.published} frames published, {self.skipped} skipped)"
                    finished = True
                else:
                    finished = False
                    wait = clk.due_time(k) - self.clock()
                    if wait > 0:
                        self._cond.wait(wait)  # woken early by pause/seek/speed: re-evaluate
                        continue
                    due = clk.due_frame(self.clock())
                    if due > k and (self.clock() - clk.due_time(k)) > self.max_lag_s:
                        self.skipped += min(due, src.frames - 1) - k
                        k = min(due, src.frames - 1)
                    self._emit(k)
                    self.next_frame = k + 1
            if finished:
                self.on_status()
