"""The policy server on 127.0.0.1 against the unmodified openpi-client and our client: metadata, inference, error
frame, API key, model choice, HTTP API, hot swap after a training job with a client connected, auto mode, CLI."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from h1_training.policy import codec
from h1_training.policy.client import (
    PolicyClient,
    PolicyClientError,
    ServerError,
    ServerUnavailable,
    get_training_status,
)
from h1_training.policy.scripted import REACH_TARGET_RAD
from h1_training.procs import wait_until
from h1_training.recording import layout
from h1_training.recording.layout import SYNC_MARKER
from h1_training.robot_model import ARM_HOME_RAD
from h1_training.serve.server import PolicyServer, ServerConfig
from h1_training.training.autotrain import AutoTrainConfig, scan

# openpi-client 0.1.2 calls websockets' connect() outside a context manager (its code, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")


def _obs(state=None) -> dict:
    rng = np.random.default_rng(1)
    return {"images": {c: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                       for c in ("cam_head", "cam_left_wrist", "cam_right_wrist")},
            "state": np.asarray(ARM_HOME_RAD if state is None else state, np.float32), "prompt": "reach"}


def _http(port: int, path: str, method: str = "GET", body=None, key: str | None = None) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if key:
        req.add_header("Authorization", f"Api-Key {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, code = exc.read(), exc.code
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode()


def _write_epoch(data_dir: Path, epoch: int, final_pose: np.ndarray, episodes: int = 2, frames: int = 12) -> Path:
    """Tiny seed-format episodes whose arm ends at ``final_pose`` (what the scripted fit learns)."""
    jpeg = bytes.fromhex("ffd8ffd9")  # the fit reads qpos only; images just satisfy the layout
    for i in range(episodes):
        start = np.asarray(ARM_HOME_RAD, np.float32)
        qpos = np.linspace(start, final_pose, frames).astype(np.float32)
        phase = ["policy"] * (frames // 2) + ["human"] * (frames - frames // 2)
        action = np.where(np.array(phase)[:, None] == "policy", qpos, 0).astype(np.float32)
        ep = layout.Episode(qpos=qpos, action=action, phase=phase, images={c: [jpeg] * frames
                                                                          for c in layout.CAMERA_NAMES})
        layout.write_episode(layout.episode_path(data_dir, epoch, i), ep)
    return layout.session_dir(data_dir, epoch)


@pytest.fixture
def server_factory(tmp_path):
    servers: list[PolicyServer] = []

    def make(**kw) -> PolicyServer:
        server = PolicyServer(ServerConfig(port=kw.pop("port", 0), **kw))
        server.start_background()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


def test_openpi_client_metadata_and_inference(server_factory) -> None:
    server = server_factory()
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    meta = client.get_server_metadata()
    assert meta["model_id"] == "scripted" and meta["epoch"] == 0
    assert meta["action_horizon"] == 50 and meta["action_dim"] == 14
    first = client.infer(_obs())
    second = client.infer(_obs())
    assert first["actions"].shape == (50, 14) and first["actions"].dtype == np.float32
    gap = np.abs(second["actions"] - REACH_TARGET_RAD).max(axis=1)
    assert np.all(np.diff(gap) <= 1e-6) and gap[-1] < gap[0]  # moving smoothly toward the reach pose
    assert first["server_timing"]["infer_ms"] >= 0 and "prev_total_ms" in second["server_timing"]
    assert second["model_id"] == "scripted" and second["model_epoch"] == 0
    client._ws.close()


@pytest.mark.parametrize("bad", ["short_state", "not_msgpack", "object_dtype", "text_frame", "nan_state"])
def test_malformed_observation_gets_error_frame_and_server_keeps_serving(server_factory, bad) -> None:
    server = server_factory()
    frames = {
        "short_state": codec.packb({"state": np.zeros(3, np.float32)}),
        "not_msgpack": b"\xc1\x00garbage",
        "object_dtype": msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O",
                                                 b"shape": [1]}}),
        "text_frame": "hello",
        "nan_state": codec.packb({"state": np.full(14, np.nan, np.float32)}),
    }
    with connect(f"ws://127.0.0.1:{server.port}", open_timeout=5) as ws:
        codec.unpackb(ws.recv(timeout=5))  # metadata
        ws.send(frames[bad])
        reply = ws.recv(timeout=5)
        assert isinstance(reply, str) and "Traceback" in reply
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1011
    # the openpi client sees the same thing as a RuntimeError with the reason
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    with pytest.raises(RuntimeError, match="'state' must be 14 numbers"):
        client.infer({"state": [1.0, 2.0]})
    # and a fresh connection is served normally
    assert WebsocketClientPolicy("127.0.0.1", server.port).infer(_obs())["actions"].shape == (50, 14)


def test_api_key_checked_on_every_connection(server_factory) -> None:
    server = server_factory(api_key="s3cret")
    ok = WebsocketClientPolicy("127.0.0.1", server.port, api_key="s3cret")
    assert ok.infer(_obs())["actions"].shape == (50, 14)
    for key in (None, "wrong"):
        with pytest.raises(websockets.InvalidStatus) as exc:
            WebsocketClientPolicy("127.0.0.1", server.port, api_key=key)
        assert exc.value.response.status_code == 401
    assert _http(server.port, "/healthz") == (200, "OK\n")  # probes need no key
    assert _http(server.port, "/training_status")[0] == 401
    assert _http(server.port, "/training_status", key="s3cret")[1]["ready"] is True
    assert _http(server.port, "/train", "POST", {"policy_type": "act"})[0] == 401


def test_healthz_training_status_and_http_errors(server_factory) -> None:
    server = server_factory()
    assert _http(server.port, "/healthz") == (200, "OK\n")
    code, status = _http(server.port, "/training_status")
    assert code == 200 and status["ready"] is True and status["epoch"] == 0 and status["model_id"] == "scripted"
    assert status["training"] is False and status["job"] is None
    assert _http(server.port, "/nope")[0] == 404
    assert _http(server.port, "/training_status", "POST", {})[0] == 405
    code, body = _http(server.port, "/train", "POST", {"policy_type": "act", "dataset": "x"})
    assert code == 503 and "models dir" in body["error"]  # no registry: training is off, serving still works


def test_session_picks_a_model_by_query(server_factory) -> None:
    server = server_factory()
    hold = WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}/?model=scripted-hold")
    assert hold.get_server_metadata()["model_id"] == "scripted-hold"
    np.testing.assert_allclose(hold.infer(_obs(np.zeros(14)))["actions"][0], ARM_HOME_RAD, atol=1e-6)
    with pytest.raises(websockets.InvalidStatus) as exc:
        WebsocketClientPolicy(f"ws://127.0.0.1:{server.port}/?model=missing")
    assert exc.value.response.status_code == 404
    with pytest.raises(PolicyClientError, match="404"):
        PolicyClient("127.0.0.1", server.port, model="missing").connect()


def test_message_size_limit(server_factory) -> None:
    server = server_factory(max_message_bytes=64 * 1024)
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    big = _obs()
    big["images"]["cam_head"] = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(websockets.ConnectionClosed) as exc:
        client.infer(big)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009  # message too big
    assert WebsocketClientPolicy("127.0.0.1", server.port).infer(_obs())["actions"].shape == (50, 14)


def test_hot_swap_after_training_job_with_client_connected(server_factory, tmp_path) -> None:
    data_dir, models_dir = tmp_path / "data", tmp_path / "models"
    goal = np.asarray(REACH_TARGET_RAD + 0.1, np.float32)
    _write_epoch(data_dir, 1, goal)
    server = server_factory(models_dir=models_dir, data_dir=data_dir)
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    assert client.infer(_obs())["model_id"] == "scripted"

    code, job = _http(server.port, "/train", "POST", {"policy_type": "scripted", "dataset": "training_session_epoch1",
                                                      "steps": 1})
    assert code == 201 and job["status"] in ("queued", "running")
    assert _http(server.port, "/training_status")[1]["ready"] is False  # new weights are on their way
    answers = []

    def swapped():
        answers.append(client.infer(_obs()))  # the same connection keeps getting answers throughout
        status = _http(server.port, "/training_status")[1]
        return status if status["ready"] and status["epoch"] == 1 else None

    status = wait_until(swapped, 60, "the trained model to be served")
    code, done = _http(server.port, f"/jobs/{job['id']}")
    assert done["status"] == "succeeded" and done["model_id"] == status["model_id"] and done["served_epoch"] == 1
    assert status["last_job"]["id"] == job["id"] and status["policy_type"] == "scripted"
    after = client.infer(_obs(goal + 0.02))
    assert after["model_id"] == done["model_id"] and after["model_epoch"] == 1
    np.testing.assert_allclose(after["actions"][-1], goal, atol=1e-3)  # the fitted target
    assert all(a["actions"].shape == (50, 14) for a in answers)
    models = _http(server.port, "/models")[1]
    assert models["default"] == done["model_id"] and done["model_id"] in [m["id"] for m in models["models"]]
    assert _http(server.port, "/jobs")[1]["jobs"][0]["id"] == job["id"]


def test_deploy_endpoint_swaps_and_epoch_survives_restart(server_factory, tmp_path) -> None:
    models_dir = tmp_path / "models"
    server = server_factory(models_dir=models_dir)
    client = PolicyClient("127.0.0.1", server.port, connect_timeout=2)
    client.connect()
    code, body = _http(server.port, "/models/scripted-hold/deploy", "POST")
    assert code == 200 and body["epoch"] == 1
    np.testing.assert_allclose(client.infer(_obs(np.zeros(14)))["actions"][0], ARM_HOME_RAD, atol=1e-6)
    assert _http(server.port, "/models/none/deploy", "POST")[0] == 404
    client.close()
    server.stop()
    again = server_factory(models_dir=models_dir)
    assert get_training_status("127.0.0.1", again.port)["epoch"] == 1  # never goes back after a restart


def test_bad_training_requests_are_refused(server_factory, tmp_path) -> None:
    data_dir = tmp_path / "data"
    _write_epoch(data_dir, 1, ARM_HOME_RAD, episodes=1)
    server = server_factory(models_dir=tmp_path / "models", data_dir=data_dir)
    for body, reason in (({"policy_type": "nope", "dataset": "training_session_epoch1"}, "policy_type"),
                         ({"policy_type": "act"}, "dataset"),
                         ({"policy_type": "act", "dataset": "../../etc"}, "outside the data dir"),
                         ({"policy_type": "act", "dataset": "training_session_epoch1", "steps": -1}, "steps"),
                         ({"policy_type": "act", "dataset": "training_session_epoch1", "bogus": 1}, "unknown")):
        code, answer = _http(server.port, "/train", "POST", body)
        assert code == 400 and reason in answer["error"], answer


def test_our_client_errors_and_reconnects(server_factory) -> None:
    server = server_factory()
    port = server.port
    client = PolicyClient("127.0.0.1", port, connect_timeout=2, request_timeout=5, max_attempts=20, backoff_s=0.05,
                          max_backoff_s=0.2)
    assert client.connect()["model_id"] == "scripted"
    with pytest.raises(ServerError, match="'state' must be 14 numbers"):
        client.infer({"state": np.zeros(2)})
    assert client.infer(_obs())["actions"].shape == (50, 14)  # reconnected after the error frame
    server.stop()
    server_factory(port=port)  # back on the same port: the client reconnects by itself
    assert client.infer(_obs())["actions"].shape == (50, 14) and client.reconnects == 1
    client.close()

    dead = PolicyClient("127.0.0.1", port + 1 if port < 65535 else port - 1, connect_timeout=0.5, max_attempts=2,
                        backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable, match="unreachable after 2 attempts"):
        dead.infer(_obs())
    assert time.monotonic() - t0 < 5


def test_auto_train_completeness_rules(tmp_path) -> None:
    cfg = AutoTrainConfig(quiet_s=30)
    folder = _write_epoch(tmp_path, 3, ARM_HOME_RAD, episodes=1)
    now = time.time()
    assert [e.complete for e in scan(tmp_path, cfg, now)] == [False]          # just written
    assert scan(tmp_path, cfg, now + 31)[0].complete                          # quiet for long enough
    (folder / ".episode_1.hdf5.Ab12Cd").write_bytes(b"")                       # rsync still transferring
    assert "being written" in scan(tmp_path, cfg, now + 31)[0].reason
    (folder / ".episode_1.hdf5.Ab12Cd").unlink()
    (folder / "episode_1.hdf5.partial").write_bytes(b"")                       # recorder still writing
    assert not scan(tmp_path, cfg, now + 31)[0].complete
    (folder / "episode_1.hdf5.partial").unlink()
    marker_only = AutoTrainConfig(require_marker=True)
    assert not scan(tmp_path, marker_only, now + 1e6)[0].complete
    (folder / SYNC_MARKER).touch()
    assert scan(tmp_path, marker_only, now)[0].complete
    (tmp_path / "training_session_epoch4").mkdir()
    assert "0 episode" in scan(tmp_path, cfg, now + 31)[1].reason


def test_auto_train_end_to_end(server_factory, tmp_path) -> None:
    data_dir, models_dir = tmp_path / "data", tmp_path / "models"
    server = server_factory(models_dir=models_dir, data_dir=data_dir,
                            auto_train=AutoTrainConfig(policy_type="scripted", require_marker=True,
                                                       scan_interval_s=0.1))
    client = PolicyClient("127.0.0.1", server.port)
    client.connect()
    goal = np.asarray(REACH_TARGET_RAD - 0.1, np.float32)
    folder = _write_epoch(data_dir, 1, goal)
    time.sleep(0.3)
    assert get_training_status("127.0.0.1", server.port)["epoch"] == 0  # no marker yet: not complete
    (folder / SYNC_MARKER).touch()
    status = wait_until(lambda: (s := get_training_status("127.0.0.1", server.port))["epoch"] == 1 and s["ready"] and s,
                   60, "auto-train to deploy epoch 1")
    assert status["auto_train"]["trained_epochs"] == [1]
    np.testing.assert_allclose(client.infer(_obs(goal + 0.02))["actions"][-1], goal, atol=1e-3)
    client.close()


def test_auto_train_retrains_an_epoch_whose_job_a_restart_cut_off(tmp_path) -> None:
    """The server killed while the epoch's job ran (seen in the soak): after the restart the epoch is trained again,
    so the session waiting for its new weights gets them; a job that finished is not repeated."""
    from h1_training.serve.model_pool import ModelPool
    from h1_training.training.autotrain import STATE_FILE, AutoTrainer
    from h1_training.training.jobs import JobManager

    data, models, work = tmp_path / "data", tmp_path / "models", tmp_path / "work"
    (_write_epoch(data, 1, np.asarray(REACH_TARGET_RAD, np.float32)) / SYNC_MARKER).touch()
    cfg = AutoTrainConfig(policy_type="scripted", require_marker=True)
    jobs = JobManager(work, models)
    try:
        first = AutoTrainer(cfg, data, jobs, ModelPool(models), work)
        job_id = first.tick()
        assert job_id is not None
        state = json.loads((work / STATE_FILE).read_text())["trained"]["1"]
        assert state["job_id"] == job_id and state["status"] in ("queued", "running")
        # what the state file holds when the server dies here: the job never finished -> trained again
        assert AutoTrainer(cfg, data, jobs, ModelPool(models), work).tick() is not None
        wait_until(lambda: jobs.get(job_id).status == "succeeded", 60, "the job to finish")
        first.tick()  # sees it finish and records it
        assert json.loads((work / STATE_FILE).read_text())["trained"]["1"]["status"] == "succeeded"
        again = AutoTrainer(cfg, data, jobs, ModelPool(models), work)
        assert again.tick() is None and again.status()["trained_epochs"] == [1]
    finally:
        jobs.close()


def test_cli_serve(procs) -> None:
    procs.start_executable("serve", "h1-training", ["serve", "--port", "0", "--log-level", "WARNING"])
    line = procs.wait_for_line("serve", lambda s: "listening on ws://127.0.0.1:" in s, timeout=60)
    port = int(line.rsplit(":", 1)[1])
    assert _http(port, "/healthz") == (200, "OK\n")
    assert WebsocketClientPolicy("127.0.0.1", port).infer(_obs())["actions"].shape == (50, 14)
    assert procs.stop_one(procs.get("serve")) == 0


def test_learned_policy_trains_over_http_and_is_hot_swapped(server_factory, tmp_path) -> None:
    """The real path: HDF5 sessions -> conversion -> CNN-LSTM training in a worker -> registry -> hot swap."""
    pytest.importorskip("lerobot")
    from h1_training.training.synthetic import write_session

    data_dir = tmp_path / "data"
    write_session(data_dir, 1, episodes=2, frames=24, width=64, height=48)
    server = server_factory(models_dir=tmp_path / "models", data_dir=data_dir)
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    code, job = _http(server.port, "/train", "POST", {"policy_type": "cnn_lstm", "dataset": "training_session_epoch1",
                                                      "steps": 2, "batch_size": 2, "device": "cpu"})
    assert code == 201
    seen_running = []

    def swapped():
        assert client.infer(_obs())["actions"].shape == (50, 14)  # served throughout, same connection
        status = _http(server.port, "/training_status")[1]
        seen_running.append(status["training"])
        return status if status["ready"] and status["epoch"] == 1 else None

    status = wait_until(swapped, 240, "the CNN-LSTM job to finish and be deployed")
    done = _http(server.port, f"/jobs/{job['id']}")[1]
    assert done["status"] == "succeeded", done
    assert done["step"] == done["total_steps"] == 2 and done["loss"] is not None and done["convert"]["episodes"] == 2
    assert status["policy_type"] == "cnn_lstm" and status["model_id"] == done["model_id"]
    assert any(seen_running)
    result = client.infer(_obs())
    assert result["model_id"] == done["model_id"] and result["actions"].shape[1] == 14
    assert np.all(np.isfinite(result["actions"]))


def test_job_cancel_and_worker_failure(tmp_path, monkeypatch) -> None:
    """A job's worker is a separate process: cancel signals it, a crash fails only that job (with its log)."""
    from h1_training.training.jobs import JobManager, TrainRequest

    (tmp_path / "fake_worker.py").write_text(
        "import json, sys, time\n"
        "if 'fail' in open(sys.argv[1] + '/request.json').read():\n"
        "    print('boom: out of memory', file=sys.stderr); sys.exit(1)\n"
        "print(json.dumps({'event': 'progress', 'stage': 'train', 'step': 1, 'total_steps': 9, 'loss': 0.5}),"
        " flush=True)\n"
        "time.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    jobs = JobManager(tmp_path / "work", tmp_path / "models", worker_module="fake_worker")
    try:
        data = _write_epoch(tmp_path / "data", 1, ARM_HOME_RAD, episodes=1)
        slow = jobs.submit(TrainRequest(policy_type="act", dataset=[str(data)], steps=9))
        queued = jobs.submit(TrainRequest(policy_type="act", dataset=[str(data)], steps=9))
        wait_until(lambda: slow.step == 1, 30, "the worker's first progress line")
        assert slow.status == "running" and slow.loss == 0.5 and jobs.pending_deploy()
        assert jobs.cancel(queued.id).status == "cancelled"
        jobs.cancel(slow.id)
        wait_until(lambda: slow.status == "cancelled", 30, "the running job to be cancelled")
        failing = jobs.submit(TrainRequest(policy_type="act", dataset=[str(data)], steps=9, extra={"x": "fail"}))
        wait_until(lambda: failing.status == "failed", 30, "the failing job")
        assert "exited with code 1" in failing.error and "out of memory" in failing.error
        assert not jobs.pending_deploy()
    finally:
        jobs.close()
