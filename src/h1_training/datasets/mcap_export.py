"""Episodes as MCAP files with ROS 2 messages (PyPI ``mcap`` + ``mcap-ros2-support``; no rclpy), so Foxglove
replays them with their images.

One ``episode_<i>.mcap`` per episode. Channels (ROS 2 CDR, schemas in the ``ros2msg`` format):

    /joint_states                           sensor_msgs/msg/JointState   14 arm joints (H1-2 URDF names) [rad]
    /hand_states                            sensor_msgs/msg/JointState   12 hand joints, 0..1 (when recorded)
    /camera/<cam>/compressed                sensor_msgs/msg/CompressedImage  JPEG, one per frame and camera
    /action                                 sensor_msgs/msg/JointState   the recorded action (zeros in human frames)

Every frame's messages share its time: the recorded wall-clock stamp (``timestamps/wall_ns``) when the file has
it, else the episode's ``timestamp`` attribute plus ``k / fps``. ``log_time`` and the header stamp are that time.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import h5py
import numpy as np
from mcap_ros2.writer import Writer

from h1_training.recording import layout as L
from h1_training.robot_model import ARM_JOINT_NAMES, HAND_JOINT_NAMES
from h1_training.stamps import seconds_to_ns, split_ns

# Message definitions (ROS 2 Kilted sensor_msgs, std_msgs, builtin_interfaces), comments removed, dependencies
# appended in the ros2msg format that mcap-ros2-support and Foxglove read.
_SEP = "=" * 80
_HEADER = ("MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n" + _SEP +
           "\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n")
JOINT_STATE_DEF = ("std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
                   "float64[] effort\n" + _SEP + "\n" + _HEADER)
COMPRESSED_IMAGE_DEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + _SEP + "\n" + _HEADER


def _frame_times_ns(f: h5py.File, frames: int, fps: float) -> np.ndarray:
    if L.EXTRA_WALL_TIME_NS in f and len(f[L.EXTRA_WALL_TIME_NS]) == frames:
        wall = np.asarray(f[L.EXTRA_WALL_TIME_NS][()], dtype=np.int64)
        if frames == 0 or wall.min() > 0:
            return wall
    start = 0
    stamp = f.attrs.get("timestamp", "")
    stamp = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
    try:
        start = seconds_to_ns(datetime.datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        start = 0
    return start + (np.arange(frames) * (1e9 / fps)).astype(np.int64)


def _header(t_ns: int, frame_id: str) -> dict:
    sec, nanosec = split_ns(int(t_ns))
    return {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id}


def export_episode_mcap(episode: str | Path, output: str | Path) -> int:
    """Write ``output`` (.mcap) from one HDF5 episode; returns the number of frames. ValueError for a file that
    breaks the contract."""
    with h5py.File(episode, "r") as f:
        problems = L.validate(f)
        if problems:
            raise ValueError(f"{episode}: {problems[0]}")
        qpos = np.asarray(f[L.QPOS][()], dtype=np.float64)
        action = np.asarray(f[L.ACTION][()], dtype=np.float64)
        hand = np.asarray(f[L.EXTRA_HAND_STATE][()], dtype=np.float64) if L.EXTRA_HAND_STATE in f else None
        frames = len(qpos)
        fps = float(f.attrs["fps"])
        times = _frame_times_ns(f, frames, fps)
        cams = [k for k in L.IMAGE_KEYS if k in f]
        with open(output, "wb") as out:
            writer = Writer(out)
            js = writer.register_msgdef("sensor_msgs/msg/JointState", JOINT_STATE_DEF)
            img = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_DEF)
            arm_names = list(ARM_JOINT_NAMES)
            for k in range(frames):
                t = int(times[k])
                writer.write_message("/joint_states", js, {"header": _header(t, "h1_2"), "name": arm_names,
                                                           "position": qpos[k].tolist(), "velocity": [],
                                                           "effort": []}, log_time=t, publish_time=t, sequence=k)
                writer.write_message("/action", js, {"header": _header(t, "h1_2"), "name": arm_names,
                                                     "position": action[k].tolist(), "velocity": [], "effort": []},
                                     log_time=t, publish_time=t, sequence=k)
                if hand is not None:
                    hand_msg = {"header": _header(t, "inspire"), "name": list(HAND_JOINT_NAMES),
                                "position": hand[k].tolist(), "velocity": [], "effort": []}
                    writer.write_message("/hand_states", js, hand_msg,
                                         log_time=t, publish_time=t, sequence=k)
                for key in cams:
                    cam = key.split("/")[-1]
                    writer.write_message(f"/camera/{cam}/compressed", img,
                                         {"header": _header(t, cam), "format": "jpeg",
                                          "data": f[key][k].tobytes()}, log_time=t, publish_time=t, sequence=k)
            writer.finish()
    return frames
