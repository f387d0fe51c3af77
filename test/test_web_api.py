"""The web app's HTTP API over the in-memory backend (test/web_fake.py): every endpoint, bad bodies, unknown names,
path traversal, tokens, no state change on GET, closed CORS, and the live stream over a real uvicorn socket."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from web_fake import MemoryBackend

from h1_training.web import security
from h1_training.web.app import WebConfig, create_app
from h1_training.web.server import WebServer

TOKEN = "s3cret-token"
DS = "h1_data/training_session_epoch1"


@pytest.fixture
def world(tmp_path: Path):
    root = tmp_path / "data"
    static = tmp_path / "static"
    static.mkdir()
    for name, text in (("index.html", "<!doctype html><title>h1</title>"), ("app.js", "//"), ("app.css", "")):
        (static / name).write_text(text)
    backend = MemoryBackend(root)
    return backend, WebConfig(data_roots=[str(root)], static_dir=static)


@pytest.fixture
def client(world):
    backend, cfg = world
    with TestClient(create_app(backend, cfg)) as c:
        yield c, backend


@pytest.fixture
def locked(world):
    backend, cfg = world
    cfg.token = TOKEN
    with TestClient(create_app(backend, cfg)) as c:
        yield c, backend


def test_page_and_health(client):
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200 and "<title>h1</title>" in r.text
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'self'" in r.headers["content-security-policy"]
    assert c.get("/healthz").json() == {"ok": True}
    assert c.get("/static/app.js").status_code == 200


def test_unbuilt_bundle_is_a_clear_503(world):
    backend, cfg = world
    (cfg.static_dir / "app.js").unlink()
    with TestClient(create_app(backend, cfg)) as c:
        r = c.get("/")
    assert r.status_code == 503 and "npm run build" in r.text and "app.js" in r.text


def test_state_has_every_section(client):
    c, _ = client
    state = c.get("/api/state").json()
    for topic in ("session", "recorder", "trainer", "datasets", "comparison", "models", "workflow"):
        assert topic in state


def test_session_buttons_and_label(client):
    c, backend = client
    r = c.post("/api/session/command", json={"key": "y"})
    assert r.status_code == 200 and r.json()["state_name"] == "READY"
    r = c.post("/api/session/command", json={"key": "s"})  # not allowed in READY: the system's refusal, 409
    assert r.status_code == 409 and "does nothing in READY" in r.json()["message"]
    c.post("/api/session/command", json={"key": "y"})
    c.post("/api/session/command", json={"key": "s"})
    r = c.post("/api/session/label", json={"success": True, "note": "grasped"})
    assert r.status_code == 200 and backend.state()["session"]["label"] == 1
    assert c.get("/api/state").json()["session"]["state_name"] == "DAMPING"


@pytest.mark.parametrize("body, where", [
    ({"key": "x"}, "key"), ({}, "key"), ({"key": "y", "extra": 1}, "extra"), ({"key": 5}, "key"),
])
def test_session_bad_bodies(client, body, where):
    c, backend = client
    r = c.post("/api/session/command", json=body)
    assert r.status_code == 422
    assert r.json()["error"].startswith("invalid request") and any(d.startswith(where) for d in r.json()["details"])
    assert backend.calls == []


def test_data_collection(client):
    c, backend = client
    r = c.post("/api/collection/start", json={"mode": "kinesthetic", "target_episodes": 20})
    assert r.status_code == 200 and backend.calls[-1] == ("start_data_collection", ("kinesthetic", 20))
    assert backend.state()["workflow"]["stage_name"] == "COLLECTING"
    for body in ({"mode": "dance", "target_episodes": 2}, {"mode": "hil", "target_episodes": 0}, {"mode": "hil"}):
        assert c.post("/api/collection/start", json=body).status_code == 422
    assert len(backend.calls) == 1


def test_not_json_is_415_and_garbage_json_is_422(client):
    c, backend = client
    assert c.post("/api/session/command", content="key=y",
                  headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    assert c.post("/api/session/command", content="{not json",
                  headers={"content-type": "application/json"}).status_code == 422
    assert backend.calls == []


def test_training_start_stop(client):
    c, backend = client
    r = c.post("/api/training/start", json={"policy_type": "diffusion", "dataset": DS, "steps": 200,
                                            "hyperparameters": {"lr": 1e-4, "batch_size": 8}})
    assert r.status_code == 200 and r.json()["job_id"]
    req = backend.calls[-1][1]
    assert (req.policy_type, req.dataset, req.steps, req.hyperparameters) == ("diffusion", DS, 200,
                                                                              {"lr": 1e-4, "batch_size": 8})
    assert c.post("/api/training/start", json={"policy_type": "act"}).status_code == 409  # already running
    assert c.post("/api/training/stop").status_code == 200
    assert c.post("/api/training/stop").status_code == 409


@pytest.mark.parametrize("body", [
    {"policy_type": "pi0"}, {"policy_type": "act", "steps": -1}, {"policy_type": "act", "hyperparameters": [1]},
    {"policy_type": "act", "hyperparameters": {"lr": {"nested": 1}}}, {"steps": 5},
])
def test_training_bad_bodies(client, body):
    c, backend = client
    r = c.post("/api/training/start", json=body)
    assert r.status_code == 422, r.text
    assert backend.calls == []


def test_training_unknown_or_escaping_dataset(client):
    c, backend = client
    assert c.post("/api/training/start", json={"policy_type": "act", "dataset": "nope/x"}).status_code == 404
    assert c.post("/api/training/start", json={"policy_type": "act", "dataset": "../../etc"}).status_code == 400
    assert backend.calls == []


def test_datasets_list_episode_export_delete_flag(client):
    c, backend = client
    names = [d["name"] for d in c.get("/api/datasets").json()["datasets"]]
    assert DS in names
    assert c.post("/api/datasets/refresh").status_code == 200
    ep = c.get("/api/datasets/episode", params={"dataset": DS, "index": 1}).json()
    assert ep["index"] == 1 and ep["path"].endswith("episode_1.hdf5")
    r = c.post("/api/datasets/export", json={"dataset": DS, "format": "lerobot"})
    assert r.status_code == 200 and r.json()["output_path"] == "exports/lerobot"
    assert c.post("/api/datasets/flag", json={"dataset": DS, "index": 0, "flagged": True}).status_code == 200
    assert backend.episodes[DS][0]["flagged"] is True
    assert c.post("/api/datasets/delete", json={"dataset": DS, "index": 2}).status_code == 200
    assert len(backend.episodes[DS]) == 2
    assert next(d for d in c.get("/api/datasets").json()["datasets"] if d["name"] == DS)["num_episodes"] == 2


def test_datasets_unknown_names_and_indices(client):
    c, backend = client
    r = c.get("/api/datasets/episode", params={"dataset": "h1_data/missing", "index": 0})
    assert r.status_code == 404 and DS in r.json()["error"]  # says which datasets exist
    r = c.get("/api/datasets/episode", params={"dataset": DS, "index": 3})
    assert r.status_code == 404 and "has 3 episode(s)" in r.json()["error"]
    assert c.post("/api/datasets/delete", json={"dataset": DS, "index": 7}).status_code == 404
    assert c.post("/api/datasets/export", json={"dataset": DS, "format": "zip"}).status_code == 422
    assert c.get("/api/datasets/episode", params={"dataset": DS, "index": -1}).status_code == 422
    assert [x for x in backend.calls if x[0] != "refresh_datasets"] == []


@pytest.mark.parametrize("name", ["../etc/passwd", "h1_data/../../etc", "/etc/passwd", "h1_data/./x", "a\\..\\b",
                                  "h1_data//x", "h1_data/x\x00", "..", "h1_data/.."])
def test_path_traversal_is_refused(client, name):
    c, backend = client
    assert c.get("/api/datasets/episode", params={"dataset": name, "index": 0}).status_code == 400
    for path, body in (("/api/datasets/export", {"dataset": name, "format": "hdf5"}),
                       ("/api/datasets/delete", {"dataset": name, "index": 0}),
                       ("/api/datasets/flag", {"dataset": name, "index": 0, "flagged": True})):
        r = c.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
    assert backend.calls == []


def test_dataset_outside_the_data_root_is_forbidden(client, tmp_path):
    c, backend = client
    r = c.post("/api/datasets/delete", json={"dataset": backend.outside["name"], "index": 0})
    assert r.status_code == 403 and "outside the data root" in r.json()["error"]
    # a symlink inside the root that points out of it does not count as inside
    outside = tmp_path / "outside"
    outside.mkdir()
    assert not security.under_root(outside, tmp_path / "data")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "link").symlink_to(outside)
    assert not security.under_root(tmp_path / "data" / "link", tmp_path / "data")
    assert backend.calls == []


def test_comparison_and_deploy(client):
    c, backend = client
    r = c.post("/api/comparison/start", json={"model_ids": ["v1-act", "v2-act"], "trials_per_model": 30,
                                              "alpha": 0.05})
    assert r.status_code == 200 and backend.calls[-1] == ("start_comparison", (["v1-act", "v2-act"], "ab", 30, 0.05))
    r = c.post("/api/comparison/start", json={"model_ids": ["v1-act", "v2-act", "v3-diffusion"]})
    assert r.status_code == 200 and backend.calls[-1][1][1] == "detailed"
    assert c.post("/api/comparison/stop").status_code == 200
    r = c.post("/api/models/deploy", json={"model_id": "v2-act"})
    assert r.status_code == 200 and r.json()["previous_model_id"] == "v1-act"
    assert c.get("/api/state").json()["models"]["deployed"] == "v2-act"


@pytest.mark.parametrize("body, status", [
    ({"model_ids": ["v1-act"]}, 422), ({"model_ids": ["a", "b", "c", "d", "e"]}, 422),
    ({"model_ids": ["v1-act", "v1-act"]}, 400), ({"model_ids": ["v1-act", "../x"]}, 400),
    ({"model_ids": ["v1-act", "v2-act", "v3-diffusion"], "mode": "ab"}, 400),
    ({"model_ids": ["v1-act", "v2-act"], "alpha": 0.5}, 422), ({"model_ids": ["v1-act", "v2-act"], "mode": "x"}, 422),
])
def test_comparison_bad_bodies(client, body, status):
    c, backend = client
    assert c.post("/api/comparison/start", json=body).status_code == status
    assert backend.calls == []


def test_comparison_unknown_model_is_the_systems_refusal(client):
    c, _ = client
    r = c.post("/api/comparison/start", json={"model_ids": ["v1-act", "v9"]})
    assert r.status_code == 409 and "v9" in r.json()["message"]


def test_deploy_unknown_or_bad_model(client):
    c, backend = client
    r = c.post("/api/models/deploy", json={"model_id": "v9"})
    assert r.status_code == 404 and "v1-act" in r.json()["error"]
    assert c.post("/api/models/deploy", json={"model_id": "../../bin/sh"}).status_code == 400
    assert c.post("/api/models/deploy", json={}).status_code == 422
    assert backend.calls == []


def test_workflow_parameters(client):
    c, backend = client
    params = {p["name"]: p for p in c.get("/api/workflow/parameters").json()["parameters"]}
    assert params["workflow.min_episodes_before_training"]["value"] == 50
    r = c.post("/api/workflow/parameters", json={"name": "workflow.min_episodes_before_training", "value": 20})
    assert r.status_code == 200 and backend.params["workflow.min_episodes_before_training"].value == 20
    # an int for a float parameter is the float it means
    c.post("/api/workflow/parameters", json={"name": "workflow.training_trigger_interval_hours", "value": 2})
    assert backend.params["workflow.training_trigger_interval_hours"].value == 2.0
    assert isinstance(backend.params["workflow.training_trigger_interval_hours"].value, float)


@pytest.mark.parametrize("body, status, words", [
    ({"name": "workflow.nope", "value": 1}, 404, "workflow.auto_train_enabled"),
    ({"name": "workflow.min_episodes_before_training", "value": 0}, 400, "below the minimum"),
    ({"name": "workflow.min_episodes_before_training", "value": 2.5}, 400, "integer"),
    ({"name": "workflow.auto_train_enabled", "value": "yes"}, 400, "true or false"),
    ({"name": "workflow.training_trigger_interval_hours", "value": 13.0}, 400, "owner refuses"),
    ({"name": "workflow.auto_train_enabled"}, 422, "value"),
    ({"name": "workflow.auto_train_enabled", "value": {"a": 1}}, 422, "value"),
])
def test_workflow_parameter_refusals(client, body, status, words):
    c, backend = client
    before = {k: v.value for k, v in backend.params.items()}
    r = c.post("/api/workflow/parameters", json=body)
    assert r.status_code == status and words in r.text
    assert {k: v.value for k, v in backend.params.items()} == before


ROUTES_POST = ["/api/session/command", "/api/session/label", "/api/collection/start", "/api/training/start",
               "/api/training/stop", "/api/datasets/refresh", "/api/datasets/export", "/api/datasets/delete",
               "/api/datasets/flag",
               "/api/comparison/start", "/api/comparison/stop", "/api/models/deploy"]


def test_no_state_change_on_get(client):
    c, backend = client
    before = backend.state()
    for path in ROUTES_POST:
        assert c.get(path, params={"key": "y", "dataset": DS, "index": 0}).status_code == 405, path
    assert backend.calls == [] and backend.state() == before


def test_cors_closed(client):
    c, backend = client
    r = c.options("/api/session/command", headers={"Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = c.get("/api/state", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = c.post("/api/session/command", json={"key": "y"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and backend.calls == []
    r = c.post("/api/session/command", json={"key": "y"}, headers={"Origin": "http://testserver"})
    assert r.status_code == 200


def test_token_required_everywhere_it_matters(locked):
    c, backend = locked
    assert c.get("/healthz").status_code == 200
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    for path in ROUTES_POST + ["/api/workflow/parameters"]:
        r = c.post(path, json={})
        assert r.status_code == 401 and "token required" in r.json()["error"], path
    for path in ("/api/state", "/api/events", "/api/datasets", "/api/workflow/parameters"):
        assert c.get(path).status_code == 401, path
    r = c.post("/api/session/command", json={"key": "y"}, headers={"X-H1-Token": "wrong"})
    assert r.status_code == 401 and r.json()["error"] == "wrong token"
    r = c.post("/api/session/command", json={"key": "y"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert backend.calls == []
    assert c.post("/api/session/command", json={"key": "y"}, headers={"X-H1-Token": TOKEN}).status_code == 200
    assert c.post("/api/session/command", json={"key": "y"},
                  headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_login_form_sets_a_cookie_that_is_not_the_token(locked):
    c, backend = locked
    assert "<form" in c.get("/login").text
    r = c.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "Wrong token" in r.text
    r = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.cookies[security.COOKIE]
    assert TOKEN not in cookie and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert c.get("/").status_code == 200
    assert c.post("/api/session/command", json={"key": "y"}).status_code == 200
    c.post("/logout")
    assert c.post("/api/session/command", json={"key": "y"}).status_code == 401


def test_bind_rules():
    assert security.check_bind("127.0.0.1", "") is None
    assert security.check_bind("::1", "") is None
    assert "without a token" in security.check_bind("0.0.0.0", "")
    assert security.check_bind("0.0.0.0", "t") is None
    assert security.check_bind("0.0.0.0", "", allow_open_lan=True) is None


def read_events(lines, want: int, timeout: float) -> list[dict]:
    """Parse SSE ``data:`` lines (an iterator of lines) into {"topic", "data"} dicts until ``want`` arrived."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if len(out) >= want:
                break
        if time.monotonic() > deadline:
            break
    return out


