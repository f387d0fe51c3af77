"""The workflow's pure parts: the Bernoulli CUSUM and its calibration, the state machine's triggers, gate and
monitoring, the state file (a corrupt one set aside), and the data-collection plan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from h1_training.workflow.collection import CollectionPlan
from h1_training.workflow.cusum import BernoulliCusum, calibrate_threshold, shifted_rate, simulate_arl
from h1_training.workflow.machine import (
    Deploy,
    EpisodeFact,
    Evaluate,
    Stage,
    SubmitJob,
    Workflow,
    WorkflowConfig,
    parse_hyperparameters,
)
from h1_training.workflow.runner import load_state, save_state

SERVER_OK = {"ready": True, "epoch": 0, "model_id": "scripted", "auto_train": None}


def facts(n: int, start: int = 0, model: str = "", success: int = -1, human: int = 0, t0: float = 0.0,
          epoch: int = 0) -> list[EpisodeFact]:
    return [EpisodeFact(f"training_session_epoch{epoch}/episode_{i}.hdf5", t0 + i, True, False, success, human,
                        model) for i in range(start, start + n)]


# --- CUSUM -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p0", [0.2, 0.05])
def test_cusum_threshold_is_calibrated_to_the_in_control_arl(p0: float) -> None:
    p1 = shifted_rate(p0, 2.0)
    h = calibrate_threshold(p0, p1, arl0=500)
    # an independent simulation (other seed, more runs): the achieved ARL0 is ~500 (the chart's ARL is a step
    # function of h, so it sits at or a little above the target), and a real shift is found far sooner
    arl0 = simulate_arl(p0, p1, h, runs=6000, seed=99)
    assert 450 <= arl0 <= 650, arl0
    assert simulate_arl(p0, p1, h, runs=2000, seed=5, p_true=min(0.95, 3 * p0)) < arl0 / 8
    assert calibrate_threshold(p0, p1, arl0=100) < h  # a shorter ARL0 needs a lower threshold


def test_cusum_alarms_on_a_degraded_seeded_stream_and_stays_quiet_on_a_healthy_one() -> None:
    rng = np.random.default_rng(2024)
    chart = BernoulliCusum.calibrated(p0=0.2, arl0=500)
    healthy = rng.random(300) < 0.2          # failures at the baseline rate
    assert not any(chart.update(bool(f)) for f in healthy)
    chart.reset()
    degraded = rng.random(300) < 0.6         # success fell from 80 % to 40 %
    alarms = [chart.update(bool(f)) for f in degraded]
    assert any(alarms) and alarms.index(True) < 40
    assert chart.alarm_at == alarms.index(True) + 1
    assert BernoulliCusum.from_dict(chart.to_dict()).to_dict() == chart.to_dict()


# --- triggers ----------------------------------------------------------------------------------------------------
def machine(**kw) -> Workflow:
    wf = Workflow(WorkflowConfig(**{"min_episodes_before_training": 5, "training_trigger_interval_hours": 0.0,
                                    "policy_type": "scripted", "holdout_every": 5, **kw}), now=0.0)
    wf.observe_server(1.0, dict(SERVER_OK), [])
    return wf


def test_count_trigger_holds_out_episodes_and_counts_only_new_valid_ones() -> None:
    wf = machine()
    assert wf.observe_episodes(2.0, facts(4)) == []
    excluded = EpisodeFact("training_session_epoch0/episode_9.hdf5", 9, True, True)
    broken = EpisodeFact("training_session_epoch0/episode_8.hdf5", 8, False)
    assert wf.observe_episodes(3.0, facts(4) + [excluded, broken]) == []  # neither counts
    (eff,) = wf.observe_episodes(4.0, facts(5) + [excluded, broken])
    assert isinstance(eff, SubmitJob) and "5 new episodes >= min_episodes_before_training 5" in eff.reason
    assert wf.holdout == ["training_session_epoch0/episode_4.hdf5"]
    assert eff.request["dataset"] == [f"training_session_epoch0/episode_{i}.hdf5" for i in range(4)]
    assert eff.request["deploy"] is False and eff.request["policy_type"] == "scripted"
    wf.submitted(4.0, eff, {"id": "j1", "status": "queued", "total_steps": 10})
    assert wf.stage == Stage.TRAINING and wf.observe_episodes(5.0, facts(20)) == []  # one job at a time
    ok, msg, _ = wf.trigger(5.0)
    assert not ok and "job j1 is queued" in msg
    effects = wf.observe_job(6.0, {"id": "j1", "status": "succeeded", "model_id": "m1", "step": 10})
    assert effects == [Evaluate("m1", "scripted", ("training_session_epoch0/episode_4.hdf5",))]
    assert wf.trained == set(eff.episodes) and wf.stage == Stage.EVALUATING


def test_interval_trigger_needs_new_data_and_the_time() -> None:
    wf = machine(min_episodes_before_training=100, training_trigger_interval_hours=1.0)
    assert wf.observe_episodes(1800.0, facts(2)) == []
    (eff,) = wf.observe_episodes(3601.0, facts(2))
    assert "since the last training >= training_trigger_interval_hours 1" in eff.reason


def test_server_in_charge_or_down_means_no_training_from_the_manager() -> None:
    wf = machine()
    wf.observe_server(2.0, {**SERVER_OK, "auto_train": {"data_dir": "x"}},
                      [{"id": "srv1", "status": "running", "step": 3, "total_steps": 9,
                        "request": {"policy_type": "scripted"}}])
    assert wf.observe_episodes(3.0, facts(10)) == []
    ok, msg, _ = wf.trigger(3.0)
    assert not ok and "auto-train is in charge" in msg
    job = wf.shown_job()
    assert job is not None and (job.id, job.origin, job.step) == ("srv1", "server", 3)
    down = machine()
    down.observe_server(2.0, None, None, "connection refused (next try in 1 s)")
    assert down.stage == Stage.ERROR and "unreachable" in down.message
    assert down.observe_episodes(3.0, facts(10)) == []


def test_failed_and_lost_jobs_wait_before_retrying() -> None:
    wf = machine(job_retry_s=30.0)
    (eff,) = wf.observe_episodes(2.0, facts(5))
    wf.submitted(2.0, eff, {"id": "j1", "status": "running"})
    wf.observe_job(3.0, None, lost="server restarted")
    assert wf.counters["jobs_lost"] == 1 and "lost" in wf.message and not wf.trained
    assert wf.observe_episodes(10.0, facts(5)) == []
    (again,) = wf.observe_episodes(40.0, facts(5))  # 4 new + 1 held out: retried although 4 < min 5
    assert again.reason.startswith("retry of job j1 (lost: server restarted")
    assert again.episodes == eff.episodes
    wf.submitted(40.0, again, {"id": "j2", "status": "running"})
    wf.observe_job(41.0, {"id": "j2", "status": "failed", "error": "CUDA out of memory"})
    assert "failed: CUDA out of memory" in wf.message and wf.counters["jobs_failed"] == 1
    assert wf.observe_episodes(41.0 + 59, facts(5)) == []  # the second failure waits twice as long
    (third,) = wf.observe_episodes(41.0 + 61, facts(5))
    wf.submitted(102.0, third, {"id": "j3", "status": "running"})
    wf.observe_job(103.0, {"id": "j3", "status": "succeeded", "model_id": "m1"})
    assert wf.retry_reason == "" and wf.trained == set(eff.episodes)


def test_deploy_gate_honours_auto_deploy_and_evidence() -> None:
    comparison = {"better": True, "summary": "m1 better", "current": "scripted", "candidate_error": 0.01,
                  "current_error": 0.2, "p_value": 1e-4}
    for auto, expect in ((False, []), (True, [Deploy("m1", "auto-deploy: m1 better")])):
        wf = machine(auto_deploy_enabled=auto)
        wf.holdout = ["h"]
        wf.models["m1"] = {}
        wf.evaluating = Evaluate("m1", "scripted", ("h",))
        assert wf.evaluated(5.0, comparison) == expect
        if not auto:
            assert "auto_deploy_enabled is false: not deployed" in wf.message
            assert any("deploy it" in r for r in wf.analytics()["recommendations"])
    wf = machine(auto_deploy_enabled=True)
    wf.evaluating = Evaluate("m2", "scripted", ("h",))
    assert wf.evaluated(5.0, {**comparison, "better": False, "summary": "not shown better"}) == []


def test_monitor_counts_corrections_and_flags_degradation_with_numbers() -> None:
    wf = machine(baseline_trials=20, retrain_after_corrections=5, window_trials=30)
    wf.deployed_result(1.0, "v2")
    wf.deployed_result(2.0, "v3")
    rng = np.random.default_rng(7)
    base = [EpisodeFact(f"e/b{i:03d}.hdf5", 10 + i, True, False, int(rng.random() < 0.85), 0, "v3")
            for i in range(20)]
    wf.observe_episodes(100.0, base)
    a = wf.analytics()
    assert a["baseline_trials"] == 20 and not a["degradation_detected"] and a["cusum_threshold"] > 0
    bad = [EpisodeFact(f"e/d{i:03d}.hdf5", 100 + i, True, False, int(rng.random() < 0.3), 50, "v3")
           for i in range(40)]
    wf.observe_episodes(200.0, base + bad)
    a = wf.analytics()
    assert a["degradation_detected"] and a["degradation_p_value"] < 0.01
    recs = " | ".join(a["recommendations"])
    assert "degradation, roll back to v2?" in recs and "vs 8" in recs  # baseline ~85 %
    assert "40 human corrections since v3 was deployed - retrain recommended" in recs
    assert 0 < a["recent_success_rate"] < a["baseline_success_rate"] and a["ci_low"] < a["recent_success_rate"]
    assert a["intervention_rate"] == 1.0 and a["trend_per_100_trials"] < 0


# --- state file ----------------------------------------------------------------------------------------------------
def test_state_round_trip_and_corrupt_file_set_aside(tmp_path) -> None:
    wf = machine()
    (eff,) = wf.observe_episodes(2.0, facts(5))
    wf.submitted(2.0, eff, {"id": "j1", "status": "running"})
    path = tmp_path / "state.json"
    save_state(path, wf.to_dict())
    data, msg = load_state(path)
    restored = Workflow(wf.config, 0.0)
    restored.load(data)
    assert restored.job.id == "j1" and restored.holdout == wf.holdout and restored.counters["jobs_started"] == 1
    path.write_text('{"version": 1, "trained": [')  # cut short by a crash
    data, msg = load_state(path)
    assert data is None and "unreadable" in msg and "set aside as state.json.corrupt-" in msg
    assert not path.exists() and len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


def test_config_checks_and_hyperparameters() -> None:
    assert parse_hyperparameters('{"chunk_size": 20}') == {"chunk_size": 20}
    for bad in ("[1]", "{oops"):
        with pytest.raises(ValueError):
            parse_hyperparameters(bad)
    with pytest.raises(ValueError, match="policy_type"):
        WorkflowConfig(policy_type="transformer")
    assert json.dumps(WorkflowConfig().__dict__)  # plain data


def test_collection_plan_presses_the_keys_between_episodes() -> None:
    for mode in ("hil", "policy", "kinesthetic", "teleoperation"):
        assert CollectionPlan.create(mode, 10, 0).mode == mode
    with pytest.raises(ValueError, match="unknown mode"):
        CollectionPlan.create("dance", 10, 0)
    plan = CollectionPlan.create("hil", 2, start_total=3)
    assert plan.next_key("READY", 3) == "y" and plan.next_key("EXECUTING", 3) == ""
    assert plan.next_key("DECIDING", 4) == "y"
    assert plan.next_key("DECIDING", 5) == "n" and plan.finished and plan.next_key("READY", 5) == ""


def test_collection_plan_survives_a_session_restart() -> None:
    # created from the last status of a session that has since restarted (its count starts at 0 again)
    plan = CollectionPlan.create("kinesthetic", 1, start_total=4)
    assert plan.next_key("READY", 0) == "y" and plan.collected == 0
    assert plan.next_key("DECIDING", 1) == "n" and plan.finished and plan.collected == 1
    plan = CollectionPlan.create("hil", 3, start_total=0)
    plan.next_key("DECIDING", 2)                                 # two collected, then the session restarts
    assert plan.next_key("READY", 0) == "y" and plan.collected == 2
    assert plan.next_key("DECIDING", 1) == "n" and plan.collected == 3


def test_a_cancelled_job_is_not_restarted_until_new_data_or_a_manual_trigger() -> None:
    wf = machine()
    (eff,) = wf.observe_episodes(2.0, facts(5))
    wf.submitted(2.0, eff, {"id": "j1", "status": "running"})
    wf.observe_job(3.0, {"id": "j1", "status": "cancelled"})
    assert "waits for new episodes" in wf.message
    assert wf.observe_episodes(100.0, facts(5)) == []           # the same 4 new episodes: not restarted
    assert wf.observe_episodes(101.0, facts(6)) != []           # one more recorded: automation goes on
    wf = machine()
    (eff,) = wf.observe_episodes(2.0, facts(5))
    wf.submitted(2.0, eff, {"id": "j1", "status": "running"})
    wf.observe_job(3.0, {"id": "j1", "status": "cancelled"})
    ok, _, effects = wf.trigger(4.0)
    assert ok and effects
