"""training_workflow_manager as a real process (parameters from the sim bring-up profile's file) against a real
``h1-training serve``, driven with the rclpy equivalents of the RoArm seed's commands:

    ros2 service call /training_workflow/trigger_training std_srvs/srv/Empty
    ros2 service call /training_workflow/start_auto_workflow std_srvs/srv/SetBool "data: true"
    ros2 topic echo /training_workflow/status | /lerobot/trainer_status | /lerobot/training_stats
    ros2 topic echo /lerobot/performance_analytics
    ros2 param set /training_workflow_manager workflow.<min_episodes_before_training|auto_train_enabled|
                                              training_trigger_interval_hours|auto_deploy_enabled> ...
    ros2 service call /lerobot/start_data_collection ...StartDataCollection "{mode: 'teleoperation', ...}"
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from std_srvs.srv import Empty, SetBool, Trigger

from h1_training.bringup import load_profile
from h1_training.nodes.common import LATCHED_QOS
from h1_training.policy.client import http_json
from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
from h1_training.procs import resolve_executable, wait_until
from h1_training.recording import layout as L
from h1_training.robot_model import ARM_HOME_RAD
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, make_episode
from h1_training_interfaces.msg import PerformanceAnalytics, TrainerStatus, TrainingStats, WorkflowStatus
from h1_training_interfaces.srv import DeployModel, StartDataCollection

pytestmark = pytest.mark.timeout(300)
NODE = "training_workflow_manager"
TARGET = np.array([-0.3, 0.6, 0.2, 0.5, 0.1, 0.0, 0.0, -0.3, -0.6, -0.2, 0.5, -0.1, 0.0, 0.0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_episode(root: Path, index: int, *, frames: int = 40, target: np.ndarray | None = None,
                  model: str = "synthetic-v0", success: int = -1, human: bool = True, epoch: int = 0) -> Path:
    ep = make_episode(frames, 32, 24, seed=index, human_span=(0.5, 0.7) if human else None)
    if target is not None:  # the arm reaches `target` the way the scripted policy would (an operator's demo)
        rng = np.random.default_rng(index)
        q = ARM_HOME_RAD + rng.normal(0, 0.05, 14)
        policy = ScriptedPolicy(ScriptedConfig(mode="reach", target=list(map(float, target))))
        rows = policy.infer({"state": q})["actions"]
        qpos = np.vstack([q, rows[: frames - 1]]).astype(np.float32)
        ep.qpos = qpos
        ep.action = np.vstack([qpos[1:], qpos[-1:]]).astype(np.float32)
        ep.action[np.array([p == "human" for p in ep.phase])] = 0.0
    ep.model_version = [model if p == "policy" else "" for p in ep.phase]
    ep.attrs[L.ATTR_SUCCESS] = success
    return L.write_episode(L.episode_path(root, epoch, index), ep)


def start_server(procs, port: int, models: Path, data: Path, *extra: str, name: str = "policy_server"):
    procs.start_executable(name, "h1-training", ["serve", "--port", str(port), "--models-dir", str(models),
                                                 "--data-dir", str(data), "--device", "cpu", *extra])
    procs.wait_for_line(name, lambda s: "listening on ws://" in s, timeout=90)


def start_manager(procs, port: int, data: Path, state: Path, *params: str, name: str = NODE):
    (profile_node,) = [n for n in load_profile("sim").nodes if n.name == NODE]
    argv = [*resolve_executable(NODE), "--ros-args"]
    for path in profile_node.params:  # the bring-up profile's parameter file, then this test's overrides
        argv += ["--params-file", str(path)]
    for p in (f"server.url:=http://127.0.0.1:{port}", f"workflow.data_dir:={data}", f"workflow.state_file:={state}",
              "workflow.poll_period_s:=0.5", "workflow.job_retry_s:=1.0", "status_period_s:=0.3", *params):
        argv += ["-p", p]
    return procs.start(name, argv)


def captures(probe):
    return (probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS),
            probe.capture(TrainerStatus, "/lerobot/trainer_status", LATCHED_QOS),
            probe.capture(TrainingStats, "/lerobot/training_stats", 10),
            probe.capture(PerformanceAnalytics, "/lerobot/performance_analytics", LATCHED_QOS))


def set_param(probe, name: str, value):
    return probe.set_parameter(NODE, name, value, timeout=15)


def test_seed_commands_count_trigger_live_stats_and_no_deploy_when_off(procs, probe, tmp_path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    for i in range(6):
        write_episode(data, i)
    port = free_port()
    start_server(procs, port, models, data)
    tiny = json.dumps(TINY_POLICY_OPTIONS["cnn_lstm"])
    status, trainer, stats, analytics = captures(probe)
    start_manager(procs, port, data, tmp_path / "state.json", "workflow.auto_train_enabled:=false",
                  "training.policy_type:=cnn_lstm", "training.steps:=40", "training.batch_size:=2",
                  "training.device:=cpu", f"training.hyperparameters_json:='{tiny}'",
                  "evaluation.frames_per_episode:=3")
    first = status.wait(where=lambda m: m.server_reachable, timeout=60)
    assert first.stage_name == "IDLE" and not first.auto_train_enabled and first.current_model_version == "scripted"
    assert first.min_episodes_before_training == 50 and first.training_trigger_interval_hours == 24.0
    assert first.episodes_collected == 6 and not first.server_in_charge

    # ros2 param set: the seed's four, at once; bad values refused with the reason
    assert set_param(probe, "workflow.min_episodes_before_training", 0).successful is False
    bad = set_param(probe, "training.policy_type", "transformer")
    assert not bad.successful and "act, diffusion, cnn_lstm" in bad.reason
    bad = set_param(probe, "training.hyperparameters_json", "[1, 2]")
    assert not bad.successful and "JSON object" in bad.reason
    assert set_param(probe, "workflow.auto_train_enabled", False).successful
    assert set_param(probe, "workflow.training_trigger_interval_hours", 0.0).successful
    assert set_param(probe, "workflow.auto_deploy_enabled", False).successful
    assert set_param(probe, "workflow.min_episodes_before_training", 5).successful
    assert status.wait(where=lambda m: m.min_episodes_before_training == 5, timeout=10).stage_name == "IDLE"

    # start_auto_workflow -> 6 new >= 5: a job starts (one episode of five held out) and its stats move
    res = probe.call(SetBool, "/training_workflow/start_auto_workflow", SetBool.Request(data=True), timeout=15)
    assert res.success, res.message
    running = trainer.wait(where=lambda m: m.state_name == "RUNNING", timeout=60)
    assert running.origin == "workflow_manager" and running.policy_type == "cnn_lstm"
    assert "6 new episodes >= min_episodes_before_training 5" in running.message
    # live stats while it runs (on a quiet machine the 40 steps may take a few seconds: one sample is what the
    # poll period guarantees, not two)
    b = stats.wait(where=lambda m: m.step > 0 and m.job_id == running.job_id, timeout=120)
    assert b.total_steps == 40 and 0 < b.step <= 40 and np.isfinite(b.loss) and b.learning_rate > 0
    st = status.wait(where=lambda m: m.episodes_held_out == 1 and m.stage_name == "TRAINING", timeout=10)
    assert st.current_job_id == running.job_id

    # finished -> evaluated on the held-out episode -> auto_deploy_enabled false: nothing deployed
    done = trainer.wait(where=lambda m: m.state_name == "SUCCEEDED", timeout=180)
    final = status.wait(where=lambda m: "auto_deploy_enabled is false" in m.message
                        or "kept undeployed" in m.message or "evaluation of" in m.message, timeout=120)
    assert "evaluation of" not in final.message, final.message
    assert http_json(f"http://127.0.0.1:{port}", None, "/training_status")["model_id"] == "scripted"
    assert final.current_model_version == "scripted" and final.episodes_collected == 0
    assert done.model_version and done.step == 40

    # manual trigger with nothing new still trains (the seed's manual path); the Empty reply says nothing,
    # the outcome is on the status topic
    probe.call(Empty, "/training_workflow/trigger_training", Empty.Request(), timeout=15)
    trainer.wait(where=lambda m: m.job_id != done.job_id and m.state_name in ("QUEUED", "RUNNING"), timeout=30)
    res = probe.call(Trigger, "/training_workflow/cancel_training", Trigger.Request(), timeout=15)
    assert res.success, res.message
    trainer.wait(where=lambda m: m.job_id != done.job_id and m.state_name == "CANCELLED", timeout=60)

    # /lerobot/start_data_collection: modes checked, the session is required
    r = probe.call(StartDataCollection, "/lerobot/start_data_collection",
                   StartDataCollection.Request(mode="dance", target_episodes=100), timeout=15)
    assert not r.success and "unknown mode" in r.message
    r = probe.call(StartDataCollection, "/lerobot/start_data_collection",
                   StartDataCollection.Request(mode="hil", target_episodes=100), timeout=15)
    assert not r.success and "no hil_session running" in r.message
    assert analytics.wait(timeout=10).model_version == "scripted"


def test_better_model_auto_deployed_then_degradation_and_rollback(procs, probe, tmp_path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    for i in range(8):  # demonstrations reaching TARGET; the server's first policy reaches elsewhere
        write_episode(data, i, target=TARGET, human=False)
    port = free_port()
    start_server(procs, port, models, data)
    status, trainer, _, analytics = captures(probe)
    start_manager(procs, port, data, tmp_path / "state.json", "workflow.min_episodes_before_training:=8",
                  "workflow.auto_deploy_enabled:=true", "workflow.holdout_every:=2", "training.policy_type:=scripted",
                  "evaluation.send_images:=false", "monitor.baseline_trials:=20")
    deployed = status.wait(where=lambda m: m.current_model_version not in ("", "scripted"), timeout=120)
    new = deployed.current_model_version
    assert deployed.previous_model_version == "scripted" and deployed.episodes_held_out == 4
    assert http_json(f"http://127.0.0.1:{port}", None, "/training_status")["model_id"] == new
    assert "deployed" in deployed.message

    # the deployed model's labelled outcomes: 20 at ~90 % (baseline), then 30 at ~25 %
    rng = np.random.default_rng(3)
    idx = 100
    for ok in (rng.random(20) < 0.9):
        write_episode(data, idx, frames=20, model=new, success=int(ok), human=False, epoch=1)
        idx += 1
    base = analytics.wait(where=lambda m: m.baseline_trials == 20 and m.cusum_threshold > 0, timeout=60)
    assert not base.degradation_detected and base.cusum_arl0 == 500.0
    for ok in (rng.random(30) < 0.25):
        write_episode(data, idx, frames=20, model=new, success=int(ok), human=True, epoch=1)
        idx += 1
    bad = analytics.wait(where=lambda m: m.degradation_detected, timeout=60)
    assert bad.cusum_statistic >= bad.cusum_threshold and "CUSUM" in bad.degradation_evidence
    assert any("degradation, roll back to scripted?" in r for r in bad.recommendations), bad.recommendations
    assert bad.recent_success_rate < bad.baseline_success_rate and bad.intervention_rate > 0
    assert status.wait(where=lambda m: m.degradation_detected, timeout=10)

    res = probe.call(Trigger, "/training_workflow/rollback", Trigger.Request(), timeout=30)
    assert res.success, res.message
    assert http_json(f"http://127.0.0.1:{port}", None, "/training_status")["model_id"] == "scripted"
    r = probe.call(DeployModel, "/training_workflow/deploy_model", DeployModel.Request(model_id=new), timeout=30)
    assert r.success and r.previous_model_id == "scripted"
    r = probe.call(DeployModel, "/training_workflow/deploy_model", DeployModel.Request(model_id="nope"), timeout=30)
    assert not r.success and "404" in r.message


def test_interval_trigger_server_killed_mid_job_restart_and_state_file(procs, probe, tmp_path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    for i in range(3):
        write_episode(data, i)
    port = free_port()
    start_server(procs, port, models, data)
    tiny = json.dumps(TINY_POLICY_OPTIONS["cnn_lstm"])
    status, trainer, stats, _ = captures(probe)
    state = tmp_path / "state.json"
    start_manager(procs, port, data, state, "workflow.training_trigger_interval_hours:=0.001",
                  "training.policy_type:=cnn_lstm", "training.steps:=100000", "training.batch_size:=2",
                  "training.device:=cpu", f"training.hyperparameters_json:='{tiny}'")
    # 3 episodes < 50, but 3.6 s after the start the interval says train
    job = trainer.wait(where=lambda m: m.state_name == "RUNNING", timeout=60)
    assert "training_trigger_interval_hours 0.001" in job.message
    stats.wait(where=lambda m: m.job_id == job.job_id and m.step > 0, timeout=120)

    # pause / resume over the server's API (SIGSTOP / SIGCONT of the worker)
    assert probe.call(Trigger, "/training_workflow/pause_training", Trigger.Request(), timeout=15).success
    trainer.wait(where=lambda m: m.state_name == "PAUSED", timeout=15)
    assert probe.call(Trigger, "/training_workflow/resume_training", Trigger.Request(), timeout=15).success
    trainer.wait(where=lambda m: m.state_name == "RUNNING", timeout=15)

    # the GPU server dies mid-job: the status says so, the node lives
    server = procs.get("policy_server")
    server.signal(signal.SIGKILL)  # on purpose: its exit is expected
    down = status.wait(where=lambda m: not m.server_reachable, timeout=30)
    assert down.stage_name == "ERROR" and "unreachable" in down.message
    time.sleep(2.0)
    assert procs.get(NODE).running
    # it returns (same port, same folders): the lost job is reported and its data trained again, followed live
    start_server(procs, port, models, data, name="policy_server_2")
    back = status.wait(where=lambda m: m.server_reachable and m.jobs_lost == 1, timeout=60)
    assert back.jobs_started >= 1
    again = trainer.wait(where=lambda m: m.state_name == "RUNNING" and m.job_id != job.job_id, timeout=60)
    assert again.message.startswith(f"retry of job {job.job_id}")
    stats.wait(where=lambda m: m.job_id == again.job_id and m.step > 0, timeout=120)
    assert probe.call(Trigger, "/training_workflow/cancel_training", Trigger.Request(), timeout=15).success
    trainer.wait(where=lambda m: m.job_id == again.job_id and m.state_name == "CANCELLED", timeout=60)

    # a restart of the node: counters and history come back from the state file
    procs.stop_one(procs.get(NODE))
    status2 = probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
    start_manager(procs, port, data, state, "workflow.auto_train_enabled:=false", name="manager_2")
    restored = status2.wait(where=lambda m: m.server_reachable and m.state_message.startswith("state restored"),
                            timeout=60)
    assert restored.jobs_lost == 1 and restored.jobs_started == 2
    # a corrupt state file is set aside and reported, the node starts anyway
    procs.stop_one(procs.get("manager_2"))
    state.write_text("{ not json")
    status3 = probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
    start_manager(procs, port, data, state, "workflow.auto_train_enabled:=false", name="manager_3")
    fresh = status3.wait(where=lambda m: "set aside" in m.state_message, timeout=60)
    assert fresh.jobs_started == 0 and list(tmp_path.glob("state.json.corrupt-*"))


def test_server_auto_train_in_charge_and_its_jobs_shown(procs, probe, tmp_path) -> None:
    data, models = tmp_path / "data", tmp_path / "models"
    port = free_port()
    start_server(procs, port, models, data, "--auto-train", "--auto-policy", "scripted", "--auto-require-marker")
    status, trainer, _, _ = captures(probe)
    start_manager(procs, port, data, tmp_path / "state.json", "workflow.min_episodes_before_training:=1",
                  "training.policy_type:=scripted")
    assert status.wait(where=lambda m: m.server_in_charge, timeout=60).stage_name == "COLLECTING"
    write_episode(data, 0)
    (L.session_dir(data, 0) / "SYNC_COMPLETE").write_text("")
    shown = trainer.wait(where=lambda m: m.origin == "server" and m.state_name == "SUCCEEDED", timeout=90)
    assert shown.message == "started by the server's auto-train"
    probe.call(Empty, "/training_workflow/trigger_training", Empty.Request(), timeout=15)
    refused = status.wait(where=lambda m: "auto-train is in charge" in m.message, timeout=15)
    assert refused.jobs_started == 0
    wait_until(lambda: http_json(f"http://127.0.0.1:{port}", None, "/jobs")["jobs"], 10, "server jobs")
    assert len(http_json(f"http://127.0.0.1:{port}", None, "/jobs")["jobs"]) == 1
