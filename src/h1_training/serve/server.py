"""The policy and training server: openpi-compatible WebSocket inference plus a small JSON HTTP API, one port.

WebSocket (the openpi protocol, openpi ``src/openpi/serving/websocket_policy_server.py`` and ``openpi-client``;
works unchanged with ``openpi_client.websocket_client_policy.WebsocketClientPolicy``):

- on connect the server sends one msgpack frame: the policy's metadata plus ``model_id`` and ``epoch``;
- then strict lockstep: the client sends msgpack(observation) (``policy/obs.py``), the server answers
  msgpack(result): ``actions`` [H, 14] float32, ``server_timing`` {``infer_ms``, ``prev_total_ms``}, the policy's
  own ``policy_timing`` when it reports one, and ``model_id`` / ``model_epoch`` of the model that answered;
- on any error (undecodable frame, malformed observation, policy failure, non-finite actions) the server sends a
  text frame with the traceback and closes with 1011; the server itself keeps serving other and new connections;
- inference runs in a worker thread (``infer_threads``), so a slow model never blocks the event loop (other
  sessions, the HTTP API); a loaded policy that declares itself instant (``infer_inline = True``: the scripted
  and no-op ones, numpy on 14 numbers) runs on the event loop instead, which saves the thread hop;
- model choice: ``ws://host:port/?model=<id>`` pins the session to that model (the A/B comparison does this; with
  openpi-client pass the whole URI as ``host`` and ``port=None``). Without it, or with ``?model=default``, every
  request goes to the current default model, so a hot swap reaches connected clients on their next request
  without a reconnect. An unknown id is refused at the handshake with HTTP 404.

HTTP (same port; JSON unless noted):

    GET  /healthz                   200 "OK" (never needs the API key, for load balancers and probes)
    GET  /training_status           {"ready", "epoch", "model_id", "policy_type", "training", "job", ...}
    GET  /models                    models known (built-in + registry), which are loaded, the default
    GET  /models/<id>
    POST /models/<id>/deploy        make it the default model (hot swap; epoch + 1)
    POST /train                     start a job; body: training/jobs.py TrainRequest (policy_type, dataset, steps...)
    GET  /jobs, GET /jobs/<id>      step, total_steps, epoch, loss, lr, eta_s, status, model_id
    POST /jobs/<id>/cancel
    POST /jobs/<id>/pause, /jobs/<id>/resume   stop / continue the running job's worker (SIGSTOP / SIGCONT)

``ready`` is true while the default model is loaded and no job that will replace it is queued or running;
``epoch`` rises by one on every swap of the default model (see ``serve/model_pool.py``).

Security: binds 127.0.0.1 unless told otherwise; with an API key configured, every connection except /healthz
must carry ``Authorization: Api-Key <key>`` (what openpi-client sends) or gets 401. WebSocket messages are limited
to ``max_message_bytes`` (larger ones close the connection with 1009), HTTP bodies to ``max_http_body_bytes``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hmac
import http
import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from h1_training.policy import codec
from h1_training.policy.obs import check_observation, check_result
from h1_training.serve.model_pool import ModelPool, UnknownModelError
from h1_training.training.jobs import JobManager, TrainRequest

log = logging.getLogger("h1_training.serve")

DEFAULT_PORT = 8000
_DEPLOY_WAIT_S = 5.0  # answer a deploy within the handshake timeout; longer loads finish in the background


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT                 # 0 = any free port (tests); see PolicyServer.port
    models_dir: Path | None = None           # the model registry root; None = built-in scripted models only
    data_dir: Path | None = None             # synced HDF5 data; POST /train datasets must lie inside it
    work_dir: Path | None = None             # job folders and converted datasets; default models_dir/.work
    api_key: str | None = None
    device: str = "cpu"                      # where served models run ("cuda", "cuda:1", "cpu")
    default_model: str | None = None         # start with this model instead of the registry's deployed one
    max_loaded_models: int = 4
    max_message_bytes: int = 32 * 1024 * 1024
    max_http_body_bytes: int = 1024 * 1024
    infer_threads: int = 4
    infer_delay_ms: float = 0.0              # benches/tests: every inference takes this much longer (a slow model)
    auto_train: Any | None = None            # training.autotrain.AutoTrainConfig to watch data_dir
    diffusion_sampling: str | None = None    # "ddim:10": sampler of every Diffusion model served (None: its own)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (leave it unset to disable the check)")
        if not 0.0 <= float(self.infer_delay_ms) <= 60_000.0:
            raise ValueError(f"infer_delay_ms must be in [0, 60000], got {self.infer_delay_ms}")
        if self.max_message_bytes < 1024 or self.max_http_body_bytes < 1024:
            raise ValueError("message and body limits must be at least 1 KiB")
        for name in ("models_dir", "data_dir", "work_dir"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.work_dir is None and self.models_dir is not None:
            self.work_dir = self.models_dir / ".work"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return -1
    return 0


def _strip_content_length(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(ln for ln in lines if ln.partition(b":")[0].strip().lower() != b"content-length")


class _HttpConnection(ServerConnection):
    """A ServerConnection that also reads a small HTTP request body (for POST /train).

    websockets parses only the request head and refuses a body; this reads ``Content-Length`` bytes first, keeps
    them in ``http_body`` and hands the head (without Content-Length) to the normal handshake, where
    ``process_request`` answers the API call. WebSocket upgrades carry no body and pass straight through."""

    max_body = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = b""
        self._through = False
        self._discard = False
        self._body_left = 0
        self.http_body = b""
        self.http_error: str | None = None
        self.h1_model: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._through:
            super().data_received(data)
            return
        if self._discard:
            return
        if self._body_left:
            chunk = data[: self._body_left]
            self.http_body += chunk
            self._body_left -= len(chunk)
            if not self._body_left:
                self._discard = True  # one request per connection; anything after the body is ignored
                super().data_received(self._head)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > 65536:  # let the parser reject an oversize head
                self._through = True
                super().data_received(self._head)
            return
        head, rest = self._head[: end + 4], self._head[end + 4:]
        length = _content_length(head)
        if length == 0:
            self._through = True
            super().data_received(self._head)
            return
        self._head = _strip_content_length(head)
        if length < 0 or length > self.max_body:
            self.http_error = (f"request body too large ({length} bytes, limit {self.max_body})" if length > 0
                               else "invalid Content-Length")
            self._discard = True
            super().data_received(self._head)
            return
        self._body_left = length
        if rest:
            self.data_received(rest)


def _response(status: int, body: bytes, content_type: str) -> Response:
    st = http.HTTPStatus(status)
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type),
                       ("Cache-Control", "no-store")])
    return Response(st.value, st.phrase, headers, body)


def json_response(status: int, obj: Any) -> Response:
    return _response(status, (json.dumps(obj, default=str) + "\n").encode(), "application/json")


def text_response(status: int, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message, "status": status})


class PolicyServer:
    """See the module docstring. ``await serve_forever()`` in a loop, or ``start_background()`` in a thread."""

    def __init__(self, config: ServerConfig, pool: ModelPool | None = None) -> None:
        self.config = config
        self.pool = pool or ModelPool(config.models_dir, device=config.device, max_loaded=config.max_loaded_models,
                                      default_model=config.default_model,
                                      diffusion_sampling=config.diffusion_sampling)
        self.jobs: JobManager | None = None
        if config.models_dir is not None and config.work_dir is not None:
            self.jobs = JobManager(config.work_dir, config.models_dir, on_success=self._deploy_job_result)
        self.autotrain: Any | None = None
        if config.auto_train is not None:
            from h1_training.training.autotrain import AutoTrainer

            if self.jobs is None or config.data_dir is None:
                raise ValueError("auto-train needs a models dir and a data dir")
            self.autotrain = AutoTrainer(config.auto_train, config.data_dir, self.jobs, self.pool,
                                         state_dir=config.work_dir)
        self._executor = concurrent.futures.ThreadPoolExecutor(config.infer_threads, thread_name_prefix="infer")
        self.port: int | None = None
        self.started = time.time()
        self.connections = 0
        self.requests = 0
        self.errors = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def serve_forever(self, bound: threading.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        conn_cls = type("H1Connection", (_HttpConnection,), {"max_body": self.config.max_http_body_bytes})
        async with serve(self._ws_handler, self.config.host, self.config.port, compression=None,
                         max_size=self.config.max_message_bytes, process_request=self._process_request,
                         create_connection=conn_cls, server_header="h1-training") as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("policy server on ws://%s:%d (models %s, data %s, api key %s)", self.config.host, self.port,
                     self.config.models_dir, self.config.data_dir, "on" if self.config.api_key else "off")
            if self.autotrain is not None:
                self.autotrain.start()
            if bound is not None:
                bound.set()
            await self._stop.wait()
        self._shutdown_workers()

    def _shutdown_workers(self) -> None:
        if self.autotrain is not None:
            self.autotrain.stop()
        if self.jobs is not None:
            self.jobs.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def request_stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed in between: already stopped
                pass

    def start_background(self, timeout: float = 30.0) -> int:
        """Run the server in a thread with its own event loop; returns the bound port."""
        bound = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self.serve_forever(bound))
            except BaseException as exc:  # surfaced to the caller below
                failure.append(exc)
                bound.set()

        self._thread = threading.Thread(target=main, name="policy-server", daemon=True)
        self._thread.start()
        if not bound.wait(timeout):
            raise TimeoutError(f"policy server did not start within {timeout} s")
        if failure:
            raise RuntimeError(f"policy server failed to start: {failure[0]}") from failure[0]
        assert self.port is not None
        return self.port

    def stop(self, timeout: float = 15.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- HTTP -----------------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        if not self.config.api_key:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, key = given.partition(" ")
        return scheme.lower() == "api-key" and hmac.compare_digest(key.strip().encode(),
                                                                   self.config.api_key.encode())

    async def _process_request(self, connection: _HttpConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path.rstrip("/") or "/"
        peer = connection.remote_address
        if path == "/healthz":
            return text_response(200, "OK\n")
        if not self._authorized(request):
            log.warning("refused %s %s from %s: missing or wrong API key", request.method, path, peer)
            return text_response(401, "missing or wrong API key (send 'Authorization: Api-Key <key>')\n")
        if connection.http_error:
            return _error(413 if "large" in connection.http_error else 400, connection.http_error)
        if "websocket" in request.headers.get("Upgrade", "").lower():
            model = parse_qs(url.query).get("model", [""])[0]
            if model in ("", "default"):
                connection.h1_model = None
            elif self.pool.exists(model):
                connection.h1_model = model
            else:
                return _error(404, f"unknown model {model!r}; GET /models lists them")
            return None  # go on with the WebSocket handshake
        try:
            return await self._route(request.method, path, connection.http_body)
        except Exception as exc:  # a bug in one endpoint must not take the server down
            log.exception("HTTP %s %s failed", request.method, path)
            return _error(500, f"{type(exc).__name__}: {exc}")

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        get, post = method == "GET", method == "POST"
        if parts == [] and get:
            return json_response(200, {"service": "h1-training policy server", "websocket": "ws://<host>:<port>/",
                                       "endpoints": ["/healthz", "/training_status", "/models", "/train", "/jobs"]})
        if parts == ["training_status"] and get:
            return json_response(200, self.training_status())
        if parts == ["models"] and get:
            return json_response(200, {"default": self.pool.default_id, "epoch": self.pool.epoch,
                                       "models": await self._blocking(self.pool.list)})
        if len(parts) == 2 and parts[0] == "models" and get:
            try:
                return json_response(200, await self._blocking(self.pool.describe, parts[1]))
            except UnknownModelError as exc:
                return _error(404, str(exc))
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "deploy" and post:
            return await self._deploy(parts[1])
        if parts == ["train"] and post:
            return self._train(body)
        if parts == ["jobs"] and get:
            jobs = self.jobs.list() if self.jobs else []
            return json_response(200, {"jobs": [j.to_dict() for j in jobs]})
        if len(parts) in (2, 3) and parts[0] == "jobs":
            if self.jobs is None:
                return _error(404, "no jobs: the server runs without a models dir")
            try:
                job = self.jobs.get(parts[1])
                if len(parts) == 3 and parts[2] == "cancel" and post:
                    job = self.jobs.cancel(parts[1])
                elif len(parts) == 3 and parts[2] in ("pause", "resume") and post:
                    job = (self.jobs.pause if parts[2] == "pause" else self.jobs.resume)(parts[1])
                elif not (len(parts) == 2 and get):
                    return _error(405, f"{method} /{'/'.join(parts)} is not supported")
            except KeyError:
                return _error(404, f"unknown job {parts[1]!r}")
            except ValueError as exc:
                return _error(409, str(exc))
            return json_response(200, job.to_dict())
        known = {"training_status", "models", "train", "jobs", ""}
        if (parts[0] if parts else "") in known:
            return _error(405, f"{method} {path} is not supported")
        return _error(404, f"no such endpoint {path}")

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _deploy(self, model_id: str) -> Response:
        if not self.pool.exists(model_id):
            return _error(404, f"unknown model {model_id!r}")
        future = asyncio.get_running_loop().run_in_executor(None, self.pool.swap_default, model_id, "http deploy")
        try:
            epoch = await asyncio.wait_for(asyncio.shield(future), _DEPLOY_WAIT_S)
        except asyncio.TimeoutError:
            future.add_done_callback(lambda f: f.exception() and log.error("deploy of %s failed: %s", model_id,
                                                                           f.exception()))
            return json_response(202, {"status": "deploying", "model_id": model_id,
                                       "hint": "poll /training_status for epoch and model_id"})
        except Exception as exc:
            log.exception("deploy of %s failed", model_id)
            return _error(500, f"cannot deploy {model_id!r}: {type(exc).__name__}: {exc}")
        return json_response(200, {"status": "deployed", "model_id": model_id, "epoch": epoch})

    def _train(self, body: bytes) -> Response:
        if self.jobs is None:
            return _error(503, "training needs a models dir (h1-training serve --models-dir DIR)")
        try:
            raw = json.loads(body or b"{}")
            request = TrainRequest.from_json(raw, self.config.data_dir)
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad training request: {exc}")
        job = self.jobs.submit(request)
        return json_response(201, job.to_dict())

    def _deploy_job_result(self, job: Any) -> None:
        job.served_epoch = self.pool.swap_default(job.model_id, reason=f"job {job.id}")

    def training_status(self) -> dict[str, Any]:
        active = self.jobs.active() if self.jobs else None
        jobs = self.jobs.list() if self.jobs else []
        last = next((j for j in reversed(jobs) if j.status in ("succeeded", "failed", "cancelled")), None)
        model = self.pool.default_model
        return {
            "ready": not (self.jobs is not None and self.jobs.pending_deploy()),
            "epoch": self.pool.epoch,
            "model_id": model.model_id,
            "policy_type": model.info.get("policy_type", model.policy.metadata.get("policy_type")),
            "training": active is not None and active.status in ("running", "paused"),
            "job": None if active is None else {k: v for k, v in active.to_dict().items() if k != "request"},
            "last_job": None if last is None else {"id": last.id, "status": last.status, "model_id": last.model_id,
                                                   "error": last.error, "finished": last.finished},
            "queued_jobs": sum(1 for j in jobs if j.status == "queued"),
            "auto_train": self.autotrain.status() if self.autotrain is not None else None,
            "loaded_models": self.pool.loaded_ids(),
            "connections": self.connections,
            "requests": self.requests,
            "uptime_s": round(time.time() - self.started, 1),
        }

    # -- WebSocket ------------------------------------------------------------------------------------------
    def _infer(self, model_id: str | None, obs: dict) -> dict:
        """In a worker thread: resolve (maybe load) the model, then :meth:`_answer`."""
        model, epoch = self.pool.resolve(model_id)
        t0 = time.perf_counter()
        if self.config.infer_delay_ms:
            time.sleep(self.config.infer_delay_ms / 1e3)
        return self._answer(model, epoch, model.infer(obs), t0)

    @staticmethod
    def _answer(model: Any, epoch: int | None, raw: dict, t0: float) -> dict:
        result = check_result(raw)
        result["server_timing"] = {"infer_ms": (time.perf_counter() - t0) * 1e3}
        result["model_id"] = model.model_id      # the robot records it as the frame's model_version
        result["model_epoch"] = epoch
        return result

    def _infer_inline(self, model_id: str | None, obs: dict) -> dict | None:
        """On the event loop, for a loaded model whose policy declares itself instant (``infer_inline``) and is
        free: saves the worker-thread hop. None: go through the executor (a model that may be slow, is not
        loaded yet, or is busy never blocks the loop)."""
        if self.config.infer_delay_ms:
            return None
        resolved = self.pool.peek(model_id)
        if resolved is None or not resolved[0].inline:
            return None
        model, epoch = resolved
        t0 = time.perf_counter()
        raw = model.try_infer(obs)
        return None if raw is None else self._answer(model, epoch, raw, t0)

    def _metadata(self, model_id: str | None) -> bytes:
        model = self.pool.get(model_id)
        meta = dict(model.policy.metadata)
        meta.update(model_id=model.model_id, epoch=self.pool.epoch, pinned=model_id is not None,
                    server="h1-training")
        try:
            return codec.packb(meta)
        except codec.CodecError:  # metadata with odd values (paths, objects): send its JSON form
            return codec.packb(json.loads(json.dumps(meta, default=str)))

    async def _ws_handler(self, conn: _HttpConnection) -> None:
        model_id = conn.h1_model
        peer = conn.remote_address
        self.connections += 1
        log.info("client %s connected (model %s)", peer, model_id or "default")
        prev_total_ms: float | None = None
        packer = codec.Packer()  # one per session (a Packer is not thread-safe; this one lives on the loop)
        try:
            await conn.send(await self._blocking(self._metadata, model_id))
            while True:
                message = await conn.recv()
                t0 = time.perf_counter()
                if isinstance(message, str):
                    raise ValueError("expected a binary msgpack observation, got a text frame")
                obs = check_observation(codec.unpackb(message))
                result = self._infer_inline(model_id, obs)
                if result is None:
                    result = await self._blocking(self._infer, model_id, obs)
                if prev_total_ms is not None:
                    result["server_timing"]["prev_total_ms"] = prev_total_ms
                await conn.send(packer.pack(result))
                self.requests += 1
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        except websockets.ConnectionClosed:
            pass
        except Exception:
            # openpi's convention: the traceback as a text frame, then close 1011; only this session ends.
            self.errors += 1
            tb = traceback.format_exc()
            log.warning("client %s: request failed, closing with 1011:\n%s", peer, tb)
            try:
                await conn.send(tb)
                await conn.close(CloseCode.INTERNAL_ERROR, "Internal server error; traceback in previous frame")
            except websockets.ConnectionClosed:
                pass
        finally:
            self.connections -= 1
            log.info("client %s disconnected", peer)
