"""`h1-training demo`: the full human-in-the-loop loop on loopback (sim stack, hil_session, the scripted operator at
its console, `h1-training serve` auto-training on the synced epochs), judged from what it left on disk: the robot's
episodes, the GPU server's folder, its model registry and served-epoch history. Plus the operator's decisions
(sim/operator_script.SessionOperator) state by state, without ROS."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from h1_training.procs import resolve_executable
from h1_training.recording.inspect import inspect_path
from h1_training.recording.layout import SYNC_MARKER, read_episode
from h1_training.robot_model import ARM_HOME_RAD
from h1_training.serve.model_pool import STATE_FILE
from h1_training.sim.operator_script import (
    MAX_KEY_TRIES,
    POLICY_MISS_RAD,
    REACH_RAD,
    SYNC_RETRIES,
    SessionOperator,
)
from h1_training.training.registry import ModelRegistry


# --- the operator's decisions --------------------------------------------------------------------------------
class Console:
    """Feeds statuses to a SessionOperator and collects the keys it presses."""

    def __init__(self, op: SessionOperator) -> None:
        self.op, self.t, self.keys = op, 0.0, []

    def status(self, state: str, epoch: int = 1, saved: int = 0, allowed: tuple[str, ...] = ()) -> None:
        self.op.observe(state, epoch, saved, allowed, self.t)

    def run(self, seconds: float, q=None, arm: str = "HOLD", accept: bool = True):
        steps = []
        end = self.t + seconds
        while self.t < end:
            step = self.op.step(self.t, None if q is None else np.asarray(q, float), arm)
            steps.append(step)
            if step.key:
                self.keys.append(step.key)
                self.op.pressed(step.key, accept, self.t)
            if step.reset:
                self.op.arms_reset()
            self.t += 0.02
        return steps


def test_operator_runs_the_seed_flow_for_two_epochs_then_ctrl_c_on_the_final_weights():
    op = SessionOperator(epochs=2, episodes_per_epoch=2, policy_s=2.0, human_s=1.5)
    c = Console(op)
    home, miss = ARM_HOME_RAD, POLICY_MISS_RAD
    for epoch in (1, 2):
        for saved in (0, 1):
            c.status("READY", epoch, saved)
            steps = c.run(0.1, q=miss if saved else home)
            if saved:  # arms left at the corrected pose: put back home before the next episode
                assert steps[0].reset and not steps[0].key
            assert c.keys[-1] == "y"
            c.status("EXECUTING", epoch, saved)
            c.run(1.0, q=home, arm="HOLD")   # the policy has not got the arm yet: the clock has not started
            n = len(c.keys)
            c.run(1.9, q=miss, arm="TRACK")
            assert len(c.keys) == n, "pressed s before policy_s of TRACK"
            c.run(0.2, q=miss, arm="TRACK")
            assert c.keys[-1] == "s"
            c.status("LABELING", epoch, saved)
            c.run(0.1, q=miss if epoch == 1 else REACH_RAD + 0.02, arm="DAMPING")
            assert c.keys[-1] == ("n" if epoch == 1 else "y")
            c.status("DAMPING", epoch, saved)
            steps = c.run(1.4, q=miss, arm="DAMPING")
            assert all(s.hand is not None for s in steps) and c.keys[-1] != "e"
            # the hand ends at the right pose and stays there until the save
            assert np.allclose(steps[-1].hand, REACH_RAD)
            steps = c.run(0.2, q=REACH_RAD, arm="DAMPING")
            assert c.keys[-1] == "e"
            c.status("SAVING", epoch, saved)
            assert np.allclose(c.run(0.1)[-1].hand, REACH_RAD)
            c.status("DECIDING", epoch, saved + 1)
            c.run(0.1)
            assert c.keys[-1] == ("y" if saved == 0 else "n")
        c.status("SYNCING", epoch, 2)
        c.status("WAITING", epoch, 2)
        n = len(c.keys)
        c.run(2.0)
        assert len(c.keys) == n, "pressed a key while waiting for weights"
    assert op.epochs_done == [1, 2] and op.labels == [0, 0, 1, 1]
    c.status("READY", 3, 0)
    c.run(0.1, q=REACH_RAD)
    assert c.keys[-1] == "ctrl+c"
    c.status("STOPPED", 3, 0)
    step = op.step(c.t, None, "HOLD")
    assert step.done and not step.error
    assert c.keys.count("s") == 4 and c.keys.count("e") == 4


def test_operator_puts_a_faulted_arm_back_before_pressing_y():
    # rt/lowstate went silent before the episode: the arm latched FAULT and the session wants HOLD first
    op = SessionOperator(epochs=1, policy_s=1.0, human_s=1.0, reset_home=False)
    c = Console(op)
    c.status("READY", 0, 0)
    steps = c.run(0.1, q=ARM_HOME_RAD, arm="FAULT")
    assert steps[0].reset and "FAULT" in steps[0].note
    assert c.keys == ["y"]  # once the reset (DAMPING, home, HOLD) is done, not before
    assert steps.index(next(s for s in steps if s.key)) > 0


def test_operator_gives_up_with_a_reason():
    # a key the session keeps refusing
    op = SessionOperator(epochs=1, policy_s=1.0, human_s=1.0)
    c = Console(op)
    c.status("DECIDING", 1, 1)
    c.run(10.0, accept=False)
    assert c.keys == ["n"] * MAX_KEY_TRIES
    assert op.step(c.t, None, "HOLD").error.startswith("the session refused 'n'")
    # a sync that keeps failing: retried, then the operator stops
    op = SessionOperator(epochs=1, policy_s=1.0, human_s=1.0)
    c = Console(op)
    c.status("SYNCING", 1, 1)
    for _ in range(SYNC_RETRIES):
        c.status("SYNCING", 1, 1, ("y", "n"))
        c.run(0.1)
        c.status("SYNCING", 1, 1, ())
    assert c.keys == ["y"] * SYNC_RETRIES
    c.status("SYNCING", 1, 1, ("y", "n"))
    assert f"sync of epoch 1 failed {SYNC_RETRIES + 1} times" in op.step(c.t, None, "HOLD").error
    # failures are counted per epoch's sync: earlier epochs' failed-then-retried syncs do not add up (soak: the
    # operator gave up on its first failure in epoch 269 after rsync faults in earlier epochs)
    op = SessionOperator(epochs=1000, policy_s=1.0, human_s=1.0)
    c = Console(op)
    for epoch in (1, 2, 3):
        c.status("SYNCING", epoch, 1)
        for _ in range(SYNC_RETRIES):
            c.status("SYNCING", epoch, 1, ("y", "n"))
            c.run(0.1)
            c.status("SYNCING", epoch, 1, ())
        c.status("WAITING", epoch, 0)  # synced on the last retry
    c.status("SYNCING", 4, 1)
    c.status("SYNCING", 4, 1, ("y", "n"))
    step = op.step(c.t, None, "HOLD")
    assert not step.done and step.key == "y", step
    # no new weights
    op = SessionOperator(epochs=1, policy_s=1.0, human_s=1.0, stall_s=5.0)
    c = Console(op)
    c.status("WAITING", -1, 0)
    c.run(5.1)
    assert "no new weights from the policy server" in op.step(c.t, None, "HOLD").error
    # someone else stopped the session
    op = SessionOperator(epochs=2, policy_s=1.0, human_s=1.0)
    op.observe("STOPPED", 1, 0, (), 0.0)
    assert "stopped after 0 of 2 epoch(s)" in op.step(0.0, None, "HOLD").error


# --- the whole loop ------------------------------------------------------------------------------------------
def corrected_gap(path) -> float:
    """Max joint distance between where the policy left the arms and where the operator's correction ended."""
    ep = read_episode(path, with_images=False)
    phase = np.asarray(ep.phase)
    last_policy = np.flatnonzero(phase == "policy")[-1]
    assert phase[-1] == "human"
    return float(np.abs(ep.qpos[last_policy] - ep.qpos[-1]).max())


