"""``hil_session``: the H1 seed's training session (``h1_execution_client.py --config training_config.yaml``) as a
ROS 2 node. A thin adapter: the state machine is ``session/state_machine.py``, its effects, the policy loop,
polling and sync are ``session/runner.py``.

    hil_session --ros-args -p config:=config/training_config.yaml
    hil_session --ros-args -p policy_host:=msc-server -p rsync_target:=yuxin@p6000:/data/h1_training/
    hil_console                      # the operator's keys in another terminal

Services: ``hil_session/command`` (SessionCommand: key y / n / s / e, or ctrl+c), ``hil_session/label``
(LabelEpisode: the current episode in LABELING/DAMPING, or a saved file by path). Topics: pub
``hil_session/status`` (SessionStatus, transient local: the last 10 statuses), ``arm_command`` (ArmCommand, the
policy's targets at ``control_rate_hz`` in EXECUTING), ``policy_proposal`` (ArmCommand, while the human has the
arm); reads ``joint_states``, ``camera/<name>/compressed`` (taken when an observation is built), ``arm/mode``,
``episode_recorder/status``, ``teleop/arm_target`` (ArmCommand: the arm's targets in the ``teleoperation``
collection mode, clamped by drivers/arm_safety and relayed on ``arm_command``; stale for ``teleop_timeout_s``:
arm HOLD). ``collection_mode`` (hil / policy / kinesthetic / teleoperation) picks what the next episode records.
Calls ``arm/set_mode``, ``episode_recorder/start``, ``episode_recorder/save``.
Polls ``GET /training_status`` of the policy server while WAITING.

Ctrl+C / SIGTERM (first): the seed's emergency exit - policy stopped, arm HOLD, the current episode saved, exit 0.
A second one exits at once (the arm's command watchdog holds the pose: it never stays in TRACK without commands).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String

from h1_training.malloc_tuning import return_large_buffers
from h1_training.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    ParamsMixin,
    PolledSubscription,
    ServiceCallError,
    apply_process_rt_priority,
    call_service,
    log_at,
)
from h1_training.params import nested, param
from h1_training.recording.layout import episode_index_of
from h1_training.recording.sampler import JointOrder
from h1_training.robot_model import ARM_JOINT_NAMES, CAMERA_NAMES
from h1_training.session.observation import ObservationBuilder
from h1_training.session.runner import EffectError, SessionRunner, Snapshot
from h1_training.session.settings import SessionSettings, load_training_config, resolve_settings
from h1_training.session.state_machine import ArmMode, Saved
from h1_training.session.teleop import MODEL_VERSION as TELEOP_VERSION
from h1_training.session.teleop import TOPIC as TELEOP_TOPIC
from h1_training.stamps import stamp_ns
from h1_training_interfaces.msg import ArmCommand, RecorderStatus, SessionStatus
from h1_training_interfaces.srv import LabelEpisode, SaveEpisode, SessionCommand, SetArmMode, StartEpisode


@dataclass
class HilSessionNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    config: str = param("", "the seed's training_config.yaml (policy_server.host/port/api_key, rsync.target, "
        "save_dir); parameters that are set win over it", read_only=True)
    session: SessionSettings = nested(SessionSettings)  # policy_host ... sync_bwlimit_kbps (session/settings.py)
    send_images: bool = param(True, "send the three camera images with each observation")
    image_width: int = param(0, "resize images to this width before sending (0 = as the camera sends)", min=0, max=4096)
    image_height: int = param(0, "resize images to this height before sending (0 = as the camera sends)", min=0,
        max=4096)
    service_timeout_s: float = param(5.0, "timeout of arm/recorder service calls [s]; a HOLD or DAMPING without "
        "a reply is sent once more after 1 s within it", min=0.1, max=60.0)
    status_rate_hz: float = param(1.0, "status republish rate (live frame counts) [Hz]", min=0.1, max=20.0)
    process_rt_priority: int = param(0, "SCHED_FIFO priority of the whole session process at start-up (1-99; 0 = "
        "off): the 50 Hz policy loop on time on a busy laptop (bench recorder --full-stack); rsync still runs at "
        "normal priority; needs CAP_SYS_NICE or an rtprio limit, else a warning", min=0, max=99, read_only=True)


PARAMS = HilSessionNodeParams
ARM_MODE_NAMES = {getattr(SetArmMode.Request, f"MODE_{n}"): n for n in ("HOLD", "TRACK", "DAMPING", "ESTOP", "FAULT")}
SET_MODE_RESEND_S = 1.0  # a lost arm/set_mode HOLD/DAMPING reply is asked again after 1 s (the arm answers in ms)


class HilSessionNode(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("hil_session")
        p = self.declare_specs()
        apply_process_rt_priority(self, p["process_rt_priority"], "policy commands may be late when the machine "
                                  "is busy")
        self._config_values = load_training_config(p["config"]) if p["config"] else {}
        settings = resolve_settings(self.config.session, self._config_values)
        self._clients_group = ReentrantCallbackGroup()
        self._services_group = MutuallyExclusiveCallbackGroup()
        self.cmd_pub = self.create_publisher(ArmCommand, "arm_command", COMMAND_QOS)
        self.proposal_pub = self.create_publisher(ArmCommand, "policy_proposal", COMMAND_QOS)
        self.status_pub = self.create_publisher(SessionStatus, "hil_session/status", STATUS_QOS)
        self.mode_client = self.create_client(SetArmMode, "arm/set_mode", callback_group=self._clients_group)
        self.start_client = self.create_client(StartEpisode, "episode_recorder/start",
                                               callback_group=self._clients_group)
        self.save_client = self.create_client(SaveEpisode, "episode_recorder/save",
                                              callback_group=self._clients_group)
        # taken when an observation is built (2 Hz), not called back at 100 + 3x30 Hz (see PolledSubscription)
        self._joints = PolledSubscription(self, JointState, "joint_states", SENSOR_QOS)
        self._cams = {cam: PolledSubscription(self, CompressedImage, f"camera/{cam}/compressed", SENSOR_QOS)
                      for cam in CAMERA_NAMES}
        self._arm_order = JointOrder(ARM_JOINT_NAMES)
        self.builder = ObservationBuilder(
            settings.prompt, send_images=p["send_images"], image_size=(p["image_width"], p["image_height"]),
            state_timeout_s=settings.state_timeout_s, refresh=self._refresh_observation)
        self._cmd_msg = ArmCommand(source="policy")
        self._proposal_msg = ArmCommand(source="proposal")
        self.runner = SessionRunner(settings, self)

        self.create_subscription(String, "arm/mode", lambda m: self.runner.on_arm_mode(m.data), LATCHED_QOS)
        self.create_subscription(RecorderStatus, "episode_recorder/status", self._on_recorder_status, LATCHED_QOS)
        self.create_subscription(ArmCommand, TELEOP_TOPIC, self._on_teleop_target, COMMAND_QOS)
        self.create_service(SessionCommand, "hil_session/command", self._on_command,
                            callback_group=self._services_group)
        self.create_service(LabelEpisode, "hil_session/label", self._on_label, callback_group=self._services_group)
        self._status_timer = self.create_timer(1.0 / p["status_rate_hz"], self.runner.publish)
        s = settings
        sync = (f"rsync target {s.rsync_target}" if s.rsync_target else
                "no rsync target: the data stays in save_dir (set rsync.target or rsync_target to sync)")
        self.get_logger().info(
            f"hil_session: policy server {s.policy_host}:{s.policy_port}"
            f"{' (API key set)' if s.api_key else ''}{' model ' + s.model if s.model else ''}; save_dir "
            f"{s.save_dir}; {sync}; policy at {s.control_rate_hz:g} Hz, next chunk after {s.replan_steps} rows"
            + (f"; config {p['config']}" if p["config"] else ""))

    # --- SessionPorts ------------------------------------------------------------------------------------
    def _call(self, client: Any, request: Any, what: str, timeout: float | None = None,
              resend_after_s: float | None = None) -> Any:
        timeout = self.p["service_timeout_s"] if timeout is None else timeout
        try:
            return call_service(client, request, timeout, what, resend_after_s)
        except ServiceCallError as exc:
            raise EffectError(str(exc)) from exc

    def wait_ready(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        missing = []
        for client in (self.mode_client, self.start_client, self.save_client):
            if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                missing.append(client.srv_name)
        return missing

    def set_arm_mode(self, mode: ArmMode) -> None:
        # HOLD and DAMPING are idempotent ("accepted: already in HOLD") and move nothing: sent again if the
        # reply is lost. TRACK is never repeated: a late copy could re-engage the policy after another mode.
        resend = None if mode is ArmMode.TRACK else SET_MODE_RESEND_S
        reply = self._call(self.mode_client, SetArmMode.Request(mode=int(mode)), f"arm {mode.name}",
                           resend_after_s=resend)
        if not reply.success:
            current = ARM_MODE_NAMES.get(reply.current_mode, str(reply.current_mode))
            raise EffectError(f"arm refused {mode.name} (now {current}): {reply.message}")

    def start_recording(self, epoch: int, index: int, prompt: str) -> tuple[int, str]:
        reply = self._call(self.start_client, StartEpisode.Request(epoch=epoch, episode_index=index, prompt=prompt),
                           "start recording")
        if not reply.success:
            raise EffectError(reply.message or "the recorder refused to start")
        return int(reply.episode_index), reply.file_path

    def save_recording(self, label: int) -> Saved:
        reply = self._call(self.save_client, SaveEpisode.Request(discard=False, success_label=label),
                           "save episode", timeout=max(self.p["service_timeout_s"], 30.0))
        if not reply.success:
            raise EffectError(reply.message or "the recorder could not save")
        index = episode_index_of(reply.file_path) if reply.file_path else None
        return Saved(reply.file_path, int(reply.frames), int(reply.policy_frames), int(reply.human_frames),
                     -1 if index is None else index)

    def publish_action(self, action: np.ndarray, model_version: str, proposal: bool) -> None:
        msg = self._proposal_msg if proposal else self._cmd_msg  # only the control thread publishes
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.position_rad = action.tolist()
        msg.model_version = model_version
        msg.source = "proposal" if proposal else ("teleop" if model_version == TELEOP_VERSION else "policy")
        (self.proposal_pub if proposal else self.cmd_pub).publish(msg)

    def observation(self) -> dict:
        return self.builder.build()

    def _refresh_observation(self, builder: ObservationBuilder) -> None:
        js = self._joints.take_latest()
        if js is not None:
            try:
                q = self._arm_order(js.name, js.position)
            except ValueError as exc:
                raise ValueError(f"joint_states: {exc}") from exc
            builder.set_state(q, stamp_ns(js.header.stamp))
        for cam, sub in self._cams.items():
            img = sub.take_latest()
            if img is not None and len(img.data) > 4:
                builder.set_image(cam, bytes(img.data))

    def publish_status(self, snap: Snapshot) -> None:
        st = snap.status
        msg = SessionStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = int(st.state)
        msg.state_name = st.state_name
        msg.prompt = st.prompt
        msg.allowed_keys = list(st.allowed_keys)
        msg.epoch, msg.server_epoch, msg.server_ready = st.epoch, st.server_epoch, st.server_ready
        msg.episode_index, msg.episodes_saved, msg.episodes_total = st.episode_index, st.episodes_saved, \
            st.episodes_total
        msg.label = st.label
        msg.policy_frames, msg.human_frames = snap.policy_frames, snap.human_frames
        msg.recording, msg.policy_running, msg.proposal_only = snap.recording, snap.policy_running, \
            snap.proposal_only
        msg.arm_mode = snap.arm_mode
        msg.model_version = snap.model_version
        msg.last_episode_path = st.last_episode_path
        msg.sync_progress = snap.sync_progress
        msg.message = st.message
        msg.lines = list(snap.lines)
        msg.lines_seq = snap.lines_seq
        msg.last_error = snap.last_error
        try:
            self.status_pub.publish(msg)
        except Exception:  # noqa: BLE001 - context already shut down (final status at exit)
            if self.context.ok():
                raise

    def log(self, level: str, text: str) -> None:
        log_at(self, level, text)

    # --- ROS inputs --------------------------------------------------------------------------------------
    def _on_teleop_target(self, msg: ArmCommand) -> None:
        reason = self.runner.on_teleop_target(msg.position_rad)
        if reason:
            self.get_logger().warning(f"{TELEOP_TOPIC} target rejected: {reason}", throttle_duration_sec=2.0)

    def _on_recorder_status(self, msg: RecorderStatus) -> None:
        self.runner.on_recorder_status(msg.state == RecorderStatus.STATE_ERROR, msg.error, msg.recording,
                                       msg.policy_frames, msg.human_frames)

    def _on_command(self, req: SessionCommand.Request, res: SessionCommand.Response) -> SessionCommand.Response:
        out = self.runner.key(req.key)
        st = self.runner.machine.status()
        if out is None:
            res.accepted, res.message = True, "queued behind a slow step; see hil_session/status"
        else:
            res.accepted, res.message = out.accepted, out.reason or st.message
        if not res.accepted:
            self.get_logger().info(f"key {req.key!r}: {out.reason if out else ''}")
        res.state_name, res.prompt = st.state_name, st.prompt
        return res

    def _on_label(self, req: LabelEpisode.Request, res: LabelEpisode.Response) -> LabelEpisode.Response:
        res.accepted, res.message = self.runner.label(int(req.success), req.note, req.file_path)
        return res

    def on_params_changed(self, changed: dict[str, Any]) -> None:
        try:
            fresh = resolve_settings(self.config.session, self._config_values)
        except ValueError as exc:
            self.get_logger().error(f"parameter change not applied: {exc}")
            return
        settings = self.runner.settings
        for name in settings.__dataclass_fields__:
            if name != "last_seen_epoch":
                setattr(settings, name, getattr(fresh, name))
        self.runner.machine.ask_label = settings.ask_label
        if "collection_mode" in changed:
            self.runner.set_mode(settings.collection_mode)
        self.runner.machine.task_prompt = settings.prompt
        self.builder.prompt = settings.prompt
        self.builder.state_timeout_s = settings.state_timeout_s
        self.builder.send_images = self.p["send_images"]
        self.builder.image_size = (self.p["image_width"], self.p["image_height"])
        self.get_logger().info(f"parameters changed: {changed} (policy settings apply at the next episode)")

    def close(self) -> None:
        self.runner.close()


def main(args: list[str] | None = None) -> int:
    # the policy client and rsync step log through Python logging: same shape as the node's lines
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [hil_session.%(name)s]: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    return_large_buffers()  # images and observation frames unmapped when freed: a flat memory line over a day
    # Ctrl+C is the session's own: rclpy's handler would shut the context down before the episode is saved.
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        try:
            node = HilSessionNode()
        except ValueError as exc:
            print(f"hil_session: {exc}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
        spinner.start()
        signals: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            signals.append(signum)
            if len(signals) == 1:
                node.runner.interrupt()
            else:
                node.runner.force_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        try:
            node.runner.start()
            while not node.runner.done.wait(0.2):
                pass
            if node.runner.exit_reason:
                node.get_logger().info(f"hil_session: exiting ({node.runner.exit_reason})")
                time.sleep(0.3)  # the final status ("Saved: ...") reaches the console before the node goes
        finally:
            node.close()
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
