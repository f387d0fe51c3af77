"""The built Foxglove extension in Debian's chromium (playwright-core, headless), its PanelExtensionContext speaking
foxglove.sdk.v1 to the real foxglove_gateway with the sim stack, hil_session and dataset_manager running: the HIL
Session panel's "y" button drives the real session from READY to EXECUTING (checked on ROS), the Dataset Browser
lists the recorded episodes. Screenshots land in build/test-artifacts/foxglove/.

Needs what ``make setup`` installs: chromium (apt) and foxglove_panels/node_modules + dist/extension.js."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from h1_training.bringup import load_profile
from h1_training.nodes.hil_session_node import STATUS_QOS
from h1_training.recording import layout as L
from h1_training.training.synthetic import make_episode
from h1_training_interfaces.msg import SessionStatus

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


@pytest.fixture
def stack(procs, probe, tmp_path):
    require_browser_setup()
    robot_dir, synced, datasets = tmp_path / "robot", tmp_path / "synced", tmp_path / "datasets"
    synced.mkdir()
    for i in range(3):
        L.write_episode(L.episode_path(datasets, 1, i), make_episode(40 + 10 * i, 32, 24, seed=i))
    for node in load_profile("sim").nodes:  # the sim profile's gateway included, on a free port
        extra = {"episode_recorder": ["-p", f"save_dir:={robot_dir}"],
                 "foxglove_gateway": ["-p", "port:=0", "-p", "discovery_period_s:=0.5"]}.get(node.executable, [])
        procs.start_executable(node.name, node.executable, node.argv_tail() + extra)
    procs.start_executable("policy_server", "h1-training", ["serve", "--port", "0"])
    line = procs.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout=60)
    port = int(line.rsplit(":", 1)[1])
    status = probe.capture(SessionStatus, "/hil_session/status", STATUS_QOS)
    procs.start_executable("hil_session", "hil_session", [
        "--ros-args", "-p", "policy_host:=127.0.0.1", "-p", f"policy_port:={port}", "-p", f"save_dir:={robot_dir}",
        "-p", f"rsync_target:={synced}/", "-p", "poll_period_s:=0.3", "-p", "prompt:=reach forward"])
    procs.start_executable("dataset_manager", "dataset_manager", [
        "--ros-args", "-p", f"roots:=['{datasets}']", "-p", "refresh_period_s:=0"])
    url = procs.wait_for_line("foxglove_gateway", lambda s: "listening on ws://" in s, timeout=60).rsplit(" ", 1)[1]
    probe.wait_for_service("/episode_recorder/start", timeout=60)
    # the session reaches READY by itself once the policy server answers; "y" then starts the episode
    status.wait(where=lambda m: m.state_name == "READY" and "y" in m.allowed_keys, timeout=90)
    return url, status


def test_panels_drive_the_real_session_and_list_recorded_episodes(stack):
    url, status = stack
    hil = run_browser("hil", url)
    assert sorted(hil["registered"]) == ["Dataset Browser", "HIL Session", "Model Comparison", "Training Dashboard"]
    assert hil["before"]["state"] == "READY" and "y" in hil["before"]["prompt"]
    # the click went through the gateway to /hil_session/command: the session itself started the episode
    assert hil["after"]["state"] == "EXECUTING", hil
    assert hil["after"]["result"].startswith("/hil_session/command:")
    seen = [m.state_name for m in list(status.messages)]
    assert "EXECUTING" in seen[seen.index("READY"):], seen

    ds = run_browser("datasets", url)
    assert len(ds["datasets"]) == 1 and ds["datasets"][0].startswith("training_session_epoch1 · 3 episodes")
    assert [e.split(" · ")[:2] for e in ds["episodes"]] == [["#0", "40 frames"], ["#1", "50 frames"],
                                                          ["#2", "60 frames"]]
    # playback services are issue 9's (dataset_manager playback): until they exist the panel says so
    assert ds["play"].startswith("/playback/play")

    other = run_browser("panels", url)
    assert "no training job yet" in other["Training Dashboard"]
    assert "no comparison status" in other["Model Comparison"] or "IDLE" in other["Model Comparison"]
    for name in ("hil_session_ready.png", "hil_session_after_y.png", "dataset_browser.png",
                 "training_dashboard.png", "model_comparison.png"):
        assert (ARTIFACTS / name).stat().st_size > 5000, name
