"""Inspire RH56 dexterous hands over Modbus (TCP or RTU): one client per hand, and a worker thread per hand that
polls, writes targets and reconnects with backoff (no rclpy here). The register map and codec are
``drivers/inspire_registers.py``; the link (pymodbus client, endpoint) is ``drivers/inspire_link.py``.

Register map (holding registers; 6 x uint16 per block unless noted), from TechShare-inc/inspire_demos
(``inspire_demos/inspire_modbus.py`` + ``inspire_serial.py`` regdict) and the inspire_hand_sdk:

    HAND_ID 1000, CLEAR_ERROR 1004, POS_SET 1474, ANGLE_SET 1486, FORCE_SET 1498, SPEED_SET 1522,
    POS_ACT 1534, ANGLE_ACT 1546, FORCE_ACT 1582, CURRENT 1594,
    ERROR 1606 (3 regs = 6 bytes), STATUS 1612 (3 regs), TEMP 1618 (3 regs)

Values 0..1000 with 1000 = open; writing 0xFFFF (-1) to a *_SET register leaves that finger as it is
(inspire_demos ``set_angle`` "special placeholder value"). Byte blocks (ERROR/STATUS/TEMP) carry two
fingers per register, low byte first (inspire_demos ``_read6_8bit``). DOF order: pinky, ring, middle,
index, thumb bend, thumb rotation. STATUS / ERROR codes per finger follow the RH56 user manual
(register table of the RH56DFX/DFTP manuals, as used by the inspire_hand_sdk).

Why one thread per hand: a hand whose link is gone makes every Modbus call wait for its timeout; with
each hand in its own thread (and every call bounded by ``timeout_s``), one dead hand never delays the
other. Hands that share one RS-485 bus (RTU) share one serial port and take turns under a lock: there a
silent hand can delay the other by at most one timeout per poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from h1_training.backoff import Backoff
from h1_training.drivers.inspire_link import HandEndpoint, HandLinkError, ModbusLink
from h1_training.drivers.inspire_registers import (
    ANGLE_ACT,
    ANGLE_SET,
    CLEAR_ERROR,
    ERROR,
    FORCE_ACT,
    FORCE_SET,
    KEEP,
    NUM_DOF,
    SPEED_SET,
    STATUS,
    TEMP,
    clamp_raw,
    split_bytes,
)
from h1_training.params import param
from h1_training.rates import Ticker
from h1_training.robot_model import HAND_RAW_MAX


@dataclass(frozen=True)
class WorkerConfig:
    """One hand worker's settings. The ``param`` fields are also inspire_hand_node's ROS parameters (declared
    here once, see nodes/common.py); the plain ones are fixed."""

    read_rate_hz: float = param(50.0, "hand state poll and publish rate [Hz]", min=1.0, max=200.0, read_only=True)
    write_rate_hz: float = param(50.0, "most ANGLE_SET writes per hand per second (latest command wins) [Hz]",
        min=1.0, max=200.0, read_only=True)
    # ERROR/STATUS change rarely: read them at 10 Hz, not at every poll
    status_rate_hz: float = param(10.0, "ERROR/STATUS poll rate (they change rarely; each read costs bus time) "
        "[Hz]", min=0.1, max=200.0, read_only=True)
    timeout_s: float = param(0.1, "Modbus request timeout (bounds every request) [s]", min=0.01, max=5.0,
        read_only=True)
    reconnect_initial_s: float = param(0.2, "first reconnect delay, doubled per failure [s]", min=0.01, max=60.0,
        read_only=True)
    reconnect_max_s: float = param(5.0, "longest reconnect delay (at least reconnect_initial_s) [s]", min=0.05,
        max=600.0, read_only=True)
    finger_speed: int = param(-1, "SPEED_SET written on connect, 0..1000 (-1: leave the hand's own)", min=-1,
        max=HAND_RAW_MAX, read_only=True)
    finger_force: int = param(-1, "FORCE_SET written on connect, 0..1000 (-1: leave the hand's own)", min=-1,
        max=HAND_RAW_MAX, read_only=True)
    max_target_age_s: float = 0.5  # a target not written by then (link down) is dropped, never sent late
    temperature_period_s: float = 1.0

    @property
    def status_period_s(self) -> float:
        return 1.0 / self.status_rate_hz

    def __post_init__(self) -> None:
        for name in ("read_rate_hz", "write_rate_hz", "status_rate_hz", "timeout_s", "reconnect_initial_s",
                     "reconnect_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s:g} s) must be >= reconnect_initial_s "
                             f"({self.reconnect_initial_s:g} s)")
        for name in ("finger_speed", "finger_force"):
            if not -1 <= getattr(self, name) <= HAND_RAW_MAX:
                raise ValueError(f"{name} must be -1 (leave as is) or 0..1000")


@dataclass
class HandReading:
    stamp: float  # time.time() when the reply arrived
    angle: np.ndarray  # ANGLE_ACT, 0..1000, 1000 = open
    force: np.ndarray  # FORCE_ACT (signed int16)
    status: np.ndarray  # STATUS byte per finger
    error: np.ndarray  # ERROR byte per finger
    temperature: np.ndarray | None = None  # TEMP [deg C] per finger, read at a low rate


def _int16(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint16).view(np.int16).astype(np.int64)


class InspireHandClient:
    """Blocking, timeout-bounded access to one hand's registers. Raises ``HandLinkError`` on any failure."""

    def __init__(self, endpoint: HandEndpoint, link: ModbusLink) -> None:
        self.endpoint = endpoint
        self.link = link

    def connect(self) -> None:
        self.link.open()
        self.link.read(ANGLE_ACT, NUM_DOF, self.endpoint.unit)  # the hand itself must answer, not just the port

    def close(self) -> None:
        if not self.link.shared:
            self.link.close()

    def read_state(self, previous: HandReading | None = None) -> HandReading:
        """ANGLE_ACT, FORCE_ACT and (unless ``previous`` supplies them) ERROR and STATUS.

        Every Modbus transaction costs CPU on both ends and bus time, so the slowly changing STATUS/ERROR
        bytes can be carried over from ``previous`` and read at a lower rate.
        """
        unit = self.endpoint.unit
        angle = self.link.read(ANGLE_ACT, NUM_DOF, unit)
        force = self.link.read(FORCE_ACT, NUM_DOF, unit)
        if previous is None:
            error = np.asarray(split_bytes(self.link.read(ERROR, 3, unit)), dtype=np.int64)
            status = np.asarray(split_bytes(self.link.read(STATUS, 3, unit)), dtype=np.int64)
        else:
            error, status = previous.error, previous.status
        return HandReading(
            stamp=time.time(),
            angle=np.asarray(angle, dtype=np.int64),
            force=_int16(force),
            status=status,
            error=error,
            temperature=None if previous is None else previous.temperature,
        )

    def read_temperature(self) -> np.ndarray:
        return np.asarray(split_bytes(self.link.read(TEMP, 3, self.endpoint.unit)), dtype=np.int64)

    def write_angles(self, raw: Sequence[int]) -> None:
        if len(raw) != NUM_DOF:
            raise ValueError(f"ANGLE_SET takes {NUM_DOF} values, got {len(raw)}")
        self.link.write(ANGLE_SET, clamp_raw(raw).tolist(), self.endpoint.unit)

    def write_speed(self, value: int) -> None:
        self.link.write(SPEED_SET, [int(np.clip(value, 0, HAND_RAW_MAX))] * NUM_DOF, self.endpoint.unit)

    def write_force(self, value: int) -> None:
        self.link.write(FORCE_SET, [int(np.clip(value, 0, HAND_RAW_MAX))] * NUM_DOF, self.endpoint.unit)

    def clear_error(self) -> None:
        self.link.write(CLEAR_ERROR, [1], self.endpoint.unit)