def test_live_stream_over_a_real_socket(world):
    backend, cfg = world
    cfg.token = TOKEN
    server = WebServer(create_app(backend, cfg), "127.0.0.1", 0)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/api/events").status_code == 401
            headers = {"X-H1-Token": TOKEN}
            with http.stream("GET", "/api/events", headers=headers) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = r.iter_lines()
                snapshot = read_events(lines, len(backend.state()), 10)
                assert {e["topic"] for e in snapshot} >= {"session", "datasets", "loss"}
                assert next(e for e in snapshot if e["topic"] == "loss")["data"]["reset"] is True

                def change() -> None:
                    time.sleep(0.2)
                    with httpx.Client(base_url=server.url, timeout=10, headers=headers) as other:
                        other.post("/api/session/command", json={"key": "y"})
                        other.post("/api/training/start", json={"policy_type": "act"})
                    for step in range(1, 6):
                        backend.tick(step, 1.0 / step)

                threading.Thread(target=change, daemon=True).start()
                got: list[dict] = []
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    got += read_events(lines, 1, 10)
                    points = [p for e in got if e["topic"] == "loss" for p in e["data"]["points"]]
                    if len(points) >= 5:
                        break
        session = [e["data"]["state_name"] for e in got if e["topic"] == "session"]
        assert session and session[-1] == "READY"
        # loss points are never coalesced away, whatever the batching
        assert [p[0] for p in points] == [1, 2, 3, 4, 5]
    finally:
        server.stop()
    assert server.server.should_exit


