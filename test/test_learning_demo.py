"""The learning demo: the reach task, the simulated person, the sample weighting, and a shortened
``h1-training demo`` end to end (server epoch watcher, keypoint policy, model_comparison A/B)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from foxglove_ws import FoxgloveClient

from h1_training.procs import resolve_executable
from h1_training.recording.inspect import inspect_path
from h1_training.robot_model import ARM_HOME_RAD
from h1_training.sim.reach_task import (
    ImperfectOperator,
    OperatorConfig,
    SuccessCheck,
    TaskConfig,
    episode_rng,
    grasp_point,
    hand_position,
    partial_credit,
    reach_pose,
    sample_object,
)
from h1_training.sim.rollout import SimRollout
from h1_training.training.trainer import frame_weights
from h1_training.workflow.sim_learning import evaluate_checkpoints


def test_objects_vary_per_episode_and_repeat_per_seed():
    a = [sample_object(episode_rng(3, i)) for i in range(5)]
    b = [sample_object(episode_rng(3, i)) for i in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({tuple(np.round(x, 4)) for x in a}) == 5
    assert not np.array_equal(sample_object(episode_rng(4, 0)), a[0])


def test_reach_pose_puts_the_hand_on_the_grasp_point_across_the_range():
    for i in range(8):
        goal = grasp_point(sample_object(episode_rng(0, i)))
        assert np.linalg.norm(hand_position(reach_pose(goal)) - goal) < 0.005


def test_success_needs_the_whole_hold_inside_the_tolerance():
    check = SuccessCheck(TaskConfig(tolerance_m=0.05, hold_s=0.5))
    assert not check.update(0.0, 0.04)
    assert not check.update(0.4, 0.04)
    assert not check.update(0.42, 0.06)  # left the tolerance: the hold starts over
    assert not check.update(0.5, 0.03)
    assert not check.update(0.98, 0.03)
    assert check.update(1.0, 0.03) and check.time_to_success_s == pytest.approx(0.5)


def test_partial_credit_ranks_a_success_above_any_miss_and_a_near_miss_above_a_far_one():
    task = TaskConfig(tolerance_m=0.05)
    assert partial_credit(True, 0.01, task) == 1.0
    near, mid, far = (partial_credit(False, d, task) for d in (0.04, 0.15, 0.30))
    assert near == pytest.approx(0.9) and 0 < mid < near and far == 0.0  # 0 at 25 cm past the tolerance
    assert partial_credit(False, 2.0, task) == 0.0


def _person(**kw) -> ImperfectOperator:
    cfg = OperatorConfig(reaction_s=0.3, reaction_jitter_s=0.0, **kw)
    return ImperfectOperator(cfg, TaskConfig(), sample_object(episode_rng(0, 0)), np.random.default_rng(0))


def test_person_stops_a_policy_that_moves_away_after_the_reaction_delay():
    person = _person()
    t, took = 0.0, None
    for k in range(200):
        t = k / 50
        d = 0.40 - 0.1 * t if t < 1.0 else 0.30 + 0.2 * (t - 1.0)  # closer, then away
        why = person.watch(t, d)
        if why:
            took = t
            break
    assert took is not None and "away" in why
    decided = person.decided_at
    assert decided is not None and 1.0 < decided < 1.4 and took == pytest.approx(decided + 0.3, abs=0.021)


def test_person_stops_a_stalled_policy_and_leaves_a_progressing_one_alone():
    stalled, moving = _person(), _person()
    for k in range(150):
        t = k / 50
        assert not moving.watch(t, max(0.06, 0.5 - 0.15 * t)) or t > 3.9
        stalled.watch(t, 0.3)
    assert stalled.decided_at is not None and "stalled" in stalled.reason
    assert moving.decided_at is None


def test_person_guides_the_arm_to_the_object_in_damping():
    rollout = SimRollout(image_wh=(64, 48))
    for i in range(3):
        rng = episode_rng(1, i)
        obj = sample_object(rng)
        result = rollout.run(obj, None, ImperfectOperator(OperatorConfig(), rollout.task, obj, rng))
        assert result.success and result.intervened and result.human_frames == result.frames
        assert result.final_distance_m <= rollout.task.tolerance_m


def test_a_policy_that_stays_home_fails_and_a_person_rescues_it():
    rollout = SimRollout(image_wh=(64, 48))
    obj = sample_object(episode_rng(0, 1))
    home = lambda obs: np.tile(ARM_HOME_RAD, (10, 1))  # noqa: E731
    alone = rollout.run(obj, home, None)
    assert not alone.success and not alone.intervened and alone.frames == 301
    rng = episode_rng(0, 1)
    helped = rollout.run(obj, home, ImperfectOperator(OperatorConfig(), rollout.task, obj, rng))
    assert helped.intervened and helped.success and not helped.policy_success
    assert 0 < helped.human_frames < helped.frames and "stalled" in helped.takeover_reason


def test_frame_weights_up_weight_corrections_and_drop_the_frames_before_a_takeover():
    human = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 1] + [0, 0, 1, 1])
    w = frame_weights(human, len(human), 3.0, [(0, 10), (10, 14)], pre_intervention=2)
    assert w.tolist() == [1, 1, 0, 0, 3, 3, 1, 0, 0, 3] + [0, 0, 3, 3]


def test_demo_refuses_bad_learning_settings_with_the_reason(tmp_path):
    for flag, value, reason in (("--lr", "0", "lr must be in (0, 1]"),
                                ("--pre-intervention-s", "-1", "pre_intervention_s and exec_index must be >= 0"),
                                ("--action-lookahead-s", "0", "action_lookahead_s must be in (0, 2] s"),
                                ("--image-size", "96", "--image-size: expected WIDTHxHEIGHT"),
                                ("--image-size", "8x6", "image_wh must be within")):
        out = subprocess.run(resolve_executable("h1-training") + ["demo", flag, value, "--run-dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and reason in out.stderr, out.stderr
        assert not any(tmp_path.iterdir())


@pytest.mark.timeout(1500)
def test_short_demo_learns_from_corrections_end_to_end(tmp_path, domain_id):
    """The shortened demo: 4 demonstrations, 2 HIL epochs, the server trains and hot-swaps, the last model beats
    the first on the seeded evaluation episodes, the A/B runs through model_comparison."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        resolve_executable("h1-training") + [
            "demo", "--epochs", "2", "--episodes", "6", "--eval-episodes", "12", "--train-steps", "400",
            "--ab-trials", "6", "--run-dir", str(run_dir), "--domain", str(domain_id), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        _operator_view_follows_the_run(err_lines, proc)
        stdout = proc.stdout.read()  # stderr is the reader thread's alone
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    stderr = "".join(err_lines)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-6000:]
    summary = json.loads(out.stdout)
    rows = summary["epochs"]
    assert [r["epoch"] for r in rows] == [0, 1, 2], out.stderr[-6000:]
    for key in ("success_rate", "ci_low", "ci_high", "intervention_rate", "human_frames", "train_loss", "train_s"):
        assert all(r[key] is not None for r in rows), key
    assert rows[0]["intervention_rate"] == 1.0 and rows[1]["intervention_rate"] > 0
    assert rows[-1]["success_rate"] > rows[0]["success_rate"], rows
    assert len({r["model_id"] for r in rows}) == 3  # a new model served after every epoch
    ab = summary["ab"]
    assert ab is not None and 0 <= ab["p_value"] <= 1 and ab["trials"] >= 2 and ab["winner"] in ("first", "last",
                                                                                                    "none")
    assert summary["plot"] and (run_dir / "robot" / "learning_curve.png").is_file()
    assert summary["inspect"]["episodes"] == 4 + 12 == summary["inspect"]["valid"]
    assert summary["inspect"]["synced_identical"] == 16
    for epoch in (0, 1, 2):
        report = inspect_path(run_dir / "robot" / f"training_session_epoch{epoch}")
        assert all(ep.valid for ep in report.episodes)
        trials = json.loads((run_dir / "evaluation" / f"epoch_{epoch}.json").read_text())["trials"]
        assert len(trials) == 12 and all((t["score"] == 1.0) == t["success"] for t in trials)
    # partial credit on the run's real checkpoints: the first and the last model replayed on fresh episodes
    outcomes = evaluate_checkpoints(run_dir, 6)
    assert [len(outcomes[k]["trials"]) for k in ("first", "last")] == [6, 6]
    assert (outcomes["first"]["model_id"], outcomes["last"]["model_id"]) == (rows[0]["model_id"],
                                                                             rows[-1]["model_id"])
    assert json.loads((run_dir / "ab_checkpoint_outcomes.json").read_text()) == outcomes


