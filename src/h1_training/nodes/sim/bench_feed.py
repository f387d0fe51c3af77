"""Synthetic robot topics for the recorder benchmark and tests when the real drivers are not used.

Publishes what the drivers publish, at their rates: ``joint_states`` (14 arm joints, 100 Hz), ``hand_states``
(12, 50 Hz), three ``camera/<name>/compressed`` JPEG streams (640x480 at 30 fps by default; frames pre-encoded
once at start-up), ``arm_command`` (50 Hz, with a model_version), ``arm/mode`` (latched; follows ``--modes``)
and ``policy_proposal`` while the mode is DAMPING.

    python -m h1_training.nodes.sim.bench_feed --modes TRACK:5,DAMPING:5
"""

from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np


def make_frames(n: int, width: int, height: int, seed: int, texture: str = "realistic") -> list[bytes]:
    """``n`` distinct JPEGs (quality 85) of a scene with a moving object: ``realistic`` = textured with sensor
    noise (40-60 kB at 640x480, a real camera's size), ``plain`` = flat shading (a few kB)."""
    rng = np.random.default_rng(seed)
    if texture == "plain":
        base = np.full((height, width, 3), 90, np.uint8)
    else:
        blotches = cv2.resize(rng.normal(0.0, 18.0, (max(2, height // 20), max(2, width // 20), 3)),
                              (width, height), interpolation=cv2.INTER_CUBIC)
        ramp = np.linspace(90, 40, height)[:, None, None]
        base = np.clip(ramp + blotches + rng.normal(0.0, 5.0, (height, width, 3)), 0, 255).astype(np.uint8)
    out = []
    for i in range(n):
        img = base.copy()
        x = int(width * (0.2 + 0.6 * (0.5 + 0.5 * math.sin(2 * math.pi * i / n))))
        cv2.circle(img, (x, height // 2), height // 6, (30, 160, 60), -1)
        cv2.putText(img, f"{seed}:{i}", (10, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        out.append(buf.tobytes())
    return out


def parse_modes(text: str) -> list[tuple[str, float]]:
    """"TRACK:5,DAMPING:5" -> [("TRACK", 5.0), ("DAMPING", 5.0)], repeated cyclically."""
    out = []
    for part in text.split(","):
        name, _, secs = part.partition(":")
        out.append((name.strip().upper(), float(secs or "1e9")))
    if not out or any(s <= 0 for _, s in out):
        raise ValueError(f"bad --modes {text!r}; example: TRACK:5,DAMPING:5")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--arm-hz", type=float, default=100.0)
    ap.add_argument("--hand-hz", type=float, default=50.0)
    ap.add_argument("--command-hz", type=float, default=50.0)
    ap.add_argument("--frames", type=int, default=30, help="distinct frames per camera (cycled)")
    ap.add_argument("--texture", choices=("realistic", "plain"), default="realistic",
                    help="JPEG content: realistic (40-60 kB at 640x480) or plain (flat, a few kB)")
    ap.add_argument("--modes", default="TRACK", help="arm/mode schedule, e.g. TRACK:5,DAMPING:5 (cycled)")
    ap.add_argument("--cameras", default="ego_cam,cam_left_wrist,cam_right_wrist")
    args, ros_args = ap.parse_known_args(argv)

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, JointState
    from std_msgs.msg import String

    from h1_training.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
    from h1_training.robot_model import ARM_HOME_RAD, ARM_JOINT_NAMES, HAND_JOINT_NAMES
    from h1_training_interfaces.msg import ArmCommand

    cameras = [c for c in args.cameras.split(",") if c]
    frames = {cam: make_frames(args.frames, args.width, args.height, seed=i,
                                         texture=args.texture) for i, cam in enumerate(cameras)}
    schedule = parse_modes(args.modes)

    with rclpy.init(args=ros_args):
        node = Node("synthetic_feed")
        pub_arm = node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        pub_hand = node.create_publisher(JointState, "hand_states", SENSOR_QOS)
        pub_cam = {c: node.create_publisher(CompressedImage, f"camera/{c}/compressed", SENSOR_QOS) for c in cameras}
        pub_cmd = node.create_publisher(ArmCommand, "arm_command", COMMAND_QOS)
        pub_prop = node.create_publisher(ArmCommand, "policy_proposal", COMMAND_QOS)
        pub_mode = node.create_publisher(String, "arm/mode", LATCHED_QOS)
        t0 = time.monotonic()
        state = {"mode": "", "i": {c: 0 for c in cameras}}

        def now_msg():
            return node.get_clock().now().to_msg()

        def pose(t: float) -> list[float]:
            return [float(v) for v in ARM_HOME_RAD + 0.2 * math.sin(t)]

        def on_arm():
            m = JointState(name=list(ARM_JOINT_NAMES), position=pose(time.monotonic() - t0))
            m.header.stamp = now_msg()
            pub_arm.publish(m)

        def on_hand():
            v = 0.5 + 0.4 * math.sin(time.monotonic() - t0)
            m = JointState(name=list(HAND_JOINT_NAMES), position=[v] * len(HAND_JOINT_NAMES))
            m.header.stamp = now_msg()
            pub_hand.publish(m)

        def on_cam(cam: str):
            i = state["i"][cam]
            state["i"][cam] = (i + 1) % len(frames[cam])
            m = CompressedImage(format="jpeg", data=frames[cam][i])
            m.header.stamp = now_msg()
            m.header.frame_id = cam
            pub_cam[cam].publish(m)

        def on_cmd():
            t = time.monotonic() - t0
            mode = current_mode(t)
            if mode != state["mode"]:
                state["mode"] = mode
                pub_mode.publish(String(data=mode))
            m = ArmCommand(position_rad=pose(t + 0.1), model_version="synthetic-v1", source="policy")
            m.header.stamp = now_msg()
            (pub_prop if mode in ("DAMPING", "ESTOP") else pub_cmd).publish(m)

        def current_mode(t: float) -> str:
            cycle = sum(s for _, s in schedule)
            t = t % cycle
            for name, secs in schedule:
                if t < secs:
                    return name
                t -= secs
            return schedule[-1][0]

        node.create_timer(1.0 / args.arm_hz, on_arm)
        node.create_timer(1.0 / args.hand_hz, on_hand)
        for cam in cameras:
            node.create_timer(1.0 / args.fps, lambda cam=cam: on_cam(cam))
        node.create_timer(1.0 / args.command_hz, on_cmd)
        on_cmd()
        sizes = [len(f) for fs in frames.values() for f in fs]
        print(f"synthetic_feed: publishing {len(cameras)} cameras {args.width}x{args.height}@{args.fps:g} fps "
              f"(JPEG {np.mean(sizes) / 1e3:.0f} kB avg), arm {args.arm_hz:g} Hz, hand {args.hand_hz:g} Hz", flush=True)
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.destroy_node()


if __name__ == "__main__":
    main()
