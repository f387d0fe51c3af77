"""/lerobot/start_data_collection against the running session: the sim profile (emulated robot, real drivers,
recorder, training_workflow_manager), ``h1-training serve`` and ``hil_session``, as in test_hil_session. The
manager sets the session's collection mode and presses the keys between episodes; the test is the operator
(s, label, e) and, for teleoperation, the teleop rig publishing ``/teleop/arm_target``. The episode files, the arm's
mode topic and ``/arm_command`` tell what happened."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_hil_session import assert_policy_ticks, in_state, press, start_hil, wait_status

from h1_training.drivers.arm_safety import SafetyConfig
from h1_training.nodes.common import COMMAND_QOS
from h1_training.recording.layout import read_episode
from h1_training.robot_model import ARM_HOME_RAD
from h1_training_interfaces.msg import ArmCommand
from h1_training_interfaces.srv import StartDataCollection

SAFE_UPPER = SafetyConfig().safe_upper
SAFE_LOWER = SafetyConfig().safe_lower


def collect(probe, mode: str, episodes: int) -> None:
    deadline = time.monotonic() + 30
    # the manager sees the session once discovery has matched its status topic and services; a restarted session's
    # parameter service may still be the dead one's in the manager's graph (no reply): the operator asks again
    retry = ("no hil_session running", "no reply from hil_session")
    while True:
        r = probe.call(StartDataCollection, "/lerobot/start_data_collection",
                       StartDataCollection.Request(mode=mode, target_episodes=episodes), timeout=30)
        if r.success or not any(s in r.message for s in retry) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.success, r.message
    assert r.message.startswith(f"{mode}: 0/{episodes}"), r.message


@pytest.fixture
def hil(procs, probe, tmp_path):
    return start_hil(procs, probe, tmp_path, with_nodes=("training_workflow_manager",))


def next_mode(modes, name: str, timeout: float = 10.0):
    """Wait for the arm's next switch to ``name`` (the capture keeps every mode since the start)."""
    seen = sum(1 for m in list(modes.messages) if m.data == name)
    return lambda: modes.wait(seen + 1, timeout=timeout, where=lambda m: m.data == name)


def restart_session(hil, procs, probe) -> None:
    """A new hil_session (the last collection ended in WAITING for newer weights): READY for epoch 0 again."""
    assert procs.stop_one(hil.session, timeout=20) == 0, hil.session.output()[-3000:]
    args = hil.session.argv[hil.session.argv.index("--ros-args"):]
    hil.session = procs.start_executable("hil_session", "hil_session", args)
    hil.status.clear()


def test_policy_then_kinesthetic_collection_records_through_the_session(hil, probe, procs):
    st = hil.status
    i, _ = wait_status(st, in_state("READY"), timeout=60)
    collect(probe, "policy", 1)
    # the manager pressed y: the policy drives; the operator stops, labels and saves
    i, _ = wait_status(st, lambda m: m.state_name == "EXECUTING" and m.policy_frames >= 40, timeout=30, after=i)
    press(probe, "s")
    i, _ = wait_status(st, in_state("LABELING"), timeout=15, after=i)
    press(probe, "y")
    i, _ = wait_status(st, lambda m: m.state_name == "DAMPING" and m.human_frames >= 10, timeout=30, after=i)
    press(probe, "e")
    # target reached: the manager answers DECIDING with n (finish and sync), the session waits for new weights
    i, done = wait_status(st, in_state("WAITING"), timeout=60, after=i)
    policy_file = Path(done.last_episode_path)
    ep = read_episode(policy_file, with_images=False)
    assert_policy_ticks(ep, 30)
    assert int(ep.attrs["success"]) == 1

    restart_session(hil, procs, probe)
    i, _ = wait_status(st, in_state("READY"), timeout=60)
    damping = next_mode(hil.modes, "DAMPING")
    collect(probe, "kinesthetic", 1)
    damping()
    i, msg = wait_status(st, lambda m: m.state_name == "DAMPING" and m.human_frames >= 50, timeout=30, after=i)
    assert not msg.policy_running and msg.arm_mode == "DAMPING"
    press(probe, "e")
    i, done = wait_status(st, in_state("WAITING"), timeout=60, after=i)
    path = Path(done.last_episode_path)
    assert path != policy_file and path.is_file()
    ep = read_episode(path, with_images=False)
    assert len(ep.phase) >= 50 and set(ep.phase) == {"human"}  # no policy ever drove it
    assert np.all(ep.action == 0) and set(ep.model_version) == {""}
    assert hil.modes.last().data == "HOLD"


def test_teleoperation_collection_clamps_targets_and_holds_when_they_stop(hil, probe, procs):
    st = hil.status
    commands = probe.capture(ArmCommand, "/arm_command", COMMAND_QOS)
    rig = probe.publisher(ArmCommand, "/teleop/arm_target", COMMAND_QOS)
    target = ARM_HOME_RAD.copy()
    target[0] = SAFE_UPPER[0] + 1.0        # left shoulder pitch far past its limit: must be clamped
    sending = threading.Event()
    sending.set()
    quit_rig = threading.Event()

    def run_rig() -> None:  # the teleop rig at 50 Hz
        while not quit_rig.wait(0.02):
            if sending.is_set():
                rig.publish(ArmCommand(position_rad=target.tolist(), source="vr"))

    thread = threading.Thread(target=run_rig, daemon=True)
    thread.start()
    try:
        i, _ = wait_status(st, in_state("READY"), timeout=60)
        collect(probe, "teleoperation", 1)
        i, msg = wait_status(st, lambda m: m.state_name == "EXECUTING" and m.policy_frames >= 50, timeout=30,
                             after=i)
        assert msg.model_version == "teleop" and "e: end and save" in msg.prompt
        hil.modes.wait(where=lambda m: m.data == "TRACK", timeout=10)
        relayed = commands.wait(where=lambda m: m.source == "teleop", timeout=10)
        assert relayed.model_version == "teleop"
        assert np.isclose(relayed.position_rad[0], SAFE_UPPER[0])  # the safety clamp, not the raw target
        assert np.allclose(relayed.position_rad[1:], np.clip(target, SAFE_LOWER, SAFE_UPPER)[1:])

        # the rig stops: the watchdog holds the arm; it comes back: TRACK again
        hold, track = next_mode(hil.modes, "HOLD"), next_mode(hil.modes, "TRACK")
        sending.clear()
        hold()
        assert st.last().state_name == "EXECUTING"  # the episode goes on
        sending.set()
        track()
        i, _ = wait_status(st, lambda m: m.state_name == "EXECUTING" and m.policy_frames >= 100, timeout=30,
                           after=i)
        press(probe, "e")
        i, done = wait_status(st, in_state("WAITING"), timeout=60, after=i)
    finally:
        quit_rig.set()
        thread.join(2)
    ep = read_episode(Path(done.last_episode_path), with_images=False)
    model = np.array(ep.model_version)
    tele = model == "teleop"
    assert tele.sum() >= 80
    assert np.all(ep.action[tele] <= SAFE_UPPER + 1e-6) and np.all(ep.action[tele] >= SAFE_LOWER - 1e-6)
    assert np.isclose(ep.action[tele][-1, 0], SAFE_UPPER[0], atol=1e-5)
    # the arm went where the operator's rig pointed, as far as the clamp allows
    assert ep.qpos[-1, 0] > ep.qpos[0, 0] + 0.3, (ep.qpos[0, 0], ep.qpos[-1, 0])
    lines = [line for m in list(st.messages) for line in m.lines]
    assert any("no teleoperation target for" in line for line in lines), lines
    assert hil.modes.last().data == "HOLD"
