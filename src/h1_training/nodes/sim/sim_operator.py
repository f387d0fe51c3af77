"""sim_operator: the scripted operator of the simulated session. Two modes (parameter ``mode``):

``session``: only the operator of a running ``hil_session`` (the full loop of ``h1-training demo``). It watches
``hil_session/status`` and presses keys through ``hil_session/command`` like a person at hil_console: y in READY,
s after ``policy_seconds`` of TRACK, y/n in LABELING (did the arms reach the right pose?), guides the arms by hand
(``sim/operator_hand``) toward the right pose in DAMPING for ``human_seconds`` and holds them there, e, then in
DECIDING y for another episode or n to finish the epoch (the session syncs it), for ``epochs`` epochs of
``episodes`` episodes; then it waits for the weights trained on the last epoch (READY with a newer epoch) and
presses Ctrl+C. Between episodes it puts the arms back home by hand (``arm/set_mode`` DAMPING, then HOLD), as a
person resets the scene; the recorder is not running then. The decisions are ``sim/operator_script.py``'s
SessionOperator. Exits 0 when all epochs were done and the session stopped, 1 with the reason otherwise.

``direct`` (default): session and operator in one, without hil_session (``h1-training demo --direct``). Per
episode it does what a person does with the H1 seed: start recording, let the "policy" drive the arms in TRACK,
stop it ('s': DAMPING), guide the arms by hand (through h1_sim's operator-hand input, which moves the arms only
in damping), save ('e', still in damping, as in the seed: DAMPING -> SAVING), then HOLD. It talks to the real
nodes over ROS: `arm/set_mode` (SetArmMode), `arm_command` (ArmCommand), `episode_recorder/start|save`,
and to h1_sim's `sim/operator_hand`. It exits 0 after ``episodes`` episodes were saved, 1 on any failure (with
the reason in the log).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from h1_training.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    ParamsMixin,
    call_service,
    run_script_node,
)
from h1_training.params import param
from h1_training.rates import Ticker
from h1_training.robot_model import ARM_HOME_RAD, ARM_JOINT_NAMES
from h1_training.sim.operator_script import HOME_TOL_RAD, OperatorScript, SessionOperator, reset_target
from h1_training_interfaces.msg import ArmCommand, SessionStatus
from h1_training_interfaces.srv import SaveEpisode, SessionCommand, SetArmMode, StartEpisode


@dataclass
class SimOperatorParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    mode: str = param("direct", "direct: play session and operator (no hil_session); session: only the "
        "operator of a running hil_session, through its command service", choices=("direct", "session"), read_only=True)
    episodes: int = param(1, "direct: episodes to run before exiting; session: episodes per epoch", min=1, max=1000)
    epochs: int = param(2, "session: epochs to run, then Ctrl+C", min=1, max=1000)
    session: str = param("hil_session", "session: name of the hil_session node (command service, status)")
    reset_home: bool = param(True, "session: put the arms back home by hand between episodes")
    reset_seconds: float = param(2.0, "session: time to guide the arms home [s]", min=0.5, max=60.0)
    wait_final_weights: bool = param(True, "session: after the last epoch, wait for the weights trained on it "
        "(READY with a newer epoch) before Ctrl+C")
    stall_timeout_s: float = param(120.0, "session: give up when waiting for weights or a sync takes longer [s]",
        min=1.0, max=86400.0)
    call_timeout_s: float = param(30.0, "session: how long to wait for the session's reply to a key [s]", min=1.0,
        max=600.0)
    epoch: int = param(1, "epoch folder the episodes are recorded into", min=0)
    policy_seconds: float = param(6.0, "time under (scripted) policy control per episode [s]", min=0.5, max=600.0)
    human_seconds: float = param(6.0, "time under operator (damping) control per episode [s]", min=0.5, max=600.0)
    rate_hz: float = param(50.0, "command rate [Hz]", min=5.0, max=500.0)
    prompt: str = param("pick up the object", "task text stored with each episode")
    model_version: str = param("scripted-v0", "model version written with policy commands")
    startup_timeout_s: float = param(60.0, "how long to wait for the arm and recorder [s]", min=1.0, max=600.0)


class SimOperator(ParamsMixin, Node):
    PARAMS = SimOperatorParams

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
        self._statuses: deque[SessionStatus] = deque()
        if self.p["mode"] == "session":
            name = self.p["session"].strip("/")
            self.command_client = self.create_client(SessionCommand, f"{name}/command")
            self.create_subscription(SessionStatus, f"{name}/status", self._on_status, STATUS_QOS)

    def _on_status(self, msg: SessionStatus) -> None:
        self._statuses.append(msg)  # handled in order by the operator's loop (run_session)

    def _on_mode(self, msg: String) -> None:
        self.arm_mode = msg.data

    def _on_state(self, msg: JointState) -> None:
        if len(msg.position) == len(ARM_JOINT_NAMES):
            self.latest_q = np.asarray(msg.position, dtype=np.float64)

    # --- blocking helpers (run from the main thread while an executor spins in the background) ----------
    def _call(self, client, request, what: str, timeout: float = 10.0):
        return call_service(client, request, timeout, what)  # ServiceCallError is a RuntimeError

    def _set_mode(self, mode: int, name: str) -> None:
        reply = self._call(self.mode_client, SetArmMode.Request(mode=mode), f"set arm mode {name}")
        if not reply.success:
            raise RuntimeError(f"arm refused mode {name}: {reply.message}")

    def _wait_for_arm(self) -> bool:
        deadline = time.monotonic() + self.p["startup_timeout_s"]
        while self.latest_q is None:
            if time.monotonic() > deadline:
                self.get_logger().error("no joint_states from h1_arm_node: is the arm node (and h1_sim) running?")
                return False
            time.sleep(0.05)
        return True

    def run(self) -> int:
        return self.run_session() if self.p["mode"] == "session" else self.run_episodes()

    # --- session mode: the operator of hil_session ----------------------------------------------------------
    def _publish_hand(self, target: np.ndarray) -> None:
        hand = JointState(name=list(ARM_JOINT_NAMES), position=target.tolist())
        hand.header.stamp = self.get_clock().now().to_msg()
        self.hand_pub.publish(hand)

    def _reset_arms(self) -> None:
        """Put the arms back home by hand: DAMPING, pull them home, HOLD (between episodes, nothing records)."""
        self._set_mode(SetArmMode.Request.MODE_DAMPING, "DAMPING")
        start, reset_s = self.latest_q.copy(), self.p["reset_seconds"]
        ticker = Ticker(self.p["rate_hz"])
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < reset_s:
            self._publish_hand(reset_target(t, start, reset_s))
            ticker.wait()
        self._set_mode(SetArmMode.Request.MODE_HOLD, "HOLD")
        off = float(np.max(np.abs(self.latest_q - ARM_HOME_RAD)))
        if off > HOME_TOL_RAD:
            self.get_logger().warning(f"[operator] arms {off:.2f} rad from home after the reset")

    def run_session(self) -> int:
        log = self.get_logger()
        p = self.p
        plan = SessionOperator(epochs=p["epochs"], episodes_per_epoch=p["episodes"], policy_s=p["policy_seconds"],
                               human_s=p["human_seconds"], reset_home=p["reset_home"],
                               wait_final_weights=p["wait_final_weights"], stall_s=p["stall_timeout_s"])
        if not self._wait_for_arm():
            return 1
        if not self.command_client.wait_for_service(timeout_sec=p["startup_timeout_s"]):
            log.error(f"[operator] no {self.command_client.srv_name} service: is hil_session running?")
            return 1
        log.info(f"[operator] at the console: {plan.epochs} epoch(s) x {plan.episodes_per_epoch} episode(s), "
                 f"{plan.policy_s:g} s policy, {plan.human_s:g} s correction per episode")
        ticker = Ticker(p["rate_hz"])
        while True:
            ticker.wait()
            now = time.monotonic()
            while self._statuses:
                msg = self._statuses.popleft()
                plan.observe(msg.state_name, msg.epoch, msg.episodes_saved, tuple(msg.allowed_keys), now)
            step = plan.step(now, None if self.latest_q is None else self.latest_q.copy(), self.arm_mode)
            if step.note:
                log.info(f"[operator] {plan.state}: {step.note}" + (f" -> '{step.key}'" if step.key else ""))
            if step.hand is not None:
                self._publish_hand(step.hand)
            try:
                if step.reset:
                    self._reset_arms()
                    plan.arms_reset()
                if step.key:
                    reply = self._call(self.command_client, SessionCommand.Request(key=step.key),
                                       f"key {step.key!r}", timeout=p["call_timeout_s"])
                    plan.pressed(step.key, reply.accepted, time.monotonic())
                    if not reply.accepted:
                        log.warning(f"[operator] '{step.key}' refused: {reply.message}")
            except RuntimeError as exc:
                log.error(f"[operator] FAILED: {exc}")
                return 1
            if step.done:
                if step.error:
                    log.error(f"[operator] FAILED: {step.error}")
                    return 1
                labels = "".join("y" if x else "n" for x in plan.labels)
                log.info(f"[operator] done: epochs {plan.epochs_done} finished, labels {labels} (y = reached)")
                return 0

    # --- direct mode: session and operator in one ----------------------------------------------------------
    def run_episodes(self) -> int:
        log = self.get_logger()
        if not self._wait_for_arm():
            return 1
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
        ticker = Ticker(self.p["rate_hz"])
        t0 = time.monotonic()
        handover: np.ndarray | None = None
        while True:
            ticker.wait()
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
    return run_script_node(SimOperator, args)


