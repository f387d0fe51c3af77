"""training_web_app against the real stack on loopback: the sim profile (emulated robot, real drivers, recorder,
``training_workflow_manager``), ``h1-training serve`` (the GPU server, here training tiny CPU jobs), ``hil_session``,
``dataset_manager``, and the web node itself, over real HTTP and in Debian's chromium (playwright-core).
Screenshots go to ``test_artifacts/web/`` (or $H1_TEST_ARTIFACTS).

The page's training path is the real one end to end: button -> HTTP -> the workflow manager's ``training.*``
parameters and ``/training_workflow/trigger_training`` -> a job on the server -> ``/lerobot/trainer_status`` and
``/lerobot/training_stats`` as the manager polls it -> the live stream -> the loss chart; the workflow section
shows and sets the manager's ``workflow.*`` parameters.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from rcl_interfaces.srv import GetParameters

from h1_training.bench.browser import Browser, browser_missing
from h1_training.bringup import load_profile, start_profile
from h1_training.nodes.common import LATCHED_QOS
from h1_training.nodes.hil_session_node import STATUS_QOS
from h1_training.nodes.probe import RosProbe
from h1_training.procs import ProcessGroup, loopback_ros_env, wait_until
from h1_training.recording import layout as L
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, make_episode
from h1_training_interfaces.msg import SessionStatus, TrainerStatus, TrainingStats, WorkflowStatus
from h1_training_interfaces.srv import RecordTrial

pytestmark = pytest.mark.timeout(300)
ARTIFACTS = Path(os.environ.get("H1_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test_artifacts")) / "web"
MANAGER = "/training_workflow_manager"


def test_adapter_conversions(tmp_path):
    from rcl_interfaces.msg import ParameterType

    from h1_training.nodes.training_web_app_node import msg_to_dict, param_value, read_token_file, to_param_value

    d = msg_to_dict(TrainingStats(job_id="j", step=3, loss=0.5))
    assert d["job_id"] == "j" and d["step"] == 3 and d["loss"] == 0.5 and isinstance(d["header"]["stamp"], float)
    T = ParameterType
    for kind, value, ptype in (("bool", True, T.PARAMETER_BOOL), ("int", 3, T.PARAMETER_INTEGER),
                               ("float", 2, T.PARAMETER_DOUBLE), ("str", "x", T.PARAMETER_STRING),
                               ("list", ["a"], T.PARAMETER_STRING_ARRAY)):
        pv = to_param_value(kind, value, None)
        assert pv.type == ptype and param_value(pv) == value
    assert to_param_value("list", [1.5], [0.5]).type == T.PARAMETER_DOUBLE_ARRAY
    assert read_token_file("") == ""
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "t").write_text("\n")
        read_token_file(str(tmp_path / "t"))
    with pytest.raises(ValueError, match="token_file"):
        read_token_file(str(tmp_path / "missing"))


# these two run before the module's stack starts (a running hil_session would answer them)

def test_node_refuses_a_lan_address_without_a_token(procs):
    child = procs.start_executable("training_web_app", "training_web_app",
                                   ["--ros-args", "-p", "host:=0.0.0.0", "-p", "port:=0"],
                                   expect_exit=True)
    wait_until(lambda: not child.running, 30, "training_web_app to exit")
    assert child.proc.returncode != 0 and "without a token" in child.output()


def test_node_with_a_token(procs, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    procs.start_executable("training_web_app", "training_web_app", [
        "--ros-args", "-p", "port:=0", "-p", f"token_file:={token_file}", "-p", "models_period_s:=3600.0"])
    line = procs.wait_for_line("training_web_app", lambda s: "listening on http://" in s, timeout=60)
    url = line.split("listening on ", 1)[1].strip()
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/api/state").status_code == 401
        assert http.post("/api/session/command", json={"key": "y"}).status_code == 401
        assert http.get("/api/state", headers={"Authorization": "Bearer t0ken"}).status_code == 200
        # no hil_session on this graph: the service is named in a 503
        r = http.post("/api/session/command", json={"key": "y"}, headers={"X-H1-Token": "t0ken"})
        assert r.status_code == 503 and "/hil_session/command" in r.json()["error"]
    if browser_missing() is None:  # the login form in a real browser: its cookie carries the page and the stream
        with Browser() as b:
            b.goto(url + "/")
            assert b.eval("location.pathname") == "/login"
            b.fill("input[name=token]", "wrong")
            b.click("button[type=submit]")
            b.wait_text("body", "Wrong token", 10000)
            b.fill("input[name=token]", "t0ken")
            b.click("button[type=submit]")
            b.wait_js("window.__h1 && window.__h1.ready !== null", 20000)  # the live stream's first snapshot
            b.wait_text("#conn", "live", 10000)
            assert "t0ken" not in json.dumps(b.do("cookies"))


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory, domain_id):
    tmp = tmp_path_factory.mktemp("web")
    data, synced = tmp / "data", tmp / "synced"
    synced.mkdir()
    train_dir = data / "h1_data"  # the manager's and the server's data dir (the session records beside it)
    for i in range(2):
        L.write_episode(L.episode_path(train_dir, 1, i), make_episode(60, 32, 24, seed=i))
    group = ProcessGroup(env=loopback_ros_env(domain_id))
    probe = RosProbe(f"web_test_probe_{os.getpid()}")
    try:
        group.start_executable("policy_server", "h1-training", [
            "serve", "--port", "0", "--models-dir", str(tmp / "models"), "--data-dir", str(train_dir),
            "--device", "cpu"])
        line = group.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout=90)
        policy_port = int(line.rsplit(":", 1)[1])
        workflow = probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
        trainer = probe.capture(TrainerStatus, "/lerobot/trainer_status", LATCHED_QOS)
        stats = probe.capture(TrainingStats, "/lerobot/training_stats", 10)
        # the sim profile's robot side and its training_workflow_manager on private ports, the manager on the
        # server above with tiny CPU jobs (the page chooses the policy type, steps and learning rate); this test
        # starts its own dataset manager and model comparison (on its data)
        tiny = json.dumps(TINY_POLICY_OPTIONS["cnn_lstm"])
        start_profile(group, load_profile("sim"), {
            # chromium starting on 2 shared cores must not trip the watchdog
            "h1_arm_node": ["-p", "lowstate_timeout_s:=1.0"],
            "episode_recorder": ["-p", f"save_dir:={data / 'session'}"],
            "training_workflow_manager": [
                "-p", f"server.url:=http://127.0.0.1:{policy_port}", "-p", f"workflow.data_dir:={train_dir}",
                "-p", f"workflow.state_file:={tmp / 'workflow_state.json'}", "-p", "workflow.auto_train_enabled:=false",
                "-p", "workflow.poll_period_s:=0.5", "-p", "status_period_s:=0.3", "-p", "training.device:=cpu",
                "-p", "training.batch_size:=2", "-p", f"training.hyperparameters_json:='{tiny}'"],
        }, skip=("dataset_manager", "model_comparison", "foxglove_gateway"))
        session = probe.capture(SessionStatus, "/hil_session/status", STATUS_QOS)
        group.start_executable("hil_session", "hil_session", [
            "--ros-args", "-p", "policy_host:=127.0.0.1", "-p", f"policy_port:={policy_port}",
            "-p", f"save_dir:={data / 'session'}", "-p", f"rsync_target:={synced}/", "-p", "poll_period_s:=0.3"])
        group.start_executable("dataset_manager", "dataset_manager", [
            "--ros-args", "-p", f"roots:=['{data}']", "-p", f"export_dir:={tmp / 'exports'}",
            "-p", "refresh_period_s:=0"])
        group.start_executable("model_comparison", "model_comparison", [
            "--ros-args", "-p", f"policy_port:={policy_port}", "-p", "trials_per_model:=20"])
        group.start_executable("training_web_app", "training_web_app", [
            "--ros-args", "-p", "port:=0", "-p", f"data_roots:=['{data}']", "-p", f"policy_port:={policy_port}",
            "-p", "camera_hz:=2.0"])
        line = group.wait_for_line("training_web_app", lambda s: "listening on http://" in s, timeout=60)
        url = line.split("listening on ", 1)[1].strip()
        probe.wait_for_service("/episode_recorder/start", timeout=60)
        workflow.wait(where=lambda m: m.server_reachable, timeout=90)
        yield SimpleNamespace(url=url, probe=probe, session=session, data=data, group=group, workflow=workflow,
                              trainer=trainer, stats=stats)
    finally:
        group.stop()
        probe.close()


@pytest.fixture
def stack(shared_stack):
    """The module's stack, checked around each test: a child that died before or during a test fails that test
    with its output (the per-test ``procs`` fixture's rule), rather than a later 'connection refused'."""
    group = shared_stack.group
    assert not group.unexpected_exits(), group.unexpected_exit_report()
    yield shared_stack
    assert not group.unexpected_exits(), group.unexpected_exit_report()


def http_models(url: str) -> dict:
    return httpx.get(url + "/api/state", timeout=10).json()["models"]


PAGE_STEP = ("parseInt([...document.querySelectorAll('#train-facts dt')].find(d => d.textContent === 'step')"
             "?.nextElementSibling.textContent)")


def page_training(b: Browser) -> dict:
    """What the page shows of the running job: its loss chart's point count and the facts' step and loss."""
    facts = b.eval("Object.fromEntries([...document.querySelectorAll('#train-facts dt')]"
                   ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
    step, _, total = facts["step"].partition("/")
    return {"points": b.eval("window.__h1.loss"), "step": int(step), "total": int(total), "loss": float(facts["loss"])}


def get_param(probe: RosProbe, node: str, name: str):
    reply = probe.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=[name]), timeout=10)
    v = reply.values[0]
    return {1: v.bool_value, 2: v.integer_value, 3: v.double_value, 4: v.string_value}.get(v.type)


