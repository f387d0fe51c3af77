"""The deploy gate's online half (workflow/machine.py, no ROS): a candidate that passed the offline gate with
auto-deploy on and ``online_trials`` set is deployed only on model_comparison's verdict.

The comparison side is the real lifecycle of the ``model_comparison`` node (``evaluation/comparison.py``): the
machine's effects are carried to it the way the runner carries them to the node's services, and its status is
fed back as the node's ``ModelComparisonStatus`` would be. Trials are labelled evaluation episodes of the model
the comparison names next, with seeded outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from h1_training.evaluation.comparison import ComparisonLifecycle
from h1_training.workflow.machine import (
    PIN_RETRY_S,
    Deploy,
    EpisodeFact,
    Evaluate,
    PinModel,
    SendTrial,
    Stage,
    StartComparison,
    StopComparison,
    Workflow,
    WorkflowConfig,
)
from h1_training.workflow.runner import load_state, save_state

SERVER_OK = {"ready": True, "epoch": 0, "model_id": "v1", "auto_train": None}
OFFLINE = {"better": True, "summary": "v2 better offline (p = 0.001)", "current": "v1", "candidate_error": 0.01,
           "current_error": 0.2, "p_value": 1e-3}


def status_of(life: ComparisonLifecycle) -> dict:
    """What the node's ``comparison_status`` makes of its ModelComparisonStatus (same keys)."""
    cmp = life.comparison
    if cmp is None:
        return {"comparison_id": "", "state": life.state.name, "winner": "", "stop_reason": "", "message": "",
                "models": {}}
    r = cmp.result()
    seq = r.sequential
    msg = r.message + (f". {life.note}" if life.note else "")
    return {"comparison_id": life.comparison_id, "state": life.state.name, "winner": r.winner,
            "stop_reason": r.stop_reason, "message": msg, "e_value": seq.e_value if seq else -1.0,
            "e_threshold": seq.threshold if seq else -1.0, "p_value": r.p_value, "trials_cap": cmp.trials_per_model,
            "models": {m.model_id: [m.successes, m.trials] for m in r.models}}


class World:
    """The machine, the comparison lifecycle it talks to, and the episodes on disk."""

    def __init__(self, online_trials: int = 40, timeout_s: float = 86400.0, auto: bool = True) -> None:
        self.wf = Workflow(WorkflowConfig(min_episodes_before_training=5, training_trigger_interval_hours=0.0,
                                          policy_type="scripted", auto_deploy_enabled=auto,
                                          online_trials=online_trials, online_timeout_s=timeout_s), now=0.0)
        self.wf.observe_server(1.0, dict(SERVER_OK), [])
        self.life = ComparisonLifecycle(seed=3)
        self.facts: list[EpisodeFact] = []
        self.now = 10.0
        self.deploys: list[Deploy] = []
        self.log: list[object] = []       # every effect, in order
        self.pin = ""                     # hil_session's model parameter
        self.start_error = ""
        self.pin_error = ""               # why hil_session cannot be pinned ("" = it can)

    def run(self, effects: list) -> None:
        for eff in effects:
            self.log.append(eff)
            wf, life = self.wf, self.life
            if isinstance(eff, StartComparison):
                if self.start_error:
                    self.run(wf.comparison_started(self.now, "", self.start_error))
                    continue
                life.start([eff.current, eff.candidate], "ab", eff.trials_per_model, eff.alpha, (0.5, 0.8),
                           lambda: ["v1", "v2"])
                self.run(wf.comparison_started(self.now, life.comparison_id))
                self.run(wf.observe_comparison(self.now, status_of(life)))
            elif isinstance(eff, PinModel):
                model = eff.model_id
                if eff.next:
                    ok, model = life.next_model()
                    if not ok:
                        continue
                if self.pin_error:
                    wf.pinned(model, self.pin_error)
                    continue
                self.pin = model
                wf.pinned(model)
            elif isinstance(eff, SendTrial):
                out = life.record(eff.model_id, eff.success)
                wf.trial_sent(self.now, eff, out.accepted, out.message)
                self.run(wf.observe_comparison(self.now, status_of(life)))
            elif isinstance(eff, StopComparison):
                life.stop()
            elif isinstance(eff, Deploy):
                self.deploys.append(eff)
                wf.deployed_result(self.now, eff.model_id)

    def offline_passed(self) -> None:
        self.wf.holdout = ["h"]
        self.wf.models["v2"] = {}
        self.wf.evaluating = Evaluate("v2", "v1", ("h",))
        self.run(self.wf.evaluated(self.now, OFFLINE))

    def episode(self, model: str, success: int, human: int = 0) -> None:
        self.now += 30.0
        i = len(self.facts)
        self.facts.append(EpisodeFact(f"training_session_epoch9/episode_{i}.hdf5", self.now, True, False, success,
                                      human, model))
        self.run(self.wf.observe_episodes(self.now, list(self.facts)))

    def rollouts(self, quality: dict[str, float], seed: int, limit: int = 500) -> int:
        """Evaluation rollouts of the pinned model until the machine leaves AB_TESTING; returns how many."""
        rng = np.random.default_rng(seed)
        n = 0
        while self.wf.online is not None and n < limit:
            assert self.wf.stage == Stage.AB_TESTING and not self.deploys  # nothing deployed before the verdict
            assert self.pin in quality
            self.episode(self.pin, int(rng.random() < quality[self.pin]))
            n += 1
        return n


