"""The built Foxglove extension in Debian's chromium (playwright-core, headless), its PanelExtensionContext speaking
foxglove.sdk.v1 to the real foxglove_gateway with the sim stack, hil_session, dataset_manager, the sim profile's
training_workflow_manager and ``h1-training serve`` (tiny CPU jobs) running:

- the HIL Session panel's "y" button drives the real session from READY to EXECUTING (checked on ROS);
- the Dataset Browser lists the recorded episodes and plays one back: the panel shows /playback/status reach
  FINISHED, and a plain foxglove.sdk.v1 client (test/foxglove_ws.py) of the same gateway receives the episode's
  frames on /playback/joint_states;
- the Training Dashboard's "start training" starts a real job of the workflow manager on the server, the panel's
  step and loss follow its /lerobot/training_stats live (rising steps, a curve), "stop" cancels it.

Screenshots land in build/test-artifacts/foxglove/. Needs what ``make setup`` installs: chromium (apt) and
foxglove_panels/node_modules + dist/extension.js."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from foxglove_ws import FoxgloveClient

from h1_training.bringup import load_profile, start_profile
from h1_training.nodes.common import LATCHED_QOS
from h1_training.nodes.hil_session_node import STATUS_QOS
from h1_training.nodes.probe import RosProbe
from h1_training.procs import ProcessGroup, loopback_ros_env, wait_until
from h1_training.recording import layout as L
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, make_episode
from h1_training_interfaces.msg import SessionStatus, TrainerStatus, TrainingStats, WorkflowStatus

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[1]
PANELS = REPO / "foxglove_panels"
ARTIFACTS = REPO / "build" / "test-artifacts" / "foxglove"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def require_browser_setup() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (Debian package 'chromium': apt-get install -y chromium)")
    if not (PANELS / "node_modules" / "playwright-core").is_dir() or shutil.which("node") is None:
        missing.append("node and foxglove_panels/node_modules (cd foxglove_panels && npm ci)")
    if not (PANELS / "dist" / "extension.js").is_file():
        missing.append("foxglove_panels/dist/extension.js (cd foxglove_panels && npm run build)")
    if missing:
        pytest.fail("browser test setup missing (make setup installs it): " + "; ".join(missing))


def run_browser(scenario: str, url: str) -> dict:
    proc = subprocess.run(["node", "browser/run.mjs", scenario, url, str(ARTIFACTS)], cwd=PANELS,
                          capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"browser run printed no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(lines[-1])
    assert proc.returncode == 0, f"{scenario}: {result.get('error')}\n{proc.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory, domain_id):
    require_browser_setup()
    tmp = tmp_path_factory.mktemp("foxglove")
    robot_dir, synced, datasets = tmp / "robot", tmp / "synced", tmp / "datasets"
    synced.mkdir()
    episodes = [make_episode(40 + 10 * i, 32, 24, seed=i) for i in range(3)]
    for i, ep in enumerate(episodes):
        L.write_episode(L.episode_path(datasets, 1, i), ep)
    group = ProcessGroup(env=loopback_ros_env(domain_id))
    probe = RosProbe(f"foxglove_browser_probe_{os.getpid()}")
    try:
        # the GPU server (CPU here) trains the workflow manager's jobs on the episodes above
        group.start_executable("policy_server", "h1-training", [
            "serve", "--port", "0", "--models-dir", str(tmp / "models"), "--data-dir", str(datasets),
            "--device", "cpu"])
        line = group.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout=90)
        port = int(line.rsplit(":", 1)[1])
        workflow = probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
        trainer = probe.capture(TrainerStatus, "/lerobot/trainer_status", LATCHED_QOS)
        stats = probe.capture(TrainingStats, "/lerobot/training_stats", 10)
        # the sim profile on private ports, its gateway (on a free port) and workflow manager included, the manager
        # on the server above with a tiny CPU job whose step budget outlasts the test (the panel's stop ends it);
        # this test's own dataset manager (below) lists the episodes written above
        tiny = json.dumps(TINY_POLICY_OPTIONS["cnn_lstm"])
        start_profile(group, load_profile("sim"), {
            "episode_recorder": ["-p", f"save_dir:={robot_dir}"],
            "foxglove_gateway": ["-p", "port:=0", "-p", "discovery_period_s:=0.5"],
            "training_workflow_manager": [
                "-p", f"server.url:=http://127.0.0.1:{port}", "-p", f"workflow.data_dir:={datasets}",
                "-p", f"workflow.state_file:={tmp / 'workflow_state.json'}", "-p", "workflow.auto_train_enabled:=false",
                "-p", "workflow.poll_period_s:=0.5", "-p", "status_period_s:=0.3", "-p", "training.device:=cpu",
                "-p", "training.policy_type:=cnn_lstm", "-p", "training.steps:=100000", "-p", "training.batch_size:=2",
                "-p", f"training.hyperparameters_json:='{tiny}'"],
        }, skip=("dataset_manager",))
        status = probe.capture(SessionStatus, "/hil_session/status", STATUS_QOS)
        group.start_executable("hil_session", "hil_session", [
            "--ros-args", "-p", "policy_host:=127.0.0.1", "-p", f"policy_port:={port}", "-p", f"save_dir:={robot_dir}",
            "-p", f"rsync_target:={synced}/", "-p", "poll_period_s:=0.3", "-p", "prompt:=reach forward"])
        group.start_executable("dataset_manager", "dataset_manager", [
            "--ros-args", "-p", f"roots:=['{datasets}']", "-p", "refresh_period_s:=0"])
        url = group.wait_for_line("foxglove_gateway", lambda s: "listening on ws://" in s, timeout=60).rsplit(" ", 1)[1]
        probe.wait_for_service("/episode_recorder/start", timeout=60)
        workflow.wait(where=lambda m: m.server_reachable, timeout=90)
        yield SimpleNamespace(url=url, status=status, probe=probe, episodes=episodes, trainer=trainer, stats=stats,
                              group=group)
    finally:
        group.stop()
        probe.close()


@pytest.fixture(autouse=True)
def stack_alive(stack):
    """The stack is shared by the module: a child that died before or during a test fails that test with its
    output (the per-test ``procs`` fixture's rule)."""
    assert not stack.group.unexpected_exits(), stack.group.unexpected_exit_report()
    yield
    assert not stack.group.unexpected_exits(), stack.group.unexpected_exit_report()


def test_panels_drive_the_real_session_and_list_recorded_episodes(stack):
    status = stack.status
    # the session reaches READY by itself once the policy server answers; "y" then starts the episode
    status.wait(where=lambda m: m.state_name == "READY" and "y" in m.allowed_keys, timeout=90)
    hil = run_browser("hil", stack.url)
    assert sorted(hil["registered"]) == ["Dataset Browser", "HIL Session", "Model Comparison", "Training Dashboard"]
    assert hil["before"]["state"] == "READY" and "y" in hil["before"]["prompt"]
    # the click went through the gateway to /hil_session/command: the session itself started the episode
    # the panel read the state right after the click: EXECUTING, or already the episode's end when it was short
    assert hil["after"]["state"] in ("EXECUTING", "SAVING", "DECIDING"), hil
    assert hil["after"]["result"].startswith("/hil_session/command:")
    seen = [m.state_name for m in list(status.messages)]
    assert "EXECUTING" in seen[seen.index("READY"):], seen

    # a plain foxglove.sdk.v1 client of the same gateway, subscribed to the playback's joint states
    client = FoxgloveClient(stack.url)
    try:
        sub = client.subscribe(client.channel("/playback/joint_states")["id"])
        wait_until(lambda: gateway_subscribers(stack.probe, "/playback/joint_states") == 1, 20,
                   "the gateway subscribed to /playback/joint_states")
        ds = run_browser("datasets", stack.url)
        # the frames the dataset manager published while the panel showed the playback: episode 0's joint states
        client.wait(lambda: len(client.messages[sub]) >= 1, 20, "no /playback/joint_states frame")
        frames = [json.loads(payload) for _, payload in list(client.messages[sub])]
    finally:
        client.close()
    assert len(ds["datasets"]) == 1 and ds["datasets"][0].startswith("training_session_epoch1 · 3 episodes")
    assert [e.split(" · ")[:2] for e in ds["episodes"]] == [["#0", "40 frames"], ["#1", "50 frames"],
                                                          ["#2", "60 frames"]]
    # play on an episode that is not loaded goes to the dataset manager's /playback/load (autoplay) ...
    assert ds["play"].startswith("/playback/load"), ds["play"]
    # ... which plays it to the end, as the panel shows, and its frames reach a gateway client
    assert "FINISHED" in ds["playback"] and "training_session_epoch1 #0" in ds["playback"], ds["playback"]
    assert ds["playback"].endswith("frame 40/40"), ds["playback"]
    qpos = stack.episodes[0].qpos
    assert 1 <= len(frames) <= 40
    rows = []
    for f in frames:  # every frame received is one of the episode's rows, in the recorded order
        assert f["header"]["frame_id"] == "playback"
        match = np.flatnonzero((qpos == np.asarray(f["position"], dtype=np.float32)).all(axis=1))
        assert match.size, f["position"]
        rows.append(int(match[0]))
    assert rows == sorted(rows) and len(set(rows)) == len(rows), rows

    other = run_browser("panels", stack.url)
    assert "no training job yet" in other["Training Dashboard"]
    assert "no comparison status" in other["Model Comparison"] or "IDLE" in other["Model Comparison"]
    for name in ("hil_session_ready.png", "hil_session_after_y.png", "dataset_browser.png",
                 "dataset_browser_played.png", "training_dashboard.png", "model_comparison.png"):
        assert (ARTIFACTS / name).stat().st_size > 5000, name


def test_training_dashboard_follows_a_real_job_live(stack):
    # the panel's start goes through the gateway to the workflow manager's trigger_training: wait until the
    # gateway offers it (a plain client sees what the panel will see)
    client = FoxgloveClient(stack.url)
    try:
        client.service("/training_workflow/trigger_training", timeout=60)
    finally:
        client.close()
    tr = run_browser("training", stack.url)
    job = stack.trainer.wait(where=lambda m: m.state_name == "RUNNING", timeout=10)
    assert job.origin == "workflow_manager" and job.policy_type == "cnn_lstm"
    stack.trainer.wait(where=lambda m: m.job_id == job.job_id and m.state_name == "CANCELLED", timeout=30)
    first, second = tr["live"]
    steps = [int(x["epoch"].split("step ", 1)[1].split("/")[0]) for x in (first, second)]
    assert 0 < steps[0] < steps[1], tr["live"]
    assert all(x["epoch"].endswith("/100000") for x in (first, second)), tr["live"]
    assert second["points"] >= 2  # the loss curve is drawn from the job's samples
    losses = [float(x["loss"]) for x in (first, second)]
    assert all(np.isfinite(v) and v >= 0 for v in losses), tr["live"]
    # the panel showed the job's own samples: the stats the workflow manager published for it
    sent = {(m.step, f"{m.loss:.4f}") for m in stack.stats.messages if m.job_id == job.job_id}
    assert (steps[1], second["loss"]) in sent, (second, sorted(sent)[-5:])
    assert tr["stopped"].startswith("/training_workflow/cancel_training"), tr["stopped"]
    assert f"CANCELLED ({job.job_id})" in tr["after"], tr["after"]
    assert (ARTIFACTS / "training_dashboard_live.png").stat().st_size > 5000


def gateway_subscribers(probe: RosProbe, topic: str) -> int:
    return sum(1 for i in probe.node.get_subscriptions_info_by_topic(topic) if i.node_name == "foxglove_gateway")
