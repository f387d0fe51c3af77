"""camera_sim: image servers in the robot's format (xr_teleoperate image_server: ZMQ PUB, one JPEG per
message with an optional ``struct 'dI'`` timestamp/frame-id prefix) for the head camera and both wrist
cameras, on 127.0.0.1 by default (5555 head, 5556 left wrist, 5557 right wrist), 30 fps, 640x480.

The frames show the simulated scene (h1_training.sim.scene_render): the arms from ``joint_states``, the hands
from ``hand_states``, and the task object at (``object_x``, ``object_y``, ``object_z``) or wherever
``sim/scene`` (geometry_msgs/PointStamped, metres, x forward / y left / z up from between the shoulders)
puts it. Fault injection: the dynamic parameter ``stalled`` (comma-separated camera names) stops those
streams while their sockets stay open -- a stalled camera, as opposed to a stopped server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState

from h1_training.drivers.cameras import pack_image_message
from h1_training.nodes.common import SENSOR_QOS, ParamsMixin, PolledSubscription, run_node
from h1_training.params import param
from h1_training.rates import Ticker
from h1_training.robot_model import ARM_JOINT_NAMES, CAMERA_NAMES, HAND_JOINT_NAMES
from h1_training.sim.scene_render import SceneRenderer, SceneState

LOOPBACK_PREFIXES = ("tcp://127.0.0.1:", "tcp://localhost:", "ipc://", "inproc://")


@dataclass
class CameraSimParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    head_bind: str = param("tcp://127.0.0.1:5555", "head camera (ego_cam) image server endpoint; '' = off",
        read_only=True)
    left_wrist_bind: str = param("tcp://127.0.0.1:5556", "left wrist image server endpoint; '' = off", read_only=True)
    right_wrist_bind: str = param("tcp://127.0.0.1:5557", "right wrist image server endpoint; '' = off", read_only=True)
    fps: float = param(30.0, "frame rate per camera [Hz]", min=1.0, max=120.0, read_only=True)
    width: int = param(640, "image width [px]", min=64, max=1920, read_only=True)
    height: int = param(480, "image height [px]", min=48, max=1080, read_only=True)
    jpeg_quality: int = param(85, "JPEG quality of the served frames", min=1, max=100, read_only=True)
    texture: bool = param(True, "textured, noisy background: JPEG sizes of a real 640x480 camera (40-60 kB); "
                          "false = flat shading (~15 kB, lighter on the CPU)", read_only=True)
    send_header: bool = param(True, "prefix each JPEG with the 'dI' timestamp/frame-id header")
    object_x: float = param(0.55, "task object x (forward) [m]", min=-2.0, max=2.0)
    object_y: float = param(0.0, "task object y (left) [m]", min=-2.0, max=2.0)
    object_z: float = param(-0.06, "task object z (up, 0 = shoulder height; table top -0.10) [m]", min=-2.0, max=2.0)
    stalled: str = param("", "comma-separated cameras that stop sending (fault injection), e.g. 'ego_cam'")


class CameraSim(ParamsMixin, Node):
    PARAMS = CameraSimParams

    def __init__(self) -> None:
        super().__init__("camera_sim")
        self.declare_specs()
        import cv2
        import zmq

        cv2.setNumThreads(1)
        p = self.p
        self.state = SceneState(object_xyz=np.array([p["object_x"], p["object_y"], p["object_z"]]))
        self._lock = threading.Lock()
        self._stalled = self._parse_stalled(p["stalled"])
        self.ctx = zmq.Context.instance()
        self.streams: list[tuple[str, SceneRenderer, object]] = []
        binds = {"ego_cam": p["head_bind"], "cam_left_wrist": p["left_wrist_bind"],
                 "cam_right_wrist": p["right_wrist_bind"]}
        for camera in CAMERA_NAMES:
            endpoint = binds[camera]
            if not endpoint:
                continue
            if not endpoint.startswith(LOOPBACK_PREFIXES):
                self.get_logger().warning(f"camera_sim {camera} binds {endpoint}: reachable from other machines")
            sock = self.ctx.socket(zmq.PUB)
            sock.setsockopt(zmq.SNDHWM, 2)  # a slow subscriber gets the newest frames, not a backlog
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(endpoint)  # raises (process exits with the reason) when the port is taken
            self.streams.append((camera, SceneRenderer(camera, p["width"], p["height"], p["jpeg_quality"],
                                                             texture=p["texture"]), sock))
        # taken once per frame by the frame loop: an executor callback per message (100 Hz arm, 50 Hz hands)
        # cost more CPU than rendering the frames
        self._arm_sub = PolledSubscription(self, JointState, "joint_states", SENSOR_QOS)
        self._hands_sub = PolledSubscription(self, JointState, "hand_states", SENSOR_QOS)
        self.create_subscription(PointStamped, "sim/scene", self._on_scene, 10)
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="camera-sim", daemon=True)
        self._thread.start()
        listing = ", ".join(f"{c} on {binds[c]}" for c, _, _ in self.streams) or "none"
        self.get_logger().info(f"image servers: {listing}; {p['fps']:.0f} fps {p['width']}x{p['height']}")

    @staticmethod
    def _parse_stalled(text: str) -> set[str]:
        names = {n.strip() for n in text.split(",") if n.strip()}
        unknown = names - set(CAMERA_NAMES)
        if unknown:
            raise ValueError(f"stalled: unknown cameras {sorted(unknown)}; use {', '.join(CAMERA_NAMES)}")
        return names

    # --- scene inputs ---
    def _on_arm(self, msg: JointState) -> None:
        if msg.name:
            index = {n: i for i, n in enumerate(msg.name)}
            if not all(n in index for n in ARM_JOINT_NAMES):
                return
            q = np.array([msg.position[index[n]] for n in ARM_JOINT_NAMES])
        elif len(msg.position) == len(ARM_JOINT_NAMES):
            q = np.asarray(msg.position, dtype=np.float64)
        else:
            return
        if np.all(np.isfinite(q)):
            with self._lock:
                self.state.arm_q = q

    def _on_hands(self, msg: JointState) -> None:
        if len(msg.position) == len(HAND_JOINT_NAMES):
            with self._lock:
                self.state.hand_open = np.asarray(msg.position, dtype=np.float64)

    def _on_scene(self, msg: PointStamped) -> None:
        xyz = np.array([msg.point.x, msg.point.y, msg.point.z])
        if np.all(np.isfinite(xyz)):
            with self._lock:
                self.state.object_xyz = xyz

    def on_params_changed(self, changed: dict) -> None:
        with self._lock:
            if "stalled" in changed:
                self._stalled = self._parse_stalled(changed["stalled"])
                self.get_logger().info(f"stalled cameras: {sorted(self._stalled) or 'none'}")
            xyz = self.state.object_xyz.copy()
            for k, name in enumerate(("object_x", "object_y", "object_z")):
                if name in changed:
                    xyz[k] = changed[name]
            self.state.object_xyz = xyz

    def _check_params(self, params: list):  # validate 'stalled' names before accepting them
        result = super()._check_params(params)
        if result.successful:
            for param in params:
                if param.name == "stalled":
                    try:
                        self._parse_stalled(param.value)
                    except ValueError as exc:
                        result.successful, result.reason = False, str(exc)
        return result

    # --- the frame loop ---
    def _loop(self) -> None:
        import zmq

        ticker = Ticker(self.p["fps"])
        while ticker.wait(self._stop) is not None:  # fell behind: the late frames are skipped, not burst
            if (msg := self._arm_sub.take_latest()) is not None:
                self._on_arm(msg)
            if (msg := self._hands_sub.take_latest()) is not None:
                self._on_hands(msg)
            with self._lock:
                state = SceneState(self.state.arm_q.copy(), self.state.hand_open.copy(), self.state.object_xyz.copy())
                stalled = set(self._stalled)
            header = self.p["send_header"]
            key = state.key()  # once per frame for all cameras
            now = time.time()
            for camera, renderer, sock in self.streams:
                if camera in stalled:
                    continue
                jpeg = renderer.render(state, key)
                message = pack_image_message(jpeg, now if header else None, self.frames)
                try:
                    sock.send(message, zmq.NOBLOCK)
                except zmq.Again:
                    pass  # no room: the subscriber is slow; the next frame replaces this one
            self.frames += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for _, _, sock in self.streams:
            sock.close(0)


def main(args=None) -> None:
    run_node(CameraSim, args)


if __name__ == "__main__":
    main()