def test_better_online_is_deployed_only_after_model_comparisons_verdict() -> None:
    w = World()
    w.offline_passed()
    assert isinstance(w.log[0], StartComparison) and w.log[0].current == "v1" and w.log[0].candidate == "v2"
    assert w.wf.stage == Stage.AB_TESTING and w.pin in ("v1", "v2") and not w.deploys
    assert "online A/B" in w.wf.message and "before any deploy" not in w.wf.message
    rec = " | ".join(w.wf.analytics()["recommendations"])
    assert "online A/B cmp-" in rec and "at most 40 trials per model" in rec and "mode policy" in rec
    # no training starts beside it
    ok, why, _ = w.wf.trigger(w.now)
    assert not ok and "evaluated online" in why
    n = w.rollouts({"v1": 0.3, "v2": 0.9}, seed=1)
    assert w.life.state.name == "COMPLETED" and w.life.comparison.result().winner == "v2"
    (deploy,) = w.deploys
    assert deploy.model_id == "v2" and "online v2 better than v1" in deploy.reason and "offline" in deploy.reason
    assert w.wf.current_model == "v2" and w.wf.online is None and w.pin == ""  # pin released
    online = w.wf.models["v2"]["online"]
    assert online["verdict"] == "passed" and online["status"]["stop_reason"] == "efficacy"
    assert n < 2 * 40  # the sequential test stopped before the cap


def test_worse_online_is_refused_with_the_reason_and_numbers() -> None:
    w = World()
    w.offline_passed()
    w.rollouts({"v1": 0.9, "v2": 0.2}, seed=2)
    assert not w.deploys and w.wf.current_model == "v1" and w.pin == ""
    assert w.wf.message.startswith("v2 not deployed: worse than v1 online: v1 better than v2: success ")
    assert "e-value" in w.wf.message and "trials per model" in w.wf.message
    recs = w.wf.analytics()["recommendations"]
    assert any(r.startswith("v2 not deployed: worse than v1 online") for r in recs), recs
    assert not any("deploy it with" in r for r in recs)  # the offline win is no longer recommended
    assert w.wf.stage == Stage.COLLECTING


@pytest.mark.parametrize("seed", [5, 6])
def test_equal_models_are_inconclusive_and_refused(seed: int) -> None:
    w = World(online_trials=12)
    w.offline_passed()
    w.rollouts({"v1": 0.6, "v2": 0.6}, seed=seed)
    result = w.life.comparison.result()
    assert w.life.state.name == "COMPLETED" and not result.winner and result.stop_reason in ("futility", "cap")
    assert not w.deploys and w.wf.current_model == "v1"
    assert f"no evidence it is not worse than v1 online ({result.stop_reason})" in w.wf.message
    assert w.wf.models["v2"]["online"]["verdict"] == "refused"


def test_timeout_stops_the_comparison_and_refuses() -> None:
    w = World(timeout_s=3600.0)
    w.offline_passed()
    w.episode(w.pin, 1)
    w.episode(w.pin, 0)
    assert w.wf.online is not None
    w.now += 3600.0
    w.run(w.wf.observe_episodes(w.now, list(w.facts)))
    assert any(isinstance(e, StopComparison) for e in w.log) and w.life.state.name == "CANCELLED"
    assert not w.deploys and w.wf.online is None
    assert "timed out after 1.0" in w.wf.message and "online_timeout_s 3600" in w.wf.message
    assert "1/1" in w.wf.message or "0/1" in w.wf.message  # the trials it had