@pytest.mark.timeout(240)
def test_demo_runs_the_full_loop_and_the_policy_improves(tmp_path, domain_id):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        resolve_executable("h1-training") + [
            "demo", "--stack", "--epochs", "2", "--episodes", "1", "--policy-seconds", "3", "--human-seconds", "2",
            "--run-dir", str(run_dir), "--domain", str(domain_id), "--quiet", "--timeout", "180"],
        capture_output=True, text=True, timeout=230)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "[demo] done in" in out.stdout and "improvement:" in out.stdout
    # the sim_hil profile starts the Foxglove gateway (8765, or a free port when another stack holds 8765)
    assert "[demo] Foxglove: open connection ws://127.0.0.1:" in out.stdout and "h1-training-panels.foxe" in out.stdout

    robot, gpu, models = run_dir / "robot", run_dir / "gpu_server/data", run_dir / "gpu_server/models"
    # two epochs recorded by the robot side, one valid episode each, policy then human frames
    folders = sorted(p.name for p in robot.glob("training_session_epoch*"))
    assert folders == ["training_session_epoch1", "training_session_epoch2"]
    episodes = {}
    for epoch in (1, 2):
        report = inspect_path(robot / f"training_session_epoch{epoch}")
        assert len(report.episodes) == 1 and report.episodes[0].valid, report.episodes
        ep = report.episodes[0]
        assert ep.policy_frames >= 100 and ep.human_frames >= 60, (ep.policy_frames, ep.human_frames)
        episodes[epoch] = robot / f"training_session_epoch{epoch}" / "episode_0.hdf5"
        # synced to the "GPU server" byte for byte, with the marker that let it train
        remote = gpu / f"training_session_epoch{epoch}"
        assert (remote / "episode_0.hdf5").read_bytes() == episodes[epoch].read_bytes()
        assert (remote / SYNC_MARKER).is_file()

    # the server: the weak start (epoch 1), then one model per synced epoch, each hot-swapped in (epoch + 1)
    history = json.loads((models / STATE_FILE).read_text())
    assert history["epoch"] == 3
    swaps = [h["model_id"] for h in history["history"]]
    registry = {m.id: m for m in ModelRegistry(models).list()}
    trained_on = {m.dataset.get("data_epoch"): m for m in registry.values() if m.dataset.get("data_epoch")}
    assert set(trained_on) == {1, 2}
    assert swaps == [trained_on[1].id, trained_on[2].id]
    assert history["default_model"] == trained_on[2].id

    # epoch 2 ran on the model trained on epoch 1, whose reach target is where the operator left the arms
    ep1, ep2 = (read_episode(episodes[e], with_images=False) for e in (1, 2))
    drove = {e: {m for m, p in zip(ep.model_version, ep.phase) if p == "policy" and m}
             for e, ep in ((1, ep1), (2, ep2))}
    assert drove[2] == {trained_on[1].id} and trained_on[1].id not in drove[1]
    target = np.asarray(trained_on[1].metrics["target"])
    assert np.abs(target - ep1.qpos[-1]).max() < 1e-3
    assert np.abs(ep1.qpos[-1] - REACH_RAD).max() < 0.05, "the operator's correction did not reach the right pose"

    # the policy got better: its reach ends much closer to the operator's corrected pose in epoch 2
    gap1, gap2 = corrected_gap(episodes[1]), corrected_gap(episodes[2])
    assert gap1 > 0.25, gap1          # the weak policy stops short of the target and off to the side
    assert gap2 < 0.5 * gap1, (gap1, gap2)
    assert int(ep1.attrs["success"]) == 0  # the operator labelled the weak reach a failure

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["problems"] == [] and summary["start_epoch"] == 1 and summary["server_epoch"] == 3
