"""``episode_recorder``: the 50 Hz sampler and streaming HDF5 writer as a ROS 2 node (thin adapter).

Subscribes ``joint_states``, ``hand_states``, ``camera/<name>/compressed`` (3), ``arm_command``, ``arm/mode``,
``policy_proposal``; offers ``episode_recorder/start`` (StartEpisode) and ``episode_recorder/save``
(SaveEpisode; ``discard: true`` drops the episode); publishes ``episode_recorder/status`` (RecorderStatus,
latched). Callbacks only store the latest value of each source (JPEG bytes as they arrived); sampling and disk
I/O run in ``h1_training.recording.recorder``'s own threads. At start-up, episodes a crash left unsaved are
repaired. Ctrl+C / SIGTERM during an episode saves it.

    episode_recorder --ros-args -p save_dir:=data/h1_data
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String

from h1_training.gc_pauses import GcPauses
from h1_training.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    ParamsMixin,
    apply_process_rt_priority,
    log_at,
    run_node,
)
from h1_training.params import nested, param
from h1_training.recording.recorder import ERROR, Recorder, RecorderConfig, make_placeholder_jpeg
from h1_training.recording.sampler import JointOrder
from h1_training.robot_model import ARM_JOINT_NAMES, CAMERA_NAMES, HAND_JOINT_NAMES, NUM_ARM_JOINTS
from h1_training.stamps import stamp_ns
from h1_training_interfaces.msg import ArmCommand, RecorderStatus
from h1_training_interfaces.srv import SaveEpisode, StartEpisode


@dataclass
class RecorderNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    status_rate_hz: float = param(5.0, "status topic rate while idle or recording [Hz]", min=0.2, max=50.0)
    placeholder_width: int = param(640, "width of the flagged placeholder JPEG stored for a silent camera", min=16,
        max=4096)
    placeholder_height: int = param(480, "height of that placeholder JPEG", min=16, max=4096)
    process_nice: int = param(0, "nice value of the whole recorder process at start-up (its callbacks hold "
        "the interpreter lock the sampler needs); negative needs CAP_SYS_NICE", min=-20, max=19)
    process_rt_priority: int = param(0, "SCHED_FIFO priority of the whole recorder process at start-up (1-99; "
        "0 = off): on a busy laptop the only setting that kept every 50 Hz tick (bench recorder --full-stack); "
        "its HDF5 writer process too; needs CAP_SYS_NICE or an rtprio limit, else a warning", min=0, max=99)
    gil_switch_ms: float = param(1.0, "Python thread switch interval [ms]: how long the sampler may wait for "
        "the interpreter while callbacks run", min=0.1, max=10.0)
    repair_on_start: bool = param(True, "repair episodes a crash left unsaved (*.hdf5.partial) at start-up")
    gc_freeze: bool = param(False, "move everything allocated during start-up out of the garbage collector's "
        "sight (gc.freeze), so a full collection while recording walks only what recording allocates")
    resubscribe_after_s: float = param(5.0, "a sensor stream (joint_states, hand_states, a camera) silent this "
        "long while the graph shows its publisher is subscribed again, at most once per period; 0 = never",
        min=0.0, max=600.0)
    recorder: RecorderConfig = nested(RecorderConfig)  # save_dir, rate_hz, ... (recording/recorder.py)


PARAMS = RecorderNodeParams



def _stamp_ns(header: Any) -> int:
    return stamp_ns(header.stamp)


class EpisodeRecorderNode(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("episode_recorder")
        p = self.declare_specs()
        self._status_pub = self.create_publisher(RecorderStatus, "episode_recorder/status", LATCHED_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        config = self.config.recorder
        sys.setswitchinterval(p["gil_switch_ms"] / 1000.0)
        if p["process_nice"]:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, p["process_nice"])
            except OSError as exc:
                self.get_logger().warning(f"could not set process_nice {p['process_nice']}: {exc.strerror}")
        apply_process_rt_priority(self, p["process_rt_priority"], "ticks may be late when the machine is busy")
        placeholder = make_placeholder_jpeg(p["placeholder_width"], p["placeholder_height"])
        self.recorder = Recorder(config, placeholder, log=self._log, on_change=self.publish_status)
        if p["repair_on_start"]:
            self.recorder.repair_leftovers()
        self._arm_order = JointOrder(ARM_JOINT_NAMES)
        self._hand_order = JointOrder(HAND_JOINT_NAMES)
        slots = self.recorder.slots

        # sensor streams by their contract name (the status's stale_sources): subscribed again when silent
        self._streams: dict[str, tuple[Any, str, Callable[[Any], None]]] = {
            "joint_states": (JointState, "joint_states", self._on_joint_states),
            "hand_states": (JointState, "hand_states", self._on_hand_states)}
        for cam in CAMERA_NAMES:
            self._streams[f"camera/{cam}"] = (CompressedImage, f"camera/{cam}/compressed",
                                              lambda msg, cam=cam: self._on_image(cam, msg))
        self._stream_subs = {source: self.create_subscription(msg_type, topic, callback, SENSOR_QOS)
                             for source, (msg_type, topic, callback) in self._streams.items()}
        self._resubscribed_ns = dict.fromkeys(self._streams, time.monotonic_ns())  # the first period is grace
        self.resubscriptions = 0
        self.create_subscription(ArmCommand, "arm_command", self._on_arm_command, COMMAND_QOS)
        # best effort accepts both reliable and best-effort publishers of proposals
        self.create_subscription(ArmCommand, "policy_proposal", self._on_proposal, SENSOR_QOS)
        self.create_subscription(String, "arm/mode", lambda msg: slots.set_mode(msg.data), LATCHED_QOS)
        self.create_service(StartEpisode, "episode_recorder/start", self._on_start)
        self.create_service(SaveEpisode, "episode_recorder/save", self._on_save)
        self._timer = self.create_timer(1.0 / p["status_rate_hz"], self.publish_status)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._silence_timer = self.create_timer(1.0, self._resubscribe_silent_streams)
        self.gc_pauses = GcPauses().install()
        if p["gc_freeze"]:
            gc.freeze()
        self.publish_status()
        self.get_logger().info(f"episode_recorder ready: {config.rate_hz:.0f} Hz into {config.save_dir}")

    # --- callbacks: store the latest value only ----------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        try:
            self.recorder.slots.set_qpos(self._arm_order(msg.name, msg.position), _stamp_ns(msg.header))
        except ValueError as exc:
            self.get_logger().error(f"joint_states ignored: {exc}", throttle_duration_sec=5.0)

    def _on_hand_states(self, msg: JointState) -> None:
        try:
            self.recorder.slots.set_hand(self._hand_order(msg.name, msg.position), _stamp_ns(msg.header))
        except ValueError as exc:
            self.get_logger().error(f"hand_states ignored: {exc}", throttle_duration_sec=5.0)

    def _on_image(self, cam: str, msg: CompressedImage) -> None:
        data = msg.data
        if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:  # JPEG SOI; stored as-is, never re-encoded
            self.get_logger().error(f"camera/{cam}: frame ignored, not JPEG (format {msg.format!r}, "
                                    f"{len(data)} bytes)", throttle_duration_sec=5.0)
            return
        self.recorder.slots.set_image(cam, data, _stamp_ns(msg.header), msg.header.frame_id.endswith("_placeholder"))

    def _on_arm_command(self, msg: ArmCommand) -> None:
        if len(msg.position_rad) != NUM_ARM_JOINTS:
            self.get_logger().error(f"arm_command ignored: {len(msg.position_rad)} positions, expected "
                                    f"{NUM_ARM_JOINTS}", throttle_duration_sec=5.0)
            return
        self.recorder.slots.set_action(msg.position_rad, _stamp_ns(msg.header), msg.model_version)

    def _on_proposal(self, msg: ArmCommand) -> None:
        if len(msg.position_rad) != NUM_ARM_JOINTS:
            self.get_logger().error(f"policy_proposal ignored: {len(msg.position_rad)} positions",
                                    throttle_duration_sec=5.0)
            return
        self.recorder.slots.set_proposal(msg.position_rad, _stamp_ns(msg.header), msg.model_version)

    def _resubscribe_silent_streams(self) -> None:
        """A subscriber restarted after ``kill -9`` can stay unmatched with a publisher the graph shows (Fast DDS:
        bench recorder-kill saw a restarted recorder's three cameras silent for 180 s while camera_node ran).
        A new subscription is a new DDS reader, matched afresh; a stream with no publisher is left alone (the
        source itself is down and the status says stale)."""
        period_s = self.p["resubscribe_after_s"]
        if period_s <= 0:
            return
        now = time.monotonic_ns()
        period_ns = int(period_s * 1e9)
        for source in self.recorder.slots.stale_sources(now, period_ns):
            if source not in self._streams or now - self._resubscribed_ns[source] < period_ns:
                continue
            msg_type, topic, callback = self._streams[source]
            publishers = self.count_publishers(topic)
            if publishers == 0:
                continue
            self.destroy_subscription(self._stream_subs[source])
            self._stream_subs[source] = self.create_subscription(msg_type, topic, callback, SENSOR_QOS)
            self._resubscribed_ns[source] = now
            self.resubscriptions += 1
            self.get_logger().warning(
                f"{topic}: nothing received for {period_s:g} s although the graph shows {publishers} "
                f"publisher(s): subscribed again (resubscription {self.resubscriptions})")

    # --- services ------------------------------------------------------------------------------------------
    def _on_start(self, req: StartEpisode.Request, res: StartEpisode.Response) -> StartEpisode.Response:
        self.gc_pauses.take()  # the window is the episode
        r = self.recorder.start(int(req.epoch), int(req.episode_index), req.prompt)
        res.success, res.message, res.file_path, res.episode_index = r.ok, r.message, r.path, r.episode_index
        return res

    def _on_save(self, req: SaveEpisode.Request, res: SaveEpisode.Response) -> SaveEpisode.Response:
        missed = self.recorder.status().missed_ticks
        r = self.recorder.save(discard=bool(req.discard), success_label=int(req.success_label))
        self.get_logger().info(f"while recording {r.path or 'the episode'}: {missed} missed ticks; "
                               f"{self.gc_pauses.take().describe()} in this process")
        res.success, res.message, res.file_path = r.ok, r.message, r.path
        res.frames, res.policy_frames, res.human_frames = r.frames, r.policy_frames, r.human_frames
        return res

    # --- status --------------------------------------------------------------------------------------------
    def publish_status(self) -> None:
        st = self.recorder.status()
        msg = RecorderStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = st.state
        msg.recording = st.recording
        msg.file_path = st.file_path
        msg.frames = st.frames
        msg.policy_frames = st.policy_frames
        msg.human_frames = st.human_frames
        msg.missed_ticks = st.missed_ticks
        msg.target_rate_hz = float(st.target_rate_hz)
        msg.achieved_rate_hz = float(st.achieved_rate_hz)
        msg.bytes_written = int(st.bytes_written)
        msg.duration_s = float(st.duration_s)
        msg.stale_sources = list(st.stale_sources)
        msg.error = st.error
        try:
            self._status_pub.publish(msg)
        except Exception:  # noqa: BLE001 - context already shut down (final status at exit)
            pass

    def _publish_diagnostics(self) -> None:
        st = self.recorder.status()
        d = DiagnosticStatus(name="episode_recorder", hardware_id="recorder")
        if st.state == ERROR:
            d.level, d.message = DiagnosticStatus.ERROR, st.error
        elif st.recording and st.stale_sources:
            d.level, d.message = DiagnosticStatus.WARN, "stale: " + ", ".join(st.stale_sources)
        else:
            d.level, d.message = DiagnosticStatus.OK, "recording" if st.recording else "idle"
        d.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("frames", st.frames), ("missed_ticks", st.missed_ticks), ("resubscriptions", self.resubscriptions),
            ("achieved_rate_hz", f"{st.achieved_rate_hz:.2f}"), ("file", st.file_path))]
        arr = DiagnosticArray(status=[d])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)

    def _log(self, level: str, text: str) -> None:
        log_at(self, level, text)

    def on_params_changed(self, changed: dict[str, Any]) -> None:
        cfg = self.recorder.config
        for name, value in changed.items():
            if hasattr(cfg, name):
                setattr(cfg, name, value)
        if "gil_switch_ms" in changed:
            sys.setswitchinterval(changed["gil_switch_ms"] / 1000.0)
        later = [n for n in changed if hasattr(cfg, n)]  # the writer and sampler take them at episode start
        if later and self.recorder.recording:
            self.get_logger().info(f"{', '.join(later)} apply from the next episode")

    def close(self) -> None:
        """Called by run_node on Ctrl+C / SIGTERM: save an episode in progress."""
        result = self.recorder.shutdown()
        if result is not None:
            print(f"[episode_recorder] {'saved' if result.ok else 'save FAILED'}: {result.message}", flush=True)
        self.publish_status()


def main(args: list[str] | None = None) -> None:
    run_node(EpisodeRecorderNode, args)


if __name__ == "__main__":
    main()