def test_start_refused_cancelled_or_lost_comparison_means_not_deployed() -> None:
    w = World()
    w.start_error = "cannot list the models of the policy server at 127.0.0.1:8000: connection refused"
    w.offline_passed()
    assert not w.deploys and "could not start on model_comparison: cannot list" in w.wf.message
    # the start went out but its reply did not come back: adopted when model_comparison shows it running
    w = World()
    w.offline_passed()
    life = w.life
    w.wf.online.comparison_id, w.wf.online.pinned = "", ""
    w.run(w.wf.comparison_started(w.now, "", "no reply within 15 s", unanswered=True))
    assert w.wf.online is not None and "did not answer the start" in w.wf.message
    w.run(w.wf.observe_comparison(w.now, status_of(life)))
    assert w.wf.online.comparison_id == life.comparison_id and "adopted" in w.wf.message
    w.rollouts({"v1": 0.2, "v2": 0.95}, seed=4)
    assert [d.model_id for d in w.deploys] == ["v2"]
    # cancelled by someone on model_comparison
    w = World()
    w.offline_passed()
    w.life.stop()
    w.run(w.wf.observe_comparison(w.now, status_of(w.life)))
    assert not w.deploys and "was cancelled on model_comparison before a verdict" in w.wf.message
    # model_comparison restarted (a fresh node is IDLE): the comparison is gone
    w = World()
    w.offline_passed()
    w.run(w.wf.observe_comparison(w.now, status_of(ComparisonLifecycle())))
    assert not w.deploys and "no longer runs comparison" in w.wf.message


def test_a_failed_pin_keeps_the_old_one_and_it_is_released_at_the_end() -> None:
    w = World()
    w.offline_passed()
    first = w.pin
    w.wf.pinned("", "model_comparison/next_model: no reply within 5 s")
    assert w.wf.online.pinned == first and "no reply" in w.wf.online.pin_problem
    recs = w.wf.analytics()["recommendations"]
    assert any("hil_session runs the model" in r and "blind" in r for r in recs), recs
    assert not any("deploy it with" in r for r in recs)  # not while its online evaluation runs
    w.life.stop()
    w.run(w.wf.observe_comparison(w.now, status_of(w.life)))
    assert isinstance(w.log[-1], PinModel) and w.log[-1].model_id == "" and not w.log[-1].next and w.pin == ""


def test_a_pin_that_failed_is_tried_again_without_a_new_status() -> None:
    # hil_session not discovered when the comparison started: model_comparison's status changes only with a trial,
    # so the machine's own tick tries the pin again (CI: the pin failed twice at start-up and never again)
    w = World()
    w.pin_error = "no hil_session running"
    w.offline_passed()
    assert w.pin == "" and w.wf.online.pin_problem == "no hil_session running"
    tries = lambda: sum(isinstance(e, PinModel) for e in w.log)  # noqa: E731
    first = tries()
    w.now += PIN_RETRY_S / 2
    w.run(w.wf.observe_episodes(w.now, []))
    assert tries() == first  # not before PIN_RETRY_S
    w.pin_error = ""
    w.now += PIN_RETRY_S
    w.run(w.wf.observe_episodes(w.now, []))
    assert w.pin in ("v1", "v2") and w.wf.online.pinned == w.pin and w.wf.online.pin_problem == ""
    n = len(w.log)
    w.now += 2 * PIN_RETRY_S
    w.run(w.wf.observe_episodes(w.now, []))
    assert len(w.log) == n  # pinned: no more tries


def test_which_episodes_become_trials() -> None:
    w = World()
    w.now = 100.0
    w.facts = [EpisodeFact("old/episode_0.hdf5", 50.0, True, False, 1, 0, "v2")]  # before the start
    w.offline_passed()
    sent = lambda: [e for e in w.log if isinstance(e, SendTrial)]  # noqa: E731
    w.episode("v2", -1)                    # not labelled
    w.episode("v1,v2", 1)                  # two models drove it
    w.episode("v0", 1)                     # another model
    w.facts.append(EpisodeFact("x/broken.hdf5", w.now + 1, False, False, 1, 0, "v2"))
    w.episode("v2", 1, human=12)           # corrected: the model needed help -> a failure
    w.episode("v1", 1)
    trials = sent()
    assert [(t.model_id, t.success) for t in trials] == [("v2", False), ("v1", True)]
    w.run(w.wf.observe_episodes(w.now, list(w.facts)))
    assert len(sent()) == 2                # each episode once
    # a trial model_comparison did not receive is sent again next round
    w.episode("v2", 1)
    last = sent()[-1]
    w.wf.trial_sent(w.now, last, False, "", "model_comparison/record_trial: no reply within 5 s")
    assert "sent again" in w.wf.message
    w.run(w.wf.observe_episodes(w.now, list(w.facts)))
    assert sent()[-1] == last and len(sent()) == 4


