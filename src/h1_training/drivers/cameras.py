"""Camera sources for the H1-2 (no rclpy): the head camera's ZMQ image server, RealSense D405 wrist cameras
by serial, clearly marked placeholder frames, and the health monitor that says when a camera is missing,
stalls or recovers.

Wire facts:
- Head camera: xr_teleoperate ``teleop/image_server/image_server.py`` publishes on a ZMQ PUB socket (tcp port
  5555), one message per frame: the JPEG bytes, optionally prefixed by ``struct.pack('dI', timestamp,
  frame_id)`` (8-byte double + 4-byte uint = 12 bytes, little-endian on the robot's x86/ARM PCs). 30 fps.
- Wrist cameras: RealSense D405 via pyrealsense2, ``rs.config().enable_device(serial)`` and a color stream
  640x480 bgr8 at 30 fps (the H1 seed's wrist setup).

CPU: JPEG bytes from the image server are passed through untouched unless their quality is above the
configured one (estimated from the quantization table), so the head stream costs no decode/encode.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from h1_training.jpeg import SOI
from h1_training.robot_model import display_name

HEADER = struct.Struct("<dI")  # xr_teleoperate image_server: struct.pack('dI', timestamp, frame_id)

# --- the image server's message format -------------------------------------------------------------------
@dataclass(frozen=True)
class ImageMessage:
    jpeg: bytes
    sender_time: float | None = None  # the sender's time.time() at capture, when the header is present
    frame_no: int | None = None


def pack_image_message(jpeg: bytes, sender_time: float | None = None, frame_no: int = 0) -> bytes:
    """One image server message: [dI header] + JPEG (header only when ``sender_time`` is given)."""
    if sender_time is None:
        return bytes(jpeg)
    return HEADER.pack(sender_time, frame_no & 0xFFFFFFFF) + bytes(jpeg)


def parse_image_message(data: bytes) -> ImageMessage:
    """Split an image server message into its optional ``dI`` header and the JPEG; ValueError if neither fits."""
    if data[:2] == SOI:
        return ImageMessage(jpeg=bytes(data))
    if len(data) > HEADER.size + 2 and data[HEADER.size:HEADER.size + 2] == SOI:
        sender_time, frame_no = HEADER.unpack_from(data, 0)
        return ImageMessage(jpeg=bytes(data[HEADER.size:]), sender_time=sender_time, frame_no=frame_no)
    raise ValueError(f"not a JPEG image message ({len(data)} bytes, starts {bytes(data[:14]).hex()})")


# --- sources ---------------------------------------------------------------------------------------------
@dataclass
class Frame:
    camera: str
    stamp: float  # capture time, time.time() seconds
    jpeg: bytes | None = None  # JPEG as received (ZMQ sources)
    bgr: np.ndarray | None = None  # raw image (RealSense), encoded by the node
    sender_time: float | None = None
    frame_no: int | None = None


FrameSink = Callable[[Frame], None]


@dataclass
class SourceState:
    """What a source knows about its device (the monitor adds frame timing)."""

    found: bool | None = None  # None: cannot tell (ZMQ); False: device absent; True: device opened
    detail: str = ""
    bad_messages: int = 0
    clock_fallbacks: int = 0


class CameraSource:
    """A thread that delivers frames to ``sink``. Subclasses implement ``_run``; errors never escape it."""

    kind = "camera"

    def __init__(self, camera: str, identity: str, sink: FrameSink) -> None:
        self.camera = camera
        self.identity = identity  # serial number or address, for operator messages
        self.sink = sink
        self._state = SourceState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"cam-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def state(self) -> SourceState:
        with self._lock:
            return SourceState(**self._state.__dict__)

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self._state, k, v)

    def _guarded(self) -> None:
        while not self._stop.is_set():
            try:
                self._run()
                return
            except Exception as exc:  # noqa: BLE001 - a camera failure is reported, never fatal
                self._set(detail=f"{type(exc).__name__}: {exc}")
                self._stop.wait(1.0)

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ZmqImageSource(CameraSource):
    """SUB client of an image server (the robot's head camera, or camera_sim in simulation)."""

    kind = "zmq"

    def __init__(self, camera: str, address: str, sink: FrameSink, max_clock_skew_s: float = 1.0) -> None:
        super().__init__(camera, address, sink)
        self.address = address
        self.max_clock_skew_s = max_clock_skew_s

    def _run(self) -> None:
        import zmq

        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.CONFLATE, 1)  # keep only the newest frame: no backlog, no stale images
        sock.setsockopt(zmq.RCVHWM, 2)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)  # a restarted image server is picked up within ~0.2 s
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.address)
        self._set(detail="image server down or unreachable")  # until a frame proves otherwise
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                data = sock.recv(copy=True)
                received = time.time()
                try:
                    msg = parse_image_message(data)
                except ValueError as exc:
                    with self._lock:
                        self._state.bad_messages += 1
                        self._state.detail = str(exc)
                    continue
                stamp = received
                if msg.sender_time is not None:
                    # the sender's capture time is better than our receive time, but only if the clocks agree
                    if abs(received - msg.sender_time) <= self.max_clock_skew_s:
                        stamp = msg.sender_time
                    else:
                        with self._lock:
                            self._state.clock_fallbacks += 1
                self.sink(Frame(self.camera, stamp, jpeg=msg.jpeg, sender_time=msg.sender_time,
                                frame_no=msg.frame_no))
        finally:
            sock.close(0)


