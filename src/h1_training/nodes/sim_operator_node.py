"""sim_operator: the scripted operator of the simulated session.

Per episode it does what a person does with the H1 seed: start recording, let the "policy" drive the arms in
TRACK, stop it ('s': DAMPING), guide the arms by hand (through h1_sim's operator-hand input, which moves the
arms only in damping), save ('e', still in damping, as in the seed: DAMPING -> SAVING), then HOLD. It talks to
the real nodes over ROS: `arm/set_mode` (SetArmMode), `arm_command` (ArmCommand), `episode_recorder/start|save`,
and to h1_sim's `sim/operator_hand`. It exits 0 after ``episodes`` episodes were saved, 1 on any failure (with
the reason in the log).
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from h1_training.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, ParamsMixin
from h1_training.params import ParamSpec
from h1_training.robot_model import ARM_JOINT_NAMES
from h1_training.sim.operator_script import OperatorScript
from h1_training_interfaces.msg import ArmCommand
from h1_training_interfaces.srv import SaveEpisode, SetArmMode, StartEpisode


class SimOperator(ParamsMixin, Node):
    PARAMS = (
        ParamSpec("episodes", 1, "episodes to run before exiting", min=1, max=1000),
        ParamSpec("epoch", 1, "epoch folder the episodes are recorded into", min=0),
        ParamSpec("policy_seconds", 6.0, "time under (scripted) policy control per episode [s]", min=0.5, max=600.0),
        ParamSpec("human_seconds", 6.0, "time under operator (damping) control per episode [s]", min=0.5, max=600.0),
        ParamSpec("rate_hz", 50.0, "command rate [Hz]", min=5.0, max=500.0),
        ParamSpec("prompt", "pick up the object", "task text stored with each episode"),
        ParamSpec("model_version", "scripted-v0", "model version written with policy commands"),
        ParamSpec("startup_timeout_s", 60.0, "how long to wait for the arm and recorder [s]", min=1.0, max=600.0),
    )

    def __init__(self) -> None:
        super().__init__("sim_operator")
        self.declare_specs()
        self.cmd_pub = self.create_publisher(ArmCommand, "arm_command", COMMAND_QOS)
        self.hand_pub = self.create_publisher(JointState, "sim/operator_hand", COMMAND_QOS)
        self.mode_client = self.create_client(SetArmMode, "arm/set_mode")
        self.start_client = self.create_client(StartEpisode, "episode_recorder/start")
        self.save_client = self.create_client(SaveEpisode, "episode_recorder/save")
        self.latest_q: np.ndarray | None = None
        self.create_subscription(JointState, "joint_states", self._on_state, SENSOR_QOS)
        self.arm_mode = ""
        self.create_subscription(String, "arm/mode", self._on_mode, LATCHED_QOS)
        self.exit_code: int | None = None

    def _on_mode(self, msg: String) -> None:
        self.arm_mode = msg.data

    def _on_state(self, msg: JointState) -> None:
        if len(msg.position) == len(ARM_JOINT_NAMES):
            self.latest_q = np.asarray(msg.position, dtype=np.float64)

    # --- blocking helpers (run from the main thread while an executor spins in the background) ----------
    def _call(self, client, request, what: str, timeout: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{what}: service {client.srv_name} not available after {timeout:.0f}s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: no reply from {client.srv_name} in {timeout:.0f}s")
            time.sleep(0.01)
        return future.result()

    def _set_mode(self, mode: int, name: str) -> None:
        reply = self._call(self.mode_client, SetArmMode.Request(mode=mode), f"set arm mode {name}")
        if not reply.success:
            raise RuntimeError(f"arm refused mode {name}: {reply.message}")

    def run_episodes(self) -> int:
        log = self.get_logger()
        deadline = time.monotonic() + self.p["startup_timeout_s"]
        while self.latest_q is None:
            if time.monotonic() > deadline:
                log.error("no joint_states from h1_arm_node: is the arm node (and h1_sim) running?")
                return 1
            time.sleep(0.05)
        for i in range(self.p["episodes"]):
            try:
                path = self._run_one(i)
            except RuntimeError as exc:
                log.error(f"episode {i} failed: {exc}")
                return 1
            log.info(f"episode {i + 1}/{self.p['episodes']} saved: {path}")
        return 0

    def _run_one(self, i: int) -> str:
        log = self.get_logger()
        script = OperatorScript(self.p["policy_seconds"], self.p["human_seconds"], self.latest_q.copy())
        start = self._call(self.start_client, StartEpisode.Request(epoch=self.p["epoch"], episode_index=-1,
                                                                   prompt=self.p["prompt"]), "start recording")
        if not start.success:
            raise RuntimeError(f"recorder refused to start: {start.message}")
        log.info(f"[EXECUTING] recording {start.file_path}; policy drives the arms for {script.policy_s:.1f}s")
        self._set_mode(SetArmMode.Request.MODE_TRACK, "TRACK")
        period = 1.0 / self.p["rate_hz"]
        t0 = time.monotonic()
        handover: np.ndarray | None = None
        next_tick = t0
        while True:
            t = time.monotonic() - t0
            if t >= script.duration_s:
                break
            if script.phase(t) == "policy":
                if self.arm_mode == "HOLD" and t > 0.5:
                    # the arm's command watchdog fired (a late command on a loaded machine): say so, resume
                    log.warning("arm fell back to HOLD (command watchdog); the operator re-enables TRACK")
                    self._set_mode(SetArmMode.Request.MODE_TRACK, "TRACK")
                    self.arm_mode = "TRACK"
                target = script.policy_target(t)
                msg = ArmCommand(position_rad=target.tolist(), model_version=self.p["model_version"], source="policy")
                msg.header.stamp = self.get_clock().now().to_msg()
                self.cmd_pub.publish(msg)
            else:
                if handover is None:
                    log.info("[DAMPING] operator pressed 's': arms in damping, guiding them by hand")
                    self._set_mode(SetArmMode.Request.MODE_DAMPING, "DAMPING")
                    handover = self.latest_q.copy()
                hand = JointState(name=list(ARM_JOINT_NAMES), position=script.operator_target(t, handover).tolist())
                hand.header.stamp = self.get_clock().now().to_msg()
                self.hand_pub.publish(hand)
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        # Save first, HOLD after: the recorder labels every non-damping frame "policy" with the last arm_command
        # as its action, so a frame recorded in HOLD here would pair the end pose with a seconds-old policy target.
        saved = self._call(self.save_client, SaveEpisode.Request(discard=False, success_label=1), "save episode")
        self._set_mode(SetArmMode.Request.MODE_HOLD, "HOLD")
        if not saved.success:
            raise RuntimeError(f"recorder could not save: {saved.message}")
        log.info(f"[SAVING] saved {saved.file_path}: {saved.frames} frames "
                 f"(policy {saved.policy_frames}, human {saved.human_frames})")
        return saved.file_path


def main(args=None) -> int:
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    code = 1
    with rclpy.init(args=args):
        node = SimOperator()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            code = node.run_episodes()
        except KeyboardInterrupt:
            code = 130
        finally:
            # stop the spinning thread before the node and context go away (else rclpy's C++ side aborts)
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            node.destroy_node()
    return code