# --- the worker: one thread per hand -----------------------------------------------------------------------
@dataclass
class LinkHealth:
    connected: bool = False
    reads: int = 0
    writes: int = 0
    failures: int = 0
    reconnects: int = 0
    last_error: str = ""
    last_reading_time: float = 0.0  # time.time(), 0 if never
    retry_at: float = 0.0  # time.monotonic() of the next connect attempt
    read_hz: float = 0.0
    commands_dropped: int = 0  # targets superseded before the write slot (rate limit): latest wins
    commands_expired: int = 0  # targets older than max_target_age_s when the link could take them
    loop_overruns: int = 0


# (level, message) -> the node's logger; levels "info", "warn", "error"
EventSink = Callable[[str, str], None]


@dataclass
class _Target:
    raw: np.ndarray
    seq: int
    made: float  # time.monotonic()


class HandWorker:
    """Polls one hand at ``read_rate_hz``, writes the latest target at most ``write_rate_hz``, reconnects with
    exponential backoff. Never raises out of its thread; reports link changes through ``on_event``."""

    def __init__(
        self,
        endpoint: HandEndpoint,
        config: WorkerConfig,
        link: ModbusLink | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.client = InspireHandClient(endpoint, link or ModbusLink(endpoint, config.timeout_s))
        self.on_event = on_event or (lambda level, msg: None)
        self._lock = threading.Lock()
        self._latest: HandReading | None = None
        self._health = LinkHealth()
        self._target: _Target | None = None
        self._target_seq = 0
        self._written_seq = 0
        self._clear_error = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._lost_since: float | None = None
        self._fail_logged = 0
        self._thread = threading.Thread(target=self._run, name=f"inspire-{endpoint.name}", daemon=True)

    # --- API for the node (any thread) ---
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.client.close()

    def set_target(self, raw: Sequence[int]) -> None:
        """Latest-wins ANGLE_SET target (6 raw values, KEEP for 'unchanged'); clamped to 0..1000."""
        arr = clamp_raw(raw)
        if arr.shape != (NUM_DOF,):
            raise ValueError(f"a hand target has {NUM_DOF} values, got {arr.shape}")
        with self._lock:
            if self._target is not None and self._target.seq > self._written_seq:
                self._health.commands_dropped += 1
                # merge: a finger left unchanged by the newer target keeps the older pending value
                keep = arr == KEEP
                arr[keep] = self._target.raw[keep]
            self._target_seq += 1
            self._target = _Target(arr, self._target_seq, time.monotonic())

    def request_clear_error(self) -> None:
        with self._lock:
            self._clear_error = True

    def latest(self) -> HandReading | None:
        with self._lock:
            return self._latest

    def health(self) -> LinkHealth:
        with self._lock:
            return LinkHealth(**self._health.__dict__)

    # --- the thread ---
    def _event(self, level: str, msg: str) -> None:
        try:
            self.on_event(level, f"{self.endpoint.name} hand ({self.endpoint.describe()}): {msg}")
        except Exception:  # noqa: BLE001 - a logging failure must not kill the hand loop
            pass

    def _run(self) -> None:
        ticker = Ticker(self.config.read_rate_hz)
        last_temp = 0.0
        last_status = 0.0
        last_write = 0.0
        rate_t0, rate_n = time.monotonic(), 0
        connected = False
        while not self._stop.is_set():
            now = time.monotonic()
            if not connected:
                retry_at = self._health.retry_at
                if now < retry_at:
                    self._stop.wait(min(retry_at - now, 0.1))
                    continue
                connected = self._try_connect()
                last_status = last_temp = 0.0  # fresh STATUS/ERROR/TEMP right after a (re)connect
                ticker.restart()  # tick 0 at once
                continue
            tick = ticker.wait(self._stop)
            if tick is None:
                break
            if tick[1]:  # fell behind (slow link): the skipped ticks are not made up
                with self._lock:
                    self._health.loop_overruns += 1
            now = time.monotonic()
            try:
                previous = self._latest
                fresh_status = previous is None or now - last_status >= self.config.status_period_s
                reading = self.client.read_state(None if fresh_status else previous)
                if fresh_status:
                    last_status = now
                    reading.temperature = previous.temperature if previous is not None else None
                if now - last_temp >= self.config.temperature_period_s:
                    reading.temperature = self.client.read_temperature()
                    last_temp = now
                with self._lock:
                    self._latest = reading
                    self._health.reads += 1
                    self._health.last_reading_time = reading.stamp
                    target = self._target if self._target and self._target.seq > self._written_seq else None
                    clear = self._clear_error
                    self._clear_error = False
                if clear:
                    self.client.clear_error()
                    last_status = 0.0  # show the cleared ERROR at the next poll
                    self._event("info", "CLEAR_ERROR written")
                max_age = max(self.config.max_target_age_s, 2.0 / self.config.write_rate_hz)
                if target is not None and now - target.made > max_age:
                    with self._lock:  # e.g. commanded while the link was down: too old to act on now
                        self._written_seq = max(self._written_seq, target.seq)
                        self._health.commands_expired += 1
                    target = None
                if target is not None and now - last_write >= 1.0 / self.config.write_rate_hz:
                    self.client.write_angles(target.raw)
                    last_write = now
                    with self._lock:
                        self._written_seq = target.seq
                        self._health.writes += 1
                rate_n += 1
                if now - rate_t0 >= 1.0:
                    with self._lock:
                        self._health.read_hz = rate_n / (now - rate_t0)
                    rate_t0, rate_n = now, 0
            except HandLinkError as exc:
                connected = False
                self._lost(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - never let the hand thread die silently
                connected = False
                self._lost(f"unexpected {type(exc).__name__}: {exc}")
                continue

    def _try_connect(self) -> bool:
        try:
            self.client.connect()
            if self.config.finger_speed >= 0:
                self.client.write_speed(self.config.finger_speed)
            if self.config.finger_force >= 0:
                self.client.write_force(self.config.finger_force)
        except HandLinkError as exc:
            self.client.close()
            delay = self._backoff.next_delay()
            with self._lock:
                self._health.failures += 1
                self._health.last_error = str(exc)
                self._health.retry_at = time.monotonic() + delay
                self._fail_logged += 1
                n = self._fail_logged
            # first failure and then every 10th, so a long outage is visible without flooding the log
            if n == 1 or n % 10 == 0:
                self._event("warn", f"not reachable ({exc}); attempt {n}, retrying in {delay:.1f} s")
            return False
        self._backoff.reset()
        with self._lock:
            was_lost = self._lost_since
            self._health.connected = True
            self._health.last_error = ""
            if was_lost is not None:
                self._health.reconnects += 1
            self._lost_since = None
            self._fail_logged = 0
        if was_lost is not None:
            self._event("info", f"link re-established after {time.monotonic() - was_lost:.1f} s")
        else:
            self._event("info", "connected")
        return True

    def _lost(self, reason: str) -> None:
        self.client.close()
        delay = self._backoff.next_delay()
        with self._lock:
            self._health.connected = False
            self._health.failures += 1
            self._health.last_error = reason
            self._health.retry_at = time.monotonic() + delay
            self._health.read_hz = 0.0
            if self._lost_since is None:
                self._lost_since = time.monotonic()
            self._fail_logged = 1
        self._event("error", f"link lost ({reason}); reconnecting with backoff (first retry in {delay:.1f} s)")


def is_fresh(reading: HandReading | None, stale_after_s: float, now: float | None = None) -> bool:
    if reading is None:
        return False
    now = time.time() if now is None else now
    return (now - reading.stamp) <= stale_after_s
