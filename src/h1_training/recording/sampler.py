"""The 50 Hz sampler (no rclpy): latest-value slots per source, a monotonic tick clock, stale flags.

Ticks are driven by ``time.monotonic_ns`` (not by message arrival). Tick ``k`` is due at ``start + k * period``
and owns the slot ``[due_k, due_k + period)``. When the sampler wakes too late for a tick's slot, that tick is
counted as missed and no row is made up for it: the sample taken belongs to the tick whose slot it fell in.
Each sample records how old every input was; an input older than ``stale_after_s`` (by receive time, which
is immune to clock offsets between machines) or never received is flagged stale for that sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from h1_training.rates import Ticker
from h1_training.recording.layout import PHASE_HUMAN, PHASE_POLICY, STALE_SOURCES
from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS, NUM_HAND_JOINTS

# arm/mode values during which the human is in control (the contract's "human" phase)
HUMAN_MODES = frozenset({"DAMPING", "ESTOP"})
# the only mode in which the arm follows arm_command, so the only one whose command is the frame's action
TRACK_MODE = "TRACK"

_ZERO_ARM = np.zeros(NUM_ARM_JOINTS, dtype=np.float32)
_ZERO_HAND = np.zeros(NUM_HAND_JOINTS, dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """The latest value of one source. ``stamp_ns``: capture time from the message header (wall-clock ns,
    0 if unknown); ``recv_ns``: monotonic ns when it reached the recorder."""

    value: Any
    stamp_ns: int
    recv_ns: int
    placeholder: bool = False
    text: str = ""


class Slots:
    """Latest value per source. Callbacks replace whole ``Reading`` objects (one attribute store, atomic under
    the GIL) and the sampler only reads them, so the 50 Hz path takes no lock."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self.qpos: Reading | None = None
        self.hand: Reading | None = None
        self.images: dict[str, Reading | None] = {name: None for name in CAMERA_NAMES}
        self.action: Reading | None = None
        self.proposal: Reading | None = None
        self.mode: Reading | None = None

    def set_qpos(self, positions: np.ndarray, stamp_ns: int) -> None:
        self.qpos = Reading(_vector(positions, NUM_ARM_JOINTS, "arm state"), stamp_ns, self._clock())

    def set_hand(self, positions: np.ndarray, stamp_ns: int) -> None:
        self.hand = Reading(_vector(positions, NUM_HAND_JOINTS, "hand state"), stamp_ns, self._clock())

    def set_image(self, camera: str, jpeg: Any, stamp_ns: int, placeholder: bool = False) -> None:
        """``jpeg``: the message's bytes as they arrived (bytes, array.array or memoryview); never re-encoded."""
        if camera not in self.images:
            raise ValueError(f"unknown camera {camera!r}; expected one of {', '.join(CAMERA_NAMES)}")
        self.images[camera] = Reading(jpeg, stamp_ns, self._clock(), placeholder=placeholder)

    def set_action(self, positions: np.ndarray, stamp_ns: int, model_version: str = "") -> None:
        self.action = Reading(_vector(positions, NUM_ARM_JOINTS, "arm command"), stamp_ns, self._clock(),
                              text=model_version)

    def set_proposal(self, positions: np.ndarray, stamp_ns: int, model_version: str = "") -> None:
        self.proposal = Reading(_vector(positions, NUM_ARM_JOINTS, "policy proposal"), stamp_ns, self._clock(),
                                text=model_version)

    def set_mode(self, mode: str) -> None:
        self.mode = Reading(None, 0, self._clock(), text=mode.strip().upper())

    def stale_sources(self, now_ns: int, stale_after_ns: int) -> list[str]:
        """Inputs older than the limit right now (for the status topic), contract names."""
        out = []
        for name, reading in (("joint_states", self.qpos), ("hand_states", self.hand)):
            if reading is None or now_ns - reading.recv_ns > stale_after_ns:
                out.append(name)
        for cam, reading in self.images.items():
            if reading is None or now_ns - reading.recv_ns > stale_after_ns:
                out.append(f"camera/{cam}")
            elif reading.placeholder:
                out.append(f"camera/{cam} (placeholder)")
        if self.mode is None:
            out.append("arm/mode")
        return out