class RealSenseSource(CameraSource):
    """A D405 by serial: ``rs.config().enable_device(serial)``, color ``width``x``height`` bgr8 @ ``fps``.

    A missing device (or a missing pyrealsense2/librealsense) is reported through ``state()`` and retried every
    ``retry_s`` so a camera plugged in later is picked up.
    """

    kind = "realsense"

    def __init__(self, camera: str, serial: str, sink: FrameSink, width: int = 640, height: int = 480,
                 fps: int = 30, retry_s: float = 2.0) -> None:
        super().__init__(camera, serial, sink)
        self.serial, self.width, self.height, self.fps, self.retry_s = serial, width, height, fps, retry_s

    def _run(self) -> None:
        try:
            import pyrealsense2 as rs
        except Exception as exc:  # noqa: BLE001 - ImportError or a missing shared library (libusb)
            self._set(found=False, detail=f"pyrealsense2 cannot be loaded ({exc})")
            return  # nothing will change without a restart
        while not self._stop.is_set():
            try:
                serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
            except Exception as exc:  # noqa: BLE001
                serials = []
                self._set(found=False, detail=f"RealSense query failed ({exc})")
            if self.serial not in serials:
                seen = ", ".join(serials) if serials else "none"
                self._set(found=False, detail=f"not found (RealSense devices present: {seen})")
                self._stop.wait(self.retry_s)
                continue
            self._stream(rs)

    def _stream(self, rs) -> None:
        pipeline = rs.pipeline()
        config = rs.config()
        config.enable_device(self.serial)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.bgr8, self.fps)
        try:
            pipeline.start(config)
        except Exception as exc:  # noqa: BLE001
            self._set(found=False, detail=f"cannot start stream ({exc})")
            self._stop.wait(self.retry_s)
            return
        self._set(found=True, detail=f"streaming {self.width}x{self.height}@{self.fps}")
        try:
            while not self._stop.is_set():
                try:
                    frames = pipeline.wait_for_frames(1000)
                except RuntimeError as exc:  # "Frame didn't arrive within 1000": stall or unplug
                    self._set(detail=f"no frame: {exc}")
                    if self.serial not in [d.get_info(rs.camera_info.serial_number)
                                           for d in rs.context().query_devices()]:
                        self._set(found=False, detail="disconnected")
                        return
                    continue
                color = frames.get_color_frame()
                if not color:
                    continue
                image = np.asanyarray(color.get_data()).copy()
                self.sink(Frame(self.camera, time.time(), bgr=image))
        finally:
            try:
                pipeline.stop()
            except Exception:  # noqa: BLE001
                pass


