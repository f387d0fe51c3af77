"""``model_comparison``: the blind, balanced trial order (pure), the operator's summary, and the node against a real
``h1-training serve`` on 127.0.0.1 with two scripted models in a temporary registry: the seed's service names,
clear refusals, an A/B test that names B only at the planned size (the sequential rule does not fire on these
trials), one where the sequential rule stops early, and the winner deployed on the server when asked."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from h1_training.evaluation.comparison import Comparison
from h1_training.evaluation.scheduler import TrialScheduler
from h1_training.evaluation.stats import sequential_test

# B succeeds far more often (16/20 vs 5/20, Fisher p = 0.0012), in an order where the always-valid sequential
# rule never reaches 1/alpha (its evidence peaks below 100 at alpha 0.05 * 0.2): the verdict must wait for n = 20.
A_OUTCOMES = [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
B_OUTCOMES = [1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1]


# --- scheduler (pure) --------------------------------------------------------------------------------------------
def test_schedule_is_balanced_randomized_and_reproducible() -> None:
    ids = ["v1", "v2", "v3"]
    order = TrialScheduler(ids, seed=7).sequence(40)
    assert len(order) == 120
    counts: Counter[str] = Counter()
    for model in order:
        counts[model] += 1
        assert max(counts.values()) - min(counts.values()) <= 1  # balanced after every trial
    assert counts == dict.fromkeys(ids, 40)
    blocks = [tuple(order[i:i + 3]) for i in range(0, 120, 3)]
    assert all(sorted(b) == ids for b in blocks)  # each block runs every model once
    assert len(set(blocks)) >= 4  # ... in a random order (6 possible; 40 blocks all alike would be 1 in 6^39)
    assert TrialScheduler(ids, seed=7).sequence(40) == order  # the seed fixes it
    assert TrialScheduler(ids, seed=8).sequence(40) != order
    # planned size: nothing after it
    assert TrialScheduler(["a", "b"], seed=1, planned_per_model=3).sequence(10) == \
        TrialScheduler(["a", "b"], seed=1).sequence(3)


def test_schedule_follows_the_counts_when_a_trial_goes_to_the_other_model() -> None:
    s = TrialScheduler(["a", "b"], seed=3, planned_per_model=2)
    first = s.next_model({})
    other = "b" if first == "a" else "a"
    # the operator ran the other model instead: the schedule now asks for the one that is behind
    assert s.next_model({other: 1}) == first
    assert s.next_model({"a": 1, "b": 1}) in ("a", "b")
    assert s.next_model({"a": 2, "b": 1}) == "b"
    assert s.next_model({"a": 2, "b": 2}) is None
    with pytest.raises(ValueError, match="not in the schedule"):
        s.next_model({"c": 1})
    with pytest.raises(ValueError, match="at least 2"):
        TrialScheduler(["a"])
    with pytest.raises(ValueError, match="distinct"):
        TrialScheduler(["a", "a"])


def test_operator_summary_reads_rates_difference_and_verdict() -> None:
    from h1_training.nodes.model_comparison_node import operator_summary

    cmp = Comparison(["v1", "v2"], "ab", 20, 0.05)
    for a, b in zip(A_OUTCOMES, B_OUTCOMES):
        cmp.record("v1", bool(a), 10.0 + a)
        cmp.record("v2", bool(b), 8.0 + b)
    text = operator_summary("cmp-x", "COMPLETED", cmp, cmp.result(), "Recommendation: deploy v2.")
    assert "v1: 5/20 succeeded (25%, 95% CI 11%-47%)" in text
    assert "v2: 16/20 succeeded (80%" in text
    assert "v2 minus v1: +55 points (95% CI +" in text
    assert "v2 better: 5/20 vs 16/20" in text and "p 0.001232" in text
    assert text.endswith("Recommendation: deploy v2.")


# --- the node against the real server ------------------------------------------------------------------------------
def _register_two_scripted_models(models_dir: Path) -> list[str]:
    from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
    from h1_training.training.registry import ModelRegistry

    registry = ModelRegistry(models_dir)
    ids = []
    for target in (0.2, 0.4):
        staged = registry.staging_dir()
        ScriptedPolicy(ScriptedConfig(mode="reach", target=[target] * 14)).save(staged)
        ids.append(registry.commit(staged, "scripted", config={"mode": "reach"}).id)
    registry.deploy(ids[0])
    return ids


class Services:
    """Persistent clients (one per service) so that a hundred calls do not each wait for discovery."""

    def __init__(self, probe) -> None:
        self.probe = probe
        self.clients: dict[str, object] = {}

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = self.probe.node.create_client(srv_type, name)
            assert client.wait_for_service(timeout_sec=timeout), f"{name} not available"
        done = threading.Event()
        future = client.call_async(request if request is not None else srv_type.Request())
        future.add_done_callback(lambda _f: done.set())
        assert done.wait(timeout), f"no reply from {name}"
        return future.result()


@pytest.fixture
def comparison(procs, probe, tmp_path):
    from h1_training.nodes.common import LATCHED_QOS
    from h1_training_interfaces.msg import ModelComparisonStatus

    models = tmp_path / "models"
    ids = _register_two_scripted_models(models)
    procs.start_executable("policy_server", "h1-training",
                           ["serve", "--port", "0", "--models-dir", str(models), "--device", "cpu"])
    line = procs.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout=60)
    port = int(line.rsplit(":", 1)[1])
    procs.start_executable("model_comparison", "model_comparison",
                           ["--ros-args", "-p", f"policy_port:={port}", "-p", "seed:=11"])
    status = probe.capture(ModelComparisonStatus, "/model_comparison/status", LATCHED_QOS)
    status.wait(1, timeout=30)
    return ids, port, Services(probe), status


def test_ab_comparison_against_the_policy_server(comparison, probe, procs) -> None:
    from std_srvs.srv import Empty, Trigger

    from h1_training.policy.client import http_json
    from h1_training_interfaces.msg import ModelComparisonStatus as St
    from h1_training_interfaces.srv import CompareModels, RecordTrial

    (a, b), port, srv, status = comparison
    t0 = time.monotonic()
    # the seed's troubleshooting: `ros2 service list | grep model_comparison`, then get_status (Empty)
    names = {n for n, _ in probe.node.get_service_names_and_types()}
    for s in ("start", "record_trial", "stop", "get_status", "next_model"):
        assert f"/model_comparison/{s}" in names
    srv.call(Empty, "/model_comparison/get_status")
    procs.wait_for_line("model_comparison", lambda s: "no comparison yet" in s, timeout=10)
    assert status.last().state == St.STATE_IDLE

    def record(model: str, success: bool, t: float = 5.0, conf: float = -1.0):
        req = RecordTrial.Request(model_id=model, success=success, execution_time_s=t, grasp_confidence=conf)
        return srv.call(RecordTrial, "/model_comparison/record_trial", req)

    def start(ids: list[str], mode: str = "ab", trials: int = 0):
        req = CompareModels.Request(model_ids=ids, mode=mode, trials_per_model=trials)
        return srv.call(CompareModels, "/model_comparison/start", req)

    # refusals, each with its reason
    out = record(a, True)
    assert not out.accepted and "no comparison is running" in out.message
    assert not srv.call(Trigger, "/model_comparison/next_model").success
    out = start([a, "nope"])
    assert not out.success and "unknown model id 'nope'" in out.message and a in out.message and b in out.message
    out = start([a, b, "scripted"])
    assert not out.success and "A/B needs exactly 2 models, got 3" in out.message

    # --- A/B at the planned size: B wins at n = 20, not before; the winner is only recommended -----------------
    assert sequential_test(A_OUTCOMES, B_OUTCOMES, 0.01).crossed_at is None  # premise of this part
    out = start([a, b], trials=20)
    assert out.success and out.comparison_id
    assert not record("scripted", True).accepted  # not in this comparison
    out = record(b, True, t=math.nan)
    assert not out.accepted and "finite" in out.message
    outcomes = {a: A_OUTCOMES, b: B_OUTCOMES}
    counts = {a: 0, b: 0}
    for n in range(1, 41):
        model = srv.call(Trigger, "/model_comparison/next_model").message
        assert model in counts
        assert record(model, bool(outcomes[model][counts[model]]), t=6.0 + 0.1 * n).accepted
        counts[model] += 1
        assert abs(counts[a] - counts[b]) <= 1
        msg = status.wait(where=lambda m, n=n: sum(x.trials for x in m.models) == n, timeout=10)
        if n < 40:
            assert msg.state == St.STATE_RUNNING and not msg.significant and msg.p_value == -1.0 and not msg.winner
    assert msg.state == St.STATE_COMPLETED and msg.winner == b and msg.significant
    assert 0.0 < msg.p_value < msg.alpha == 0.05 and msg.test_name == "two-sided Fisher exact"
    m_a, m_b = msg.models
    assert (m_a.model_id, m_a.successes, m_b.model_id, m_b.successes) == (a, 5, b, 16)
    assert m_a.success_ci_low < 0.25 < m_a.success_ci_high and m_b.success_ci_low < 0.8 < m_b.success_ci_high
    assert m_b.mean_execution_time_s > 0 and m_b.consistency_score > 0
    assert f"Recommendation: deploy {b}" in msg.message
    out = record(a, True)
    assert not out.accepted and "no comparison is running" in out.message and "COMPLETED" in out.message
    assert http_json("127.0.0.1", port, "/models")["default"] == a  # recommended, not deployed

    # --- stop: cancelled, no more trials -----------------------------------------------------------------------
    assert start([a, b], trials=10).success
    assert srv.call(Trigger, "/model_comparison/stop").success
    assert status.wait(where=lambda m: m.state == St.STATE_CANCELLED, timeout=10)
    assert not record(a, True).accepted

    # --- auto_deploy_winner: B always succeeds, A never; the sequential rule stops at pair 11 of 30 ------------
    assert probe.set_parameter("model_comparison", "auto_deploy_winner", True).successful
    assert start([a, b], trials=30).success
    for _ in range(60):
        model = srv.call(Trigger, "/model_comparison/next_model").message
        out = record(model, model == b)
        assert out.accepted
        if "COMPLETED" in out.message:
            break
    done = status.wait(where=lambda m: m.state == St.STATE_COMPLETED, timeout=10)
    assert done.winner == b and done.p_value <= 0.01 and "SPRT" in done.test_name
    assert [x.trials for x in done.models] == [11, 11]  # stopped at pair 11, well before the planned 30
    deployed = status.wait(where=lambda m: "Deployed" in m.message, timeout=20)
    assert b in deployed.message
    assert http_json("127.0.0.1", port, "/training_status")["model_id"] == b
    assert http_json("127.0.0.1", port, "/models")["default"] == b
    srv.call(Empty, "/model_comparison/get_status")
    procs.wait_for_line("model_comparison", lambda s: f"Deployed {b}" in s and "minus" in s, timeout=10)
    assert time.monotonic() - t0 < 40
