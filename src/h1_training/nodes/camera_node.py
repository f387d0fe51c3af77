"""camera_node: the head camera (robot's ZMQ image server) and two wrist cameras (RealSense D405 by serial,
or ZMQ image servers in simulation), published as ``camera/<name>/compressed`` (sensor_msgs/CompressedImage,
JPEG, header.stamp = capture time, header.frame_id = camera name).

A camera that is missing or stalls never stops the node: it is flagged on ``camera/status`` (CameraStatus,
latched, ~2 Hz and at once on a change) and in ``diagnostics``, announced in one log line an operator reads
("left wrist camera 218622271789 not found — publishing placeholder frames") and again when it recovers.
Placeholder frames (frame_id ``<name>_placeholder``, an unmistakable hatched image with the reason written
on it) are published only when ``publish_placeholders`` is true.

CPU: image-server JPEGs are passed through as received unless their quality is above ``jpeg_quality``;
RealSense frames are encoded once at ``jpeg_quality``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from h1_training.drivers.cameras import (
    CameraHealth,
    CameraMonitor,
    CameraSource,
    Frame,
    MonitorEvent,
    RealSenseSource,
    ZmqImageSource,
)
from h1_training.jpeg import encode_jpeg, estimate_jpeg_quality, render_placeholder
from h1_training.nodes.common import LATCHED_QOS, SENSOR_QOS, ParamsMixin, log_at, run_node
from h1_training.params import param
from h1_training.rates import Ticker
from h1_training.robot_model import CAMERA_NAMES
from h1_training.stamps import set_stamp
from h1_training_interfaces.msg import CameraStatus

QUALITY_SLACK = 2  # estimated quality can be off by one or two; do not re-encode for that
CHECK_PERIOD_S = 0.1


@dataclass
class CameraNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    head_enabled: bool = param(True, "publish the head camera (ego_cam)", read_only=True)
    head_address: str = param("tcp://127.0.0.1:5555",
        "head camera image server (ZMQ PUB; robot: tcp://192.168.123.163:5555)", read_only=True)
    wrist_source: str = param("realsense", "wrist cameras: RealSense by serial, ZMQ image servers (sim), none",
        choices=("realsense", "zmq", "none"), read_only=True)
    left_wrist_serial: str = param("218622271789", "left wrist D405 serial number", read_only=True)
    right_wrist_serial: str = param("218622275838", "right wrist D405 serial number", read_only=True)
    left_wrist_address: str = param("tcp://127.0.0.1:5556", "left wrist image server (wrist_source zmq)",
        read_only=True)
    right_wrist_address: str = param("tcp://127.0.0.1:5557", "right wrist image server (wrist_source zmq)",
        read_only=True)
    width: int = param(640, "RealSense color width [px]", min=16, max=4096, read_only=True)
    height: int = param(480, "RealSense color height [px]", min=16, max=4096, read_only=True)
    fps: int = param(30, "RealSense color frame rate [Hz]", min=1, max=90, read_only=True)
    jpeg_quality: int = param(85, "JPEG quality of published images (image-server JPEGs at or below it pass "
        "through untouched)", min=1, max=100)
    publish_placeholders: bool = param(False, "publish marked placeholder frames for a missing/stalled camera")
    placeholder_rate_hz: float = param(10.0, "placeholder frame rate [Hz]", min=0.5, max=60.0, read_only=True)
    stale_after_s: float = param(0.5, "a camera with no frame for this long is flagged stalled [s]", min=0.05, max=30.0)
    status_rate_hz: float = param(2.0, "camera/status and diagnostics rate [Hz]", min=0.2, max=20.0, read_only=True)
    max_clock_skew_s: float = param(1.0, "use the image server's capture timestamp only if it is within this of "
        "our clock (else the receive time) [s]", min=0.0, max=3600.0, read_only=True)
    realsense_retry_s: float = param(2.0, "how often a missing RealSense is looked for again [s]", min=0.2, max=60.0,
        read_only=True)


class CameraNode(ParamsMixin, Node):
    PARAMS = CameraNodeParams

    def __init__(self) -> None:
        super().__init__("camera_node")
        self.declare_specs()
        p = self.p
        import cv2

        cv2.setNumThreads(1)  # a 2-core laptop: no encoder thread pools
        now = time.monotonic()
        self.monitor = CameraMonitor(stale_after_s=p["stale_after_s"], placeholders=p["publish_placeholders"])
        self.sources: dict[str, CameraSource] = {}
        self.pubs = {}
        self.reencoded = dict.fromkeys(CAMERA_NAMES, 0)
        self.health: dict[str, CameraHealth] = {}
        self._placeholder_cache: dict[str, tuple[str, bytes]] = {}
        self._status_lock = threading.Lock()
        for camera in self._enabled_cameras():
            source = self._make_source(camera)
            self.sources[camera] = source
            self.monitor.add(camera, source.identity, now)
            self.pubs[camera] = self.create_publisher(CompressedImage, f"camera/{camera}/compressed", SENSOR_QOS)
        self.status_pub = self.create_publisher(CameraStatus, "camera/status", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        for source in self.sources.values():
            source.start()
        # stall checks, placeholders and status from a thread of its own: an rclpy timer wakes the executor,
        # ~0.5 ms of Python per tick at 22 ticks/s
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="camera_health", daemon=True)
        self._housekeeper.start()
        listing = ", ".join(f"{c} <- {s.kind} {s.identity}" for c, s in self.sources.items()) or "none"
        self.get_logger().info(f"cameras: {listing}; jpeg_quality {p['jpeg_quality']}, "
                               f"placeholders {'on' if p['publish_placeholders'] else 'off'}")

    def _enabled_cameras(self) -> list[str]:
        cams = []
        if self.p["head_enabled"]:
            cams.append("ego_cam")
        if self.p["wrist_source"] != "none":
            cams += ["cam_left_wrist", "cam_right_wrist"]
        return cams

    def _make_source(self, camera: str) -> CameraSource:
        p = self.p
        if camera == "ego_cam":
            return ZmqImageSource(camera, p["head_address"], self._on_frame, p["max_clock_skew_s"])
        side = "left" if camera == "cam_left_wrist" else "right"
        if p["wrist_source"] == "zmq":
            return ZmqImageSource(camera, p[f"{side}_wrist_address"], self._on_frame, p["max_clock_skew_s"])
        return RealSenseSource(camera, p[f"{side}_wrist_serial"], self._on_frame, p["width"], p["height"],
                               p["fps"], p["realsense_retry_s"])

    # --- frames (source threads) ---
    def _on_frame(self, frame: Frame) -> None:
        quality = self.p["jpeg_quality"]
        if frame.jpeg is not None:
            data = frame.jpeg
            source_quality = estimate_jpeg_quality(data)
            if source_quality is not None and source_quality > quality + QUALITY_SLACK:
                import cv2
                import numpy as np

                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    return  # undecodable: counted as no frame, the monitor flags the stall
                data = encode_jpeg(image, quality)
                self.reencoded[frame.camera] += 1
        elif frame.bgr is not None:
            data = encode_jpeg(frame.bgr, quality)
        else:
            return
        self.monitor.frame(frame.camera, time.monotonic())
        msg = CompressedImage(format="jpeg", data=data)
        set_stamp(msg.header.stamp, seconds=frame.stamp)
        msg.header.frame_id = frame.camera
        self.pubs[frame.camera].publish(msg)

    # --- health ---
    def _housekeeping(self) -> None:
        now = time.monotonic_ns()
        jobs = []  # (ticker, what): like timers, the first run one period from now; a late one is not repeated
        for rate_hz, what in ((1.0 / CHECK_PERIOD_S, self._check),  # stall detection well within the 1 s promised
                              (self.p["status_rate_hz"], self._publish_status),
                              (self.p["placeholder_rate_hz"], self._publish_placeholders)):
            ticker = Ticker(rate_hz, now)
            ticker.claim(now)
            jobs.append((ticker, what))
        while not self._stop.is_set():
            now = time.monotonic_ns()
            for ticker, what in jobs:
                if ticker.claim(now) is None:
                    continue
                try:
                    what()
                except Exception as exc:  # noqa: BLE001 - e.g. the context shutting down under us
                    if self._stop.is_set():
                        return
                    self.get_logger().error(f"camera_node {what.__name__} failed: {exc}")
            self._stop.wait(max(0, min(ticker.due_ns() for ticker, _ in jobs) - time.monotonic_ns()) / 1e9)

    def _check(self) -> None:
        now = time.monotonic()
        changed = False
        for camera, source in self.sources.items():
            health, event = self.monitor.update(camera, now, source.state())
            with self._status_lock:
                self.health[camera] = health
            if event is not None:
                self._announce(event)
                changed = True
        if changed:
            self._publish_status()

    def _announce(self, event: MonitorEvent) -> None:
        log_at(self, event.level, event.message)

    def _publish_placeholders(self) -> None:
        with self._status_lock:
            down = [h for h in self.health.values() if h.placeholder]
        now = time.time()
        for h in down:
            reason = self._reason_key(h.detail)
            cached = self._placeholder_cache.get(h.camera)
            if cached is None or cached[0] != reason:  # rendered once per reason, not per frame
                data = render_placeholder(h.camera, reason, self.p["width"], self.p["height"], self.p["jpeg_quality"])
                cached = self._placeholder_cache[h.camera] = (reason, data)
            msg = CompressedImage(format="jpeg", data=cached[1])
            set_stamp(msg.header.stamp, seconds=now)
            msg.header.frame_id = f"{h.camera}_placeholder"
            self.pubs[h.camera].publish(msg)

    @staticmethod
    def _reason_key(detail: str) -> str:
        # "<camera> stalled: no frame for 1.3 s" changes every tick: the picture says "<camera> stalled"
        return detail.split(": no frame for")[0]

    def _publish_status(self) -> None:
        with self._status_lock:
            healths = [self.health[c] for c in self.sources if c in self.health]
        msg = CameraStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.names = [h.camera for h in healths]
        msg.connected = [h.connected for h in healths]
        msg.placeholder = [h.placeholder for h in healths]
        msg.rate_hz = [float(h.rate_hz) for h in healths]
        msg.age_s = [float(h.age_s) for h in healths]
        msg.detail = [h.detail for h in healths]
        self.status_pub.publish(msg)
        diag = DiagnosticArray()
        diag.header = msg.header
        for h in healths:
            src = self.sources[h.camera].state()
            level = DiagnosticStatus.OK if h.connected else DiagnosticStatus.ERROR
            st = DiagnosticStatus(level=level, name=f"camera_node: {h.camera}", message=h.detail,
                                  hardware_id=h.identity)
            st.values = [KeyValue(key=k, value=v) for k, v in (
                ("connected", str(h.connected).lower()),
                ("placeholder", str(h.placeholder).lower()),
                ("rate_hz", f"{h.rate_hz:.1f}"),
                ("age_s", f"{h.age_s:.3f}"),
                ("frames", str(h.frames)),
                ("reencoded", str(self.reencoded.get(h.camera, 0))),
                ("bad_messages", str(src.bad_messages)),
                ("sender_clock_rejected", str(src.clock_fallbacks)),
            )]
            diag.status.append(st)
        self.diag_pub.publish(diag)

    def on_params_changed(self, changed: dict) -> None:
        if "publish_placeholders" in changed:
            self.monitor.placeholders = changed["publish_placeholders"]
        if "stale_after_s" in changed:
            self.monitor.stale_after_s = changed["stale_after_s"]

    def close(self) -> None:
        self._stop.set()
        self._housekeeper.join(timeout=2.0)
        for source in self.sources.values():
            source.stop()


def main(args=None) -> None:
    run_node(CameraNode, args)


if __name__ == "__main__":
    main()