# --- health ---------------------------------------------------------------------------------------------
@dataclass
class CameraHealth:
    camera: str
    identity: str
    connected: bool = False
    placeholder: bool = False
    rate_hz: float = 0.0
    age_s: float = -1.0
    detail: str = ""
    frames: int = 0


@dataclass
class _Track:
    identity: str
    started: float
    last_frame: float | None = None  # monotonic
    frames: int = 0
    rate_hz: float = 0.0
    window_t0: float = 0.0
    window_n: int = 0
    state: str = "starting"  # starting | ok | missing | stalled
    down_since: float | None = None


@dataclass
class MonitorEvent:
    level: str  # "warn" | "info"
    message: str


@dataclass
class CameraMonitor:
    """Frame timing per camera and the operator's view of it: connected, stalled, missing, recovered."""

    stale_after_s: float = 0.5
    placeholders: bool = False
    tracks: dict[str, _Track] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # frames arrive on source threads

    def add(self, camera: str, identity: str, now: float) -> None:
        self.tracks[camera] = _Track(identity=identity, started=now, window_t0=now)

    def frame(self, camera: str, now: float) -> None:
        with self.lock:
            self._frame(camera, now)

    def _frame(self, camera: str, now: float) -> None:
        t = self.tracks[camera]
        t.last_frame = now
        t.frames += 1
        t.window_n += 1
        if now - t.window_t0 >= 1.0:
            t.rate_hz = t.window_n / (now - t.window_t0)
            t.window_t0, t.window_n = now, 0

    def _tail(self) -> str:
        return "publishing placeholder frames" if self.placeholders else "no frames published (placeholders off)"

    def update(self, camera: str, now: float, source: SourceState) -> tuple[CameraHealth, MonitorEvent | None]:
        """Health now, plus an operator event when the camera's state changed."""
        with self.lock:
            return self._update(camera, now, source)

    def _update(self, camera: str, now: float, source: SourceState) -> tuple[CameraHealth, MonitorEvent | None]:
        t = self.tracks[camera]
        name = f"{display_name(camera)} {t.identity}"
        fresh = t.last_frame is not None and now - t.last_frame <= self.stale_after_s
        if t.last_frame is not None and now - t.window_t0 > 2.0 * self.stale_after_s and not fresh:
            t.rate_hz = 0.0
        event = None
        if fresh:
            if t.state in ("missing", "stalled"):
                down = now - t.down_since if t.down_since is not None else 0.0
                event = MonitorEvent("info", f"{name} recovered after {down:.1f} s — real frames again")
            elif t.state == "starting":
                event = MonitorEvent("info", f"{name} streaming")
            t.state, t.down_since = "ok", None
            detail = "ok"
        elif t.last_frame is None:
            if source.found is False:
                reason = source.detail or "not found"
            else:
                reason = f"gets no frames ({source.detail})" if source.detail else "gets no frames"
            detail = f"{name} {reason}"
            if t.state != "missing" and (source.found is False or now - t.started > self.stale_after_s):
                t.state, t.down_since = "missing", t.down_since or now
                event = MonitorEvent("warn", f"{detail} — {self._tail()}")
        else:
            age = now - t.last_frame
            detail = f"{name} stalled: no frame for {age:.1f} s"
            if source.found is False and source.detail:
                detail += f" ({source.detail})"
            if t.state != "stalled":
                t.state, t.down_since = "stalled", now
                event = MonitorEvent("warn", f"{detail} — {self._tail()}")
        down = t.state in ("missing", "stalled")
        health = CameraHealth(
            camera=camera,
            identity=t.identity,
            connected=fresh,
            placeholder=down and self.placeholders,
            rate_hz=t.rate_hz if fresh else 0.0,
            age_s=(now - t.last_frame) if t.last_frame is not None else -1.0,
            detail=detail,
            frames=t.frames,
        )
        return health, event