def test_api_over_the_real_stack(stack):
    http = httpx.Client(base_url=stack.url, timeout=30)
    # the dataset manager's catalog, through the live state
    name = "h1_data/training_session_epoch1"
    sets = wait_until(lambda: [d for d in http.get("/api/datasets").json()["datasets"] if d["name"] == name], 30,
                      "the dataset list")
    assert sets[0]["num_episodes"] == 2
    ep = http.get("/api/datasets/episode", params={"dataset": name, "index": 1}).json()
    assert ep["index"] == 1 and ep["frames"] == 60 and ep["path"].endswith("episode_1.hdf5")
    assert http.get("/api/datasets/episode", params={"dataset": sets[0]["name"], "index": 5}).status_code == 404
    assert http.get("/api/datasets/episode", params={"dataset": "../etc", "index": 0}).status_code == 400
    r = http.post("/api/datasets/export", json={"dataset": sets[0]["name"], "format": "hdf5"})
    assert r.status_code == 200 and r.json()["ok"] and Path(r.json()["output_path"]).is_dir()
    # flag: the dataset manager marks the episode's file excluded from training
    r = http.post("/api/datasets/flag", json={"dataset": sets[0]["name"], "index": 0, "flagged": True})
    assert r.status_code == 200, r.text
    assert L.is_excluded(stack.data / "h1_data" / "training_session_epoch1" / "episode_0.hdf5")
    # data collection (the workflow manager's service; a valid request would drive this module's session, which
    # the browser test needs): a bad body is refused before it reaches the manager
    r = http.post("/api/collection/start", json={"mode": "teleoperation", "target_episodes": 0})
    assert 400 <= r.status_code < 500 and "target_episodes" in r.text, r.text
    # the workflow section: the workflow manager's workflow.* parameters (not the training.* ones the training
    # form sets); a value set here is what GetParameters returns and what the manager's status shows
    names = [x["name"] for x in wait_until(lambda: http.get("/api/workflow/parameters").json().get("parameters"),
                                           30, "the workflow parameters")]
    assert "workflow.min_episodes_before_training" in names and all(n.startswith("workflow.") for n in names)
    name = "workflow.min_episodes_before_training"
    r = http.post("/api/workflow/parameters", json={"name": name, "value": 12})
    assert r.status_code == 200, r.text
    assert get_param(stack.probe, MANAGER, name) == 12
    r = http.post("/api/workflow/parameters", json={"name": "training.steps", "value": 5})  # not a workflow one
    assert r.status_code == 404 and name in r.json()["error"]
    stack.workflow.wait(where=lambda m: m.min_episodes_before_training == 12, timeout=10)
    r = http.post("/api/workflow/parameters", json={"name": name, "value": 0})
    assert r.status_code == 400 and "below the minimum 1" in r.json()["error"]
    r = http.post("/api/workflow/parameters", json={"name": name, "value": 2.5})
    assert r.status_code == 400 and "integer" in r.json()["error"]
    assert get_param(stack.probe, MANAGER, name) == 12
    # the policy server's models
    models = wait_until(lambda: http.get("/api/state").json()["models"].get("models"), 20, "the model list")
    assert models
    # camera thumbnails arrive on the live stream
    with http.stream("GET", "/api/events") as stream:
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        for line in stream.iter_lines():
            if line.startswith("data: "):
                msg = json.loads(line[6:])
                if msg["topic"].startswith("camera/") and msg["data"]["jpeg_b64"]:
                    seen.add(msg["data"]["name"])
            if len(seen) == 3 or time.monotonic() > deadline:
                break
    assert seen == {"ego_cam", "cam_left_wrist", "cam_right_wrist"}


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_browser_drives_session_training_and_workflow(stack):
    session = stack.session
    with Browser() as b:
        b.goto(stack.url + "/")
        b.wait_js("window.__h1.ready !== null")
        b.wait_text("#session-state", "READY", 60000)
        b.wait_js("document.querySelectorAll('#cameras img[src^=\"data:image/jpeg\"]').length === 3", 20000)
        b.screenshot(ARTIFACTS / "01_session_ready.png")
        b.click("#key-y")
        b.wait_text("#session-state", "EXECUTING", 20000)
        session.wait(where=lambda m: m.state_name == "EXECUTING", timeout=10)
        time.sleep(1.0)
        b.click("#key-s")
        b.wait_text("#session-state", "LABELING", 20000)
        b.click("#label-ok")
        b.wait_text("#session-state", "DAMPING", 20000)
        last = session.wait(where=lambda m: m.state_name == "DAMPING", timeout=10)
        assert last.label == 1
        b.screenshot(ARTIFACTS / "02_session_damping.png")
        b.click("#key-e")
        b.wait_text("#session-state", "DECIDING", 30000)
        session.wait(where=lambda m: m.state_name == "DECIDING", timeout=10)

        # training: the page's button -> the manager's training.* parameters + trigger_training -> a real job on
        # the server -> the manager's status and stats topics -> the live loss curve. The step budget is large
        # so the job is still running while the curve grows; the page's stop cancels it.
        b.select("#policy-type", "cnn_lstm")
        b.fill("#train-steps", 100000)
        b.fill("#hp-lr", 0.0003)
        b.click("#train-start")
        b.wait_text("#trainer-state", "RUNNING", 60000)
        job = stack.trainer.wait(where=lambda m: m.state_name == "RUNNING", timeout=10)
        assert job.origin == "workflow_manager" and job.policy_type == "cnn_lstm"
        assert (get_param(stack.probe, MANAGER, "training.policy_type"), get_param(stack.probe, MANAGER,
                "training.steps"), get_param(stack.probe, MANAGER, "training.learning_rate")) == \
            ("cnn_lstm", 100000, 0.0003)
        # the curve: points of the job's real stats, their steps rising, the page's numbers those of the topic
        b.wait_js(f"{PAGE_STEP} > 0 && window.__h1.loss >= 1", 120000)
        first = page_training(b)
        b.wait_js(f"{PAGE_STEP} > {first['step']} && window.__h1.loss > {first['points']}", 120000)
        second = page_training(b)
        assert second["step"] > first["step"] > 0 and second["total"] == 100000, (first, second)
        assert all(x == x and x >= 0 for x in (first["loss"], second["loss"])), (first, second)  # finite, not NaN
        sent = {(m.step, round(m.loss, 4)) for m in stack.stats.messages if m.job_id == job.job_id}
        assert (second["step"], second["loss"]) in sent, (second, sorted(sent)[-5:])
        b.eval("window.scrollTo(0, 0)")  # the sticky header stays on top in a full-page shot
        b.screenshot(ARTIFACTS / "03_training_loss.png")
        b.screenshot(ARTIFACTS / "00_overview.png", full=False)  # the README's picture (one screen)
        b.click("#train-stop")
        b.wait_text("#trainer-state", "CANCELLED", 60000)
        stack.trainer.wait(where=lambda m: m.job_id == job.job_id and m.state_name == "CANCELLED", timeout=10)

        # workflow: one of the manager's workflow.* parameters set in the page is what GetParameters returns
        name = "workflow.training_trigger_interval_hours"
        row = f'tr[data-param="{name}"]'
        b.wait_js(f"!!document.querySelector('{row}')", 20000)
        b.fill(f"{row} .pv", 7.5)
        b.click(f"{row} .pset")
        b.wait_text("#toast", f"{name} = 7.5", 10000)
        assert get_param(stack.probe, MANAGER, name) == 7.5
        stack.workflow.wait(where=lambda m: m.training_trigger_interval_hours == 7.5, timeout=10)
        b.fill(f"{row} .pv", -3)
        b.click(f"{row} .pset")
        b.wait_text("#toast", "below the minimum", 10000)
        assert get_param(stack.probe, MANAGER, name) == 7.5
        b.wait_js(f"document.querySelector('{row} .pv').value === '7.5'", 10000)  # the refused value is not kept

        # datasets: list and one episode's details
        b.wait_text("#datasets-table", "h1_data/training_session_epoch1", 10000)
        b.click('#datasets-table tr[data-name="h1_data/training_session_epoch1"] .ds-open')
        b.click('#episode-list button[data-index="1"]')
        b.wait_text("#episode-detail", "episode_1.hdf5", 10000)
        b.eval("window.scrollTo(0, 0)")
        b.screenshot(ARTIFACTS / "04_datasets_workflow.png")
        # comparison: an A/B test of the server's two built-in models, followed live, then deploy one
        b.wait_js("document.querySelectorAll('#cmp-models input').length >= 2", 20000)
        b.click('#cmp-models input[value="scripted"]')
        b.click('#cmp-models input[value="scripted-hold"]')
        b.fill("#cmp-trials", 20)
        b.click("#cmp-start")
        b.wait_text("#cmp-state", "RUNNING", 20000)
        for i in range(12):  # trials reported as the session would report them
            for model, ok in (("scripted", i % 4 != 0), ("scripted-hold", i % 3 == 0)):
                stack.probe.call(RecordTrial, "/model_comparison/record_trial", RecordTrial.Request(
                    model_id=model, success=ok, execution_time_s=10.0 + i % 3, grasp_confidence=-1.0,
                    score=(0.9 if ok else 0.3 + 0.01 * i) if model == "scripted" else (0.8 if ok else 0.1)))
        b.wait_js("document.querySelectorAll('#cmp-table tbody tr').length === 2", 10000)
        b.wait_text("#cmp-table", "12", 10000)
        b.wait_text("#cmp-verdict", "p ", 10000)
        # the evidence beyond the headline test: anytime-valid e-value, difference, partial credit, Bayesian
        for line in ("sequential e-value", "difference scripted-hold − scripted", "partial credit (",
                     "time to success (", "Bayesian (Beta(1,1) priors)"):
            b.wait_text("#cmp-verdict", line, 10000)
        b.eval("window.scrollTo(0, 0)")
        b.screenshot(ARTIFACTS / "05_comparison.png")
        b.click("#cmp-stop")
        b.wait_text("#cmp-state", "CANCELLED", 10000)
        b.click('#cmp-table button.deploy[data-model="scripted-hold"]')
        b.wait_text("#deployed", "scripted-hold", 20000)
        assert http_models(stack.url)["deployed"] == "scripted-hold"
        errors = [c for c in b.console() if c.startswith("pageerror")]
        assert errors == []