class JointOrder:
    """Reorders JointState positions into a fixed joint order by name (cached per name list)."""

    def __init__(self, expected: tuple[str, ...]) -> None:
        self.expected = tuple(expected)
        self._names: tuple[str, ...] | None = None
        self._index: np.ndarray | None = None

    def __call__(self, names: Any, positions: Any) -> np.ndarray:
        """Positions in ``expected`` order; ValueError with a reason when names or sizes do not fit."""
        pos = np.asarray(positions, dtype=np.float32)
        n = len(self.expected)
        if len(names) == 0:  # unnamed: accepted only when the count matches exactly
            if pos.shape != (n,):
                raise ValueError(f"expected {n} positions, got {pos.shape[0] if pos.ndim else 0} and no names")
            return pos
        key = tuple(names)
        if key != self._names:
            missing = [j for j in self.expected if j not in key]
            if missing:
                raise ValueError(f"joint names missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
            self._index = np.array([key.index(j) for j in self.expected])
            self._names = key
        if len(pos) != len(key):
            raise ValueError(f"{len(key)} names but {len(pos)} positions")
        return pos[self._index]


def _vector(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.shape != (n,):
        raise ValueError(f"{what} needs {n} values, got shape {arr.shape}")
    return arr


@dataclass(slots=True)
class Sample:
    """One 50 Hz row. Fields map 1:1 to the datasets in ``layout.COLUMNS``."""

    tick: int
    mono_ns: int
    wall_ns: int
    qpos: np.ndarray
    qpos_ns: int
    hand: np.ndarray
    hand_ns: int
    images: tuple            # per camera: the JPEG bytes as received (or the recorder's placeholder JPEG)
    image_ns: tuple          # per camera capture stamp (0: none)
    placeholder: tuple       # per camera: placeholder frame (camera missing / none received)
    stale: tuple             # per STALE_SOURCES entry
    action: np.ndarray
    action_ns: int
    model_version: str
    phase: str
    proposal: np.ndarray
    proposal_ns: int
    proposal_valid: bool


class Sampler:
    """Turns the current slots into a ``Sample`` (cheap: references, no copies of images)."""

    def __init__(
        self,
        slots: Slots,
        stale_after_s: float = 0.2,
        proposal_stale_s: float = 0.5,
        placeholder_jpeg: bytes = b"",
    ) -> None:
        if stale_after_s <= 0 or proposal_stale_s <= 0:
            raise ValueError("stale limits must be positive")
        self.slots = slots
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.proposal_stale_ns = int(proposal_stale_s * 1e9)
        self.placeholder_jpeg = placeholder_jpeg

    def _stale(self, reading: Reading | None, now_ns: int) -> bool:
        return reading is None or now_ns - reading.recv_ns > self.stale_after_ns

    def take(self, tick: int, mono_ns: int, wall_ns: int) -> Sample:
        s = self.slots
        qpos, hand, action, proposal, mode = s.qpos, s.hand, s.action, s.proposal, s.mode
        images, image_ns, placeholder, cam_stale = [], [], [], []
        for cam in CAMERA_NAMES:
            r = s.images[cam]
            if r is None:  # nothing ever arrived: store the recorder's flagged placeholder so the row stays valid
                images.append(self.placeholder_jpeg)
                image_ns.append(0)
                placeholder.append(True)
                cam_stale.append(True)
            else:
                images.append(r.value)
                image_ns.append(r.stamp_ns)
                placeholder.append(r.placeholder)
                cam_stale.append(self._stale(r, mono_ns))
        human = mode is not None and mode.text in HUMAN_MODES
        if human:  # contract: zeros during damping, no model
            act, act_ns, version = _ZERO_ARM, 0, ""
        elif (action is not None and mode is not None and mode.text == TRACK_MODE
              and not self._stale(action, mono_ns)):
            act, act_ns, version = action.value, action.stamp_ns, action.text
        else:
            # HOLD/FAULT, or TRACK whose command went stale: the arm holds where it is, so the frame's target is
            # the current pose and no model made it - never an old command from seconds (or an episode) ago.
            act = qpos.value if qpos is not None else _ZERO_ARM
            act_ns, version = 0, ""
        prop_ok = human and proposal is not None and mono_ns - proposal.recv_ns <= self.proposal_stale_ns
        return Sample(
            tick=tick,
            mono_ns=mono_ns,
            wall_ns=wall_ns,
            qpos=qpos.value if qpos is not None else _ZERO_ARM,
            qpos_ns=qpos.stamp_ns if qpos is not None else 0,
            hand=hand.value if hand is not None else _ZERO_HAND,
            hand_ns=hand.stamp_ns if hand is not None else 0,
            images=tuple(images),
            image_ns=tuple(image_ns),
            placeholder=tuple(placeholder),
            stale=(self._stale(qpos, mono_ns), self._stale(hand, mono_ns), *cam_stale),
            action=act,
            action_ns=act_ns,
            model_version=version,
            phase=PHASE_HUMAN if human else PHASE_POLICY,
            proposal=proposal.value if prop_ok else _ZERO_ARM,
            proposal_ns=proposal.stamp_ns if prop_ok else 0,
            proposal_valid=bool(prop_ok),
        )


assert len(STALE_SOURCES) == 2 + len(CAMERA_NAMES)  # Sample.stale order: qpos, hand, cameras


@dataclass
class RateStats:
    """Running counts for the status topic."""

    frames: int = 0
    missed: int = 0
    policy_frames: int = 0
    human_frames: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def add(self, sample: Sample, missed: int) -> None:
        if self.frames == 0:
            self.first_ns = sample.mono_ns
        self.frames += 1
        self.missed += missed
        self.last_ns = sample.mono_ns
        if sample.phase == PHASE_HUMAN:
            self.human_frames += 1
        else:
            self.policy_frames += 1

    @property
    def achieved_rate_hz(self) -> float:
        return achieved_rate(self.frames, self.first_ns, self.last_ns)

    @property
    def duration_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.frames > 1 else 0.0


def achieved_rate(frames: int, first_ns: int, last_ns: int) -> float:
    """(T - 1) sample intervals over the time they span; 0 when it cannot be known."""
    if frames < 2 or last_ns <= first_ns:
        return 0.0
    return (frames - 1) * 1e9 / (last_ns - first_ns)


class SamplerLoop:
    """A plain thread that wakes at every tick's due time and hands each sample to ``sink`` (which must be
    quick: the writer queues it). Kept off the ROS executor so message callbacks cannot delay ticks."""

    def __init__(
        self,
        sampler: Sampler,
        rate_hz: float,
        sink: Callable[[Sample, int], None],
        clock: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], int] = time.time_ns,
        nice: int = 0,
        rt_priority: int = 0,
    ) -> None:
        self.sampler = sampler
        self.nice = nice
        self.rt_priority = rt_priority
        self.priority_note = ""  # why the requested priority could not be applied
        self.rate_hz = rate_hz
        self.sink = sink
        self.clock = clock
        self.wall = wall
        self.stats = RateStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tick_clock: Ticker | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.tick_clock = Ticker(self.rate_hz, self.clock(), clock=self.clock)
        self._thread = threading.Thread(target=self._run, name="sampler-50hz", daemon=True)
        self._thread.start()

    def _raise_priority(self) -> None:
        # Linux applies setpriority(PRIO_PROCESS, tid) to one thread: only the sampler wakes up ahead of the
        # rest when the machine is busy. Lowering nice below 0 needs CAP_SYS_NICE; without it we say so.
        # SCHED_FIFO, where allowed, is what wakes it on time on a busy machine: bench recorder --full-stack's
        # wake-up probe saw a nice -20 sleeper up to 143 ms late under the session stack, a SCHED_FIFO one <= 3 ms.
        tid = threading.get_native_id()
        rt_note = ""
        if self.rt_priority and hasattr(os, "sched_setscheduler"):
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(self.rt_priority))
                return
            except OSError as exc:
                rt_note = f"could not make the sampler thread SCHED_FIFO {self.rt_priority} ({exc.strerror}); "
        if not self.nice or not hasattr(os, "setpriority"):
            self.priority_note = rt_note.rstrip("; ")
            return
        try:
            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
        except OSError as exc:
            rt_note += f"could not set the sampler thread's nice to {self.nice} ({exc.strerror})"
        self.priority_note = rt_note.rstrip("; ")

    def _run(self) -> None:
        tc = self.tick_clock
        assert tc is not None
        self._raise_priority()
        try:
            while (claimed := tc.wait(self._stop)) is not None:
                tick, missed = claimed
                sample = self.sampler.take(tick, self.clock(), self.wall())
                self.stats.add(sample, missed)
                self.sink(sample, missed)
        except BaseException as exc:  # noqa: BLE001 - reported through the recorder's status, never swallowed
            self.error = exc

    def stop(self) -> None:
        """Stop after the current tick; no sample is taken after this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