def _operator_view_follows_the_run(err_lines: list[str], proc: subprocess.Popen) -> None:
    """`make demo` starts the operator's view beside the loop: the Foxglove gateway and the web app print where to
    connect, and both show the run as it goes -- the web page the training job the server's epoch watcher started
    by itself (through the workflow manager) and the recorded episodes (through the dataset manager); the gateway
    advertises the seed's services and the dataset list."""
    def line_with(text: str) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = [x for x in list(err_lines) if text in x]
            if found:
                return found[0]
            assert proc.poll() is None, "".join(err_lines)[-6000:]
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} line: " + "".join(err_lines)[-6000:])

    ws_url = line_with("Foxglove: open connection ws://").split("open connection ", 1)[1].split()[0]
    web_url = line_with("web training interface: http://").rsplit(" ", 1)[1].strip()
    assert ws_url.startswith("ws://127.0.0.1:") and web_url.startswith("http://127.0.0.1:")
    client = FoxgloveClient(ws_url)
    try:
        assert client.service("/training_workflow/trigger_training")
        assert client.channel("/lerobot/dataset_list")
    finally:
        client.close()
    deadline = time.monotonic() + 600
    state: dict = {}
    while time.monotonic() < deadline:
        state = httpx.get(f"{web_url}/api/state", timeout=10).json()
        trainer, datasets = state.get("trainer") or {}, (state.get("datasets") or {}).get("datasets") or []
        if trainer.get("origin") == "server" and trainer.get("job_id") and datasets and datasets[0]["num_episodes"]:
            break
        assert proc.poll() is None, "".join(err_lines)[-6000:]
        time.sleep(1.0)
    else:
        raise AssertionError(f"the web app never showed the server's job and the episodes: {state}")
    assert trainer["policy_type"] == "keypoint" and "auto-train" in trainer["message"]
    assert datasets[0]["name"] == "training_session_epoch0"