def test_auto_deploy_off_or_online_off_keep_the_old_paths() -> None:
    w = World(auto=False)
    w.offline_passed()
    assert not w.log and "auto_deploy_enabled is false: not deployed" in w.wf.message
    w = World(online_trials=0)
    w.offline_passed()
    assert [type(e) for e in w.log] == [Deploy] and w.wf.current_model == "v2"
    with pytest.raises(ValueError, match="online_trials must be 0"):
        WorkflowConfig(online_trials=3)
    with pytest.raises(ValueError, match="online_timeout_s"):
        WorkflowConfig(online_trials=10, online_timeout_s=0.0)


def test_an_online_evaluation_survives_a_restart_of_the_manager(tmp_path) -> None:
    w = World()
    w.offline_passed()
    for _ in range(3):
        w.episode(w.pin, 1)
    path = tmp_path / "state.json"
    save_state(path, w.wf.to_dict())
    data, _ = load_state(path)
    restored = Workflow(w.wf.config, 0.0)
    restored.load(data)
    restored.observe_server(w.now, dict(SERVER_OK), [])
    assert restored.stage == Stage.AB_TESTING and restored.online.comparison_id == w.life.comparison_id
    assert restored.online.sent == w.wf.online.sent
    w.wf = restored                        # the same episodes are not sent twice; the verdict still decides
    w.run(w.wf.observe_episodes(w.now, list(w.facts)))
    assert sum(isinstance(e, SendTrial) for e in w.log) == 3
    w.rollouts({"v1": 0.2, "v2": 0.95}, seed=8)
    assert [d.model_id for d in w.deploys] == ["v2"]


# --- against the real nodes --------------------------------------------------------------------------------------
def start_comparison(procs, port: int) -> None:
    """model_comparison with the sim bring-up profile's parameter file, pointed at this test's server."""
    from h1_training.bringup import load_profile
    from h1_training.procs import resolve_executable

    (node,) = [n for n in load_profile("sim").nodes if n.name == "model_comparison"]
    argv = [*resolve_executable("model_comparison"), "--ros-args"]
    for path in node.params:
        argv += ["--params-file", str(path)]
    procs.start("model_comparison", argv + ["-p", f"policy_port:={port}", "-p", "seed:=5"])


def online_stack(procs, probe, tmp_path, *params: str):
    from test_workflow_manager import TARGET, captures, free_port, start_manager, start_server, write_episode

    from h1_training.nodes.common import LATCHED_QOS
    from h1_training_interfaces.msg import ModelComparisonStatus

    data, models = tmp_path / "data", tmp_path / "models"
    for i in range(8):  # demonstrations reaching TARGET: the trained model beats the server's first one offline
        write_episode(data, i, target=TARGET, human=False)
    port = free_port()
    start_server(procs, port, models, data)
    comparison = probe.capture(ModelComparisonStatus, "/model_comparison/status", LATCHED_QOS)
    start_comparison(procs, port)
    comparison.wait(timeout=120)  # its first status: importing scipy/statsmodels takes long on a loaded machine
    status, _, _, analytics = captures(probe)
    start_manager(procs, port, data, tmp_path / "state.json", "workflow.min_episodes_before_training:=8",
                  "workflow.auto_deploy_enabled:=true", "workflow.holdout_every:=2", "training.policy_type:=scripted",
                  "evaluation.send_images:=false", *params)
    return data, port, status, comparison, analytics, write_episode


