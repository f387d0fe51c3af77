"""``model_comparison``: the blind, balanced trial order (pure), the operator's summary, and the node against a real
``h1-training serve`` on 127.0.0.1 with two scripted models in a temporary registry: the seed's service names,
clear refusals, a comparison of equal models that stops for futility with no winner, a cancelled one, and two
models of clearly different quality where the anytime-valid test stops early with the right winner, which is
deployed and becomes the served default."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from h1_training.evaluation.comparison import Comparison, operator_summary
from h1_training.evaluation.scheduler import TrialScheduler

# B succeeds far more often (16/20 vs 5/20): the anytime-valid test stops for B before the 20th pair.
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
    cmp = Comparison(["v1", "v2"], "ab", 20, 0.05)
    for a, b in zip(A_OUTCOMES, B_OUTCOMES):
        if cmp.result().complete:
            break
        cmp.record("v1", bool(a), 10.0 + a, -1.0, 0.3 + 0.7 * a)
        cmp.record("v2", bool(b), 8.0 + b, -1.0, 0.5 + 0.5 * b)
    result = cmp.result()
    assert result.complete and result.winner == "v2" and result.sequential.pairs < 20
    n = result.sequential.pairs
    text = operator_summary("cmp-x", "COMPLETED", cmp, result, "Recommendation: deploy v2.")
    assert "of 20 cap trials per model" in text
    assert f"v1: {sum(A_OUTCOMES[:n])}/{n} succeeded (" in text and "mean score" in text
    assert "v2 minus v1: +" in text and "points (95% CI +" in text
    assert "v2 better than v1: success " in text and "e-value " in text and f"{n} trials per model" in text
    assert "Fixed-sample reference (not the stopping rule): Boschloo p " in text
    assert "Partial-credit score: Mann-Whitney U" in text and "Bayesian (Beta(1,1) priors, not the test)" in text
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

    def record(model: str, success: bool, t: float = 5.0, conf: float = -1.0, score: float | None = None):
        req = RecordTrial.Request(model_id=model, success=success, execution_time_s=t, grasp_confidence=conf)
        if score is not None:
            req.score = score
        return srv.call(RecordTrial, "/model_comparison/record_trial", req)

    def start(ids: list[str], mode: str = "", trials: int = 0, alpha: float = 0.0):
        req = CompareModels.Request(model_ids=ids, mode=mode, trials_per_model=trials, alpha=alpha)
        return srv.call(CompareModels, "/model_comparison/start", req)

    # refusals, each with its reason
    out = record(a, True)
    assert not out.accepted and "no comparison is running" in out.message  # a label with no trial running
    assert not srv.call(Trigger, "/model_comparison/next_model").success
    out = start([a, "nope"], "ab")
    assert not out.success and "unknown model id 'nope'" in out.message and a in out.message and b in out.message
    out = start([a, b, "scripted"], "ab")
    assert not out.success and "A/B needs exactly 2 models, got 3" in out.message
    assert "2 to 4 models, got 1" in start([a]).message
    assert "2 to 4 models, got 5" in start([a, b, "c", "d", "e"]).message
    assert "alpha must be in (0, 0.5), got 0.7" in start([a, b], alpha=0.7).message

    # --- equally good models: the test stops for futility, no winner, nothing recommended ---------------------
    out = start([a, b], "ab", trials=30)
    assert out.success and out.comparison_id and "planned for 50 % vs 80 %" in out.message
    assert not record("scripted", True).accepted  # not in this comparison
    out = record(b, True, t=math.nan)
    assert not out.accepted and "finite" in out.message
    counts = {a: 0, b: 0}
    for n in range(1, 61):
        model = srv.call(Trigger, "/model_comparison/next_model").message
        assert model in counts
        pair = min(counts.values())
        # pairs alternate: A alone succeeds, then B alone: the e-value shrinks by about 0.64 every two pairs
        ok = (model == a) == (pair % 2 == 0)
        out = record(model, ok, t=6.0 + 0.1 * n, score=1.0 if ok else 0.25)
        assert out.accepted
        counts[model] += 1
        assert abs(counts[a] - counts[b]) <= 1
        msg = status.wait(where=lambda m, n=n: sum(x.trials for x in m.models) == n, timeout=10)
        if msg.state != St.STATE_RUNNING:
            break
        assert not msg.significant and not msg.winner and msg.stop_reason == ""
        assert msg.e_threshold == 20.0 and msg.trials_cap == 30 and msg.expected_more_trials > 0
        assert "not yet distinguishable" in msg.message
        if n == 3:
            out = record(b, True, score=1.5)
            assert not out.accepted and "score must be in [0, 1]" in out.message
    assert msg.state == St.STATE_COMPLETED and msg.stop_reason == "futility" and not msg.winner
    # A won pairs 1, 3, 5, 7 and B pairs 2, 4, 6: E = 0.8 * 1.6^3 * 0.4^4 + 0.2 * 1.6^4 * 0.4^3 = 0.168 <= 0.2
    assert [x.trials for x in msg.models] == [7, 7]
    assert msg.e_value == pytest.approx(0.8 * 1.6**3 * 0.4**4 + 0.2 * 1.6**4 * 0.4**3, rel=1e-6)
    assert msg.difference == pytest.approx(3 / 7 - 4 / 7) and msg.difference_ci_low < 0 < msg.difference_ci_high
    assert msg.reference_test_name == "Boschloo exact" and msg.reference_p_value > 0.5
    assert msg.score_p_value > 0.05 and msg.models[0].scored_trials == 7
    assert sum(msg.prob_best) == pytest.approx(1.0) and len(msg.expected_loss) == 2
    assert "No winner" in msg.message
    out = record(a, True)
    assert not out.accepted and "no comparison is running" in out.message and "COMPLETED" in out.message
    assert http_json("127.0.0.1", port, "/models")["default"] == a

    # --- stop: cancelled, no more trials -----------------------------------------------------------------------
    assert start([a, b], trials=10).success
    assert srv.call(Trigger, "/model_comparison/stop").success
    assert status.wait(where=lambda m: m.state == St.STATE_CANCELLED, timeout=10)
    assert not record(a, True).accepted

    # --- clearly different models (30 % vs 90 % success, partial credit and time recorded): the test stops early
    # with the right winner, which is deployed and becomes the served default ---------------------------------
    assert probe.set_parameter("model_comparison", "auto_deploy_winner", True).successful
    out = start([a, b])
    assert out.success and "at most 63 trials per model" in out.message
    rng = np.random.default_rng(4)
    quality = {a: 0.3, b: 0.9}
    for _ in range(2 * 63):
        model = srv.call(Trigger, "/model_comparison/next_model").message
        ok = bool(rng.random() < quality[model])
        out = record(model, ok, t=float(rng.uniform(8, 12) if model == b else rng.uniform(10, 16)),
                     score=1.0 if ok else float(rng.choice([0.0, 0.25, 0.5, 0.75])))
        assert out.accepted
        if "COMPLETED" in out.message:
            break
    done = status.wait(where=lambda m: m.state == St.STATE_COMPLETED, timeout=10)
    assert done.winner == b and done.significant and done.stop_reason == "efficacy" and done.e_value >= 20.0
    assert done.test_name == "anytime-valid e-process on discordant pairs" and done.p_value <= 0.05
    trials = done.models[0].trials
    assert trials < 63 / 2  # stopped early: well before the cap
    assert done.message.startswith(f"{b} better than {a}: success ") and f"{trials} trials per model" in done.message
    assert done.difference > 0 and done.difference_ci_low > 0 and done.prob_best[1] > 0.95
    assert 0.0 <= done.score_p_value <= 1.0 and done.score_effect > 0
    timed = [sum(1 for _ in range(m.successes)) for m in done.models]  # every success was timed
    assert (done.time_test_name != "") == (min(timed) >= 2)
    deployed = status.wait(where=lambda m: "Deployed" in m.message, timeout=20)
    assert b in deployed.message
    assert http_json("127.0.0.1", port, "/training_status")["model_id"] == b
    assert http_json("127.0.0.1", port, "/models")["default"] == b
    srv.call(Empty, "/model_comparison/get_status")
    procs.wait_for_line("model_comparison", lambda s: f"Deployed {b}" in s and "minus" in s, timeout=10)
    assert time.monotonic() - t0 < 60