def test_bench_web_exit_code_follows_its_targets():
    import argparse

    from h1_training.bench.web import exit_code, percentile

    assert exit_code({"ok": True}, argparse.Namespace(no_fail=False)) == 0
    assert exit_code({"ok": False}, argparse.Namespace(no_fail=False)) == 1
    assert exit_code({"ok": False}, argparse.Namespace(no_fail=True)) == 0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0 and percentile([0.0, 10.0], 0.95) == 9.5


def test_thumbnail_is_small_and_garbage_is_none():
    import cv2
    import numpy as np

    from h1_training.web.thumbnails import thumbnail_b64, thumbnail_jpeg

    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    small = thumbnail_jpeg(jpeg, 160)
    decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (120, 160, 3) and len(small) < len(jpeg) / 4
    assert thumbnail_jpeg(b"not a jpeg") is None and thumbnail_b64(b"") is None


def test_stopping_ends_open_streams(world):
    backend, cfg = world
    server = WebServer(create_app(backend, cfg), "127.0.0.1", 0)
    server.start()
    ended = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http, http.stream("GET", "/api/events") as r:
            for _ in r.iter_lines():
                pass
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_until = time.monotonic() + 10
    while server.app.state.hub.subscribers == 0 and time.monotonic() < wait_until:
        time.sleep(0.05)
    assert server.app.state.hub.subscribers == 1
    t0 = time.monotonic()
    server.stop()
    assert not server.thread.is_alive() and ended.wait(5)
    assert time.monotonic() - t0 < 2.0  # the stream ended by itself, not by uvicorn's forced cancel


def test_live_hub_skips_to_the_newest_state_but_keeps_every_loss_point():
    import asyncio

    from h1_training.web.live import LiveHub

    async def scenario() -> dict:
        hub = LiveHub()
        sub = hub.subscribe(asyncio.get_running_loop())

        def backend_thread() -> None:  # a slow page: 100 changes arrive before it reads
            for i in range(100):
                hub.publish("session", {"state_name": f"S{i}"})
                hub.publish("loss", {"job_id": "j", "points": [[i, 1.0 / (i + 1)]]})
            hub.publish("loss", {"job_id": "k", "points": [[0, 5.0]], "reset": True})
            hub.publish("loss", {"job_id": "k", "points": [[1, 4.0]]})

        await asyncio.to_thread(backend_thread)
        await asyncio.sleep(0.05)  # the loop runs the queued pushes
        batch = await sub.next_batch(timeout=1.0)
        hub.unsubscribe(sub)
        return batch

    batch = asyncio.run(scenario())
    assert batch["session"] == {"state_name": "S99"}
    # a new job resets the curve; the points after it all arrive
    assert batch["loss"]["job_id"] == "k" and batch["loss"]["points"] == [[0, 5.0], [1, 4.0]]
    assert batch["loss"]["reset"] is True