@pytest.mark.timeout(300)
def test_nodes_deploy_only_after_model_comparisons_evidence(procs, probe, tmp_path) -> None:
    from rcl_interfaces.srv import GetParameters
    from std_srvs.srv import Trigger

    from h1_training.policy.client import http_json
    from h1_training.procs import wait_until

    data, port, status, comparison, analytics, write_episode = online_stack(
        procs, probe, tmp_path, "evaluation.online_trials:=30")
    # hil_session (no arm or recorder in this stack: only its parameters are used), whose `model` the manager pins
    procs.start_executable("hil_session", "hil_session", [
        "--ros-args", "-p", "policy_host:=127.0.0.1", "-p", f"policy_port:={port}", "-p", f"save_dir:={tmp_path}/hs",
        "-p", "startup_timeout_s:=1.0", "-p", "sync_enabled:=false"])
    probe.wait_for_service("/hil_session/set_parameters", timeout=60)

    def pin() -> str:
        reply = probe.call(GetParameters, "/hil_session/get_parameters", {"names": ["model"]}, timeout=15)
        return reply.values[0].string_value

    def next_model() -> str:
        return probe.call(Trigger, "/model_comparison/next_model", Trigger.Request(), timeout=15).message

    served = lambda: http_json(f"http://127.0.0.1:{port}", None, "/training_status")["model_id"]  # noqa: E731
    ab = status.wait(where=lambda m: m.stage_name == "AB_TESTING", timeout=120)
    running = comparison.wait(where=lambda m: m.state_name == "RUNNING", timeout=30)
    scripted, new = [m.model_id for m in running.models]
    assert scripted == "scripted" and new.startswith("v") and running.trials_cap == 30
    assert served() == "scripted" and ab.current_model_version == "scripted"
    recs = status.wait(where=lambda m: any("hil_session runs the model" in r for r in m.recommendations), timeout=30)
    assert any(f"online A/B {running.comparison_id} of {new} vs scripted" in r for r in recs.recommendations)
    assert probe.set_parameter("training_workflow_manager", "workflow.auto_train_enabled", False).successful

    # evaluation rollouts, as hil_session's policy mode saves them: one labelled episode of the model hil_session
    # is pinned to, which is the one model_comparison names next (seeded: the new model succeeds 95 %, the old
    # one 20 %); the manager turns each into a record_trial
    rng = np.random.default_rng(11)
    quality = {scripted: 0.2, new: 0.95}
    for n in range(1, 61):
        model = wait_until(lambda: (lambda m: m if m and m == next_model() else "")(pin()), 30,
                           "hil_session's model pinned to the model model_comparison names next")
        assert model in quality
        write_episode(data, 100 + n, frames=20, model=model, success=int(rng.random() < quality[model]),
                      human=False, epoch=1)
        st = comparison.wait(where=lambda m, n=n: sum(x.trials for x in m.models) == n, timeout=60)
        if st.state_name != "RUNNING":
            break
        assert served() == "scripted"  # no evidence yet: nothing deployed
        assert status.last().current_model_version == "scripted"
    assert st.state_name == "COMPLETED" and st.winner == new and st.stop_reason == "efficacy"
    assert st.e_value >= st.e_threshold and n < 60
    deployed = status.wait(where=lambda m: m.current_model_version == new, timeout=60)
    assert served() == new and deployed.previous_model_version == "scripted" and "deployed" in deployed.message
    # the deploy came after model_comparison's verdict
    t_verdict = comparison.times[[i for i, m in enumerate(comparison.messages) if m.state_name == "COMPLETED"][0]]
    t_deploy = status.times[[i for i, m in enumerate(status.messages) if m.current_model_version == new][0]]
    assert t_verdict < t_deploy
    wait_until(lambda: pin() == "", 30, "the pin released after the verdict")


@pytest.mark.timeout(300)
def test_nodes_online_evaluation_times_out_and_is_not_deployed(procs, probe, tmp_path) -> None:
    from h1_training.policy.client import http_json

    _, port, status, comparison, _, _ = online_stack(
        procs, probe, tmp_path, "evaluation.online_trials:=30", "evaluation.online_timeout_s:=8.0")
    status.wait(where=lambda m: m.stage_name == "AB_TESTING", timeout=120)
    comparison.wait(where=lambda m: m.state_name == "RUNNING", timeout=30)
    # no hil_session in this stack: nothing to pin, and the status says what to do instead
    status.wait(where=lambda m: any("no hil_session running" in r and "/model_comparison/next_model" in r
                                    for r in m.recommendations), timeout=30)
    refused = status.wait(where=lambda m: "timed out" in m.message, timeout=60)
    assert "not deployed: the online evaluation timed out" in refused.message
    assert "online_timeout_s 8" in refused.message
    assert comparison.wait(where=lambda m: m.state_name == "CANCELLED", timeout=30)
    assert refused.current_model_version == "scripted" and refused.stage_name != "AB_TESTING"
    assert http_json(f"http://127.0.0.1:{port}", None, "/training_status")["model_id"] == "scripted"
    assert any("not deployed: the online evaluation timed out" in r for r in refused.recommendations)
